"""What a run directory holds, and the checks made before using one.

A run directory (train.py's --output_dir) holds `checkpoints/` (see
checkpoints.py), `config.gin`, `vocab.json`, `metrics.jsonl` and
TensorBoard summaries (`train/`, `eval/`), and `train.lock` while a
train.py trains in it.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

import gin
import numpy as np

from data.vocab import load_vocab as read_vocab, size_mismatch
from rnn_toolkit.errors import UsageError
from rnn_toolkit.storage import checkpoints
from rnn_toolkit.storage.atomic_files import write_text_atomically

if TYPE_CHECKING:  # trax is imported where it is used, after trax_compat
  from trax import layers as tl
  from trax import optimizers
  from trax import shapes

CONFIG_FILE = 'config.gin'
VOCAB_FILE = 'vocab.json'
METRICS_FILE = 'metrics.jsonl'
LEGACY_CHECKPOINT = 'model.pkl.gz'  # trax's own format, used by earlier versions
LOCK_FILE = 'train.lock'
# A model's input signature: one ShapeDtype, or one per input.
Signature = Union['shapes.ShapeDtype', tuple['shapes.ShapeDtype', ...]]


@contextlib.contextmanager
def training_lock(output_dir: str) -> Iterator[None]:
  """Holds `output_dir` for this process: one trainer per run directory.

  The lock is an flock on LOCK_FILE, which names its holder (pid and host).
  The kernel drops an flock when its process dies, so a lock left by a
  killed train.py is free and is taken over; the file is removed on
  release. Readers (evaluate.py, report.py) never take it. A directory this
  call created is removed again if nothing else was written to it.

  Raises:
    UsageError: another process holds the lock.
  """
  created = _missing_directories(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, LOCK_FILE)
  descriptor = _lock(path, output_dir)
  try:
    left_by = os.read(descriptor, 200).decode('utf-8', 'replace').strip()
    if left_by:
      print(f'{output_dir} was locked by {_holder(left_by)}, which has '
            f'ended without releasing it; taking it over.', file=sys.stderr)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)
    yield
  finally:
    _release(path, descriptor)
    for directory in created:  # the innermost first
      if os.path.isdir(directory) and not os.listdir(directory):
        os.rmdir(directory)


def _missing_directories(path):
  """The directories `os.makedirs(path)` would create, innermost first."""
  missing = []
  path = os.path.abspath(path)
  while not os.path.exists(path):
    missing.append(path)
    path = os.path.dirname(path)
  return missing


def _release(path, descriptor):
  """Removes the lock file (while still holding it, so that no other process
  can hold it meanwhile) and releases it."""
  try:
    if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
      os.unlink(path)
  except OSError:
    pass  # removed by hand: nothing to clean up
  os.close(descriptor)


def _lock(path, output_dir):
  """An open descriptor of `path` holding its exclusive flock."""
  while True:
    descriptor = _open_no_link(path)
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(descriptor, 200).decode('utf-8', 'replace').strip()
      os.close(descriptor)
      raise UsageError(
          f'{output_dir} is being trained in by {_holder(holder)} (it holds '
          f'{path}). Nothing was changed. Wait for that run to end or stop '
          f'it (SIGTERM saves a checkpoint), or choose another '
          f'--output_dir; evaluate.py and report.py can read the directory '
          f'meanwhile.') from None
    # The holder we waited on may have removed the file meanwhile: a lock on
    # a removed file holds nothing, so start again with the current file.
    try:
      if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
        return descriptor
    except FileNotFoundError:
      pass
    os.close(descriptor)


def _open_no_link(path):
  """Opens (creating) the lock file; a link planted under its name is
  refused rather than followed to a file that would then be overwritten."""
  try:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
  except OSError as e:
    if e.errno != errno.ELOOP:
      raise
    raise UsageError(f'{path} is a symbolic link, not the lock file train.py '
                     f'writes. Nothing was changed. Remove it, then rerun.'
                     ) from None


def _holder(text):
  """'process PID on host HOST' from a lock file's 'PID HOST'."""
  pid, _, host = text.partition(' ')
  return f'process {pid} on host {host or "unknown"}'


def load_vocab(output_dir: str, dataset: str) -> Any:
  """Returns the run's saved vocabulary, or None on a first start.

  Raises:
    UsageError: the vocabulary was built from another dataset.
  """
  path = os.path.join(output_dir, VOCAB_FILE)
  if not os.path.exists(path):
    return None
  vocab = read_vocab(path)
  if vocab.dataset not in (None, dataset):
    raise UsageError(
        f'{output_dir} was trained on dataset {vocab.dataset!r} and its '
        f'vocabulary ({path}) was built from it; this config reads '
        f'{dataset!r}. Use a new --output_dir for the other dataset.')
  return vocab


def check_not_legacy(output_dir: str) -> None:
  """Refuses a run directory whose checkpoint is in trax's own format."""
  if os.path.exists(os.path.join(output_dir, LEGACY_CHECKPOINT)):
    raise UsageError(
        f'{output_dir} holds a checkpoint in trax\'s own format '
        f'({LEGACY_CHECKPOINT}), written by an earlier version of this '
        f'toolkit; this one keeps all state in {checkpoints.SUBDIR}/ and '
        f'neither resumes nor evaluates the old format. Train again in a new '
        f'--output_dir.')


def check_writable(output_dir: str) -> None:
  """Raises UsageError unless output_dir (or its nearest parent) takes files."""
  target = os.path.abspath(output_dir)
  while not os.path.exists(target):
    target = os.path.dirname(target)
  if not os.path.isdir(target):
    raise UsageError(f'--output_dir {output_dir} cannot be created: {target} '
                     f'is a file, not a directory. Choose another --output_dir.')
  try:
    with tempfile.TemporaryFile(dir=target):
      pass
  except OSError as e:
    raise UsageError(f'Cannot write to {target} ({e.strerror}), so '
                     f'--output_dir {output_dir} cannot hold the run. Choose '
                     f'a writable --output_dir.') from None


def check_config(output_dir: str, restored: checkpoints.TrainingState,
                 config: str, allow_change: bool) -> None:
  """Refuses to resume with a config other than the checkpoint's, unless allowed."""
  if restored.config == config or allow_change:
    return
  changed = [line for line in difflib.unified_diff(
      restored.config.splitlines(), config.splitlines(), lineterm='', n=0)
             if line[:1] in '+-' and line[:3] not in ('+++', '---')]
  shown = '; '.join(f'{"checkpoint" if line[0] == "-" else "yours"}: '
                    f'`{line[1:]}`' for line in changed[:6])
  more = f' and {len(changed) - 6} more' if len(changed) > 6 else ''
  raise UsageError(
      f'The config differs from the one the checkpoint at step '
      f'{restored.step} in {output_dir} was trained with ({shown}{more}). '
      f'Nothing was changed. Rerun with the '
      f'original config, pass --allow_config_change to go on with this one, '
      f'or use a new --output_dir.')


def check_shapes(output_dir: str, restored: checkpoints.TrainingState,
                 model: tl.Layer, optimizer: optimizers.base.Optimizer,
                 input_signature: Signature) -> None:
  """Raises UsageError if the checkpoint's arrays don't fit model/optimizer."""
  weights, slots = planned_shapes(model, optimizer, input_signature)
  for what, saved, wanted in (
      ('model', [a.shape for a in restored.weights], weights),
      ('optimizer', [a.shape for a in restored.slots], slots)):
    if [tuple(s) for s in saved] != wanted:
      raise UsageError(
          f'{output_dir} holds a checkpoint of a different {what} '
          f'({len(saved)} arrays, e.g. {saved[:3]}; this config builds '
          f'{len(wanted)}, e.g. {wanted[:3]}). Nothing was changed there. Use '
          f'a new --output_dir for this config, or the config that trained '
          f'that run ({os.path.join(output_dir, CONFIG_FILE)}).')


def check_state_shapes(output_dir: str, restored: checkpoints.TrainingState,
                       model: tl.Layer, input_signature: Signature) -> None:
  """Raises UsageError if the checkpoint's model state doesn't fit `model`.

  Of the toolkit's models only a stateful language model has a state of
  any size: the recurrent states it carries, one row per stream. A resumed
  run must read as many streams as the one that saved them, and must
  stream if, and only if, it did.
  """
  from trax import fastmath  # pylint: disable=g-import-not-at-top
  _, state = model.weights_and_state_signature(input_signature)
  wanted = [tuple(a.shape) for a in fastmath.tree_flatten(state)]
  saved = [tuple(a.shape) for a in restored.state]
  if saved == wanted:
    return
  def carried(shapes):
    return [s for s in shapes if len(s) == 2]
  raise UsageError(
      f'{output_dir} holds a checkpoint whose model carries the recurrent '
      f'state of {_streams(carried(saved))}, but this config reads '
      f'{_streams(carried(wanted))}. Nothing was changed there. Resume with '
      f'the CharLMInputs.streaming and batch_size the run was trained with '
      f'({os.path.join(output_dir, CONFIG_FILE)}), or use a new --output_dir.')


def _streams(carried_shapes):
  if not carried_shapes:
    return 'no streams (it reads windows from a zero state)'
  return f'{carried_shapes[0][0]} streams'


def check_vocab_size(output_dir: str, restored: checkpoints.TrainingState,
                     model: Callable[..., tl.Layer], dimensions: dict[str, int],
                     input_signature: Signature) -> None:
  """Raises UsageError if the checkpoint was trained with another vocab.json."""
  from trax import fastmath  # pylint: disable=g-import-not-at-top

  def shapes_of(sizes):
    weights, _ = model(**sizes, mode='train').weights_and_state_signature(
        input_signature)
    return [tuple(w.shape) for w in fastmath.tree_flatten(weights)]

  error = size_mismatch(dimensions, [a.shape for a in restored.weights],
                        shapes_of, restored.step)
  if error:
    raise UsageError(f'{output_dir}: {error}')


def planned_shapes(
    model: tl.Layer, optimizer: optimizers.base.Optimizer,
    input_signature: Signature,
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
  """Shapes of the flat weights and optimizer slots a run would checkpoint."""
  from trax import fastmath  # pylint: disable=g-import-not-at-top
  weights, _ = model.weights_and_state_signature(input_signature)
  zeros = fastmath.nested_map(lambda w: np.zeros(w.shape, w.dtype), weights)
  slots, _ = optimizer.tree_init(zeros)
  return ([tuple(w.shape) for w in fastmath.tree_flatten(zeros)],
          [tuple(np.shape(s)) for s in checkpoints.flat_slots(slots)])


def save_operative_config(output_dir: str, step: int) -> None:
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
  write_text_atomically(path, config)


def append_metrics(output_dir: str, record: dict[str, Any]) -> None:
  """Appends one JSON record to metrics.jsonl."""
  with open(os.path.join(output_dir, METRICS_FILE), 'a') as f:
    f.write(json.dumps(record, default=_to_builtin) + '\n')


def truncate_metrics(output_dir: str, step: int) -> None:
  """Drops metrics.jsonl records after `step`, those of work not checkpointed.

  A run killed after an evaluation but before the next checkpoint repeats
  those steps when resumed; without this they would be recorded twice.
  """
  path = os.path.join(output_dir, METRICS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines if _is_record_until(line, step)]
  if len(kept) != len(lines):
    write_text_atomically(path, ''.join(kept))


def _is_record_until(line, step):
  try:
    return json.loads(line)['step'] <= step
  except (ValueError, KeyError, TypeError):
    return False  # a line cut short by a crash


def _to_builtin(value):
  return np.asarray(value).tolist()
