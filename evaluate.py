"""Evaluates a trained run's checkpoint; samples text or predicts with it.

    python evaluate.py --output_dir runs/char_rnn_shakespeare [--split test]
    python evaluate.py --output_dir runs/char_rnn_shakespeare \
        --generate 3 --prompt 'ROMEO:' --length 300 --temperature 0.8
    python evaluate.py --output_dir runs/sst2_rnn --predict 'a witty film'
    python evaluate.py --output_dir runs/dates --translate 'Wed 25 Nov 2026'
    python evaluate.py --output_dir runs/shapes --caption picture.png

The model is rebuilt from the run's config.gin and vocab.json, and its
weights come from a committed checkpoint (checksums checked). Evaluation
makes one full pass over the split and writes DIR/eval_SPLIT.json with:
language models, the loss (nats per character), accuracy, perplexity and
bits per character; classifiers, the loss, accuracy, per-class precision,
recall and F1 and the confusion matrix; taggers, the loss, token accuracy
and entity-level precision, recall and F1 (CoNLL definition, by seqeval);
translators and captioners, the loss and token accuracy of the reference
(teacher-forced), then the exact-match rate and corpus BLEU (sacrebleu) of
the sequences they generate by greedy or beam search (--beam_width), with
a few examples; every generated text and its references go to
DIR/eval_SPLIT_outputs.tsv. Captioners also get DIR/eval_SPLIT_captions.png,
a contact sheet of images with their generated and reference captions.
"""

# Before anything else loads: a program under tcmalloc must start under it.
import allocator  # pylint: disable=g-bad-import-order
if __name__ == '__main__':
  allocator.relaunch_with_fast_allocator()

import argparse
import json
import math
import os
import re
import sys


import checkpoints
import configurables
import devices
import figures
import metrics as task_metrics
import run_dir
import train
from errors import UsageError, exit_with

import jax
from jax import numpy as jnp
import numpy as np
from tqdm import tqdm
from trax import layers as tl
from trax import shapes

from data.batching import pad_batch
from models import decoding
from data.tokenize import words_as_typed
from data.vocab import (CharVocab, FIRST_CHAR_ID, PAD_ID, load_vocab,
                        size_mismatch)


def load_run(output_dir, with_data=True):
  """Parses the run's operative config; returns (experiment, vocab).

  Without `with_data` the experiment's `inputs` is None, and the dataset is
  not opened (generation needs only the model and the vocabulary).

  Raises:
    UsageError: `output_dir` is not a directory written by train.py, or
      its vocab.json is damaged or of another kind than its inputs read.
  """
  config = os.path.join(output_dir, run_dir.CONFIG_FILE)
  vocab = os.path.join(output_dir, run_dir.VOCAB_FILE)
  for path in (config, vocab):
    if not os.path.exists(path):
      raise UsageError(f'{path} does not exist, so {output_dir} is not a run '
                       f'directory written by train.py. Point --output_dir at '
                       f'the directory you passed to train.py.')
  configurables.parse_run_config(
      config, [] if with_data else ['experiment.inputs = None'])
  experiment, vocab = train.experiment(), load_vocab(vocab)
  if experiment.inputs is not None:  # before a pipeline reads with it
    experiment.inputs.check_vocab(vocab)
  return experiment, vocab


def load_checkpoint(output_dir, which='best'):
  """Reads a committed checkpoint of the run, checking its checksums.

  Args:
    output_dir: the run directory.
    which: 'best' (the best evaluated one, else the newest), 'latest', or a
      step number.

  Returns:
    The checkpoint's `checkpoints.TrainingState`.

  Raises:
    UsageError: there is no such checkpoint, or it is damaged.
  """
  run_dir.check_not_legacy(output_dir)
  saved = configurables.Checkpoints(output_dir, read_only=True)
  steps = saved.steps()
  if not steps:
    raise UsageError(f'{output_dir} holds no committed checkpoint yet. Point '
                     f'--output_dir at a directory train.py has trained in '
                     f'(its first checkpoint comes after checkpoint_every '
                     f'steps).')
  step = _resolve_step(which, steps, saved)
  try:
    return saved.restore(step)
  except checkpoints.DamagedCheckpoint as e:
    if step not in saved.steps():  # pruned by a training run meanwhile
      return load_checkpoint(output_dir, which)
    raise UsageError(f'Checkpoint {step} in {output_dir} is damaged: {e}. '
                     f'Choose another with --checkpoint (committed: '
                     f'{", ".join(map(str, steps))}).') from None


def checkpoint_step(output_dir, which='best'):
  """The step of the committed checkpoint `which` names, or None if none is."""
  saved = configurables.Checkpoints(output_dir, read_only=True)
  steps = saved.steps()
  return _resolve_step(which, steps, saved) if steps else None


def _resolve_step(which, steps, saved):
  if which == 'best':
    best = saved.best_step()
    return steps[-1] if best is None else best
  if which == 'latest':
    return steps[-1]
  if str(which).isdigit() and int(which) in steps:
    return int(which)
  raise UsageError(f'--checkpoint {which!r} is not one of best, latest or a '
                   f'committed step ({", ".join(map(str, steps))}).')


def load_model(model_fn, dimensions, state, mode, input_signature):
  """Builds the model in `mode` with the weights of checkpoint `state`.

  `dimensions` are the model's sizes, as the run's inputs give them
  (`inputs.model_dimensions(vocab)`).
  """
  model = model_fn(**dimensions, mode=mode)
  model.init(input_signature)
  _check_fits(state, model_fn, dimensions, mode, input_signature)
  signature = model.weights_and_state_signature(input_signature)
  model.weights, _ = tl.unflatten_weights_and_state(
      [jnp.asarray(w) for w in state.weights], (), signature, weights_only=True)
  return model


def _check_fits(state, model_fn, dimensions, mode, input_signature):
  """Raises UsageError unless checkpoint `state` fits the run's model.

  The model's sizes come from vocab.json, its layers from config.gin;
  trax would load weights of other shapes without a word and fail (or
  mispredict) later.
  """
  def shapes_of(sizes):
    weights, state_signature = model_fn(
        **sizes, mode=mode).weights_and_state_signature(input_signature)
    flat, _ = tl.flatten_weights_and_state(weights, state_signature)
    return [tuple(w.shape) for w in flat]

  saved = [tuple(np.shape(w)) for w in state.weights]
  wanted = shapes_of(dimensions)
  if saved == wanted:
    return
  raise size_mismatch(dimensions, saved, shapes_of, state.step) or UsageError(
      f'The checkpoint at step {state.step} does not fit the model that the '
      f'run\'s config.gin and vocab.json describe: its {len(saved)} weight '
      f'arrays (e.g. {saved[:3]}) differ from the model\'s {len(wanted)} '
      f'(e.g. {wanted[:3]}), so one of those files was changed after '
      f'training. Restore the run\'s own config.gin and vocab.json, or train '
      f'a new run in another --output_dir.')


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


def evaluate(output_dir, split=None, checkpoint='best', beam_width=None):
  """One full pass over `split`; returns the metrics and writes eval_SPLIT.json.

  The batches are split over every device, as in training; a batch size
  that does not divide by the device count is padded with rows of weight 0.
  Translators and captioners then generate a sequence for every example,
  with the run's DecodingSettings (`beam_width` overrides its width).
  """
  (inputs, model_fn), vocab = load_run(output_dir)
  state = load_checkpoint(output_dir, checkpoint)
  split = split or inputs.eval_split
  parallel = devices.DataParallel.over_all_devices()
  model = load_model(model_fn, inputs.model_dimensions(vocab), state, 'eval',
                     inputs.input_signature())
  weights, model_state = parallel.replicate((model.weights, model.state))
  score = scored_batch(model)
  totals, labelled = np.zeros(3), []
  for batch in tqdm(_placed_batches(inputs, vocab, split, parallel),
                    desc=f'evaluating {split}', unit='batch',
                    disable=not parallel.is_writer):
    *sums, predictions = score(weights, model_state, batch)
    totals += np.array(sums)
    if inputs.task in ('classification', 'tagging'):  # what the metrics need
      labelled.append(tuple(parallel.gather(a)
                            for a in (*batch[-2:], predictions)))
  nll, correct, count = totals
  if not count:
    raise UsageError(f'Split {split!r} of {inputs.dataset} holds no text to '
                     f'evaluate. Choose another --split.')
  result = {'split': split, 'step': state.step, 'loss': nll / count,
            **_TASK_METRICS[inputs.task](totals, labelled, vocab)}
  if inputs.task in train.GENERATING_TASKS:
    result.update(_generated(output_dir, inputs, model_fn, vocab, state, split,
                             _decoding(beam_width), parallel.is_writer))
  if parallel.is_writer:
    _write_json(os.path.join(output_dir, f'eval_{split}.json'), result)
  return result


def _placed_batches(inputs, vocab, split, parallel):
  """The eval batches of `split`, padded for the devices and placed on them."""
  rows = devices.round_up(inputs.batch_size, parallel.n_devices)
  mine = parallel.process_rows(rows)
  return (parallel.place_batch(tuple(a[mine] for a in pad_batch(b, rows)))
          for b in inputs.eval_batches(vocab, split))


def _language_model_metrics(totals, labelled, vocab):
  del labelled, vocab  # the sums say it all
  nll, correct, n_chars = totals
  loss = nll / n_chars
  return {'accuracy': correct / n_chars, 'perplexity': math.exp(loss),
          'bits_per_char': loss / math.log(2), 'n_chars': int(n_chars)}


def _classification_metrics(totals, labelled, vocab):
  del totals
  targets, weights, predictions = (np.concatenate(a) for a in zip(*labelled))
  real = weights > 0
  return {**task_metrics.classification_metrics(
      targets[real], predictions[real], vocab.labels),
          'n_texts': int(real.sum())}


def _tagging_metrics(totals, labelled, vocab):
  """Token accuracy; entity scores too when the tags are IOB-style (B-PER)."""
  true, predicted = [], []
  for targets, weights, predictions in labelled:
    for t, w, p in zip(targets, weights, predictions):
      if w.any():
        true.append([vocab.labels[i] for i in t[w > 0]])
        predicted.append([vocab.labels[i] for i in p[w > 0]])
  if all(re.fullmatch(r'O|[BIES]-.+', tag) for tag in vocab.labels):
    scores = task_metrics.tagging_metrics(true, predicted)
  else:  # part-of-speech or chunk tags: no entities, so each tag is scored
    scores = _per_tag_metrics(true, predicted, vocab.labels)
  return {**scores, 'n_tokens': int(totals[2])}


def _per_tag_metrics(true, predicted, tags):
  """Token accuracy and each tag's precision, recall and F1 over the tokens."""
  ids = {tag: i for i, tag in enumerate(tags)}
  scores = task_metrics.classification_metrics(
      [ids[t] for sentence in true for t in sentence],
      [ids[p] for sentence in predicted for p in sentence], tags)
  return {'token_accuracy': scores['accuracy'], 'per_tag': scores['per_class']}


def _target_token_metrics(totals, labelled, vocab):
  del labelled, vocab
  _, correct, n_tokens = totals
  return {'token_accuracy': correct / n_tokens, 'n_tokens': int(n_tokens)}


_TASK_METRICS = {
    'language_model': _language_model_metrics,
    'classification': _classification_metrics,
    'tagging': _tagging_metrics,
    'translation': _target_token_metrics,
    'captioning': _target_token_metrics,
}

# Examples of generated sequences kept in eval_SPLIT.json (and, of
# captions, drawn on the contact sheet).
N_SHOWN = 16


def _decoding(beam_width=None):
  """The run's DecodingSettings (read after load_run), `beam_width` overriding."""
  settings = configurables.DecodingSettings()
  if beam_width is not None:
    if beam_width < 1:
      raise UsageError(f'--beam_width must be 1 or more (got {beam_width}).')
    settings = settings._replace(beam_width=beam_width)
  return settings


def generator_of(model_fn, inputs, vocab, state, rows):
  """The run's model in predict mode, as a SequenceGenerator for `rows` contexts.

  Each process generates on its own devices, `rows` split over them when
  they divide evenly (evaluation pads its batches so that they do).
  """
  context = inputs.context_signature()
  signature = (shapes.ShapeDtype((rows, *context.shape[1:]), context.dtype),
               shapes.ShapeDtype((rows, 1), np.int32))
  model = load_model(model_fn, inputs.model_dimensions(vocab), state,
                     'predict', signature)
  return decoding.SequenceGenerator(model, model.weights, devices.local_mesh())


def _generated(output_dir, inputs, model_fn, vocab, state, split, settings,
               is_writer):
  """Decodes every example of `split`; exact match, BLEU and a few examples."""
  rows = devices.round_up(inputs.batch_size, jax.local_device_count())
  generator = generator_of(model_fn, inputs, vocab, state, rows)
  outputs, references, shown = [], [], []
  for context, refs in tqdm(inputs.decoding_batches(vocab, split),
                            desc=f'decoding {split} (beam {settings.beam_width})',
                            unit='batch', disable=not is_writer):
    ids = generator.generate(_padded_with_copies(context, rows), settings,
                             inputs.max_target_len)
    outputs += [vocab.decode(row) for row in ids[:len(refs)]]
    references += refs
    shown += list(context[:max(0, N_SHOWN - len(shown))])
  result = {**task_metrics.generation_metrics(outputs, references,
                                              inputs.level),
            'n_examples': len(outputs), 'beam_width': settings.beam_width}
  examples = [{'output': out, 'references': refs}
              for out, refs in zip(outputs[:N_SHOWN], references)]
  if inputs.task == 'translation':
    for example, source in zip(examples, shown):
      example['source'] = vocab.decode(source)
  if is_writer:
    result['outputs'] = _write_outputs(output_dir, split, outputs, references)
    if inputs.task == 'captioning':
      result['contact_sheet'] = os.path.join(output_dir,
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


def generate(output_dir, n_samples=1, prompt='', length=200, temperature=1.0,
             checkpoint='best', seed=0):
  """Samples `n_samples` continuations of `prompt`, one character at a time.

  The model runs in predict mode: the prompt is fed once, then each sampled
  character is fed back while the recurrent layers carry their state.
  `temperature` 0 picks the most likely character at every step.

  Returns:
    A list of `n_samples` strings, each the prompt and its continuation.
  """
  (_, model_fn), vocab = load_run(output_dir, with_data=False)
  if not isinstance(vocab, CharVocab):
    raise UsageError(f'{output_dir} does not hold a language model, so it '
                     f'has no text to sample. --generate is for language '
                     f'models; use --predict, --translate or --caption, '
                     f'whichever fits the run\'s task.')
  state = load_checkpoint(output_dir, checkpoint)
  signature = shapes.ShapeDtype((n_samples, 1), np.int32)
  model = load_model(model_fn, {'vocab_size': vocab.size}, state, 'predict',
                     signature)
  step = jax.jit(lambda tokens, weights, state: model.pure_fn(
      tokens, weights, state, jax.random.PRNGKey(0)))
  # In predict mode the model does not shift its input: it is fed the
  # previous character, which before the first one is PAD_ID.
  context = np.array([[PAD_ID] + vocab.encode(prompt)] * n_samples, np.int32)
  log_probs, state = step(context, model.weights, model.state)
  rng = jax.random.PRNGKey(seed)
  sampled = []
  for _ in tqdm(range(length), desc='generating', unit='char', leave=False):
    rng, key = jax.random.split(rng)
    token = _sample(log_probs[:, -1], temperature, key)
    sampled.append(np.asarray(token))
    log_probs, state = step(token[:, None], model.weights, state)
  columns = np.stack(sampled, axis=1) if sampled else np.zeros((n_samples, 0))
  return [prompt + vocab.decode(row) for row in columns]


def predict(output_dir, texts, checkpoint='best'):
  """Classifies or tags each of `texts` with the run's model.

  Returns:
    For a classifier, a (class name, probability) pair per text; for a
    tagger, a list of (word, tag) pairs per text.
  """
  (inputs, model_fn), vocab = load_run(output_dir)
  if inputs.task == 'language_model':
    raise UsageError(f'{output_dir} holds a language model, which predicts '
                     f'the next character, not a label. Sample from it with '
                     f'--generate N [--prompt TEXT].')
  if inputs.task in train.GENERATING_TASKS:
    raise UsageError(f'{output_dir} holds a {inputs.task} model, which writes '
                     f'text rather than a label. Use --translate TEXT or '
                     f'--caption IMAGE with it.')
  tokens = inputs.encode(vocab, texts)
  state = load_checkpoint(output_dir, checkpoint)
  model = load_model(model_fn, inputs.model_dimensions(vocab), state, 'eval',
                     shapes.signature(tokens))
  probs = np.exp(np.asarray(model(tokens)))
  if inputs.task == 'classification':
    return [(vocab.labels[int(p.argmax())], float(p.max())) for p in probs]
  # A tagger's words are shown as typed (not as the vocabulary knows them:
  # unknown or lower-cased), split exactly as the model's input was.
  return [list(zip(words_as_typed(text)[:inputs.max_len],
                   (vocab.labels[int(i)] for i in p.argmax(-1)[row != PAD_ID])))
          for text, row, p in zip(texts, tokens, probs)]


def translate(output_dir, texts, checkpoint='best', beam_width=None):
  """The run's translation of each of `texts` (greedy or beam search)."""
  return _write_sequences(output_dir, 'translation', texts, checkpoint,
                          beam_width, lambda inputs, vocab, text:
                          inputs.encode(vocab, [text])[0])


def caption(output_dir, image_paths, checkpoint='best', beam_width=None):
  """The run's caption of each image file in `image_paths`."""
  return _write_sequences(output_dir, 'captioning', image_paths, checkpoint,
                          beam_width, lambda inputs, vocab, path:
                          inputs.load_image(path))


def _write_sequences(output_dir, task, items, checkpoint, beam_width, encode):
  """Decodes one sequence per item, each item made a context by `encode`."""
  (inputs, model_fn), vocab = load_run(output_dir)
  if inputs.task != task:
    flag = {'translation': '--translate', 'captioning': '--caption'}[task]
    raise UsageError(f'{flag} needs a {task} run, but {output_dir} holds a '
                     f'{inputs.task.replace("_", " ")} model. Point '
                     f'--output_dir at a run trained on a {task} config.')
  contexts = np.stack([encode(inputs, vocab, item) for item in items])
  settings = _decoding(beam_width)
  state = load_checkpoint(output_dir, checkpoint)
  generator = generator_of(model_fn, inputs, vocab, state, len(items))
  ids = generator.generate(contexts, settings, inputs.max_target_len)
  return [vocab.decode(row) for row in ids]


def _sample(log_probs, temperature, key):
  """int32[batch]: a draw from softmax(log_probs / temperature), argmax at 0.

  Padding and the unknown-character id are never drawn: neither is text.
  """
  log_probs = log_probs.at[:, :FIRST_CHAR_ID].set(-jnp.inf)
  if temperature <= 0:
    return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, log_probs / temperature).astype(jnp.int32)


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description='Evaluate a run directory written by train.py, or sample '
                  'text from it.')
  parser.add_argument('--output_dir', required=True,
                      help='run directory written by train.py.')
  parser.add_argument('--split', help='split to evaluate (default: the '
                      'eval split of the run\'s config, e.g. validation).')
  parser.add_argument('--checkpoint', default='best',
                      help='best (the best evaluated; the default), latest, '
                           'or a step number.')
  parser.add_argument('--generate', type=int, metavar='N',
                      help='language models: sample N texts instead of '
                           'evaluating.')
  parser.add_argument('--predict', action='append', metavar='TEXT',
                      help='classifiers and taggers: print the class (and '
                           'its probability) or the tags of TEXT instead of '
                           'evaluating; may be given several times.')
  parser.add_argument('--translate', action='append', metavar='TEXT',
                      help='translation models: print the translation of '
                           'TEXT instead of evaluating; may be repeated.')
  parser.add_argument('--caption', action='append', metavar='IMAGE',
                      help='captioning models: print a caption of the image '
                           'file IMAGE instead of evaluating; may be repeated.')
  parser.add_argument('--beam_width', type=int,
                      help='translation and captioning: beam width (1 is '
                           'greedy); default, the run\'s '
                           'DecodingSettings.beam_width.')
  parser.add_argument('--prompt', default='', help='text the samples continue.')
  parser.add_argument('--length', type=int, default=300,
                      help='characters to sample after the prompt.')
  parser.add_argument('--temperature', type=float, default=0.8,
                      help='sampling temperature; 0 picks the likeliest.')
  parser.add_argument('--seed', type=int, default=0, help='sampling seed.')
  devices.add_arguments(parser)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  try:
    devices.set_up(args)
    if args.generate is not None:
      if args.generate < 1 or args.length < 0:
        raise UsageError('--generate takes the number of samples (1 or more) '
                         'and --length the characters to add (0 or more).')
      samples = generate(args.output_dir, args.generate, args.prompt,
                         args.length, args.temperature, args.checkpoint,
                         args.seed)
      for i, text in enumerate(samples):
        print(f'--- sample {i + 1} ---\n{text}\n')
    elif args.translate:
      for text, output in zip(args.translate, translate(
          args.output_dir, args.translate, args.checkpoint, args.beam_width)):
        print(f'{text}\t{output}')
    elif args.caption:
      for path, output in zip(args.caption, caption(
          args.output_dir, args.caption, args.checkpoint, args.beam_width)):
        print(f'{path}\t{output}')
    elif args.predict:
      _print_predictions(args.predict,
                         predict(args.output_dir, args.predict,
                                 args.checkpoint))
    else:
      metrics = evaluate(args.output_dir, args.split, args.checkpoint,
                         args.beam_width)
      if jax.process_index() == 0:
        print(json.dumps(metrics, indent=2))
  except UsageError as e:
    exit_with(e, 'evaluate.py')


def _print_predictions(texts, predictions):
  for text, prediction in zip(texts, predictions):
    if isinstance(prediction, tuple):  # (class, probability)
      print(f'{prediction[0]}\t{prediction[1]:.3f}\t{text}')
    else:  # (word, tag) pairs
      print(' '.join(f'{word}/{tag}' for word, tag in prediction))


if __name__ == '__main__':
  main(sys.argv[1:])
