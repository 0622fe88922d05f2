"""Which runs the Elman recurrence here: the C++ kernels or XLA's scan.

Which is faster depends on the CPU more than on any rule: its vector width,
its L2 cache (whether W_hh stays in it), its core count. So on first use
for a shape, both are timed, forward and backward, and the faster one is
kept, in memory and in

    $TOOLKIT_CACHE_DIR (default ~/.cache/trax_rnn_toolkit)/kernel_choice-<key>.json

where the key hashes the kernels' build (source, flags, compiler, jaxlib
version, CPU flags) and the CPU's model and L2 cache, so another machine,
another jaxlib or changed kernels decide afresh. Shapes share a decision
by bucket: the rows (one device's share of the batch) and the units, each
rounded up to a power of two. Timing a bucket takes a second or two, once
per machine. A later run reads the decision back, so a resumed training
runs the same code as the run it resumes.

TOOLKIT_RNN_KERNEL chooses: 'auto' (the default) as above, 'kernel' the
kernels wherever they are built, 'xla' XLA's scan.
"""

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import pathlib
import platform
import statistics
import threading
import time
from collections.abc import Iterator

import jax
import numpy as np

from models import elman_kernel

MODES = ('auto', 'kernel', 'xla')
# Work per timed call, in multiply-adds of the recurrence: 64 steps up to
# 256 rows of 256 units (~30 ms a call), fewer beyond, but at least 16: with
# fewer, the costs paid once per call (the weight gradients' products)
# would weigh more than in training and tilt the choice. A bucket takes
# 1-5 s to time.
_WORK_PER_CALL = 4e9
_MIN_STEPS, _MAX_STEPS = 16, 64
_TIMED_CALLS = 7

_decided: dict[str, dict] = {}
_lock = threading.Lock()
_forced = threading.local()


def mode() -> str:
  """TOOLKIT_RNN_KERNEL, checked: 'auto', 'kernel' or 'xla'."""
  choice = os.environ.get('TOOLKIT_RNN_KERNEL', 'auto')
  if choice not in MODES:
    raise ValueError(
        f"TOOLKIT_RNN_KERNEL={choice!r}: use 'auto' (time the CPU kernels "
        "against XLA's scan once per shape, and keep the faster), 'kernel' "
        "(the kernels wherever they build) or 'xla' (XLA's scan).")
  return choice


def kernels_usable() -> bool:
  """Whether the kernels may run at all: not TOOLKIT_RNN_KERNEL=xla, on the
  CPU, and built."""
  return mode() != 'xla' and elman_kernel.available()


def use_kernels(rows: int, units: int) -> bool:
  """Whether the kernels run the recurrence for `rows` rows (one device's)
  of `units` units: timed once per bucket under 'auto'."""
  if not kernels_usable():
    return False
  forced = getattr(_forced, 'choice', None)
  if forced is not None:
    return forced
  if mode() == 'kernel':
    return True
  return decision(rows, units)['kernel']


def bucket(rows: int, units: int) -> str:
  """The bucket of a shape: each size rounded up to a power of two."""
  up = lambda n: 1 << max(0, int(n) - 1).bit_length()
  return f'{up(rows)}x{up(units)}'


def decision(rows: int, units: int) -> dict:
  """The record of the bucket of (rows, units): {'kernel': bool,
  'kernel_ms': ..., 'xla_ms': ..., 'steps': ...}, read from the cache or
  timed now and stored."""
  key = bucket(rows, units)
  with _lock:
    decisions = _decided.setdefault(_cache_key(), _read(_cache_file()))
    if key not in decisions:
      decisions[key] = _measure_elsewhere(*map(int, key.split('x')))
      _write(_cache_file(), decisions)
      logging.info('Elman recurrence, %s rows x units: %s (kernels %.2f ms, '
                   "XLA's scan %.2f ms, %d steps forward and back)", key,
                   'kernels' if decisions[key]['kernel'] else "XLA's scan",
                   decisions[key]['kernel_ms'], decisions[key]['xla_ms'],
                   decisions[key]['steps'])
    return dict(decisions[key])


def hold(rows: int, units: int, kernel: bool) -> None:
  """Holds `kernel` as the decision for the bucket of (rows, units) in this
  process, without timing it or writing it to the cache (tests use it to
  know which path each shape takes)."""
  with _lock:
    decisions = _decided.setdefault(_cache_key(), _read(_cache_file()))
    decisions[bucket(rows, units)] = {'kernel': kernel, 'held': True}


def forget_in_memory() -> None:
  """Drops the decisions held in memory (not the cache file)."""
  with _lock:
    _decided.clear()


@contextlib.contextmanager
def forced(kernel: bool) -> Iterator[None]:
  """Runs the kernels (True) or XLA's scan (False) in this thread, whatever
  was decided: what the timing runs."""
  before = getattr(_forced, 'choice', None)
  _forced.choice = kernel
  try:
    yield
  finally:
    _forced.choice = before


def _measure_elsewhere(rows, units):
  """measure(), in a thread of its own: called while a function is being
  traced, it must run its own computations, outside that trace (JAX's
  trace state is per thread)."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(measure, rows, units).result()


def measure(rows: int, units: int) -> dict:
  """Times a training pass (outputs and every gradient) of the recurrence
  with the kernels and with XLA's scan at [rows, steps, units], in turns;
  the record keeps the medians and the faster one."""
  from models import recurrence  # pylint: disable=g-import-not-at-top
  steps = int(np.clip(_WORK_PER_CALL / (rows * units * units * 3),
                      _MIN_STEPS, _MAX_STEPS))
  rng = np.random.default_rng(0)
  x_proj = rng.normal(size=(rows, steps, units)).astype(np.float32)
  h0 = np.zeros((rows, units), np.float32)
  w_hh = (rng.normal(size=(units, units)) / np.sqrt(units)).astype(np.float32)

  def loss(x_proj, h0, w_hh):
    outputs, h_last = recurrence.elman_scan(x_proj, None, h0, w_hh)
    return outputs.sum() + h_last.sum()

  calls = {}
  for kernel in (True, False):
    with forced(kernel):
      # Traced (lowered) while the choice is in force.
      compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
          x_proj, h0, w_hh).compile()
    calls[kernel] = lambda compiled=compiled: jax.block_until_ready(
        compiled(x_proj, h0, w_hh))
  times = {True: [], False: []}
  for _ in range(2):  # warm-up
    for call in calls.values():
      call()
  for _ in range(_TIMED_CALLS):
    for kernel, call in calls.items():
      began = time.perf_counter()
      call()
      times[kernel].append((time.perf_counter() - began) * 1e3)
  kernel_ms, xla_ms = (statistics.median(times[k]) for k in (True, False))
  return {'kernel': kernel_ms < xla_ms, 'kernel_ms': round(kernel_ms, 3),
          'xla_ms': round(xla_ms, 3), 'steps': steps}


def _cache_key():
  """The kernels' build for this instruction set (source, flags, compiler,
  jaxlib, CPU flags), and the CPU's model and caches."""
  return hashlib.sha256('\0'.join([
      elman_kernel.cache_key(), _cpu_model(), str(_cache_sizes()),
      jax.__version__]).encode()).hexdigest()[:16]


def _cache_file():
  return elman_kernel.cache_dir() / f'kernel_choice-{_cache_key()}.json'


def _read(path: pathlib.Path) -> dict:
  """The decisions recorded in `path`; none if it is missing, unreadable or
  not private (elman_kernel.cache_dir_problem)."""
  if elman_kernel.cache_dir_problem(path.parent) is not None:
    return {}
  try:
    recorded = json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as error:
    logging.warning('The kernel decisions in %s could not be read (%s); the '
                    'shapes used are timed again.', path, error)
    return {}
  decisions = recorded.get('decisions') if isinstance(recorded, dict) else None
  if not isinstance(decisions, dict) or not all(
      isinstance(d, dict) and isinstance(d.get('kernel'), bool)
      for d in decisions.values()):
    logging.warning('The kernel decisions in %s are not in the expected form; '
                    'the shapes used are timed again.', path)
    return {}
  return decisions


def _write(path: pathlib.Path, decisions: dict) -> None:
  """Writes the decisions, merged with any another process wrote since,
  atomically (a reader never sees half a file); not where the directory is
  not private."""
  if elman_kernel.cache_dir_problem(path.parent) is not None:
    return
  merged = {**_read(path), **decisions}
  record = {'cpu': _cpu_model(), 'caches': _cache_sizes(),
            'instruction_set': elman_kernel.isa(), 'jax': jax.__version__,
            'decisions': dict(sorted(merged.items()))}
  scratch = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  scratch.write_text(json.dumps(record, indent=1) + '\n')
  os.replace(scratch, path)


def _cpu_model():
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _cache_sizes():
  """The CPU's caches from Linux sysfs, e.g. ['L1 Data 32K', 'L2 Unified
  1024K', ...]; empty where they can't be read."""
  sizes = []
  for index in sorted(pathlib.Path('/sys/devices/system/cpu/cpu0/cache').glob(
      'index*')):
    try:
      sizes.append(' '.join((index / name).read_text().strip()
                            for name in ('level', 'type', 'size')))
    except OSError:
      pass
  return sizes
