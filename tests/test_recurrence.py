"""The hand-written VJP of the Elman recurrence against JAX's autodiff of a
plain Python loop over time, with the CPU kernels and with XLA's scan."""

import os
import shutil

import jax
from jax import numpy as jnp
import numpy as np
import pytest

from models import elman_kernel
from models import kernel_choice
from models.recurrence import (ACTIVATIONS, elman_scan, elman_scan_time_major,
                               input_projection)

# Units and batch that fill neither a vector nor a register tile, so the
# kernels' edge loops run.
BATCH, TIME, UNITS = 19, 7, 21


KERNELS = ('toolkit_elman_forward', 'toolkit_elman_backward',
           'toolkit_transposed_product')


def _compiler_present():
  return shutil.which(os.environ.get('CXX', 'c++')) is not None


@pytest.fixture(autouse=True, params=['native', 'avx2', 'xla'])
def scan_implementation(request, monkeypatch):
  """Every test runs every path the layer can take: the CPU kernels as
  built for this CPU ('native') and for AVX2 (what an AVX2 machine runs;
  on an AVX-512 one, other code), and XLA's scan.

  Where a C++ compiler is present, the kernels must build: if they failed
  to, the kernels' tests would run XLA's scan again and pass without
  testing them.
  """
  if request.param == 'xla':
    monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'xla')
    return 'xla'
  if jax.default_backend() != 'cpu':  # benchmarks/device_check.py on a GPU
    pytest.skip('the CPU kernels run where JAX computes on the CPU')
  if request.param == 'avx2' and 'avx2' not in elman_kernel.supported_isas():
    pytest.skip('this CPU has no AVX2')
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'kernel')
  monkeypatch.setenv('TOOLKIT_RNN_ISA', request.param)
  if _compiler_present():
    assert elman_kernel.available(), (
        'A C++ compiler is here but the Elman CPU kernels did not build; '
        'the warning logged above says why.')
  return request.param


def _kernels_expected(implementation):
  return implementation != 'xla' and _compiler_present()


def _kernels_in(fn, *args):
  """The CPU kernels in the HLO that jax.jit(fn) lowers to at `args`."""
  return _kernels_named_in(jax.jit(fn).lower(*args).as_text())


def _kernels_named_in(text):
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
                                                scan_implementation):
  # Widths of whole vectors and register tiles, so the kernels' main tiles
  # run (UNITS above fills neither), and rows for two blocks.
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


def test_the_cpu_kernels_are_built_and_used(scan_implementation):
  if not _compiler_present():
    pytest.skip('no C++ compiler here: the layer runs XLA\'s scan')
  x_proj, mask, h0, w_hh = _inputs(6, masked=True)

  def kernels_in_gradient(rows):
    loss = lambda w: elman_scan(x_proj[:rows], mask[:rows], h0[:rows], w)[0].sum()
    graph = str(jax.make_jaxpr(jax.grad(loss))(w_hh))
    return {name for name in ['toolkit_elman_forward', 'toolkit_elman_backward']
            if name in graph}
  # TOOLKIT_RNN_KERNEL=kernel runs them at any size, down to one row.
  for rows in (BATCH, 1):
    assert len(kernels_in_gradient(rows)) == (
        0 if scan_implementation == 'xla' else 2)


def test_an_unknown_implementation_is_named(monkeypatch):
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'fast')
  x_proj, _, h0, w_hh = _inputs(4, masked=False)
  with pytest.raises(ValueError, match="TOOLKIT_RNN_KERNEL='fast'.*'kernel'.*'xla'"):
    elman_scan(x_proj, None, h0, w_hh)


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


@pytest.mark.parametrize('shape', [(BATCH, TIME, 13), (40, 13)])
def test_input_projection_gradients_against_autodiff(shape,
                                                     scan_implementation):
  # dW_xh is the kernels' long sum over every row (and step); the rest, and
  # the reference, are XLA's.
  rng = np.random.default_rng(len(shape))
  x = rng.normal(size=shape).astype(np.float32)
  w_xh = rng.normal(size=(13, UNITS)).astype(np.float32)
  b_h = rng.normal(size=(UNITS,)).astype(np.float32)
  readout = rng.normal(size=shape[:-1] + (UNITS,)).astype(np.float32)
  ours = lambda *a: jnp.sum(input_projection(*a) * readout)
  reference = lambda x, w, b: jnp.sum((x @ w + b) * readout)
  got = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(x, w_xh, b_h)
  want = jax.grad(reference, argnums=(0, 1, 2))(x, w_xh, b_h)
  for name, g, w in zip(['x', 'w_xh', 'b_h'], got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4, err_msg=name)
  text = jax.jit(jax.grad(ours, argnums=1)).lower(x, w_xh, b_h).as_text()
  assert ('toolkit_transposed_product' in text) == _kernels_expected(
      scan_implementation)


@pytest.mark.parametrize('masked', [False, True])
def test_one_trace_lowers_for_every_platform(masked, scan_implementation):
  # The gradient of the whole layer (input projection and recurrence),
  # traced once here: compiled for this CPU it runs the kernels; lowered
  # for CUDA or TPU it holds XLA's scan alone.
  x_proj, mask, h0, w_hh = _inputs(8, masked)
  x = x_proj[..., :5]
  w_xh = np.random.default_rng(9).normal(size=(5, UNITS)).astype(np.float32)

  def loss(x, w_xh, h0, w_hh):
    projected = input_projection(x, w_xh, jnp.zeros(UNITS))
    outputs, h_last = elman_scan(projected, mask, h0, w_hh)
    return jnp.sum(outputs ** 2) + jnp.sum(h_last)

  traced = jax.jit(jax.grad(loss, argnums=(1, 3))).trace(x, w_xh, h0, w_hh)
  on_cpu = traced.lower(lowering_platforms=('cpu',)).as_text()
  assert _kernels_named_in(on_cpu) == (
      set(KERNELS) if _kernels_expected(scan_implementation) else set())
  for platform in ('cuda', 'tpu'):
    assert not _kernels_named_in(
        traced.lower(lowering_platforms=(platform,)).as_text())


def test_a_portable_export_runs_anywhere_and_agrees(scan_implementation):
  # Traced under kernel_choice.portable(), one artifact serves the CPU,
  # CUDA and TPU (XLA's scan on each), and on this CPU it computes what
  # the NumPy loop does. Without it, jax.export refuses the kernels.
  x_proj, mask, h0, w_hh = _inputs(10, masked=True)
  def scan():  # a new function each time: jax.jit keeps a trace it made
    return jax.jit(lambda x_proj: elman_scan(x_proj, mask, h0, w_hh)[0])
  if _kernels_expected(scan_implementation):
    with pytest.raises(ValueError, match='compatibility guarantees'):
      jax.export.export(scan(), platforms=('cpu',))(x_proj)
  with kernel_choice.portable():
    exported = jax.export.export(scan(), platforms=('cpu', 'cuda', 'tpu'))(
        x_proj)
  assert not _kernels_named_in(exported.mlir_module())
  restored = jax.export.deserialize(exported.serialize())
  reference, _, _ = numpy_elman_with_gradients(
      x_proj, mask, h0, w_hh, np.zeros_like(x_proj), np.zeros_like(h0))
  np.testing.assert_allclose(restored.call(x_proj), reference, rtol=1e-5,
                             atol=1e-5)
