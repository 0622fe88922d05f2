"""Scores a run on a split of its dataset or on a file: `evaluate`.

Evaluation makes one full pass and writes OUTPUT_DIR/eval_SPLIT.json (of
a file, eval_file_STEM.json) with the task's metrics (rnn_toolkit/tasks.py):
language models, the loss (nats per character), accuracy, perplexity and
bits per character; classifiers, the loss, accuracy, per-class precision,
recall and F1 and the confusion matrix; taggers, the loss, token accuracy
and entity-level precision, recall and F1 (CoNLL definition, by seqeval);
translators and captioners, the loss and token accuracy of the reference
(teacher-forced), then the exact-match rate and corpus BLEU (sacrebleu) of
the sequences they generate by greedy or beam search, with a few
examples; every generated text and its references go to
eval_SPLIT_outputs.tsv. Captioners also get eval_SPLIT_captions.png, a
contact sheet of images with their generated and reference captions.
"""

import json
import os
from typing import Optional

import jax
from jax import numpy as jnp
import numpy as np
from tqdm import tqdm

from data.batching import pad_batch
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation import metrics
from rnn_toolkit.reporting import figures
from rnn_toolkit.runtime import devices


def scored_batch(model):
  """A jitted fn: (weights, state, batch) -> (sum of w·nll, sum of w·correct, sum of w, predictions).

  The batch holds the model's inputs, then the targets and their weights.
  `predictions` are the likeliest ids: int32[batch] for a classifier,
  int32[batch, length] for the others.
  """
  n_in = model.n_in

  def score(weights, state, batch):
    inputs, (targets, mask) = batch[:n_in], batch[n_in:]
    log_probs, _ = model.pure_fn(inputs if n_in > 1 else inputs[0], weights,
                                 state, jax.random.PRNGKey(0))
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    predictions = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    correct = (predictions == targets).astype(jnp.float32)
    return (jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask),
            predictions)
  return jax.jit(score)


def evaluate(run, split: Optional[str] = None,
             beam_width: Optional[int] = None) -> dict:
  """One full pass over `split` of the `run`'s dataset; see `Run.evaluate`.

  The batches are split over every device, as in training; a batch size
  that does not divide by the device count is padded with rows of weight 0.
  Translators and captioners then generate a sequence for every example,
  with the run's DecodingSettings (`beam_width` overrides its width).
  """
  inputs, task = run.inputs, run.task
  split = split or inputs.eval_split
  settings = run.decoding_settings(beam_width) if task.generates else None
  parallel = devices.DataParallel.over_all_devices()
  model = run.model('eval', inputs.input_signature())
  weights, model_state = parallel.replicate((model.weights, model.state))
  score = scored_batch(model)
  totals, labelled = np.zeros(3), []
  for batch in tqdm(_placed_batches(inputs, run.vocab, split, parallel),
                    desc=f'evaluating {split}', unit='batch',
                    disable=not parallel.is_writer):
    *sums, predictions = score(weights, model_state, batch)
    totals += np.array(sums)
    if task.gathers_predictions:
      labelled.append(tuple(parallel.gather(a)
                            for a in (*batch[-2:], predictions)))
  nll, _, count = totals
  if not count:
    raise UsageError(f'Split {split!r} of {inputs.dataset} holds no text to '
                     f'evaluate. Choose another --split.')
  result = {'split': split, 'step': run.step, 'loss': nll / count,
            **task.metrics(totals, labelled, run.vocab)}
  if task.generates:
    result.update(_generated(run, split, settings, parallel.is_writer))
  if parallel.is_writer:
    _write_json(os.path.join(run.output_dir, f'eval_{split}.json'), result)
  return result


def _placed_batches(inputs, vocab, split, parallel):
  """The eval batches of `split`, padded for the devices and placed on them."""
  rows = devices.round_up(inputs.batch_size, parallel.n_devices)
  mine = parallel.process_rows(rows)
  return (parallel.place_batch(tuple(a[mine] for a in pad_batch(b, rows)))
          for b in inputs.eval_batches(vocab, split))


# Examples of generated sequences kept in eval_SPLIT.json (and, of
# captions, drawn on the contact sheet).
N_SHOWN = 16

def _generated(run, split, settings, is_writer):
  """Decodes every example of `split`; exact match, BLEU and a few examples."""
  inputs, vocab = run.inputs, run.vocab
  rows = devices.round_up(inputs.batch_size, jax.local_device_count())
  generator = run.generator(rows)
  outputs, references, shown = [], [], []
  for context, refs in tqdm(inputs.decoding_batches(vocab, split),
                            desc=f'decoding {split} (beam {settings.beam_width})',
                            unit='batch', disable=not is_writer):
    ids = generator.generate(_padded_with_copies(context, rows), settings,
                             inputs.max_target_len)
    outputs += [vocab.decode(row) for row in ids[:len(refs)]]
    references += refs
    shown += list(context[:max(0, N_SHOWN - len(shown))])
  result = {**metrics.generation_metrics(outputs, references, inputs.level),
            'n_examples': len(outputs), 'beam_width': settings.beam_width}
  examples = [{'output': out, 'references': refs}
              for out, refs in zip(outputs[:N_SHOWN], references)]
  if run.task.context_is_text:
    for example, source in zip(examples, shown):
      example['source'] = vocab.decode(source)
  if is_writer:
    result['outputs'] = _write_outputs(run.output_dir, split, outputs,
                                       references)
    if 'contact_sheet' in run.task.report_sections:
      result['contact_sheet'] = os.path.join(run.output_dir,
                                             f'eval_{split}_captions.png')
      figures.contact_sheet(shown, outputs, references,
                            result['contact_sheet'])
  return {**result, 'examples': examples}


def _padded_with_copies(context, rows):
  """`context` with copies of its first row added, up to `rows` rows.

  Copies of a real row end when it does, where a row of padding might
  never generate EOS and keep its whole batch decoding to the length limit.
  """
  copies = np.repeat(context[:1], rows - len(context), axis=0)
  return np.concatenate([context, copies])


def _write_outputs(output_dir, split, outputs, references):
  """Writes eval_SPLIT_outputs.tsv: each generated text and its references."""
  path = os.path.join(output_dir, f'eval_{split}_outputs.tsv')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write('output\treferences\n')
    for output, refs in zip(outputs, references):
      f.write('\t'.join([output, *refs]) + '\n')
  os.replace(path + '.tmp', path)
  return path


def _write_json(path, record):
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=2)
  os.replace(path + '.tmp', path)
