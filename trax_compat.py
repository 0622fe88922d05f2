"""Keeps trax 1.4.1 (the newest release, from 2021) working on current JAX.

Import this module before anything imports trax; `models`, `data`, `train.py`
and `evaluate.py` all do. Every fix here is small, names the breakage it
repairs, and has a test in `tests/test_trax_compat.py` that fails without it.

Known breakages that are *not* patched here, because the toolkit does not take
those paths: trax's multi-device `pmap` training (it calls the removed
`jax.device_put_replicated`); the toolkit trains on one device per process.
"""

import contextlib
import io
import warnings

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


def apply():
  """Applies every fix once; later calls do nothing."""
  global _applied
  if _applied:
    return
  _silence_gym_notice()
  _patch_tree_unflatten()
  _restore_host_aliases()
  _quiet_gzip_mode_warning()
  _applied = True


_applied = False
apply()
