"""The hand-written VJP of the Elman recurrence against JAX's autodiff of a
plain Python loop over time, with the CPU kernels and with XLA's scan."""

import os
import shutil
import subprocess
import sys

import jax
from jax import numpy as jnp
import numpy as np
import pytest

from models import elman_kernel
from models.recurrence import ACTIVATIONS, elman_scan, elman_scan_time_major

# Units and batch that fill neither a vector nor a register tile, so the
# kernels' edge loops run.
BATCH, TIME, UNITS = 19, 7, 21


@pytest.fixture(autouse=True, params=['auto', 'xla'])
def scan_implementation(request, monkeypatch):
  """Every test runs with the CPU kernels ('auto') and with XLA's scan."""
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', request.param)
  return request.param


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
def test_gradients_match_autodiff_of_the_plain_loop(activation, masked):
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
  want = jax.grad(loss, argnums=2)(x_proj, h0, w_hh, mask)
  low = [jnp.asarray(a, jnp.bfloat16) for a in (x_proj, h0, w_hh, mask)]
  got = jax.grad(loss, argnums=2)(*low)
  scale = np.abs(want).max()
  np.testing.assert_allclose(np.float32(got), want, atol=0.05 * scale)


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
