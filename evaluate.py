"""Evaluates a trained run's checkpoint; samples text or predicts with it.

    python evaluate.py --output_dir runs/char_rnn_shakespeare [--split test]
    python evaluate.py --output_dir runs/char_rnn_shakespeare \
        --generate 3 --prompt 'ROMEO:' --length 300 --temperature 0.8
    python evaluate.py --output_dir runs/sst2_rnn --predict 'a witty film'

The model is rebuilt from the run's config.gin and vocab.json, and its
weights come from a committed checkpoint (checksums checked). Evaluation
makes one full pass over the split and writes DIR/eval_SPLIT.json with:
language models, the loss (nats per character), accuracy, perplexity and
bits per character; classifiers, the loss, accuracy, per-class precision,
recall and F1 and the confusion matrix; taggers, the loss, token accuracy
and entity-level precision, recall and F1 (CoNLL definition, by seqeval).
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
from data.text_classification import words_as_typed
from data.vocab import CharVocab, FIRST_CHAR_ID, PAD_ID, load_vocab


def load_run(output_dir, with_data=True):
  """Parses the run's operative config; returns (experiment, vocab).

  Without `with_data` the experiment's `inputs` is None, and the dataset is
  not opened (generation needs only the model and the vocabulary).

  Raises:
    UsageError: `output_dir` is not a directory written by train.py.
  """
  config = os.path.join(output_dir, run_dir.CONFIG_FILE)
  vocab = os.path.join(output_dir, run_dir.VOCAB_FILE)
  for path in (config, vocab):
    if not os.path.exists(path):
      raise UsageError(f'{path} does not exist, so {output_dir} is not a run '
                       f'directory written by train.py. Point --output_dir at '
                       f'the directory you passed to train.py.')
  configurables.parse([config], [] if with_data else ['experiment.inputs = None'])
  return train.experiment(), load_vocab(vocab)


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
  signature = model.weights_and_state_signature(input_signature)
  model.weights, _ = tl.unflatten_weights_and_state(
      [jnp.asarray(w) for w in state.weights], (), signature, weights_only=True)
  return model


def scored_batch(model):
  """A jitted fn: batch -> (sum of w·nll, sum of w·correct, sum of w, predictions).

  `predictions` are the likeliest ids: int32[batch] for a classifier,
  int32[batch, length] for a tagger or a language model.
  """
  def score(weights, state, inputs, targets, mask):
    log_probs, _ = model.pure_fn(inputs, weights, state, jax.random.PRNGKey(0))
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    predictions = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    correct = (predictions == targets).astype(jnp.float32)
    return (jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask),
            predictions)
  return jax.jit(score)


def evaluate(output_dir, split=None, checkpoint='best'):
  """One full pass over `split`; returns the metrics and writes eval_SPLIT.json.

  The batches are split over every device, as in training; a batch size
  that does not divide by the device count is padded with rows of weight 0.
  """
  (inputs, model_fn), vocab = load_run(output_dir)
  state = load_checkpoint(output_dir, checkpoint)
  split = split or inputs.eval_split
  parallel = devices.DataParallel.over_all_devices()
  model = load_model(model_fn, inputs.model_dimensions(vocab), state, 'eval',
                     shapes.ShapeDtype(inputs.input_shape(), np.int32))
  weights, model_state = parallel.replicate((model.weights, model.state))
  score = scored_batch(model)
  totals, labelled = np.zeros(3), []
  for x, y, w in tqdm(_placed_batches(inputs, vocab, split, parallel),
                      desc=f'evaluating {split}', unit='batch',
                      disable=not parallel.is_writer):
    *sums, predictions = score(weights, model_state, x, y, w)
    totals += np.array(sums)
    if inputs.task != 'language_model':  # keep what the metrics need
      labelled.append(tuple(parallel.gather(a) for a in (y, w, predictions)))
  nll, correct, count = totals
  if not count:
    raise UsageError(f'Split {split!r} of {inputs.dataset} holds no text to '
                     f'evaluate. Choose another --split.')
  result = {'split': split, 'step': state.step, 'loss': nll / count,
            **_TASK_METRICS[inputs.task](totals, labelled, vocab)}
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
  else:  # part-of-speech or chunk tags: no entities to score
    scores = {'token_accuracy': totals[1] / totals[2]}
  return {**scores, 'n_tokens': int(totals[2])}


_TASK_METRICS = {
    'language_model': _language_model_metrics,
    'classification': _classification_metrics,
    'tagging': _tagging_metrics,
}


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
    raise UsageError(f'{output_dir} holds a classifier or tagger, which has '
                     f'no text to sample. Use --predict TEXT with it; '
                     f'--generate is for language models.')
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
  tokens = inputs.encode(vocab, texts)
  empty = [t for t, row in zip(texts, tokens) if not row.any()]
  if empty:
    raise UsageError(f'--predict {empty[0]!r} has no words to classify. Pass '
                     f'a text with at least one word.')
  state = load_checkpoint(output_dir, checkpoint)
  model = load_model(model_fn, inputs.model_dimensions(vocab), state, 'eval',
                     shapes.ShapeDtype(tokens.shape, np.int32))
  probs = np.exp(np.asarray(model(tokens)))
  if inputs.task == 'classification':
    return [(vocab.labels[int(p.argmax())], float(p.max())) for p in probs]
  # A tagger's words are shown as typed (not as the vocabulary knows them:
  # unknown or lower-cased), split exactly as the model's input was.
  return [list(zip(words_as_typed(text)[:inputs.max_len],
                   (vocab.labels[int(i)] for i in p.argmax(-1)[row != PAD_ID])))
          for text, row, p in zip(texts, tokens, probs)]


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
    elif args.predict:
      _print_predictions(args.predict,
                         predict(args.output_dir, args.predict,
                                 args.checkpoint))
    else:
      metrics = evaluate(args.output_dir, args.split, args.checkpoint)
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
