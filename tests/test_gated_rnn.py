"""Tests of models/gated_rnn.py against trax's own GRU and LSTM cells.

The reference runs trax's GRUCell or LSTMCell one step at a time in a
Python loop, carrying the state over padding, and takes JAX's gradient of
that; GatedRNN's hand-written backward pass must agree with it.
"""

import jax
from jax import numpy as jnp
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

from models.gated_rnn import GatedRNN

BATCH, TIME, FEATURES, UNITS = 4, 7, 5, 6
TRAX_CELLS = {'gru': (tl.GRUCell, 1), 'lstm': (tl.LSTMCell, 2)}


def _inputs(cell, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)
  mask = (np.arange(TIME)[None] < np.array([7, 3, 5, 1])[:, None]).astype(
      np.float32)
  h0 = 0.5 * rng.normal(size=(BATCH, TRAX_CELLS[cell][1] * UNITS)).astype(
      np.float32)
  return x, mask, h0


def _trax_cell(cell, x, h0):
  trax_cell = TRAX_CELLS[cell][0](UNITS)
  trax_cell.init(shapes.signature((x[:, 0], h0)))
  return trax_cell


def _reference(trax_cell, weights, x, mask, h0):
  """(outputs, final state) of the trax cell, step by step."""
  state, outputs = h0, []
  for t in range(TIME):
    (y, new_state), _ = trax_cell.pure_fn((x[:, t], state), weights, (),
                                          jax.random.PRNGKey(0))
    real = mask[:, t:t + 1] > 0
    state = jnp.where(real, new_state, state)
    outputs.append(jnp.where(real, y, 0.0))
  return jnp.stack(outputs, axis=1), state


def _layer(cell, use_mask, signature):
  layer = GatedRNN(cell, UNITS, use_mask=use_mask, use_initial_state=True,
                   return_state=True)
  layer.init(signature)
  return layer


def _apply(layer, weights, inputs):
  return layer.pure_fn(inputs, weights, (), jax.random.PRNGKey(0))[0]


@pytest.mark.parametrize('use_mask', [False, True])
@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_outputs_and_gradients_equal_trax_cells_step_by_step(cell, use_mask):
  x, mask, h0 = _inputs(cell)
  if not use_mask:
    mask = np.ones_like(mask)
  trax_cell = _trax_cell(cell, x, h0)
  # Larger weights than trax draws, so that the gates are not all near 1/2.
  weights = tuple(3.0 * jnp.asarray(w) for w in trax_cell.weights)
  inputs = (x, mask, h0) if use_mask else (x, h0)
  layer = _layer(cell, use_mask, shapes.signature(inputs))

  def loss(outputs_and_state):
    outputs, state = outputs_and_state
    return jnp.sum(jnp.sin(3.0 * outputs)) + jnp.sum(state ** 2)

  def ours(w, x, h0):
    return loss(_apply(layer, w, (x, mask, h0) if use_mask else (x, h0)))

  def theirs(w, x, h0):
    return loss(_reference(trax_cell, w, x, mask, h0))

  got = jax.value_and_grad(ours, argnums=(0, 1, 2))(weights, x, h0)
  want = jax.value_and_grad(theirs, argnums=(0, 1, 2))(weights, x, h0)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(got[1]),
                  jax.tree_util.tree_leaves(want[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_weights_are_trax_layers_leaf_for_leaf(cell):
  x, _, _ = _inputs(cell)
  x = np.concatenate([x, x[..., :1]], axis=-1)  # trax's layers: width UNITS
  trax_layer = {'gru': tl.GRU, 'lstm': tl.LSTM}[cell](UNITS)
  trax_layer.init(shapes.signature(x))
  layer = GatedRNN(cell, UNITS)
  layer.init(shapes.signature(x))
  flat = tl.flatten_weights_and_state(trax_layer.weights, ())[0]
  assert [w.shape for w in layer.weights] == [w.shape for w in flat]
  np.testing.assert_allclose(_apply(layer, tuple(flat), x), trax_layer(x),
                             atol=1e-6)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_predict_mode_fed_in_chunks_equals_one_pass(cell):
  x, _, _ = _inputs(cell)
  whole = GatedRNN(cell, UNITS)
  whole.init(shapes.signature(x))
  predict = GatedRNN(cell, UNITS, mode='predict')
  predict.init(shapes.signature(x[:, :2]))
  predict.weights = whole.weights
  chunks = [np.asarray(predict(x[:, t:t + 2])) for t in range(0, 6, 2)]
  np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole(x)[:, :6],
                             atol=1e-6)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_bfloat16_computes_in_bfloat16_close_to_float32(cell):
  # Given bfloat16 inputs, every product and the state are bfloat16 (the
  # float32 weights cast on the fly); outputs and gradients stay within
  # bfloat16's rounding of the float32 computation at the same inputs.
  x, mask, h0 = _inputs(cell, seed=1)
  inputs = (x, mask, h0)
  layer = _layer(cell, True, shapes.signature(inputs))
  weights = jax.tree_util.tree_map(lambda w: 3.0 * jnp.asarray(w),
                                   layer.weights)
  low = tuple(jnp.asarray(a, jnp.bfloat16) for a in inputs)

  def loss(w, x, h0):
    outputs, state = _apply(layer, w, (x, low[1], h0))
    return (jnp.sum(jnp.sin(3.0 * outputs.astype(jnp.float32)))
            + jnp.sum(state.astype(jnp.float32) ** 2))

  products = [e for e in jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(
      weights, low[0], low[2]).eqns if e.primitive.name == 'dot_general']
  assert products and all(v.aval.dtype == jnp.bfloat16
                          for e in products for v in e.invars)
  outputs, state = _apply(layer, weights, low)
  assert outputs.dtype == state.dtype == jnp.bfloat16
  got = jax.value_and_grad(loss, argnums=(0, 1, 2))(weights, low[0], low[2])
  # float32 at the same (rounded) inputs, so only the arithmetic differs.
  want = jax.value_and_grad(loss, argnums=(0, 1, 2))(
      weights, np.float32(low[0]), np.float32(low[2]))
  # bfloat16 keeps 8 significant bits (a rounding of up to 0.4%); over 7
  # steps forward and back, through the gates, the gradients' errors
  # compound to 0.8-4.3% of their largest entry, and the loss's to
  # 0.04-1.6%, over seeds 0-5. The bounds leave about twice that. (That
  # the float32 gradients are right is the test above.)
  np.testing.assert_allclose(got[0], want[0], rtol=0.05)
  for g, w in zip(jax.tree_util.tree_leaves(got[1]),
                  jax.tree_util.tree_leaves(want[1]), strict=True):
    scale = np.abs(np.float32(w)).max()
    np.testing.assert_allclose(np.float32(g), np.float32(w), rtol=0,
                               atol=0.08 * scale)
