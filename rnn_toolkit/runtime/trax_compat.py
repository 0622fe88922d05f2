"""Keeps trax 1.4.1 (the newest release, from 2021) working on current JAX.

Import this module before anything imports trax; `models`, `data` and
every module of rnn_toolkit that uses trax do. Every fix here is small,
names the breakage it repairs, and has a test in `tests/test_trax_compat.py`
that fails without it.

Known breakage that is *not* patched but avoided: trax's multi-device `pmap`
training (it calls the removed `jax.device_put_replicated`, and assumes the
old `pmap`). `_see_one_logical_device` keeps trax off that path; the toolkit
spreads work over devices with `jax.sharding` instead (see `devices.py`).
"""

import contextlib
import inspect
import io
import sys
import warnings

from rnn_toolkit.runtime import console  # noqa: F401  (before trax imports TensorFlow)
import jax
import numpy as np


def _silence_gym_notice():
  """Imports gym quietly.

  trax imports gym (only for its RL code, which we never use) and gym 0.26
  prints a three-line deprecation notice to stderr on import, which would
  greet every user of train.py. Importing it once here with stderr captured
  keeps that notice out of the user's terminal.
  """
  with contextlib.redirect_stderr(io.StringIO()):
    import gym  # pylint: disable=g-import-not-at-top,unused-import


@contextlib.contextmanager
def _cheap_stack_while_importing_trax():
  """Makes importing trax take seconds instead of about a minute.

  trax's `assert_shape` decorator, applied 65 times as trax is imported,
  calls `inspect.stack()` to record where it was applied. `inspect.stack()`
  looks up the source of every frame on the stack; during an import most
  are importlib's frozen frames, for which inspect scans all of
  `sys.modules` (thousands of modules once TensorFlow is loaded): about a
  minute of train.py's start on a 2-core machine. trax reads only
  `stack()[1][0]`, the caller's frame, so while trax is imported
  `inspect.stack` returns frame records without their source lines.
  """
  original = inspect.stack

  def frames_only(context=1):
    del context
    frame, frames = sys._getframe(1), []  # pylint: disable=protected-access
    while frame is not None:  # FrameInfo without the source lookup
      code = frame.f_code
      frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno,
                                      code.co_name, None, None))
      frame = frame.f_back
    return frames

  inspect.stack = frames_only
  try:
    yield
  finally:
    inspect.stack = original


def _is_copied_leaf(tree, copy_from_tree):
  """Array-safe version of trax's `tree in copy_from_tree` test.

  `copy_from_tree` holds markers such as `None` and `()`. `in` compares with
  `==`, which on a jax Array against a tuple raises TypeError in current JAX
  (old JAX returned False). Arrays are never markers, so they never match.
  """
  if isinstance(tree, (np.ndarray, np.generic)) or hasattr(tree, 'dtype'):
    return False
  return any(tree is marker or (type(tree) is type(marker) and tree == marker)
             for marker in copy_from_tree)


def _tree_unflatten(flat, tree, copy_from_tree=None):
  """trax.fastmath.tree_unflatten with the array-safe marker test."""
  if copy_from_tree is not None and _is_copied_leaf(tree, copy_from_tree):
    return tree, flat
  if isinstance(tree, (list, tuple)):
    new_tree, rest = [], flat
    for t in tree:
      new_t, rest = _tree_unflatten(rest, t, copy_from_tree)
      new_tree.append(new_t)
    return (tuple(new_tree) if isinstance(tree, tuple) else new_tree), rest
  if isinstance(tree, dict):
    new_tree, rest = {}, flat
    for k in tree:
      new_tree[k], rest = _tree_unflatten(rest, tree[k], copy_from_tree)
    return new_tree, rest
  return flat[0], flat[1:]


def _patch_tree_unflatten():
  """Routes every caller of trax's tree_unflatten to the fixed version.

  Checkpoint restore (`Loop.load_checkpoint`) and `Layer.init_from_file`
  both go through it; without the fix resuming a run raises TypeError.
  """
  from trax import fastmath  # pylint: disable=g-import-not-at-top
  from trax.fastmath import numpy as trax_numpy  # pylint: disable=g-import-not-at-top
  trax_numpy.tree_unflatten = _tree_unflatten
  fastmath.tree_unflatten = _tree_unflatten


def _restore_host_aliases():
  """Points trax's `jax.host_count`/`jax.host_id` calls at their new names.

  JAX renamed them to `process_count`/`process_index`; the old names warn on
  every call (trax calls them each time a Loop is built) and are slated for
  removal.
  """
  jax.host_count = jax.process_count
  jax.host_id = jax.process_index


def _quiet_gzip_mode_warning():
  """Hides the FutureWarning trax's checkpoint writer raises on every save.

  trax opens `gzip.GzipFile(fileobj=f)` on a file opened for writing without
  naming the mode; Python warns that the default will change. The files it
  writes are correct on the Python versions this project pins.
  """
  warnings.filterwarnings('ignore', message='GzipFile was opened for writing',
                          category=FutureWarning)


def _see_one_logical_device():
  """Makes trax treat all devices as one, for data parallelism by sharding.

  trax reads the local device count to choose its `pmap` path, which no
  longer works on current JAX, and its `Loop` refuses any other count. With
  the count at 1 trax jits its step as on a single device; batches arrive
  already split over the device mesh and XLA partitions the step from that.
  For the same reason `tl.on_cpu`, with which trax pins optimizer slots
  (and some keys) to CPU device 0, leaves arrays where they are: pinned
  slots would clash with sharded batches (and with a GPU or TPU holding
  the weights).
  """
  from trax import layers as tl  # pylint: disable=g-import-not-at-top
  from trax.fastmath import jax as trax_jax  # pylint: disable=g-import-not-at-top
  from trax.layers import acceleration  # pylint: disable=g-import-not-at-top
  trax_jax.JAX_BACKEND['local_device_count'] = lambda: 1
  acceleration.on_cpu = tl.on_cpu = lambda x: x


def apply() -> None:
  """Applies every fix once; later calls do nothing."""
  global _applied
  if _applied:
    return
  _silence_gym_notice()
  with _cheap_stack_while_importing_trax():
    _patch_tree_unflatten()  # the first import of trax
  _restore_host_aliases()
  _quiet_gzip_mode_warning()
  _see_one_logical_device()
  _applied = True


_applied = False
apply()
