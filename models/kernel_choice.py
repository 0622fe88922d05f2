"""Which runs the Elman recurrence here: the C++ kernels or XLA's scan.

Which is faster depends on the CPU more than on any rule: its vector width,
its L2 cache (whether W_hh stays in it), its core count. So on first use
for a shape, both are timed, forward and backward, and the faster one is
kept, in memory and in

    $TOOLKIT_CACHE_DIR (default ~/.cache/trax_rnn_toolkit)/kernel_choice-<key>.json

where the key hashes the kernels' build (source, flags, compiler, jaxlib
version, CPU flags), the CPU's model and caches, the cores the process may
use and JAX's device count, so another machine, another jaxlib or changed
kernels decide afresh. Shapes share a decision by bucket: the rows (one
device's share of the batch) and the units, each rounded up to a power of
two. Timing a bucket takes 1-5 s (up to a minute for the widest layers),
once per machine. A later run reads the decision back, so a resumed
training runs the same code as the run it resumes.

TOOLKIT_RNN_KERNEL chooses: 'auto' (the default) as above, 'kernel' the
kernels wherever they are built, 'xla' XLA's scan.
"""

import concurrent.futures
import contextlib
import functools
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

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # not POSIX: processes may time the same bucket twice
  fcntl = None
import jax
import numpy as np

from models import elman_kernel

MODES = ('auto', 'kernel', 'xla')
# Work per timed call, in multiply-adds of the recurrence: 64 steps up to
# 256 rows of 256 units (~30 ms a call), fewer beyond, but at least 16: with
# fewer, the costs paid once per call (the weight gradients' products)
# would weigh more than in training and tilt the choice.
_WORK_PER_CALL = 4e9
_MIN_STEPS, _MAX_STEPS = 16, 64
# Buckets of more rows are timed at this many: beyond it both paths' cost
# grows in proportion to the rows, and timing stays within seconds.
_MAX_TIMED_ROWS = 256
_TIMED_CALLS, _TIMED_CALLS_IF_SLOW, _SLOW_MS = 7, 3, 300

_decided: dict[str, dict] = {}  # cache key -> bucket -> record
_held: dict[str, tuple[bool, bool]] = {}  # bucket -> (training, inference)
_lock = threading.RLock()
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
  """Whether the kernels may run at all: not TOOLKIT_RNN_KERNEL=xla nor
  `portable()`, on the CPU, and built."""
  return (mode() != 'xla' and getattr(_forced, 'choice', None) is not False
          and elman_kernel.available())


def use_kernels(rows: int, units: int, may_time: bool = True,
                pass_: str = 'training') -> bool:
  """Whether the kernels run the recurrence for `rows` rows (one device's)
  of `units` units, for `pass_`: 'training' (forward and backward) or
  'forward' (alone, as in inference); timed once per bucket under 'auto'.
  With `may_time` False (inside XLA's partitioner, where nothing may be
  run), a bucket not decided yet runs XLA's scan, with a warning."""
  if not kernels_usable():
    return False
  forced = getattr(_forced, 'choice', None)
  if forced is not None:
    return forced
  if mode() == 'kernel':
    return True
  record = decision(rows, units, may_time)
  return record['kernel' if pass_ == 'training' else 'forward_kernel']


def bucket(rows: int, units: int) -> str:
  """The bucket of a shape: each size rounded up to a power of two."""
  up = lambda n: 1 << max(0, int(n) - 1).bit_length()
  return f'{up(rows)}x{up(units)}'


def decision(rows: int, units: int, may_time: bool = True) -> dict:
  """The record of the bucket of (rows, units): {'kernel': bool,
  'kernel_ms': ..., 'xla_ms': ..., 'steps': ..., 'rows': ...}, held, read
  from the cache, or timed now and stored."""
  key = bucket(rows, units)
  if key in _held:
    kernel, forward_kernel = _held[key]
    return {'kernel': kernel, 'forward_kernel': forward_kernel, 'held': True}
  with _lock:
    decisions = _decisions()
    if key not in decisions:
      if not may_time:
        logging.warning(
            'The Elman recurrence of %s rows x units was not timed before '
            "XLA partitioned the step, so it runs XLA's scan there.", key)
        return {'kernel': False, 'forward_kernel': False, 'untimed': True}
      decisions[key] = _decide_now(key)
    return dict(decisions[key])


def hold(rows: int, units: int, kernel: bool,
         forward_kernel: bool | None = None) -> None:
  """Holds `kernel` (training) and `forward_kernel` (inference; by default
  `kernel`) as the decisions for the bucket of (rows, units) in this
  process, without timing them; never written to the cache (tests use it
  to know which path each shape takes)."""
  _held[bucket(rows, units)] = (kernel, kernel if forward_kernel is None
                                else forward_kernel)


def forget_in_memory() -> None:
  """Drops the decisions held or read in memory (not the cache file)."""
  with _lock:
    _decided.clear()
    _held.clear()


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


def portable() -> contextlib.AbstractContextManager[None]:
  """Traces XLA's scan everywhere in this thread, the CPU's branch too.

  jax.export refuses the kernels (custom calls with no compatibility
  guarantee), and an artifact must run on any CPU, not only one like this
  machine, so exported functions are traced under this
  (rnn_toolkit/evaluation/export.py). It acts when a function is traced:
  a jax.jit function traced before, outside it, keeps that trace.
  """
  return forced(False)


def _decisions():
  """This machine's decisions in memory, read from its file once."""
  key = _cache_key()
  if key not in _decided:
    _decided[key] = _read(_cache_file())
  return _decided[key]


def _decide_now(key):
  """Times the bucket `key` and stores the record. Processes on one machine
  take turns (a lock file): each times on cores the others are not timing
  on, and takes a record another wrote while it waited."""
  path = _cache_file()
  with _file_lock(path):
    recorded = _read(path).get(key)
    if recorded is not None:
      return recorded
    rows, units = map(int, key.split('x'))
    try:
      record = _measure_elsewhere(rows, units)
    except Exception as error:  # pylint: disable=broad-except
      # Whatever went wrong (memory, a kernel's error), the layer still
      # runs: on XLA's scan, this process only.
      logging.warning("Timing the Elman recurrence of %s rows x units failed "
                      "(%s), so it runs XLA's scan.", key, error)
      return {'kernel': False, 'forward_kernel': False, 'failed': str(error)}
    _write(path, key, record)
  name = lambda kernel: 'kernels' if kernel else "XLA's scan"
  logging.info('Elman recurrence, %s rows x units, %d rows and %d steps '
               'timed: training on %s (kernels %.2f ms, XLA %.2f ms), '
               'inference on %s (%.2f ms, %.2f ms)', key, record['rows'],
               record['steps'], name(record['kernel']), record['kernel_ms'],
               record['xla_ms'], name(record['forward_kernel']),
               record['forward_kernel_ms'], record['forward_xla_ms'])
  return record


@contextlib.contextmanager
def _file_lock(path):
  """An exclusive lock on `path`.lock, where the directory is private and
  the platform has flock; otherwise none."""
  if fcntl is None or elman_kernel.cache_dir_problem(path.parent) is not None:
    yield
    return
  with open(path.with_name(path.name + '.lock'), 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _measure_elsewhere(rows, units):
  """measure(), in a thread of its own: called while a function is being
  traced, it must run its own computations, outside that trace (JAX's
  trace state is per thread)."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(measure, rows, units).result()


def measure(rows: int, units: int) -> dict:
  """Times a training pass (outputs and every gradient) and a forward pass
  of the recurrence with the kernels and with XLA's scan at [rows, steps,
  units] (rows at most _MAX_TIMED_ROWS), in turns, each first in every
  other round; the record keeps the medians and the faster of each."""
  from models import recurrence  # pylint: disable=g-import-not-at-top
  rows = min(rows, _MAX_TIMED_ROWS)
  steps = int(np.clip(_WORK_PER_CALL / (rows * units * units * 3),
                      _MIN_STEPS, _MAX_STEPS))
  rng = np.random.default_rng(0)
  args = jax.device_put((
      rng.normal(size=(rows, steps, units)).astype(np.float32),
      np.zeros((rows, units), np.float32),
      (rng.normal(size=(units, units)) / np.sqrt(units)).astype(np.float32)))

  def loss(x_proj, h0, w_hh):
    outputs, h_last = recurrence.elman_scan(x_proj, None, h0, w_hh)
    return outputs.sum() + h_last.sum()

  def timed(pass_fn):
    """{kernel?: [ms, ...]} of pass_fn, compiled once for each path."""
    calls = {}
    for kernel in (True, False):
      with forced(kernel):  # traced (lowered) while the choice is in force
        compiled = jax.jit(pass_fn).lower(*args).compile()
      calls[kernel] = lambda compiled=compiled: jax.block_until_ready(
          compiled(*args))
    times = {True: [], False: []}
    for kernel, call in calls.items():  # warm-up
      began = time.perf_counter()
      call()
      times[kernel].append((time.perf_counter() - began) * 1e3)
    slow = max(max(t) for t in times.values()) > _SLOW_MS
    times = {True: [], False: []}
    for round_ in range(_TIMED_CALLS_IF_SLOW if slow else _TIMED_CALLS):
      for kernel in ((True, False) if round_ % 2 == 0 else (False, True)):
        began = time.perf_counter()
        calls[kernel]()
        times[kernel].append((time.perf_counter() - began) * 1e3)
    return [round(statistics.median(times[k]), 3) for k in (True, False)]

  kernel_ms, xla_ms = timed(jax.grad(loss, argnums=(0, 1, 2)))
  forward_kernel_ms, forward_xla_ms = timed(loss)
  return {'kernel': kernel_ms < xla_ms, 'kernel_ms': kernel_ms,
          'xla_ms': xla_ms,
          'forward_kernel': forward_kernel_ms < forward_xla_ms,
          'forward_kernel_ms': forward_kernel_ms,
          'forward_xla_ms': forward_xla_ms, 'rows': rows, 'steps': steps}


def _cache_key():
  """The kernels' build for this instruction set (source, flags, compiler,
  jaxlib, CPU flags), the CPU's model and caches, the cores this process
  may use and JAX's devices (simulated CPU devices share the cores)."""
  return _hashed(elman_kernel.cache_key(), _cpu_model(), str(_cache_sizes()),
                 str(_usable_cores()), str(jax.device_count()),
                 jax.__version__)


@functools.cache
def _hashed(*parts):
  return hashlib.sha256('\0'.join(parts).encode()).hexdigest()[:16]


def _usable_cores():
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count()


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
      and isinstance(d.get('forward_kernel'), bool)
      for d in decisions.values()):
    logging.warning('The kernel decisions in %s are not in the expected form; '
                    'the shapes used are timed again.', path)
    return {}
  return decisions


def _write(path: pathlib.Path, key: str, record: dict) -> None:
  """Adds `record` to the decisions in `path`, atomically (a reader never
  sees half a file); not where the directory is not private, and with a
  warning where it can't be written."""
  if elman_kernel.cache_dir_problem(path.parent) is not None:
    return
  decisions = dict(sorted({**_read(path), key: record}.items()))
  content = {'cpu': _cpu_model(), 'caches': _cache_sizes(),
             'cores': _usable_cores(), 'devices': jax.device_count(),
             'instruction_set': elman_kernel.isa(), 'jax': jax.__version__,
             'decisions': decisions}
  scratch = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    scratch.write_text(json.dumps(content, indent=1) + '\n')
    os.replace(scratch, path)
  except OSError as error:
    scratch.unlink(missing_ok=True)
    logging.warning('The kernel decision could not be written to %s (%s); '
                    'it holds for this process only.', path, error)


def _cpu_model():
  line = elman_kernel.cpuinfo_line('model name')
  if line:
    return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine()


@functools.cache
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
