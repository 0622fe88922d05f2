"""The CPU kernels of the Elman recurrence (elman_cpu.cc): build, load, call.

XLA:CPU runs a scan step by step on one core. elman_cpu.cc runs the same
recurrence with the batch split over XLA's intra-op threads, and sums
dW_hh over all steps with the result split over them, where XLA's own
product of that shape runs at about one core's speed (benchmarks/rnn_layer.py
and docs/performance.md have the figures). It is compiled on first
use with the machine's C++ compiler against the FFI headers of the installed
jaxlib, and cached:

    $TOOLKIT_CACHE_DIR (default ~/.cache/trax_rnn_toolkit)/elman_cpu-<key>.so

with its SHA-256 beside it in elman_cpu-<key>.so.sha256, where the key
hashes the source, the flags, the compiler, the jaxlib version and the CPU,
so a changed file or a different machine builds afresh. A cached library is
loaded only if the directory belongs to this user and no group or other
user can write to it (it is created 0o700), and only if its bytes have the
recorded SHA-256; otherwise it is built again (where the directory is not
private, into a private temporary directory, for this process alone).
Without a compiler `available()` is False, and models/recurrence.py runs
its XLA scan instead, with the same results; where both can run,
models/kernel_choice.py decides which does.

By default the library is built for this CPU (-march=native).
TOOLKIT_RNN_ISA=avx2 or avx512 builds it for that x86-64 level instead, so
the code another CPU would run can be tested and timed here (each build has
its own FFI target names, so one process can run both).
"""

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import tempfile

import jax
import jaxlib
import numpy as np

SOURCE = pathlib.Path(__file__).with_name('elman_cpu.cc')
ACTIVATION_CODES = {'tanh': 0, 'relu': 1, 'sigmoid': 2, 'identity': 3}
_FORWARD = 'toolkit_elman_forward'
_BACKWARD = 'toolkit_elman_backward'
_TRANSPOSED_PRODUCT = 'toolkit_transposed_product'
_FLAGS = ['-O3', '-std=c++17', '-shared', '-fPIC']

# The instruction sets the kernels can be built for (TOOLKIT_RNN_ISA):
# 'native' is whatever this CPU has; the others are the x86-64 levels, so
# that the AVX2 code (8 floats a vector, 16 registers) can be built, tested
# and timed on an AVX-512 machine too. Each is tuned for this CPU.
ISA_FLAGS = {
    'native': ['-march=native'],
    'avx2': ['-march=x86-64-v3', '-mtune=native'],
    'avx512': ['-march=x86-64-v4', '-mtune=native'],
}
# The CPU flags (/proc/cpuinfo) each explicit instruction set needs.
_ISA_NEEDS = {'avx2': ('avx2', 'fma'), 'avx512': ('avx512f', 'avx512vl',
                                                  'avx512bw', 'avx512dq')}


def isa() -> str:
  """The instruction set the kernels are built for: TOOLKIT_RNN_ISA, by
  default 'native'. Raises ValueError for an unknown one, or one this CPU
  lacks (its code would stop the process with an illegal instruction)."""
  choice = os.environ.get('TOOLKIT_RNN_ISA', 'native')
  if choice not in ISA_FLAGS:
    raise ValueError(f'TOOLKIT_RNN_ISA={choice!r}: use one of '
                     f'{sorted(ISA_FLAGS)} (native: what this CPU has).')
  if choice not in supported_isas():
    missing = set(_ISA_NEEDS[choice]) - set(_cpu_flags().split())
    raise ValueError(f'TOOLKIT_RNN_ISA={choice!r}, but this CPU lacks '
                     f'{" ".join(sorted(missing))}: kernels built for it '
                     "would stop the process. Use one of "
                     f"{supported_isas()} ('native': what this CPU has).")
  return choice


def supported_isas() -> list[str]:
  """The instruction sets this CPU can run kernels built for."""
  flags = set(_cpu_flags().split())
  return ['native'] + [name for name, needs in _ISA_NEEDS.items()
                       if flags.issuperset(needs)]


def available() -> bool:
  """Whether JAX's default backend is the CPU and the kernels are built and
  registered with XLA (models/kernel_choice.py decides where they run)."""
  return jax.default_backend() == 'cpu' and _load(isa()) is not None


def vector_lanes() -> int:
  """Floats per vector in the built kernels: 16 for AVX-512, 8 for AVX2."""
  _require()
  return _load(isa()).ToolkitVectorLanes()


def forward(x_proj: jax.Array, mask: jax.Array, h0: jax.Array,
            w_hh: jax.Array, activation: str, batch_major: bool) -> jax.Array:
  """The hidden state after every step.

  Args:
    x_proj: f32[batch, time, units] if batch_major else f32[time, batch,
      units]: x_t · W_xh + b_h.
    mask: f32[batch, time] or f32[time, batch] likewise; 1 at real steps, 0
      at padding (where the state is carried).
    h0: f32[batch, units].
    w_hh: f32[units, units].
    activation: a name in ACTIVATION_CODES.
    batch_major: the layout of x_proj, mask and the result.

  Returns:
    f32, shaped like x_proj: h_t for every t.
  """
  _require()
  call = jax.ffi.ffi_call(_target(_FORWARD),
                          jax.ShapeDtypeStruct(x_proj.shape, np.float32),
                          vmap_method='sequential')
  return call(x_proj, mask, h0, w_hh,
              activation=np.int32(ACTIVATION_CODES[activation]),
              batch_major=batch_major)


def backward(d_outputs: jax.Array, d_h_last: jax.Array, states: jax.Array,
             mask: jax.Array, w_hh: jax.Array, activation: str,
             batch_major: bool) -> tuple[jax.Array, jax.Array]:
  """The reverse delta scan.

  Args:
    d_outputs: f32, shaped like `forward`'s result: dL/dy_t.
    d_h_last: f32[batch, units], dL/dh_T.
    states: `forward`'s result.
    mask: f32[time, batch], as given to `forward`.
    w_hh: f32[units, units].
    activation: a name in ACTIVATION_CODES.
    batch_major: as given to `forward`.

  Returns:
    (d_pre, shaped like d_outputs: the cotangent of x_proj; d_h0 f32[batch,
    units]).
  """
  _require()
  call = jax.ffi.ffi_call(
      _target(_BACKWARD),
      (jax.ShapeDtypeStruct(d_outputs.shape, np.float32),
       jax.ShapeDtypeStruct(d_h_last.shape, np.float32)),
      vmap_method='sequential')
  return call(d_outputs, d_h_last, states, mask, w_hh.T,
              activation=np.int32(ACTIVATION_CODES[activation]),
              batch_major=batch_major)


def transposed_product(a: jax.Array, b: jax.Array, shift: int) -> jax.Array:
  """Σ_i a[i]ᵀ b[i + shift] over the rows of f32[n, k] a and f32[n, j] b
  that have a partner: f32[k, j]. XLA:CPU runs a product of this shape (a
  long sum into a small result) at about the speed of one core; the kernel
  splits the result's rows over the cores."""
  _require()
  call = jax.ffi.ffi_call(
      _target(_TRANSPOSED_PRODUCT),
      jax.ShapeDtypeStruct((a.shape[1], b.shape[1]), np.float32),
      vmap_method='sequential')
  return call(a, b, shift=np.int64(shift))


def _require():
  if _load(isa()) is None:
    raise RuntimeError('The Elman CPU kernels could not be built; the '
                       'warning logged before says why.')


def _target(kernel):
  """The kernel's FFI target name in the build for this instruction set:
  each build registers its own, so one process can run both."""
  return f'{kernel}_{isa()}'


@functools.cache
def _load(instruction_set):
  """Builds (or finds) the library for `instruction_set` and registers its
  kernels; None if it cannot be built here, with the reason logged once."""
  try:
    library = _open_library(instruction_set)
  except (OSError, subprocess.CalledProcessError) as error:
    detail = getattr(error, 'stderr', '') or error
    logging.warning('The CPU kernels of the Elman layer could not be built, '
                    "so it runs XLA's scan (same results, slower on CPU): %s",
                    str(detail)[-2000:])
    return None
  for name, symbol in [
      (_FORWARD, library.ToolkitElmanForward),
      (_BACKWARD, library.ToolkitElmanBackward),
      (_TRANSPOSED_PRODUCT, library.ToolkitTransposedProduct)]:
    jax.ffi.register_ffi_target(f'{name}_{instruction_set}',
                                jax.ffi.pycapsule(symbol), platform='cpu')
  return library


def _open_library(instruction_set='native'):
  """The kernels' library, loaded from the cache or built.

  Loading a library runs its code in this process, so a cached one is
  loaded only from a cache directory no one else can write to, and only if
  its bytes still have the SHA-256 recorded when it was built; otherwise it
  is built again. Where the cache directory is not private, the library is
  built into a private temporary directory instead, loaded, and deleted.
  """
  name = f'elman_cpu-{cache_key(instruction_set)}.so'
  cache = cache_dir()
  problem = cache_dir_problem(cache)
  if problem is None:
    target = cache / name
    if not _matches_recorded_digest(target):
      _compile(target, instruction_set)
    return ctypes.cdll.LoadLibrary(str(target))
  logging.warning(
      'The kernel cache directory %s is not private (%s), so the Elman CPU '
      'kernels are built for this process only, in a temporary directory, '
      'which costs a few seconds at every start. Point TOOLKIT_CACHE_DIR at '
      'a directory that belongs to you and that only you can write to '
      '(chmod go-w) to cache them.', cache, problem)
  with tempfile.TemporaryDirectory(prefix='elman_cpu-') as private:
    # mkdtemp makes it 0o700; the loaded library stays mapped once deleted.
    return ctypes.cdll.LoadLibrary(str(_compile(
        pathlib.Path(private) / name, instruction_set)))


def _flags(instruction_set):
  return _FLAGS + ISA_FLAGS[instruction_set]


def cache_key(instruction_set: str | None = None) -> str:
  """A hash of everything the library built for `instruction_set` (default
  isa()) depends on: the source, the flags, the compiler, the jaxlib
  version and the CPU."""
  return _hashed_build(instruction_set or isa(), _compiler())


@functools.cache
def _hashed_build(instruction_set, compiler):
  """cache_key's hash, once per process: kernel_choice asks for it at every
  decision it looks up while tracing."""
  return hashlib.sha256(b'\0'.join([
      SOURCE.read_bytes(), ' '.join(_flags(instruction_set)).encode(),
      compiler.encode(), jaxlib.__version__.encode(),
      platform.machine().encode(), _cpu_flags().encode()])).hexdigest()[:16]


def _compiler():
  return os.environ.get('CXX', 'c++')


def cache_dir_problem(directory: pathlib.Path) -> str | None:
  """Why `directory` may not hold libraries this process loads, or None.

  Creates it, private (0o700), if it is missing. It must belong to this
  user (another user could replace its files) and be writable by no group
  or other user.
  """
  try:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
  except OSError as error:
    return f'it cannot be created or read: {error}'
  if info.st_uid != os.geteuid():
    return (f'it belongs to uid {info.st_uid}, not to this user (uid '
            f'{os.geteuid()})')
  if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    return (f'its group or other users can write to it (mode '
            f'{stat.S_IMODE(info.st_mode):o})')
  return None


def _digest_path(library):
  return library.with_name(library.name + '.sha256')


def _matches_recorded_digest(library):
  """Whether `library` exists and has the SHA-256 recorded beside it."""
  try:
    recorded = _digest_path(library).read_text().strip()
    actual = hashlib.sha256(library.read_bytes()).hexdigest()
  except OSError:  # not built yet, or built before digests were recorded
    return False
  if actual != recorded:
    logging.warning('The cached Elman CPU kernels %s do not have the SHA-256 '
                    'recorded when they were built (the file was changed '
                    'since), so they are built again.', library)
  return actual == recorded


def _compile(target, instruction_set='native'):
  """Compiles the library for `instruction_set` to `target`, with its
  SHA-256 beside it in `target`.sha256; returns `target`.

  Both are written beside the target and renamed into place, so processes
  building at the same time never load a half-written file; a reader that
  sees the new library with the old digest builds once more.
  """
  compiler = _compiler()
  if shutil.which(compiler) is None:
    raise OSError(f'no C++ compiler {compiler!r} on PATH (set CXX)')
  with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
    built = pathlib.Path(scratch) / target.name
    subprocess.run([compiler, *_flags(instruction_set), '-isystem',
                    jax.ffi.include_dir(), str(SOURCE), '-o', str(built)],
                   check=True, capture_output=True, text=True)
    digest = _digest_path(built)
    digest.write_text(hashlib.sha256(built.read_bytes()).hexdigest() + '\n')
    os.replace(built, target)
    os.replace(digest, _digest_path(target))
  logging.info('Built the Elman CPU kernels: %s', target)
  return target


def cache_dir() -> pathlib.Path:
  """TOOLKIT_CACHE_DIR, by default ~/.cache/trax_rnn_toolkit."""
  default = pathlib.Path.home() / '.cache' / 'trax_rnn_toolkit'
  return pathlib.Path(os.environ.get('TOOLKIT_CACHE_DIR', default))


def _cpu_flags():
  """The CPU's feature flags (Linux), so -march=native builds per CPU."""
  return cpuinfo_line(('flags', 'Features')) or platform.processor()


@functools.cache
def cpuinfo_line(prefixes: str | tuple[str, ...]) -> str | None:
  """The first line of /proc/cpuinfo that starts with `prefixes`, or None
  (not Linux)."""
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith(prefixes):
        return line
  except OSError:
    pass
  return None
