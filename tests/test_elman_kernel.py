"""The Elman CPU kernels themselves: the instruction sets they are built
for, the long-sum product against NumPy, the fallback without a compiler,
and the cache of built libraries.

The recurrence's values and gradients through the kernels are tested in
test_recurrence.py, on every build."""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from models import elman_kernel


def _compiler_present():
  return shutil.which(os.environ.get('CXX', 'c++')) is not None


@pytest.fixture(params=['native', 'avx2', 'avx512'])
def build(request, monkeypatch):
  """The kernels built for each instruction set this CPU can run."""
  if not _compiler_present():
    pytest.skip('no C++ compiler here')
  if request.param not in elman_kernel.supported_isas():
    pytest.skip(f'this CPU cannot run {request.param} code')
  monkeypatch.setenv('TOOLKIT_RNN_ISA', request.param)
  assert elman_kernel.available(), 'the kernels did not build; see the log'
  return request.param


def test_each_build_has_the_vector_width_of_its_instruction_set(build):
  lanes = elman_kernel.vector_lanes()
  cpu = elman_kernel._cpu_flags().split()  # pylint: disable=protected-access
  want = {'avx2': 8, 'avx512': 16,
          'native': 16 if 'avx512f' in cpu else 8}[build]
  assert lanes == want


def test_the_avx2_build_has_no_avx512_instruction(build):
  # What an AVX2 CPU would run: any zmm register would stop it.
  if build != 'avx2' or shutil.which('objdump') is None:
    pytest.skip('disassembles the AVX2 build, with objdump')
  library = (elman_kernel.cache_dir() /
             f'elman_cpu-{elman_kernel.cache_key()}.so')
  if not library.exists():
    pytest.skip('the cache is not private here: no library file to read')
  code = subprocess.run(['objdump', '-d', '--no-show-raw-insn', str(library)],
                        capture_output=True, text=True, check=True).stdout
  assert '%ymm' in code and '%zmm' not in code


@pytest.mark.parametrize('shift', [0, 1, 5, 40])
def test_the_shifted_product_kernel_against_numpy(shift, build):
  # Row and column counts that fill neither a vector nor a register tile.
  rng = np.random.default_rng(shift)
  a = rng.normal(size=(40, 19)).astype(np.float32)
  b = rng.normal(size=(40, 35)).astype(np.float32)
  want = sum(np.outer(a[i], b[i + shift]) for i in range(40 - shift))
  got = elman_kernel.transposed_product(a, b, shift)
  np.testing.assert_allclose(got, np.zeros((19, 35)) + want, rtol=1e-5,
                             atol=1e-5)


def test_an_unknown_instruction_set_is_named(monkeypatch):
  monkeypatch.setenv('TOOLKIT_RNN_ISA', 'sse2')
  with pytest.raises(ValueError, match="TOOLKIT_RNN_ISA='sse2'.*'avx2'"):
    elman_kernel.isa()


def test_an_instruction_set_the_cpu_lacks_is_refused(monkeypatch):
  # Its code would stop the process with an illegal instruction.
  monkeypatch.setenv('TOOLKIT_RNN_ISA', 'avx512')
  monkeypatch.setattr(elman_kernel, '_cpu_flags', lambda: 'flags : avx2 fma')
  with pytest.raises(ValueError, match='lacks avx512bw avx512dq avx512f '
                     'avx512vl.*native'):
    elman_kernel.isa()


_WITHOUT_A_COMPILER = """
import jax, numpy as np
from models import elman_kernel
from models.recurrence import elman_scan
x = np.ones((16, 3, 4), np.float32)
outputs, _ = elman_scan(x, None, np.zeros((len(x), 4), np.float32),
                        np.eye(4, dtype=np.float32))
assert not elman_kernel.available()
np.testing.assert_allclose(outputs[:, 0], np.tanh(1.0), rtol=1e-6)
"""


@pytest.mark.parametrize('mode', ['auto', 'kernel'])
def test_without_a_compiler_the_layer_warns_and_runs_xla(tmp_path, mode):
  env = dict(os.environ, CXX=str(tmp_path / 'no-such-compiler'),
             TOOLKIT_CACHE_DIR=str(tmp_path / 'cache'),
             TOOLKIT_RNN_KERNEL=mode)
  run = subprocess.run([sys.executable, '-c', _WITHOUT_A_COMPILER], env=env,
                       capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 0, run.stderr[-3000:]
  assert "could not be built, so it runs XLA's scan" in run.stderr
  assert 'no-such-compiler' in run.stderr


# The kernel cache: a library found there runs in this process, so it must
# come from a private directory and still have the digest it was built with.
# pylint: disable=protected-access

_COMPILE = elman_kernel._compile


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
  """An empty TOOLKIT_CACHE_DIR, and the list of builds made into it or
  elsewhere (elman_kernel._compile records each target it compiles)."""
  if not _compiler_present():
    pytest.skip('builds the kernels, with a C++ compiler')
  cache = tmp_path / 'cache'
  monkeypatch.setenv('TOOLKIT_CACHE_DIR', str(cache))
  builds = []

  def recorded_compile(target, instruction_set='native'):
    builds.append(target)
    return _COMPILE(target, instruction_set)
  monkeypatch.setattr(elman_kernel, '_compile', recorded_compile)
  return cache, builds


@pytest.fixture(scope='module')
def _library_built_once(tmp_path_factory):
  return _COMPILE(  # not a build that kernel_cache records
      tmp_path_factory.mktemp('built') /
      f'elman_cpu-{elman_kernel.cache_key()}.so')


@pytest.fixture
def built_library(kernel_cache, request, monkeypatch):
  """A library built once, with its digest, to copy into test caches
  (built after kernel_cache has skipped the tests that build nothing).

  The builds kernel_cache records are then copies of it, made as _compile
  makes a build (the library and its digest renamed into place): the real
  build is test_a_fresh_build_is_cached_with_its_digest_then_loaded's.
  """
  _, builds = kernel_cache
  library = request.getfixturevalue('_library_built_once')

  def recorded_copy(target, instruction_set='native'):
    del instruction_set  # the library built once is native
    builds.append(target)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
      for path, name in ((library, target.name),
                         (library.with_name(library.name + '.sha256'),
                          target.name + '.sha256')):
        shutil.copy(path, os.path.join(scratch, name))
        os.replace(os.path.join(scratch, name), target.with_name(name))
    return target
  monkeypatch.setattr(elman_kernel, '_compile', recorded_copy)
  return library


def _cached_copy(library, cache):
  """`library` and its digest copied into `cache`: the cached library."""
  cache.mkdir(mode=0o700)
  for path in (library, library.with_name(library.name + '.sha256')):
    shutil.copy(path, cache / path.name)
  return cache / library.name


def _sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fresh_build_is_cached_with_its_digest_then_loaded(kernel_cache):
  cache, builds = kernel_cache
  library = elman_kernel._open_library()
  cached = cache / f'elman_cpu-{elman_kernel.cache_key()}.so'
  assert builds == [cached] and library._name == str(cached)
  assert (cache / (cached.name + '.sha256')).read_text().strip() == (
      _sha256(cached))
  assert stat.S_IMODE(cache.stat().st_mode) == 0o700
  again = elman_kernel._open_library()
  assert builds == [cached]  # loaded from the cache, not built again
  assert again._name == str(cached) and again.ToolkitElmanForward


def test_a_tampered_cached_library_is_rebuilt_not_loaded(kernel_cache,
                                                         built_library,
                                                         caplog):
  cache, builds = kernel_cache
  cached = _cached_copy(built_library, cache)
  with open(cached, 'ab') as f:  # still a loadable library, other bytes
    f.write(b'\0changed')
  elman_kernel._open_library()
  assert builds == [cached]
  assert not cached.read_bytes().endswith(b'\0changed')
  assert _sha256(cached) == (
      cache / (cached.name + '.sha256')).read_text().strip()
  assert 'do not have the SHA-256 recorded' in caplog.text


def _assert_built_privately_not_cached(cache, builds, caplog):
  """The cache is not used: the library is built elsewhere, loaded, and
  deleted, and the cache's files are left as they were."""
  before = {p.name: p.read_bytes() for p in cache.iterdir()}
  library = elman_kernel._open_library()
  assert len(builds) == 1 and cache not in builds[0].parents
  assert library._name == str(builds[0]) and library.ToolkitElmanForward
  assert not builds[0].parent.exists()
  assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
  assert 'is not private' in caplog.text


def test_a_cache_directory_others_can_write_is_not_trusted(kernel_cache,
                                                           built_library,
                                                           caplog):
  cache, builds = kernel_cache
  _cached_copy(built_library, cache)
  cache.chmod(0o777)
  _assert_built_privately_not_cached(cache, builds, caplog)
  assert 'mode 777' in caplog.text


def test_a_cache_directory_of_another_user_is_not_trusted(kernel_cache,
                                                          built_library,
                                                          caplog):
  cache, builds = kernel_cache
  _cached_copy(built_library, cache)
  other = os.geteuid() + 4242
  try:
    os.chown(cache, other, -1)
  except PermissionError:
    pytest.skip('only root can give a directory to another user')
  _assert_built_privately_not_cached(cache, builds, caplog)
  assert f'belongs to uid {other}' in caplog.text
