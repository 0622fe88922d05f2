"""What a run directory holds, and the checks made before using one.

A run directory (train.py's --output_dir) holds trax checkpoints
(`model.pkl.gz` with `model.weights.npy.gz` and `model.opt_slots0.npy.gz`,
and `lowest_loss.*` for the best evaluation loss), `config.gin`,
`vocab.json`, `metrics.jsonl` and TensorBoard summaries.
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


def load_or_build_vocab(output_dir, inputs):
  """Returns the run's vocabulary, building and saving it on the first start."""
  path = os.path.join(output_dir, VOCAB_FILE)
  if os.path.exists(path):
    return CharVocab.load(path)
  vocab = inputs.build_vocab()
  vocab.save(path)
  return vocab


def read_checkpoint(path):
  """Returns the trax checkpoint dictionary at `path` (a .pkl.gz file)."""
  with gzip.open(path, 'rb') as f:
    return pickle.load(f)


def checkpoint_weight_shapes(path):
  """Shapes of the flat weights stored beside the checkpoint at `path`."""
  from trax import layers as tl  # pylint: disable=g-import-not-at-top
  compresslevel = read_checkpoint(path)['flat_weights']
  weights = tl.np_from_file(path[:-len('pkl.gz')] + 'weights.npy.gz',
                            compresslevel=compresslevel)
  return [tuple(w.shape) for w in weights]


def model_weight_shapes(model, input_signature):
  """Shapes of `model`'s flat weights for inputs of `input_signature`."""
  from trax import layers as tl  # pylint: disable=g-import-not-at-top
  weights, _ = model.weights_and_state_signature(input_signature)
  return [tuple(w.shape) for w in tl.flatten_weights_and_state(weights, ())[0]]


def check_resumable(output_dir, model, input_signature):
  """Returns the step of the checkpoint in `output_dir` (0 if none).

  Raises:
    UsageError: the checkpoint there was written by a model of another
      shape, so resuming would fail (and training on would overwrite it).
  """
  path = os.path.join(output_dir, LATEST_CHECKPOINT)
  if not os.path.exists(path):
    return 0
  saved = checkpoint_weight_shapes(path)
  wanted = model_weight_shapes(model, input_signature)
  if saved != wanted:
    raise UsageError(
        f'{output_dir} holds a checkpoint of a different model ({len(saved)} '
        f'weight arrays, e.g. {saved[:3]}; this config builds {len(wanted)}, '
        f'e.g. {wanted[:3]}). Nothing was changed there. Use a new '
        f'--output_dir for this config, or the config that trained that run '
        f'({os.path.join(output_dir, CONFIG_FILE)}).')
  return int(read_checkpoint(path)['step'])


def save_operative_config(output_dir):
  """Writes gin's operative config (every value the run used) to config.gin."""
  path = os.path.join(output_dir, CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    f.write(gin.operative_config_str())
  os.replace(path + '.tmp', path)


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
