"""The Elman recurrence over time, with a hand-written backward pass.

Given the projected inputs a_t = x_t · W_xh + b_h for every step (one large
matrix product, done by the caller), `elman_scan` runs

    h_t = g(a_t + h_{t-1} · W_hh)

Differentiating a `lax.scan` with JAX's autodiff makes the backward pass
compute dW_hh as one small outer product per step and keep extra residuals.
The VJP here instead saves only the hidden states in the forward scan, runs
just the delta recurrence in the reverse scan,

    d_t = (dL/dy_t + dL/dh_t) ⊙ g'(y_t),    dL/dh_{t-1} = d_t · W_hhᵀ

and then forms dW_hh = Σ_t h_{t-1}ᵀ d_t as one large matrix product over all
steps at once. On a 2-core CPU that halves the time of a training step of
the layer (benchmarks/rnn_layer.py); on GPU/TPU it is the same arithmetic
with fewer, larger kernels. g' is written in terms of the output y = g(a),
so the pre-activations need not be kept. Activations given as callables,
whose derivative is unknown here, use JAX's autodiff of the plain scan.

The scans run time-major: XLA slices the leading axis of a scan's inputs
for free, and the two transposes cost less than strided slicing per step.

On CPU, float32 scans with a named activation, where
elman_kernel.pays_off (enough rows, W_hh within a core's L2 cache), run
both scans, and the dW_hh product, in the C++ kernels of
models/elman_kernel.py instead: they split the batch over the cores (XLA
runs a scan's steps on one) and read either layout, so batch-major callers
need no transposes. Elsewhere, or where the kernels cannot be built, the XLA
scans below.
"""

import functools

import jax
from jax import numpy as jnp

from models import elman_kernel

ACTIVATIONS = {
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
    'sigmoid': jax.nn.sigmoid,
    'identity': lambda x: x,
}

# g'(a) as a function of y = g(a), for each named activation.
_DERIVATIVES_FROM_OUTPUT = {
    'tanh': lambda y: 1.0 - y * y,
    'relu': lambda y: (y > 0).astype(y.dtype),
    'sigmoid': lambda y: y * (1.0 - y),
    'identity': jnp.ones_like,
}


def check_activation(activation):
  """Raises ValueError unless `activation` is a callable or a known name."""
  if not (callable(activation) or activation in ACTIVATIONS):
    raise ValueError(f'Unknown activation {activation!r}; '
                     f'choose one of {sorted(ACTIVATIONS)} or pass a callable.')


def elman_scan(x_proj, mask, h0, w_hh, activation='tanh'):
  """Runs the Elman recurrence over time, given the projected inputs.

  Args:
    x_proj: f32[batch, time, units], x_t · W_xh + b_h for every step.
    mask: f32[batch, time] or None; 0 marks padding, where the state is
      carried unchanged and the output is zero.
    h0: f32[batch, units], the state before the first step.
    w_hh: f32[units, units], the recurrent weights shared by all steps.
    activation: a name in ACTIVATIONS (hand-written gradient), or a callable
      applied elementwise (JAX's autodiff).

  Returns:
    (outputs f32[batch, time, units], final state f32[batch, units]).
  """
  if _use_kernels(activation, x_proj, batch=x_proj.shape[0]):
    return _kernel_scan(activation, True, x_proj, _as_mask(mask, x_proj),
                        h0.astype(x_proj.dtype), w_hh.astype(x_proj.dtype))
  outputs, h_last = elman_scan_time_major(
      jnp.swapaxes(x_proj, 0, 1),
      None if mask is None else jnp.swapaxes(mask, 0, 1), h0, w_hh,
      activation)
  return jnp.swapaxes(outputs, 0, 1), h_last


def elman_scan_time_major(x_proj, mask, h0, w_hh, activation='tanh'):
  """`elman_scan` on f32[time, batch, units] inputs and outputs.

  The mask, if any, is [time, batch]; any nonzero value marks a real step.
  """
  check_activation(activation)
  mask = _as_mask(mask, x_proj)
  h0 = h0.astype(x_proj.dtype)  # the carry keeps one dtype through the scan
  if callable(activation):
    return _scan(activation, x_proj, mask, h0, w_hh)[0]
  if _use_kernels(activation, x_proj, batch=x_proj.shape[1]):
    return _kernel_scan(activation, False, x_proj, mask, h0,
                        w_hh.astype(x_proj.dtype))
  return _fast_scan(activation, x_proj, mask, h0, w_hh)


def _as_mask(mask, x_proj):
  """1 at real steps (any nonzero value) and 0 at padding, or None."""
  return None if mask is None else (mask != 0).astype(x_proj.dtype)


def _use_kernels(activation, x_proj, batch):
  check_activation(activation)
  return (not callable(activation) and x_proj.dtype == jnp.float32
          and min(x_proj.shape) > 0
          and elman_kernel.pays_off(batch, x_proj.shape[-1])
          and elman_kernel.available())


def _scan(g, x_proj, mask, h0, w_hh):
  """The forward recurrence.

  Returns:
    ((outputs [time, batch, units], final state [batch, units]), states
    [time, batch, units]): h_t after every step. Unmasked, the states are
    the outputs, and one copy is kept.
  """
  def step(h, inputs):
    a_t, m_t = inputs
    y = g(a_t + h @ w_hh)
    if m_t is None:
      return y, y
    real = m_t[:, None] > 0
    h_next = jnp.where(real, y, h)
    return h_next, (jnp.where(real, y, 0.0), h_next)

  h_last, stacked = jax.lax.scan(step, h0, (x_proj, mask))
  outputs, states = stacked if mask is not None else (stacked, stacked)
  return (outputs, h_last), states


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fast_scan(activation, x_proj, mask, h0, w_hh):
  """(outputs [time, batch, units], final state), with the VJP below."""
  return _scan(ACTIVATIONS[activation], x_proj, mask, h0, w_hh)[0]


def _fast_scan_forward(activation, x_proj, mask, h0, w_hh):
  """Runs the recurrence; keeps the states, which the backward pass needs."""
  results, states = _scan(ACTIVATIONS[activation], x_proj, mask, h0, w_hh)
  return results, (states, mask, h0, w_hh)


def _fast_scan_backward(activation, residuals, cotangents):
  """Cotangents of (x_proj, mask, h0, w_hh) from those of the results."""
  states, mask, h0, w_hh = residuals
  d_outputs, d_h_last = cotangents
  step = _delta_step(_DERIVATIVES_FROM_OUTPUT[activation], w_hh.T)
  d_h0, d_pre = jax.lax.scan(step, d_h_last, (d_outputs, states, mask),
                             reverse=True)
  return d_pre, None, d_h0, _recurrent_weight_gradient(h0, states, d_pre)


def _delta_step(derivative, w_hh_t):
  """The reverse step: (dL/dh_t, inputs at t) -> (dL/dh_{t-1}, d_t)."""
  def step(d_h, inputs):
    d_y, h, m_t = inputs
    d_new = d_y + d_h
    if m_t is not None:  # padding: no output, h_{t-1} passed straight on
      d_new = d_new * m_t[:, None]
    # At real steps the state is g's output; at padding d_new is 0.
    d_pre = d_new * derivative(h)
    d_h_prev = d_pre @ w_hh_t
    if m_t is not None:
      d_h_prev = d_h_prev + d_h * (1.0 - m_t[:, None])
    return d_h_prev, d_pre
  return step


def _shifted_product(a, b, shift):
  """Σ_i a[i]ᵀ b[i + shift] over the rows of a and b that have a partner."""
  return a[:a.shape[0] - shift].T @ b[shift:]


def _recurrent_weight_gradient(h0, states, d_pre, batch_major=False,
                               shifted_product=_shifted_product):
  """dW_hh = Σ_t h_{t-1}ᵀ d_t, as one product over all steps but the first.

  Flattened to [rows, units], the pairs (h_{t-1}, d_t) are rows i and
  i + batch of time-major arrays, and rows i and i + 1 of batch-major ones,
  where the pairs that straddle two sequences are taken out again.
  """
  units = h0.shape[-1]
  flat_states, flat_d = states.reshape(-1, units), d_pre.reshape(-1, units)
  if batch_major:
    straddling = states[:-1, -1].T @ d_pre[1:, 0]
    return (shifted_product(flat_states, flat_d, 1) - straddling
            + h0.T @ d_pre[:, 0])
  return (shifted_product(flat_states, flat_d, h0.shape[0])
          + h0.T @ d_pre[0])


_fast_scan.defvjp(_fast_scan_forward, _fast_scan_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _kernel_scan(activation, batch_major, x_proj, mask, h0, w_hh):
  """`_fast_scan` with both scans in elman_kernel's CPU kernels, on
  [batch, time, ...] inputs and outputs if batch_major, else time-major."""
  return _kernel_scan_forward(activation, batch_major, x_proj, mask, h0,
                              w_hh)[0]


def _kernel_scan_forward(activation, batch_major, x_proj, mask, h0, w_hh):
  real = jnp.ones(x_proj.shape[:2], x_proj.dtype) if mask is None else mask
  states = elman_kernel.forward(x_proj, real, h0, w_hh, activation,
                                batch_major)
  outputs = states if mask is None else jnp.where(real[..., None] > 0,
                                                  states, 0.0)
  h_last = states[:, -1] if batch_major else states[-1]
  return (outputs, h_last), (states, real, h0, w_hh)


def _kernel_scan_backward(activation, batch_major, residuals, cotangents):
  states, real, h0, w_hh = residuals
  d_outputs, d_h_last = cotangents
  d_pre, d_h0 = elman_kernel.backward(d_outputs, d_h_last, states, real,
                                      w_hh, activation, batch_major)
  return (d_pre, None, d_h0,
          _recurrent_weight_gradient(h0, states, d_pre, batch_major,
                                     elman_kernel.transposed_product))


_kernel_scan.defvjp(_kernel_scan_forward, _kernel_scan_backward)
