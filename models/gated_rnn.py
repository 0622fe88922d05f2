"""GRU and LSTM layers with trax's weights and arithmetic, their input
products taken out of the loop over time.

trax's GRUCell and LSTMCell multiply the concatenation [x_t, h] by their
weights inside the scan, at every step. The x_t half of that product does
not depend on the recurrence, so `GatedRNN` computes it for all steps at
once, as one large product, and the scan multiplies only the state by the
recurrent half: half the work inside the loop, the other half done where
the CPU (or accelerator) runs fastest. At every step, as trax computes it:

    GRU:   u, r = σ([x_t, h]·W1 + b1);  c = tanh([x_t, r ⊙ h]·W2 + b2)
           h' = u ⊙ h + (1 − u) ⊙ c
    LSTM:  i, j, f, o = [x_t, h]·W + b
           c' = c ⊙ σ(f) + σ(i) ⊙ tanh(j);  h' = tanh(c') ⊙ σ(o)

The weights are trax's, leaf for leaf ((W1, b1, W2, b2) and (W, b), drawn
by the same initialisers), so runs trained with either load into the
other. The LSTM's state is (c, h) side by side, as in trax.
"""

import jax
from jax import numpy as jnp
from trax import fastmath
from trax.layers import initializers as init

from models.sequence_layer import SequenceLayer


def _gru_weights(rng, n_features, units):
  kernel = init.RandomUniformInitializer(0.01)
  bias = init.RandomNormalInitializer(1e-6)
  rngs = fastmath.random.split(rng, 4)
  return (kernel((n_features + units, 2 * units), rngs[0]),
          bias((2 * units,), rngs[1]),
          kernel((n_features + units, units), rngs[2]),
          bias((units,), rngs[3]))


def _lstm_weights(rng, n_features, units):
  rngs = fastmath.random.split(rng, 2)
  forget_bias = 1.0  # trax adds it to every gate's bias
  return (init.GlorotUniformInitializer()((n_features + units, 4 * units),
                                          rngs[0]),
          init.RandomNormalInitializer(1e-6)((4 * units,), rngs[1])
          + forget_bias)


def _gru_projections(x, weights):
  """The x_t parts of every step's products."""
  w1, b1, w2, b2 = weights
  n = x.shape[-1]
  return x @ w1[:n] + b1, x @ w2[:n] + b2


def _gru_recurrent(weights, n_features):
  return weights[0][n_features:], weights[2][n_features:]


def _lstm_projections(x, weights):
  w, b = weights
  return (x @ w[:x.shape[-1]] + b,)


def _lstm_recurrent(weights, n_features):
  return (weights[0][n_features:],)


# The backward passes below run only the recurrence of the deltas in their
# reverse scans, and form each recurrent weight's gradient afterwards as one
# product over all steps (Σ_t state_tᵀ · delta_t), as models/recurrence.py
# does for the Elman layer: JAX's own gradient of a scan adds one small
# product per step, which dominates a CPU training step.


def _contract(states, deltas):
  """Σ_t states_tᵀ · deltas_t of time-major arrays [time, batch, ·]."""
  return jnp.einsum('tbi,tbj->ij', states, deltas)


def _masked(m_t, new, old):
  return new if m_t is None else jnp.where(m_t[:, None] > 0, new, old)


@jax.custom_vjp
def gru_scan(gates_in, candidate_in, mask, h0, w1_h, w2_h):
  """trax's GRU over time-major projected inputs: (outputs, final state).

  gates_in [time, batch, 2·units] and candidate_in [time, batch, units] are
  the x_t parts of every step's products (biases included); mask [time,
  batch] or None.
  """
  return _gru_forward(gates_in, candidate_in, mask, h0, w1_h, w2_h)[0]


def _gru_forward(gates_in, candidate_in, mask, h0, w1_h, w2_h):
  def step(h, inputs):
    gates_t, candidate_t, m_t = inputs
    update, reset = jnp.split(jax.nn.sigmoid(gates_t + h @ w1_h), 2, axis=-1)
    candidate = jnp.tanh(candidate_t + (reset * h) @ w2_h)
    h_new = _masked(m_t, update * h + (1.0 - update) * candidate, h)
    output = _masked(m_t, h_new, 0.0)
    return h_new, (output, h, update, reset, candidate)

  h_last, (outputs, *saved) = jax.lax.scan(step, h0,
                                           (gates_in, candidate_in, mask))
  return (outputs, h_last), (*saved, mask, w1_h, w2_h)


def _gru_backward(residuals, cotangents):
  previous, update, reset, candidate, mask, w1_h, w2_h = residuals
  d_outputs, d_h_last = cotangents

  def step(d_h, inputs):
    d_out, h, u, r, c, m_t = inputs
    d_new = d_h + d_out
    if m_t is not None:  # padding: h passed on unchanged, no output
      real = m_t[:, None]
      d_new, d_passed = d_new * real, d_h * (1.0 - real)
    d_candidate = d_new * (1.0 - u) * (1.0 - c * c)
    d_reset_h = d_candidate @ w2_h.T
    d_gates = jnp.concatenate([d_new * (h - c) * u * (1.0 - u),
                               d_reset_h * h * r * (1.0 - r)], axis=-1)
    d_h = d_new * u + d_reset_h * r + d_gates @ w1_h.T
    if m_t is not None:
      d_h = d_h + d_passed
    return d_h, (d_gates, d_candidate)

  d_h0, (d_gates, d_candidate) = jax.lax.scan(
      step, d_h_last, (d_outputs, previous, update, reset, candidate, mask),
      reverse=True)
  return (d_gates, d_candidate, None, d_h0,
          _contract(previous, d_gates), _contract(reset * previous,
                                                  d_candidate))


gru_scan.defvjp(_gru_forward, _gru_backward)


@jax.custom_vjp
def lstm_scan(gates_in, mask, state0, w_h):
  """trax's LSTM over time-major projected inputs: (outputs, final state).

  gates_in [time, batch, 4·units] holds the x_t parts of every step's
  product (bias included); the state is (c, h) side by side.
  """
  return _lstm_forward(gates_in, mask, state0, w_h)[0]


def _lstm_forward(gates_in, mask, state0, w_h):
  def step(state, inputs):
    gates_t, m_t = inputs
    c, h = jnp.split(state, 2, axis=-1)
    i, j, f, o = jnp.split(gates_t + h @ w_h, 4, axis=-1)
    i, j, f, o = (jax.nn.sigmoid(i), jnp.tanh(j), jax.nn.sigmoid(f),
                  jax.nn.sigmoid(o))
    c_new = c * f + i * j
    tanh_c = jnp.tanh(c_new)
    new_state = _masked(m_t, jnp.concatenate([c_new, tanh_c * o], -1), state)
    output = _masked(m_t, tanh_c * o, 0.0)
    return new_state, (output, state, i, j, f, o, tanh_c)

  last, (outputs, *saved) = jax.lax.scan(step, state0, (gates_in, mask))
  return (outputs, last), (*saved, mask, w_h)


def _lstm_backward(residuals, cotangents):
  previous, i, j, f, o, tanh_c, mask, w_h = residuals
  d_outputs, d_last = cotangents

  def step(d_state, inputs):
    d_out, state, i, j, f, o, tanh_c, m_t = inputs
    d_c, d_h = jnp.split(d_state, 2, axis=-1)
    d_h = d_h + d_out
    if m_t is not None:  # padding: the state passed on unchanged
      real = m_t[:, None]
      d_passed = d_state * (1.0 - real)
      d_c, d_h = d_c * real, d_h * real
    c = jnp.split(state, 2, axis=-1)[0]
    d_c_new = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
    d_gates = jnp.concatenate([d_c_new * j * i * (1.0 - i),
                               d_c_new * i * (1.0 - j * j),
                               d_c_new * c * f * (1.0 - f),
                               d_h * tanh_c * o * (1.0 - o)], axis=-1)
    d_state = jnp.concatenate([d_c_new * f, d_gates @ w_h.T], axis=-1)
    if m_t is not None:
      d_state = d_state + d_passed
    return d_state, d_gates

  d_state0, d_gates = jax.lax.scan(
      step, d_last, (d_outputs, previous, i, j, f, o, tanh_c, mask),
      reverse=True)
  h_previous = jnp.split(previous, 2, axis=-1)[1]
  return d_gates, None, d_state0, _contract(h_previous, d_gates)


lstm_scan.defvjp(_lstm_forward, _lstm_backward)


def _gru_run(projected, mask, h0, recurrent):
  return gru_scan(*projected, mask, h0, *recurrent)


def _lstm_run(projected, mask, state0, recurrent):
  return lstm_scan(*projected, mask, state0, *recurrent)


def _cast(weights, dtype):
  """The weights in the compute dtype; their gradients reach the float32
  weights through the cast."""
  return tuple(w.astype(dtype) for w in weights)


# cell: (state width per unit, weights, x-part products, recurrent
# weights, scan).
_CELLS = {
    'gru': (1, _gru_weights, _gru_projections, _gru_recurrent, _gru_run),
    'lstm': (2, _lstm_weights, _lstm_projections, _lstm_recurrent,
             _lstm_run),
}


class GatedRNN(SequenceLayer):
  """trax's GRU or LSTM (`cell`), computed faster.

  Its inputs, outputs and predict mode are SequenceLayer's
  (models/sequence_layer.py); its state is h, or the LSTM's (c, h) side by
  side. It computes in its input's dtype (bfloat16 under a model's
  compute_dtype; trax's cells compute in float32 whatever the input), its
  float32 weights cast to it.
  """

  def __init__(self, cell: str, n_units: int, use_mask: bool = False,
               use_initial_state: bool = False,
               return_sequences: bool = True, return_state: bool = False,
               mode: str = 'train'):
    if cell not in _CELLS:
      raise ValueError(f'Unknown gated cell {cell!r}; choose one of '
                       f'{sorted(_CELLS)}.')
    super().__init__(cell.upper(), n_units, _CELLS[cell][0] * n_units,
                     use_mask, use_initial_state, return_sequences,
                     return_state, mode)
    self._cell = cell

  def project(self, weights, x):
    """The x_t parts of every step's products, biases included."""
    return _CELLS[self._cell][2](x, _cast(weights, x.dtype))

  def _scan(self, weights, projected, mask, h0):
    """(outputs [batch, time, units], final state), scanning time-major."""
    _, _, _, recurrent, run = _CELLS[self._cell]
    dtype = projected[0].dtype
    mask = None if mask is None else jnp.swapaxes(
        (mask != 0).astype(dtype), 0, 1)
    n_features = weights[0].shape[0] - self._n_units
    outputs, h_last = run(tuple(jnp.swapaxes(p, 0, 1) for p in projected),
                          mask, h0.astype(dtype),
                          _cast(recurrent(weights, n_features), dtype))
    return jnp.swapaxes(outputs, 0, 1), h_last

  def _init_weights(self, n_features):
    """Drawn as trax's cell draws them."""
    return _CELLS[self._cell][1](self.rng, n_features, self._n_units)
