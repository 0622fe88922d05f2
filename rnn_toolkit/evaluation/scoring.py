"""Scores a run on a split of its dataset or on a file: `evaluate`.

Evaluation makes one full pass and writes OUTPUT_DIR/eval_SPLIT.json (of
a file, eval_file_STEM.json) with the task's metrics (rnn_toolkit/tasks.py):
language models, the loss (nats per character), accuracy, perplexity and
bits per character of the text read as streams, the state carried
throughout (evaluation/streaming.py; a model trained on windows too), with
the windowed figures (each window from a zero state) beside them as
windowed_loss and windowed_accuracy, and, when asked, those of dynamic
evaluation (evaluation/dynamic.py) as dynamic_loss and so on; classifiers,
the loss, accuracy, per-class precision, recall and F1 and the confusion
matrix; taggers, the loss, token accuracy and entity-level precision,
recall and F1 (CoNLL definition, by seqeval); translators and captioners,
the loss and token accuracy of the reference (teacher-forced), then the
exact-match rate and corpus BLEU (sacrebleu) of the sequences they
generate by greedy or beam search, with a few examples; every generated text and its references go to
eval_SPLIT_outputs.tsv (eval_file_STEM_outputs.tsv). Captioners also get
eval_SPLIT_captions.png, a contact sheet of images with their generated
and reference captions. A file's record says which file it is ('file':
its absolute path) where a split's says which split ('split').
"""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

import jax
from jax import numpy as jnp
import numpy as np
from tqdm import tqdm
from trax import shapes

from data.batching import pad_batch
from models import crf
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation import dynamic
from rnn_toolkit.evaluation import files
from rnn_toolkit.evaluation import metrics
from rnn_toolkit.evaluation import streaming
from rnn_toolkit.evaluation.dynamic import DynamicEvaluation
from rnn_toolkit.evaluation.run import Run, padded_with_copies
from rnn_toolkit.reporting import figures
from rnn_toolkit.runtime import devices
from rnn_toolkit.storage.atomic_files import write_text_atomically

if TYPE_CHECKING:
  from trax import layers as tl


def scored_batch(model: 'tl.Layer') -> Callable[..., tuple]:
  """A jitted fn: (weights, state, batch) -> (sum of w·nll, sum of w·correct, sum of w, predictions).

  The batch holds the model's inputs, then the targets and their weights.
  `predictions` are the likeliest ids: int32[batch] for a classifier,
  int32[batch, length] for the others (a CRF tagger's, by Viterbi; its
  sentence's w·nll is counted at its first word).
  """
  n_in = model.n_in

  def score(weights, state, batch):
    inputs, (targets, mask) = batch[:n_in], batch[n_in:]
    output, _ = model.pure_fn(inputs if n_in > 1 else inputs[0], weights,
                              state, jax.random.PRNGKey(0))
    nll = crf.token_nll(output, targets, mask)
    predictions = crf.predictions(output, mask)
    correct = (predictions == targets).astype(jnp.float32)
    return (jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask),
            predictions)
  return jax.jit(score)


@dataclasses.dataclass(frozen=True)
class _Source:
  """What an evaluation reads: a split of the run's dataset, or a file.

  Attributes:
    name: how progress bars call it ('validation', 'reviews.tsv').
    record: what eval_*.json says it is ({'split': ...} or {'file': ...}).
    prefix: the evaluation's file names start with it ('eval_validation',
      'eval_file_reviews').
    split: the split, or with `examples`, what the pipeline's messages call
      them.
    examples: () -> a tf.data.Dataset of the file's raw examples; None for
      a split.
    empty: the message when it holds nothing to evaluate.
  """
  name: str
  record: dict
  prefix: str
  split: str
  examples: Optional[Callable[[], Any]] = None
  empty: str = ''

  def read(self) -> dict:
    """The pipeline's keyword arguments that read it."""
    return {'split': self.split,
            **({} if self.examples is None
               else {'examples': self.examples()})}


def evaluate(run: Run, source: Optional[str] = None,
             beam_width: Optional[int] = None,
             dynamic: Optional[DynamicEvaluation] = None) -> dict:
  """One full pass over a split or a file; see `Run.evaluate`.

  `source` is a file when `files.looks_like_file` says so (an existing
  path, a path separator, a file extension), else a split (default: the
  run's eval split).
  """
  if source is not None and files.looks_like_file(source):
    return evaluate_file(run, source, beam_width, dynamic)
  split = source or run.inputs.eval_split
  return _evaluate(run, _Source(
      split, {'split': split}, f'eval_{split}', split,
      empty=f'Split {split!r} of {run.inputs.dataset} holds no text to '
            f'evaluate. Choose another --split.'), beam_width, dynamic)


def evaluate_file(run: Run, path: str, beam_width: Optional[int] = None,
                  dynamic: Optional[DynamicEvaluation] = None) -> dict:
  """One full pass over the user's file `path` (evaluation/files.py's formats).

  The whole file is read and checked first: a malformed line raises
  UsageError (naming the file and the line) before anything is computed
  or written. The metrics are a split's, computed by the same code, and
  go to OUTPUT_DIR/eval_file_STEM.json (STEM: the file's name without its
  extension).
  """
  if run.task.generates:  # a bad --beam_width is refused before the file is read
    run.decoding_settings(beam_width)
  read = run.task.files.read_examples(run.inputs, run.vocab, path)
  prefix = f'eval_file_{files.stem(path)}'
  return _evaluate(run, _Source(
      os.path.basename(path), {'file': os.path.abspath(path)}, prefix,
      f'file {path!r}', read.dataset,
      empty=f'{path} holds no text to evaluate.'), beam_width, dynamic)


def _evaluate(run, source: _Source, beam_width: Optional[int],
              dynamic: Optional[DynamicEvaluation] = None) -> dict:
  """The metrics of `source`, written to OUTPUT_DIR/PREFIX.json.

  The batches are split over every device, as in training; a batch size
  that does not divide by the device count is padded with rows of weight 0.
  Translators and captioners then generate a sequence for every example,
  with the run's DecodingSettings (`beam_width` overrides its width).
  """
  inputs, task = run.inputs, run.task
  settings = run.decoding_settings(beam_width) if task.generates else None
  parallel = devices.DataParallel.over_all_devices()
  model = run.model('eval', inputs.input_signature())
  weights, model_state = parallel.replicate((model.weights, model.state))
  score = scored_batch(model)
  totals, labelled = np.zeros(3), []
  for batch in tqdm(_placed_batches(inputs, run.vocab, source, parallel),
                    desc=f'evaluating {source.name}', unit='batch',
                    disable=not parallel.is_writer):
    *sums, predictions = score(weights, model_state, batch)
    totals += np.array(sums)
    if task.gathers_predictions:
      labelled.append(tuple(parallel.gather(a)
                            for a in (*batch[-2:], predictions)))
  nll, _, count = totals
  if not count:
    raise UsageError(source.empty)
  result = {**source.record, 'step': run.step, 'loss': nll / count,
            **task.metrics(totals, labelled, run.vocab)}
  if task.name == 'language_model' and run.can_stream:
    result = _with_streaming(result, run, source, parallel)
    if dynamic is not None:
      result.update(_dynamic(run, source, dynamic, parallel.is_writer))
  if task.generates:
    result.update(_generated(run, source, settings, parallel.is_writer))
  if parallel.is_writer:
    _write_json(os.path.join(run.output_dir, f'{source.prefix}.json'), result)
  return result


def _with_streaming(windowed, run, source, parallel):
  """A language model's `windowed` figures, renamed windowed_loss and
  windowed_accuracy, under those of the same text read as streams."""
  inputs = run.inputs
  rows = devices.round_up(inputs.batch_size, parallel.n_devices)
  mine = parallel.process_rows(rows)
  batches = [parallel.place_batch(tuple(a[mine] for a in pad_batch(b, rows)))
             for b in inputs.stream_batches(run.vocab, **source.read())]
  model = _stream_model(run, rows)
  weights, state = parallel.replicate((model.weights, model.state))
  totals = streaming.score_streams(
      model, weights, state, tqdm(batches, desc=f'streaming {source.name}',
                                  unit='batch', disable=not parallel.is_writer))
  result = {key: value for key, value in windowed.items()
            if key not in ('loss', 'accuracy', 'perplexity', 'bits_per_char')}
  return {**result, **streaming.stream_metrics(totals),
          'windowed_loss': windowed['loss'],
          'windowed_accuracy': windowed['accuracy']}


def _stream_model(run, rows):
  """The run's model, carrying its state, for batches of `rows` streams."""
  inputs = run.inputs
  signature = (shapes.ShapeDtype((rows, inputs.seq_len), np.int32),
               shapes.ShapeDtype((rows,), np.float32))
  return run.model('eval', signature, dimensions={
      **inputs.model_dimensions(run.vocab), 'stateful': True})


def _dynamic(run, source, settings, is_writer):
  """Figures of dynamic evaluation over `source`, as dynamic_loss and so on.

  Each process adapts its own copy of the weights on its own devices; the
  streams are few, and the steps follow one another.
  """
  batches = run.inputs.stream_batches(run.vocab, **source.read(),
                                      n_streams=settings.streams)
  model = _stream_model(run, settings.streams)
  totals = dynamic.score_adapting(
      model, model.state,
      tqdm(batches, desc=f'dynamic evaluation of {source.name}',
           unit='segment', disable=not is_writer), settings)
  return {**{f'dynamic_{name}': value
             for name, value in streaming.stream_metrics(totals).items()},
          'dynamic_settings': settings.describe()}


def _placed_batches(inputs, vocab, source, parallel):
  """The eval batches of `source`, padded for the devices and placed on them."""
  rows = devices.round_up(inputs.batch_size, parallel.n_devices)
  mine = parallel.process_rows(rows)
  return (parallel.place_batch(tuple(a[mine] for a in pad_batch(b, rows)))
          for b in inputs.eval_batches(vocab, **source.read()))


# Examples of generated sequences kept in eval_SPLIT.json (and, of
# captions, drawn on the contact sheet).
N_SHOWN = 16


def _generated(run, source, settings, is_writer):
  """Decodes every example of `source`; exact match, BLEU and a few examples."""
  inputs, vocab = run.inputs, run.vocab
  rows = devices.round_up(inputs.batch_size, jax.local_device_count())
  generator = run.generator(rows)
  outputs, references, shown = [], [], []
  for context, refs in tqdm(inputs.decoding_batches(vocab, **source.read()),
                            desc=f'decoding {source.name} '
                                 f'(beam {settings.beam_width})',
                            unit='batch', disable=not is_writer):
    ids = generator.generate(padded_with_copies(context, rows), settings,
                             inputs.max_target_len)
    outputs += [vocab.decode(row) for row in ids[:len(refs)]]
    references += refs
    shown += list(context[:max(0, N_SHOWN - len(shown))])
  result = {**metrics.generation_metrics(outputs, references, inputs.level),
            'n_examples': len(outputs), 'beam_width': settings.beam_width}
  examples = [{'output': out, 'references': refs}
              for out, refs in zip(outputs[:N_SHOWN], references)]
  if run.task.context_is_text:
    for example, context in zip(examples, shown):
      example['source'] = vocab.decode(context)
  if is_writer:
    result['outputs'] = _write_outputs(run.output_dir, source.prefix,
                                       outputs, references)
    if 'contact_sheet' in run.task.report_sections:
      result['contact_sheet'] = os.path.join(run.output_dir,
                                             f'{source.prefix}_captions.png')
      figures.contact_sheet(shown, outputs, references,
                            result['contact_sheet'])
  return {**result, 'examples': examples}


def _write_outputs(output_dir, prefix, outputs, references):
  """Writes PREFIX_outputs.tsv: each generated text and its references."""
  path = os.path.join(output_dir, f'{prefix}_outputs.tsv')
  write_text_atomically(path, 'output\treferences\n' + ''.join(
      '\t'.join([output, *refs]) + '\n'
      for output, refs in zip(outputs, references)))
  return path


def _write_json(path, record):
  write_text_atomically(path, json.dumps(record, indent=2))
