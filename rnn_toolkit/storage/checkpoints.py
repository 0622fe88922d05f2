"""A run's checkpoints: all training state, committed as one unit by orbax.

Each checkpoint is a directory OUTPUT_DIR/checkpoints/STEP written by
orbax-checkpoint: orbax writes it under a temporary name and renames it
once every file is in place, and lists only renamed (committed) steps, so
a crash at any moment leaves each checkpoint whole or absent. A
checkpoint holds two items:

  arrays: the flat model weights, optimizer slots, train- and eval-mode
    model state, the RNG key every step's randomness is folded from, and
    the loss of every step so far.
  meta (JSON): the step, the input pipeline's position, the evaluation
    history, the config the run was trained with and its hash, the SHA-256
    of every array, and the SHA-256 of all of that; both are checked on
    every restore.

The last `keep_last` checkpoints and the `keep_best` best by an evaluation
metric are kept. Older ones are pruned only once a new checkpoint is
committed and on disk (fsynced), so a power cut never leaves none; orbax
removes temporaries left by a crash.

Only verified damage (a checksum mismatch, a missing or truncated file, a
format that can't be decoded) makes a checkpoint `DamagedCheckpoint`, which
train.py may set aside. Any other failure while reading (permissions, too
many open files, memory) is `ReadFailed`: the checkpoint may well be intact,
so nothing is moved.
"""

import asyncio
import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from rnn_toolkit.errors import UsageError

SUBDIR = 'checkpoints'
DAMAGED_SUBDIR = 'damaged_checkpoints'  # where unreadable checkpoints are moved
# 2: the meta item carries its own checksum, and per-step optimizer metrics
# are stored. Format 1 checkpoints still load (their meta is unchecked).
FORMAT = 2
_READABLE_FORMATS = (1, 2)
_GROUPS = ('weights', 'slots', 'state', 'eval_state')
# How a metric ranks checkpoints: which way is better.
METRIC_MODES = {'loss': 'min', 'accuracy': 'max'}
# tensorstore's status codes for data that is missing, cut short or can't be
# decoded; any other code (PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...) is a
# failure to read, not damage.
_DAMAGE_STATUS = re.compile(r'^(NOT_FOUND|OUT_OF_RANGE|DATA_LOSS|'
                            r'FAILED_PRECONDITION): ')

# orbax warns each time a directory is opened read-only (every reader here
# does so on purpose) and each time a checkpoint comes without metrics
# (those saved between evaluations, on purpose too).
_EXPECTED_WARNINGS = ('Given directory is read only',
                      'did not provide metrics')
logging.getLogger('absl').addFilter(
    lambda record: not any(w in record.getMessage() for w in _EXPECTED_WARNINGS))


@dataclasses.dataclass
class TrainingState:
  """Everything needed to continue a run exactly where it stopped.

  Attributes:
    step: training steps done.
    weights: flat model weights (trax's `flatten_weights_and_state` order).
    slots: flat optimizer slots.
    state: flat train-mode model state.
    eval_state: flat eval-mode model state.
    rng: uint32[2], the key each step's randomness is folded from.
    train_loss: f32[step], the loss of steps 1..step (NaN where skipped).
    input_position: training batches drawn from the input pipeline.
    history: trax `History.to_dict()` of the evaluations so far.
    config: the gin config the run was trained with (see `config_hash`).
    optimizer_metrics: {name: f32[step]}, e.g. the gradient norm of every
      step (empty in format 1 checkpoints).
  """
  step: int
  weights: list[np.ndarray]
  slots: list[np.ndarray]
  state: list[np.ndarray]
  eval_state: list[np.ndarray]
  rng: np.ndarray
  train_loss: np.ndarray
  input_position: int
  history: dict[str, Any]
  config: str
  optimizer_metrics: dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)

  def config_hash(self) -> str:
    return text_hash(self.config)


def text_hash(text: str) -> str:
  return hashlib.sha256(text.encode('utf-8')).hexdigest()


def array_hash(array: np.ndarray) -> str:
  """SHA-256 of an array's dtype, shape and bytes."""
  array = np.ascontiguousarray(array)
  digest = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
  digest.update(array.tobytes())
  return digest.hexdigest()


# Test-only: seconds to pause inside every commit, after the files are
# written and before the rename, so fault-injection tests can kill a
# process mid-commit often (tests/fault_injection.py).
COMMIT_DELAY_ENV = 'RNN_TOOLKIT_TEST_COMMIT_DELAY'


def _delay_commits(seconds):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def delayed_finalize(self, *args, **kwargs):
    await asyncio.sleep(seconds)
    return await finalize(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = delayed_finalize


if os.environ.get(COMMIT_DELAY_ENV):
  _delay_commits(float(os.environ[COMMIT_DELAY_ENV]))


@contextlib.contextmanager
def _closed_loop_reports_held():
  """Holds back tensorstore's "Event loop is closed" reports during I/O,
  and asyncio's reports of orbax's failed write tasks.

  When one file of a checkpoint fails to write or read, orbax's event loop
  ends while tensorstore still finishes the item's other operations; their
  completion callbacks find the loop closed and Python would print each
  one as an unraisable traceback, during the call and for a while after.
  If the block succeeds, anything held is reported as usual; if it fails,
  the hook stays, since those operations belong to the failure the caller
  reports in one paragraph.
  """
  report, held = sys.unraisablehook, []

  def hold_closed_loop(unraisable):
    if (unraisable.exc_type is RuntimeError and
        str(unraisable.exc_value) == 'Event loop is closed'):
      held.append(unraisable)
    else:
      report(unraisable)

  # orbax's writes of the item's other files fail too; asyncio logs each
  # such task's exception ("Task exception was never retrieved") when the
  # task is collected, traceback and all.
  asyncio_logger, logged = logging.getLogger('asyncio'), []
  hold_task_reports = lambda record: not (
      record.getMessage().startswith('Task exception was never retrieved')
      and not logged.append(record))
  sys.unraisablehook = hold_closed_loop
  asyncio_logger.addFilter(hold_task_reports)
  yield
  sys.unraisablehook = report
  asyncio_logger.removeFilter(hold_task_reports)
  for unraisable in held:
    report(unraisable)
  for record in logged:
    asyncio_logger.handle(record)


class WriteFailed(UsageError):
  """A checkpoint could not be written (disk full, no permission, ...)."""


class DamagedCheckpoint(Exception):
  """A committed checkpoint that can't be read back as it was written."""


class ReadFailed(UsageError):
  """Reading a checkpoint failed for a reason other than damage to it."""


class Checkpoints:
  """The committed checkpoints of one run directory.

  Args:
    output_dir: the run directory; checkpoints live in its `checkpoints/`.
    keep_last: how many of the newest checkpoints to keep.
    keep_best: how many of the best evaluated checkpoints to keep as well.
    best_metric: the evaluation metric ranking checkpoints, e.g. 'loss'.
    best_mode: 'min' or 'max': whether a lower or higher metric is better.
    read_only: open without creating or cleaning anything (for readers).
  """

  def __init__(self, output_dir: str, keep_last: int = 3, keep_best: int = 1,
               best_metric: str = 'loss', best_mode: str = 'min',
               read_only: bool = False):
    if not (isinstance(keep_last, int) and isinstance(keep_best, int)
            and keep_last >= 1 and keep_best >= 0
            and best_mode in ('min', 'max')):
      raise UsageError(
          f'Checkpoints needs keep_last >= 1, keep_best >= 0 and best_mode '
          f"'min' or 'max' (got keep_last={keep_last}, keep_best={keep_best}, "
          f'best_mode={best_mode!r}). Fix the Checkpoints bindings.')
    self.directory = os.path.join(os.path.abspath(output_dir), SUBDIR)
    self.best_metric, self.best_mode = best_metric, best_mode
    self._keep_last, self._keep_best = keep_last, keep_best
    rank = lambda metrics: metrics[best_metric]
    # orbax would prune inside save(), before the new checkpoint is fsynced;
    # `_prune` does it after.
    policy = checkpoint_managers.LatestN(n=None)  # keeps every step
    if not read_only:
      os.makedirs(self.directory, exist_ok=True)
    self._manager = _while_pruned(lambda: ocp.CheckpointManager(
        self.directory, item_names=('arrays', 'meta'),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=rank, best_mode=best_mode,
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,
            # Saving in the training thread costs a fraction of a second per
            # checkpoint at this scale, and a failed write then stops the run
            # at that step with one message, rather than surfacing later
            # from orbax's background threads amid their tracebacks.
            enable_async_checkpointing=False,
            create=False, cleanup_tmp_directories=not read_only,
            # Each process works with the checkpoints on its own: only
            # process 0 writes, every process reads, none waits for another.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(),
                active_processes={jax.process_index()}))))

  def check_ranking(self,
                    metric_modes: Optional[dict[str, str]] = None) -> None:
    """Raises UsageError unless `best_metric` and `best_mode` fit the metrics.

    Args:
      metric_modes: {name: 'min' or 'max'} of the metrics every evaluation
        reports; default METRIC_MODES.
    """
    modes = metric_modes or METRIC_MODES
    if self.best_metric not in modes:
      close = difflib.get_close_matches(str(self.best_metric), sorted(modes),
                                        n=2, cutoff=0.4)
      hint = f' Did you mean {" or ".join(map(repr, close))}?' if close else ''
      raise UsageError(
          f'Checkpoints.best_metric = {self.best_metric!r} is not a metric '
          f'of the evaluations, which report {", ".join(sorted(modes))}.'
          f'{hint} Fix the Checkpoints.best_metric binding.')
    if modes[self.best_metric] != self.best_mode:
      raise UsageError(
          f'Checkpoints.best_mode = {self.best_mode!r} would keep the worst '
          f'checkpoints by {self.best_metric!r}, for which '
          f'{modes[self.best_metric]!r} is better. Bind Checkpoints.best_mode '
          f'= {modes[self.best_metric]!r}.')

  def steps(self) -> list[int]:
    """Committed steps, oldest first."""
    self._reload()
    return sorted(self._manager.all_steps())

  def best_step(self) -> Optional[int]:
    """The committed step with the best `best_metric`; None if none has it."""
    self._reload()
    return self._manager.best_step()

  def close(self) -> None:
    """Waits for orbax's background metadata writes and stops its threads."""
    self._manager.close()

  def _reload(self):
    """Re-lists the directory, where another process may commit or prune."""
    _while_pruned(self._manager.reload)

  def save(self, state: TrainingState,
           metrics: Optional[dict[str, float]] = None) -> None:
    """Writes and commits `state` as checkpoint `state.step`.

    Args:
      state: the TrainingState; its arrays must already be host (NumPy) copies.
      metrics: the evaluation metrics at this step, used to rank it.

    Raises:
      WriteFailed: the checkpoint could not be written (nothing is committed).
    """
    arrays, meta = _to_items(state)
    with self._write_errors_reported(state.step):
      self._manager.save(
          state.step, metrics=metrics,
          args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                  meta=ocp.args.JsonSave(meta)))
      # orbax's rename makes the commit atomic for other processes; this
      # makes it durable if the machine, not just the process, goes down.
      _fsync_tree(os.path.join(self.directory, str(state.step)))
    self._prune()

  def _prune(self):
    """Deletes the checkpoints neither among the last nor the best kept.

    The new checkpoint is committed by now, so a failure here is only
    reported: the next save prunes again.
    """
    try:
      steps = self.steps()
      keep = set(steps[-self._keep_last:]) | set(self._best(steps))
      for step in steps:
        if step not in keep:
          self._manager.delete(step)
    except (OSError, ValueError) as e:
      logging.warning('Pruning old checkpoints in %s failed (%s); they are '
                      'kept for now.', self.directory, e)

  def _best(self, steps):
    """The `keep_best` best of `steps` by a finite `best_metric`; of equal
    ones, the newest."""
    sign = 1 if self.best_mode == 'min' else -1
    ranked = sorted((sign * value, -step) for step in steps
                    if math.isfinite(value := self._metric(step)))
    return [-negated_step for _, negated_step in ranked[:self._keep_best]]

  def _metric(self, step):
    """`best_metric` of checkpoint `step`, or NaN if it was saved without."""
    metrics = self._manager.metrics(step) or {}
    return float(metrics.get(self.best_metric, math.nan))

  @contextlib.contextmanager
  def _write_errors_reported(self, step):
    """Turns orbax's error for a failed write into WriteFailed.

    orbax's threads also log such an error, traceback and all, and
    tensorstore's writes left running print tracebacks of their own (see
    `_closed_loop_reports_held`). Both are held back while writing and shown
    only if the write did not fail, since WriteFailed then says the same in
    one paragraph.
    """
    held = []
    absl_logger = logging.getLogger('absl')
    hold = lambda record: not (record.levelno >= logging.ERROR and
                               f'{os.sep}orbax{os.sep}' in record.pathname
                               and not held.append(record))
    absl_logger.addFilter(hold)
    try:
      with _closed_loop_reports_held():
        yield
    except (OSError, ValueError, RuntimeError) as e:
      absl_logger.removeFilter(hold)
      raise self._write_failed(e, step) from None
    absl_logger.removeFilter(hold)
    for record in held:
      absl_logger.handle(record)

  def _write_failed(self, error, step):
    code = re.search(r"os_error_code='(\d+)'", str(error))
    reason = (os.strerror(int(code.group(1))) if code
              else ' '.join(str(error).split())[-300:])
    committed = [s for s in self.steps() if s != step]
    newest = (f'the newest committed one, step {committed[-1]}, is intact'
              if committed else 'no checkpoint had been committed')
    return WriteFailed(
        f'Writing a checkpoint to {self.directory} failed ({reason}); '
        f'{newest}. Free space or fix the directory, then rerun the same '
        f'command to resume.')

  def restore(self, step: int) -> TrainingState:
    """Reads checkpoint `step` and checks it against its recorded hashes.

    Raises:
      DamagedCheckpoint: a file is missing, truncated or altered.
      ReadFailed: reading failed for another reason; the checkpoint may be
        intact.
    """
    try:
      items = self._read_items(step)
    except Exception as e:  # pylint: disable=broad-except
      reason = ' '.join(str(e).split())[:300] or type(e).__name__
      if is_damage(e):
        raise DamagedCheckpoint(f'it could not be read ({reason})') from None
      raise ReadFailed(
          f'Reading checkpoint {step} in {self.directory} failed '
          f'({type(e).__name__}: {reason}). That is not damage the '
          f'checkpoint shows, so nothing was moved or changed. Fix the cause '
          f'(permissions, open-file or memory limits, the file system) and '
          f'rerun.') from None
    return _from_items(items['arrays'], items['meta'])

  def _read_items(self, step):
    with _closed_loop_reports_held():
      return self._manager.restore(step, args=ocp.args.Composite(
          arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))

  def restore_newest_good(
      self) -> tuple[Optional[TrainingState], list[tuple[int, str]]]:
    """The newest checkpoint that reads back intact.

    Returns:
      (state or None, damaged) where `damaged` lists (step, reason) for every
      newer checkpoint that failed its checks.
    """
    damaged = []
    for step in reversed(self.steps()):
      try:
        return self.restore(step), damaged
      except DamagedCheckpoint as e:
        damaged.append((step, str(e)))
    return None, damaged

  def set_aside(self, step: int) -> str:
    """Moves checkpoint `step` to DAMAGED_SUBDIR, out of orbax's sight."""
    target = os.path.join(os.path.dirname(self.directory), DAMAGED_SUBDIR,
                          f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return target


def is_damage(error: BaseException) -> bool:
  """Whether an error from reading a checkpoint shows damage to its files.

  Missing files, bytes cut short and contents that can't be decoded are
  damage. Permissions, resource limits and the like are not.
  """
  if isinstance(error, (FileNotFoundError, json.JSONDecodeError,
                        UnicodeDecodeError)):
    return True
  if isinstance(error, KeyError):  # orbax: an item of the step is missing
    return 'was not found in the checkpoint' in str(error)
  # tensorstore reports its failures as ValueError('CODE: ...').
  return type(error) is ValueError and bool(_DAMAGE_STATUS.match(str(error)))


def flat_slots(slots: Any) -> list[Any]:
  """Optimizer slots as a flat list; weightless layers' empty slots left out."""
  from trax import fastmath  # pylint: disable=g-import-not-at-top
  return [s for s in fastmath.tree_flatten(slots)
          if not (s is None or (isinstance(s, tuple) and not s))]


def _fsync_tree(directory):
  """Flushes every file and directory entry below `directory`, and its own."""
  paths = [os.path.dirname(directory)]
  for root, _, files in os.walk(directory):
    paths += [root] + [os.path.join(root, name) for name in files]
  for path in paths:
    descriptor = os.open(path, os.O_RDONLY)
    try:
      os.fsync(descriptor)
    finally:
      os.close(descriptor)


def _while_pruned(list_steps, attempts=5):
  """Calls `list_steps`, again if a training run pruned a step meanwhile.

  Orbax lists a step directory, then opens it, then checks it is a directory;
  a step pruned in between shows up as FileNotFoundError or, when it vanishes
  between orbax's `exists()` and `is_dir()`, as NotADirectoryError.
  """
  for attempt in range(attempts):
    try:
      return list_steps()
    except (FileNotFoundError, NotADirectoryError):
      if attempt == attempts - 1:
        raise
      time.sleep(0.05)


def _to_items(state):
  """TrainingState -> (dict of arrays, JSON-able meta) as stored."""
  arrays = {'rng': np.asarray(state.rng),
            'train_loss': np.asarray(state.train_loss, np.float32)}
  for group in _GROUPS:
    for i, array in enumerate(getattr(state, group)):
      arrays[f'{group}_{i:04d}'] = np.asarray(array)
  metric_names = sorted(state.optimizer_metrics)
  for i, name in enumerate(metric_names):
    arrays[f'optimizer_metric_{i:04d}'] = np.asarray(
        state.optimizer_metrics[name], np.float32)
  meta = {
      'format': FORMAT, 'step': state.step,
      'input_position': state.input_position,
      'history': json.loads(json.dumps(state.history, default=_to_builtin)),
      'config': state.config, 'config_hash': state.config_hash(),
      'counts': {g: len(getattr(state, g)) for g in _GROUPS},
      'optimizer_metrics': metric_names,
      'arrays': {name: {'shape': list(a.shape), 'dtype': a.dtype.str,
                        'sha256': array_hash(a)}
                 for name, a in arrays.items()},
  }
  meta['meta_sha256'] = _meta_hash(meta)
  return arrays, meta


def _meta_hash(meta):
  """SHA-256 of the meta item without its own hash, as canonical JSON."""
  fields = {k: v for k, v in meta.items() if k != 'meta_sha256'}
  return text_hash(json.dumps(fields, sort_keys=True))


def _from_items(arrays, meta):
  """The stored items -> TrainingState, after checking every array's hash."""
  if meta.get('format') not in _READABLE_FORMATS:
    raise DamagedCheckpoint(f'its format {meta.get("format")!r} is not one '
                            f'of {_READABLE_FORMATS}')
  if meta['format'] >= 2 and meta.get('meta_sha256') != _meta_hash(meta):
    raise DamagedCheckpoint('its metadata (step, input position, history, '
                            'config) does not match its checksum')
  if sorted(arrays) != sorted(meta['arrays']):
    raise DamagedCheckpoint('its arrays differ from the ones it recorded')
  for name, array in arrays.items():
    if array_hash(array) != meta['arrays'][name]['sha256']:
      raise DamagedCheckpoint(f'array {name!r} does not match its checksum')
  groups = {g: [np.asarray(arrays[f'{g}_{i:04d}'])
                for i in range(meta['counts'][g])] for g in _GROUPS}
  if meta['config_hash'] != text_hash(meta['config']):
    raise DamagedCheckpoint('its config does not match its checksum')
  optimizer_metrics = {
      name: np.asarray(arrays[f'optimizer_metric_{i:04d}'])
      for i, name in enumerate(meta.get('optimizer_metrics', []))}
  return TrainingState(
      step=meta['step'], rng=np.asarray(arrays['rng']),
      train_loss=np.asarray(arrays['train_loss']),
      input_position=meta['input_position'], history=meta['history'],
      config=meta['config'], optimizer_metrics=optimizer_metrics, **groups)


def _to_builtin(value):
  return np.asarray(value).tolist()
