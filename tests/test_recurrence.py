"""The hand-written VJP of the Elman recurrence against JAX's autodiff of a
plain Python loop over time, with the CPU kernels and with XLA's scan."""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import jax
from jax import numpy as jnp
import numpy as np
import pytest

from models import elman_kernel
from models.recurrence import ACTIVATIONS, elman_scan, elman_scan_time_major

# Units and batch that fill neither a vector nor a register tile, so the
# kernels' edge loops run.
BATCH, TIME, UNITS = 19, 7, 21


KERNELS = ('toolkit_elman_forward', 'toolkit_elman_backward',
           'toolkit_transposed_product')


def _compiler_present():
  return shutil.which(os.environ.get('CXX', 'c++')) is not None


@pytest.fixture(autouse=True, params=['auto', 'xla'])
def scan_implementation(request, monkeypatch):
  """Every test runs with the CPU kernels ('auto') and with XLA's scan.

  Where a C++ compiler is present, 'auto' must have the kernels: if they
  failed to build, its tests would otherwise run XLA's scan a second time
  and pass without testing the kernels.
  """
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', request.param)
  if request.param == 'auto' and _compiler_present():
    assert elman_kernel.available(), (
        'A C++ compiler is here but the Elman CPU kernels did not build; '
        'the warning logged above says why.')
  return request.param


def _kernels_expected(implementation):
  return implementation == 'auto' and _compiler_present()


def _kernels_in(fn, *args):
  """The CPU kernels in the HLO that jax.jit(fn) lowers to at `args`."""
  text = jax.jit(fn).lower(*args).as_text()
  return {name for name in KERNELS if name in text}


def loop_elman(x_proj, mask, h0, w_hh, g):
  """The recurrence written step by step, as the reference."""
  h, outputs = h0, []
  for t in range(x_proj.shape[1]):
    y = g(x_proj[:, t] + h @ w_hh)
    if mask is not None:
      real = mask[:, t, None]
      h, y = real * y + (1 - real) * h, real * y
    else:
      h = y
    outputs.append(y)
  return jnp.stack(outputs, axis=1), h


def _inputs(seed, masked):
  rng = np.random.default_rng(seed)
  x_proj = rng.normal(size=(BATCH, TIME, UNITS)).astype(np.float32)
  h0 = rng.normal(size=(BATCH, UNITS)).astype(np.float32)
  w_hh = (rng.normal(size=(UNITS, UNITS)) / np.sqrt(UNITS)).astype(np.float32)
  mask = None
  if masked:  # ragged lengths, one sequence with padding in the middle
    lengths = np.resize([TIME, 4, 1], BATCH)[:, None]
    mask = (np.arange(TIME)[None] < lengths).astype(np.float32)
    mask[0, 2] = 0.0
  return x_proj, mask, h0, w_hh


def _weighted_loss(scan, seed):
  """A loss that gives every output and the final state its own cotangent."""
  rng = np.random.default_rng(seed + 100)
  w_out = rng.normal(size=(BATCH, TIME, UNITS)).astype(np.float32)
  w_last = rng.normal(size=(BATCH, UNITS)).astype(np.float32)

  def loss(x_proj, h0, w_hh, mask):
    outputs, h_last = scan(x_proj, mask, h0, w_hh)
    return jnp.sum(outputs * w_out) + jnp.sum(h_last * w_last)
  return loss


def _assert_same_gradients(ours, reference, args, ours_args=None, rtol=0.0,
                           atol=0.0):
  """d/d(x_proj, h0, w_hh) of `ours` at `ours_args` (default `args`) equal
  those of `reference` at `args`. atol is in units of the largest entry of
  each gradient: float32 sums of large terms can cancel to small ones."""
  got = jax.grad(ours, argnums=(0, 1, 2))(*(ours_args or args))
  want = jax.grad(reference, argnums=(0, 1, 2))(*args)
  for name, g, w in zip(['x_proj', 'h0', 'w_hh'], got, want):
    scale = max(1.0, float(np.abs(w).max()))
    np.testing.assert_allclose(g, w, err_msg=name, rtol=rtol,
                               atol=atol * scale)


@pytest.mark.parametrize('activation', sorted(ACTIVATIONS))
@pytest.mark.parametrize('masked', [False, True])
def test_gradients_match_autodiff_of_the_plain_loop(activation, masked,
                                                    scan_implementation):
  x_proj, mask, h0, w_hh = _inputs(0, masked)
  ours = _weighted_loss(
      lambda *a: elman_scan(*a, activation=activation), seed=0)
  reference = _weighted_loss(
      lambda *a: loop_elman(*a, ACTIVATIONS[activation]), seed=0)
  # The kernels' tanh and XLA's differ by ~1e-7; the loss sums hundreds
  # of terms of either sign.
  np.testing.assert_allclose(ours(x_proj, h0, w_hh, mask),
                             reference(x_proj, h0, w_hh, mask), rtol=1e-5,
                             atol=1e-5)
  _assert_same_gradients(jax.jit(ours), reference, (x_proj, h0, w_hh, mask),
                         rtol=1e-4, atol=1e-5)
  gradient = jax.grad(ours, argnums=(0, 1, 2))
  assert _kernels_in(gradient, x_proj, h0, w_hh, mask) == (
      set(KERNELS) if _kernels_expected(scan_implementation) else set())


def numpy_elman_with_gradients(x_proj, mask, h0, w_hh, d_outputs, d_h_last):
  """The tanh recurrence and its backpropagation through time, written out
  step by step in float64 NumPy.

  Returns:
    (outputs, final state, (dL/dx_proj, dL/dh0, dL/dW_hh)) for the loss
    Σ outputs · d_outputs + Σ h_T · d_h_last.
  """
  x_proj, h0, w_hh = (np.asarray(a, np.float64) for a in (x_proj, h0, w_hh))
  batch, time, _ = x_proj.shape
  real = np.ones((batch, time)) if mask is None else np.asarray(mask)
  h, before, after, outputs = h0, [], [], np.zeros_like(x_proj)
  for t in range(time):
    y, r = np.tanh(x_proj[:, t] + h @ w_hh), real[:, t, None]
    before.append(h)
    after.append(y)
    h = r * y + (1 - r) * h  # padding carries the state
    outputs[:, t] = r * y
  d_h, d_x, d_w = np.asarray(d_h_last, np.float64), np.zeros_like(x_proj), 0.0
  for t in reversed(range(time)):
    r = real[:, t, None]
    d_pre = r * (d_outputs[:, t] + d_h) * (1 - after[t] ** 2)
    d_x[:, t] = d_pre
    d_w = d_w + before[t].T @ d_pre
    d_h = d_pre @ w_hh.T + (1 - r) * d_h
  return outputs, h, (d_x, d_h, d_w)


@pytest.mark.parametrize('units', [256, 512])
@pytest.mark.parametrize('masked', [False, True])
def test_production_widths_against_a_numpy_loop(units, masked,
                                                scan_implementation,
                                                monkeypatch):
  # Widths of whole vectors and register tiles, so the kernels' main tile
  # runs (UNITS above fills neither), and enough rows for the kernels. The
  # L2 limit is lifted: 512 units must be tested where W_hh exceeds the L2.
  monkeypatch.setattr(elman_kernel, '_l2_cache_bytes', lambda: 2**30)
  rows, time = 20, 6
  rng = np.random.default_rng(units)
  x_proj = rng.normal(size=(rows, time, units)).astype(np.float32)
  h0 = rng.normal(size=(rows, units)).astype(np.float32)
  w_hh = (rng.normal(size=(units, units)) / np.sqrt(units)).astype(np.float32)
  mask = None
  if masked:
    mask = (np.arange(time) < np.resize([time, 3, 1], rows)[:, None])
    mask = mask.astype(np.float32)
  d_outputs = rng.normal(size=x_proj.shape).astype(np.float32)
  d_h_last = rng.normal(size=h0.shape).astype(np.float32)

  def loss(x_proj, h0, w_hh):
    outputs, h_last = elman_scan(x_proj, mask, h0, w_hh)
    return jnp.sum(outputs * d_outputs) + jnp.sum(h_last * d_h_last)
  gradient = jax.grad(loss, argnums=(0, 1, 2))
  assert _kernels_in(gradient, x_proj, h0, w_hh) == (
      set(KERNELS) if _kernels_expected(scan_implementation) else set())
  want_outputs, want_h, want_grads = numpy_elman_with_gradients(
      x_proj, mask, h0, w_hh, d_outputs, d_h_last)
  # A new function to jit: jit's cache does not know TOOLKIT_RNN_KERNEL.
  outputs, h_last = jax.jit(lambda *a: elman_scan(*a))(x_proj, mask, h0,
                                                       w_hh)
  np.testing.assert_allclose(outputs, want_outputs, rtol=0, atol=1e-5)
  np.testing.assert_allclose(h_last, want_h, rtol=0, atol=1e-5)
  # float32 sums of `units` terms: errors of about 1e-6 of the largest
  # entry, growing with the steps back through W_hh.
  for name, g, w in zip(['x_proj', 'h0', 'w_hh'],
                        jax.jit(gradient)(x_proj, h0, w_hh), want_grads):
    np.testing.assert_allclose(g, w, rtol=0, err_msg=name,
                               atol=2e-5 * np.abs(w).max())


def test_vmapped_backward_pass_equals_one_pass_per_cotangent():
  # retention.py vmaps the backward pass over cotangents of the last state.
  x_proj, mask, h0, w_hh = _inputs(8, masked=True)
  last_state = lambda x: elman_scan(x, mask, h0, w_hh)[1]
  h_last, pullback = jax.vjp(last_state, x_proj)
  cotangents = np.random.default_rng(8).normal(
      size=(3,) + h_last.shape).astype(np.float32)
  got = jax.jit(jax.vmap(lambda c: pullback(c)[0]))(cotangents)
  for c, g in zip(cotangents, got):
    np.testing.assert_allclose(g, pullback(c)[0], rtol=1e-6, atol=1e-6)


def test_callable_activation_uses_autodiff_and_agrees():
  x_proj, mask, h0, w_hh = _inputs(1, masked=True)
  softsign = lambda a: a / (1 + jnp.abs(a))
  ours = _weighted_loss(lambda *a: elman_scan(*a, activation=softsign), 1)
  reference = _weighted_loss(lambda *a: loop_elman(*a, softsign), 1)
  _assert_same_gradients(ours, reference, (x_proj, h0, w_hh, mask),
                         rtol=1e-4, atol=1e-5)


def test_padding_gets_no_gradient_and_passes_the_state_through():
  x_proj, mask, h0, w_hh = _inputs(2, masked=True)
  loss = _weighted_loss(elman_scan, 2)
  d_x_proj = jax.grad(loss)(x_proj, h0, w_hh, mask)
  np.testing.assert_array_equal(d_x_proj[mask == 0], 0.0)
  assert np.all(np.abs(d_x_proj[mask == 1]).sum(axis=-1) > 0)


def test_any_nonzero_mask_value_marks_a_real_step():
  # Forward and backward must agree on what is padding: a mask of 0.5 or
  # -1 is a real step, in the outputs and in every gradient.
  x_proj, mask, h0, w_hh = _inputs(5, masked=True)
  loss = _weighted_loss(elman_scan, 5)
  scaled = np.where(mask == 0, 0.0, np.where(np.arange(TIME) % 2, 0.5, -1.0))
  np.testing.assert_allclose(loss(x_proj, h0, w_hh, scaled.astype(np.float32)),
                             loss(x_proj, h0, w_hh, mask), rtol=1e-6)
  _assert_same_gradients(loss, loss, (x_proj, h0, w_hh, mask),
                         (x_proj, h0, w_hh, scaled.astype(np.float32)),
                         rtol=1e-6, atol=1e-7)


def test_bfloat16_gradients_are_close_to_float32():
  x_proj, mask, h0, w_hh = _inputs(3, masked=True)
  loss = _weighted_loss(elman_scan, 3)
  low = [jnp.asarray(a, jnp.bfloat16) for a in (x_proj, h0, w_hh, mask)]
  got = jax.grad(loss, argnums=(0, 1, 2))(*low)
  # float32 at the same (rounded) inputs, so only the arithmetic differs.
  want = jax.grad(loss, argnums=(0, 1, 2))(*(np.float32(a) for a in low))
  # bfloat16 keeps 8 significant bits: each state, delta and product is
  # rounded by up to 2^-9 (0.2%), and the roundings of 7 steps forward and
  # 7 back compound to about 1% of the largest entry (0.5-1% over seeds
  # 3-8). 3% leaves room for that and still fails a gradient that is wrong.
  for name, g, w in zip(['x_proj', 'h0', 'w_hh'], got, want):
    assert g.dtype == jnp.bfloat16, name
    np.testing.assert_allclose(np.float32(g), w, rtol=0, err_msg=name,
                               atol=0.03 * np.abs(w).max())


def test_unknown_activation_is_named():
  x_proj, _, h0, w_hh = _inputs(4, masked=False)
  with pytest.raises(ValueError, match="'softplus'.*choose one of"):
    elman_scan(x_proj, None, h0, w_hh, activation='softplus')


def test_the_cpu_kernels_are_built_and_used(scan_implementation, monkeypatch):
  if shutil.which(os.environ.get('CXX', 'c++')) is None:
    pytest.skip('no C++ compiler here: the layer runs XLA\'s scan')
  x_proj, mask, h0, w_hh = _inputs(6, masked=True)

  def kernels_in_gradient(rows):
    loss = lambda w: elman_scan(x_proj[:rows], mask[:rows], h0[:rows], w)[0].sum()
    graph = str(jax.make_jaxpr(jax.grad(loss))(w_hh))
    return {name for name in ['toolkit_elman_forward', 'toolkit_elman_backward']
            if name in graph}
  assert len(kernels_in_gradient(BATCH)) == (
      2 if scan_implementation == 'auto' else 0)
  assert not kernels_in_gradient(elman_kernel.MIN_BATCH - 1)  # XLA's turn
  # A W_hh too large for a core's L2 cache: XLA's scan as well.
  monkeypatch.setattr(elman_kernel, '_l2_cache_bytes',
                      lambda: 4 * UNITS * UNITS - 1)
  assert not kernels_in_gradient(BATCH)


def test_an_unknown_implementation_is_named(monkeypatch):
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'fast')
  x_proj, _, h0, w_hh = _inputs(4, masked=False)
  with pytest.raises(ValueError, match="TOOLKIT_RNN_KERNEL='fast'.*'xla'"):
    elman_scan(x_proj, None, h0, w_hh)


_WITHOUT_A_COMPILER = """
import jax, numpy as np
from models import elman_kernel
from models.recurrence import elman_scan
x = np.ones((elman_kernel.MIN_BATCH, 3, 4), np.float32)
outputs, _ = elman_scan(x, None, np.zeros((len(x), 4), np.float32),
                        np.eye(4, dtype=np.float32))
assert not elman_kernel.available()
np.testing.assert_allclose(outputs[:, 0], np.tanh(1.0), rtol=1e-6)
"""


def test_without_a_compiler_the_layer_warns_and_runs_xla(tmp_path,
                                                          scan_implementation):
  if scan_implementation == 'xla':
    pytest.skip('the fallback is what TOOLKIT_RNN_KERNEL=xla chooses anyway')
  env = dict(os.environ, CXX=str(tmp_path / 'no-such-compiler'),
             TOOLKIT_CACHE_DIR=str(tmp_path / 'cache'))
  run = subprocess.run([sys.executable, '-c', _WITHOUT_A_COMPILER], env=env,
                       capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 0, run.stderr[-3000:]
  assert "could not be built, so it runs XLA's scan" in run.stderr
  assert 'no-such-compiler' in run.stderr


def _time_major_as_batch_major(x_proj, mask, h0, w_hh):
  swap = lambda a: jnp.swapaxes(a, 0, 1)
  outputs, h_last = elman_scan_time_major(
      swap(x_proj), None if mask is None else swap(mask), h0, w_hh)
  return swap(outputs), h_last


@pytest.mark.parametrize('masked', [False, True])
def test_time_major_scan_equals_the_batch_major_one(masked):
  x_proj, mask, h0, w_hh = _inputs(7, masked)
  _assert_same_gradients(_weighted_loss(_time_major_as_batch_major, 7),
                         _weighted_loss(elman_scan, 7),
                         (x_proj, h0, w_hh, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('shift', [0, 1, 5, 40])
def test_the_shifted_product_kernel_against_numpy(shift, scan_implementation):
  if scan_implementation == 'xla' or not elman_kernel.available():
    pytest.skip('the kernel, where it is built')
  # Row and column counts that fill neither a vector nor a register tile.
  rng = np.random.default_rng(shift)
  a = rng.normal(size=(40, 19)).astype(np.float32)
  b = rng.normal(size=(40, 35)).astype(np.float32)
  want = sum(np.outer(a[i], b[i + shift]) for i in range(40 - shift))
  got = elman_kernel.transposed_product(a, b, shift)
  np.testing.assert_allclose(got, np.zeros((19, 35)) + want, rtol=1e-5,
                             atol=1e-5)


# The kernel cache: a library found there runs in this process, so it must
# come from a private directory and still have the digest it was built with.
# pylint: disable=protected-access

_COMPILE = elman_kernel._compile


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch, scan_implementation):
  """An empty TOOLKIT_CACHE_DIR, and the list of builds made into it or
  elsewhere (elman_kernel._compile records each target it compiles)."""
  if scan_implementation == 'xla' or not _compiler_present():
    pytest.skip('builds the kernels: once, and only with a C++ compiler')
  cache = tmp_path / 'cache'
  monkeypatch.setenv('TOOLKIT_CACHE_DIR', str(cache))
  builds = []

  def recorded_compile(target):
    builds.append(target)
    return _COMPILE(target)
  monkeypatch.setattr(elman_kernel, '_compile', recorded_compile)
  return cache, builds


@pytest.fixture(scope='module')
def _library_built_once(tmp_path_factory):
  return _COMPILE(  # not a build that kernel_cache records
      tmp_path_factory.mktemp('built') /
      f'elman_cpu-{elman_kernel._cache_key()}.so')


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

  def recorded_copy(target):
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
  cached = cache / f'elman_cpu-{elman_kernel._cache_key()}.so'
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
