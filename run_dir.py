"""What a run directory holds, and the checks made before using one.

A run directory (train.py's --output_dir) holds trax checkpoints
(`model.pkl.gz` with `model.weights.npy.gz` and `model.opt_slots0.npy.gz`,
and `lowest_loss.*` for the best evaluation loss, with `lowest_loss.json`
naming its step and loss), `config.gin`, `vocab.json`, `metrics.jsonl` and
TensorBoard summaries.
"""

import gzip
import json
import os
import pickle

import gin
import numpy as np

from data.vocab import CharVocab
from errors import UsageError

CONFIG_FILE = 'config.gin'
VOCAB_FILE = 'vocab.json'
METRICS_FILE = 'metrics.jsonl'
LATEST_CHECKPOINT = 'model.pkl.gz'
BEST_CHECKPOINT = 'lowest_loss.pkl.gz'
BEST_RECORD = 'lowest_loss.json'  # step and eval loss of BEST_CHECKPOINT


def load_vocab(output_dir, dataset):
  """Returns the run's saved vocabulary, or None on a first start.

  Raises:
    UsageError: the vocabulary was built from another dataset.
  """
  path = os.path.join(output_dir, VOCAB_FILE)
  if not os.path.exists(path):
    return None
  vocab = CharVocab.load(path)
  if vocab.dataset not in (None, dataset):
    raise UsageError(
        f'{output_dir} was trained on dataset {vocab.dataset!r} and its '
        f'vocabulary ({path}) was built from it; this config reads '
        f'{dataset!r}. Use a new --output_dir for the other dataset.')
  return vocab


def read_checkpoint(path):
  """Returns the trax checkpoint dictionary at `path` (a .pkl.gz file)."""
  with gzip.open(path, 'rb') as f:
    return pickle.load(f)


def checkpoint_shapes(path, arrays):
  """Shapes of the flat arrays stored beside the checkpoint at `path`.

  Args:
    path: a trax checkpoint, `NAME.pkl.gz`.
    arrays: 'weights' (NAME.weights.npy.gz) or 'opt_slots0' (the optimizer
      slots of the first task, NAME.opt_slots0.npy.gz).
  """
  from trax import layers as tl  # pylint: disable=g-import-not-at-top
  # trax stores each file's compression level in the pickle, under these keys.
  key = {'weights': 'flat_weights', 'opt_slots0': 'slots_per_task'}[arrays]
  stored = tl.np_from_file(f'{path[:-len("pkl.gz")]}{arrays}.npy.gz',
                           compresslevel=read_checkpoint(path)[key])
  return [tuple(a.shape) for a in stored]


def planned_shapes(model, optimizer, input_signature):
  """Shapes of the flat weights and optimizer slots a run would checkpoint."""
  from trax import fastmath  # pylint: disable=g-import-not-at-top
  weights, _ = model.weights_and_state_signature(input_signature)
  zeros = fastmath.nested_map(lambda w: np.zeros(w.shape, w.dtype), weights)
  slots, _ = optimizer.tree_init(zeros)
  # Like trax's checkpoint writer, leave out the empty slots of weightless layers.
  flat_slots = [s for s in fastmath.tree_flatten(slots)
                if not (s is None or (isinstance(s, tuple) and not s))]
  return ([tuple(w.shape) for w in fastmath.tree_flatten(zeros)],
          [tuple(np.shape(s)) for s in flat_slots])


def check_resumable(output_dir, model, optimizer, input_signature):
  """Returns the step of the checkpoint in `output_dir` (0 if none).

  Raises:
    UsageError: the checkpoint there was written by a model or optimizer of
      another shape, so resuming would fail (and training on would
      overwrite it).
  """
  path = os.path.join(output_dir, LATEST_CHECKPOINT)
  if not os.path.exists(path):
    return 0
  weights, slots = planned_shapes(model, optimizer, input_signature)
  for what, saved, wanted in (
      ('model', checkpoint_shapes(path, 'weights'), weights),
      ('optimizer', checkpoint_shapes(path, 'opt_slots0'), slots)):
    if saved != wanted:
      raise UsageError(
          f'{output_dir} holds a checkpoint of a different {what} '
          f'({len(saved)} arrays, e.g. {saved[:3]}; this config builds '
          f'{len(wanted)}, e.g. {wanted[:3]}). Nothing was changed there. Use '
          f'a new --output_dir for this config, or the config that trained '
          f'that run ({os.path.join(output_dir, CONFIG_FILE)}).')
  return int(read_checkpoint(path)['step'])


def save_operative_config(output_dir, step):
  """Writes gin's operative config (every value the run used) to config.gin.

  When a resumed run's config differs from the saved one, the saved one is
  kept as config_until_step_STEP.gin, so the record of how the checkpoint's
  weights were trained survives.
  """
  path = os.path.join(output_dir, CONFIG_FILE)
  config = gin.operative_config_str()
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == config:
        return
    if step:
      os.replace(path, os.path.join(output_dir,
                                    f'config_until_step_{step}.gin'))
  _write_text(path, config)


def _write_text(path, text):
  """Writes `text` through a temporary file and a rename."""
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def read_best(output_dir):
  """The {'step', 'loss'} record of the lowest_loss checkpoint, or None."""
  path = os.path.join(output_dir, BEST_RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_best(output_dir, step, loss):
  _write_text(os.path.join(output_dir, BEST_RECORD),
              json.dumps({'step': step, 'loss': loss}))


def append_metrics(output_dir, record):
  """Appends one JSON record to metrics.jsonl."""
  with open(os.path.join(output_dir, METRICS_FILE), 'a') as f:
    f.write(json.dumps(record, default=_to_builtin) + '\n')


def _to_builtin(value):
  return np.asarray(value).tolist()


def find_checkpoint(output_dir, checkpoint=None):
  """Resolves which checkpoint to evaluate: given, else best, else latest.

  Raises:
    UsageError: `output_dir` is not a run directory or has no checkpoint.
  """
  if checkpoint:
    path = checkpoint if checkpoint.endswith('.pkl.gz') else checkpoint + '.pkl.gz'
    if not os.path.exists(path):
      raise UsageError(f'Checkpoint {checkpoint!r} does not exist. Pass the '
                       f'path of a .pkl.gz file written by train.py, e.g. '
                       f'{os.path.join(output_dir, BEST_CHECKPOINT)}.')
    return path
  for name in (BEST_CHECKPOINT, LATEST_CHECKPOINT):
    path = os.path.join(output_dir, name)
    if os.path.exists(path):
      return path
  raise UsageError(f'{output_dir} holds no checkpoint ({LATEST_CHECKPOINT} or '
                   f'{BEST_CHECKPOINT}). Point --output_dir at a directory '
                   f'that train.py has trained in, or train one first.')
