"""Tests of the shared-weight Elman RNN layer against a NumPy loop."""

import jax
from jax import numpy as jnp
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

from models import rnn


def numpy_elman(x, w_xh, w_hh, b, mask=None, h0=None):
  """Reference: the Elman recurrence written as a plain loop over time."""
  batch, length, _ = x.shape
  h = np.zeros((batch, w_hh.shape[0])) if h0 is None else np.array(h0, float)
  mask = np.ones((batch, length)) if mask is None else mask
  outputs = np.zeros((batch, length, w_hh.shape[0]))
  for t in range(length):
    h_new = np.tanh(x[:, t] @ w_xh + h @ w_hh + b)
    for i in range(batch):
      if mask[i, t]:
        h[i] = h_new[i]
        outputs[i, t] = h_new[i]
  return outputs, h


def _init(layer, *arrays):
  layer.init(tuple(shapes.signature(a) for a in arrays)
             if len(arrays) > 1 else shapes.signature(arrays[0]))
  return [np.asarray(w, np.float64) for w in layer.weights]


def _random(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


MASK = np.array([[1, 1, 1, 0, 0, 0, 0],
                 [1, 1, 1, 1, 1, 1, 1],
                 [1, 0, 0, 0, 0, 0, 0]], np.float32)


def test_matches_numpy_loop_without_mask():
  x = _random((3, 7, 5), 0)
  layer = rnn.ElmanRNN(6, return_state=True)
  w_xh, w_hh, b = _init(layer, x)
  outputs, h_last = layer(x)
  want_outputs, want_h = numpy_elman(x, w_xh, w_hh, b)
  np.testing.assert_allclose(outputs, want_outputs, atol=1e-5)
  np.testing.assert_allclose(h_last, want_h, atol=1e-5)


def test_mask_freezes_state_and_zeroes_padded_outputs():
  x = _random((3, 7, 5), 1)
  layer = rnn.ElmanRNN(6, use_mask=True, return_state=True)
  w_xh, w_hh, b = _init(layer, x, MASK)
  outputs, h_last = layer((x, MASK))
  want_outputs, want_h = numpy_elman(x, w_xh, w_hh, b, mask=MASK)
  np.testing.assert_allclose(outputs, want_outputs, atol=1e-5)
  np.testing.assert_allclose(h_last, want_h, atol=1e-5)
  assert np.all(np.asarray(outputs)[0, 3:] == 0)


def test_padding_does_not_change_real_steps():
  x = _random((1, 4, 5), 2)
  padded = np.concatenate([x, _random((1, 3, 5), 3)], axis=1)
  mask = np.array([[1, 1, 1, 1, 0, 0, 0]], np.float32)
  layer = rnn.ElmanRNN(6, use_mask=True, return_state=True)
  layer.init((shapes.signature(padded), shapes.signature(mask)))
  outputs, h_last = layer((padded, mask))
  short = rnn.ElmanRNN(6, return_state=True)
  short.init(shapes.signature(x))
  short.weights = layer.weights
  short_outputs, short_h = short(x)
  np.testing.assert_allclose(outputs[:, :4], short_outputs, atol=1e-6)
  np.testing.assert_allclose(h_last, short_h, atol=1e-6)


def test_initial_state_and_final_state_only():
  x = _random((3, 7, 5), 4)
  h0 = _random((3, 6), 5)
  layer = rnn.ElmanRNN(6, use_mask=True, use_initial_state=True,
                       return_sequences=False, return_state=True)
  w_xh, w_hh, b = _init(layer, x, MASK, h0)
  h_last = layer((x, MASK, h0))
  _, want_h = numpy_elman(x, w_xh, w_hh, b, mask=MASK, h0=h0)
  np.testing.assert_allclose(h_last, want_h, atol=1e-5)


def test_activation_and_initializers_are_arguments():
  x = _random((2, 4, 3), 6)
  layer = rnn.ElmanRNN(
      5, activation='relu',
      kernel_initializer=tl.initializers.RandomNormalInitializer(0.0),
      recurrent_initializer=tl.initializers.RandomNormalInitializer(0.0),
      bias_initializer=lambda shape, rng: jnp.full(shape, 0.5))
  layer.init(shapes.signature(x))
  np.testing.assert_allclose(layer(x), 0.5)  # relu(0 + 0 + 0.5)


def test_default_recurrent_weights_are_orthogonal():
  x = _random((2, 4, 3), 7)
  layer = rnn.ElmanRNN(8)
  layer.init(shapes.signature(x))
  w_hh = np.asarray(layer.weights[1])
  np.testing.assert_allclose(w_hh @ w_hh.T, np.eye(8), atol=1e-5)


def test_weight_count_does_not_depend_on_sequence_length():
  counts = set()
  for length in (1, 10, 200):
    layer = rnn.ElmanRNN(16)
    layer.init(shapes.ShapeDtype((2, length, 4)))
    counts.add(sum(int(np.prod(w.shape)) for w in layer.weights))
  assert counts == {4 * 16 + 16 * 16 + 16}


def test_gradients_match_finite_differences():
  x = _random((2, 5, 3), 8).astype(np.float64)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.float64)
  with jax.enable_x64(True):
    layer = rnn.ElmanRNN(4, use_mask=True)
    layer.init((shapes.signature(x), shapes.signature(mask)))
    weights = jax.tree_util.tree_map(lambda w: jnp.asarray(w, jnp.float64),
                                     layer.weights)
    readout = _random((5, 4), 9).astype(np.float64)

    @jax.jit  # compiled once, not a scan traced again for each difference
    def loss(ws):
      outputs, _ = layer.pure_fn((x, mask), ws, layer.state, layer.rng)
      return jnp.sum(jnp.sin(outputs) * readout)

    grads = jax.grad(loss)(weights)
    eps = 1e-6
    for w_index, w in enumerate(weights):
      for flat_index in range(0, w.size, max(1, w.size // 7)):
        bump = np.zeros(w.size)
        bump[flat_index] = eps
        bump = bump.reshape(w.shape)
        plus = list(weights)
        minus = list(weights)
        plus[w_index] = w + bump
        minus[w_index] = w - bump
        numeric = (loss(tuple(plus)) - loss(tuple(minus))) / (2 * eps)
        analytic = np.asarray(grads[w_index]).reshape(-1)[flat_index]
        assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize('use_initial_state', [False, True])
def test_predict_mode_step_by_step_equals_full_sequence(use_initial_state):
  x = _random((3, 7, 5), 10)
  h0 = _random((3, 6), 11)
  extra = (h0,) if use_initial_state else ()
  full = rnn.ElmanRNN(6, use_initial_state=use_initial_state)
  full.init(tuple(shapes.signature(a) for a in (x,) + extra)
            if extra else shapes.signature(x))
  want = full((x,) + extra if extra else x)

  step = rnn.ElmanRNN(6, use_initial_state=use_initial_state, mode='predict')
  sig = (shapes.signature(x[:, :1]),) + tuple(shapes.signature(a) for a in extra)
  step.init(sig if extra else sig[0])
  step.weights = full.weights
  got = [step((x[:, t:t + 1],) + extra if extra else x[:, t:t + 1])
         for t in range(7)]
  np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5)


def test_stacked_layers_match_chained_numpy_loops():
  x = _random((3, 7, 5), 12)
  stack = rnn.StackedElmanRNN(6, n_layers=2, use_mask=True)
  stack.init((shapes.signature(x), shapes.signature(MASK)))
  outputs, mask_out = stack((x, MASK))
  (w1, w2) = [[np.asarray(w, np.float64) for w in layer.weights]
              for layer in stack.sublayers if isinstance(layer, rnn.ElmanRNN)]
  hidden, _ = numpy_elman(x, *w1, mask=MASK)
  want, _ = numpy_elman(hidden, *w2, mask=MASK)
  np.testing.assert_allclose(outputs, want, atol=1e-5)
  np.testing.assert_array_equal(mask_out, MASK)


def test_jit_and_batch_of_one():
  x = _random((1, 3, 2), 13)
  layer = rnn.ElmanRNN(4)
  w_xh, w_hh, b = _init(layer, x)
  fn = jax.jit(lambda inputs, ws: layer.pure_fn(inputs, ws, (), None)[0])
  np.testing.assert_allclose(fn(x, layer.weights),
                             numpy_elman(x, w_xh, w_hh, b)[0], atol=1e-5)


@pytest.mark.parametrize('kwargs, signature, message', [
    ({}, shapes.ShapeDtype((2, 5)), 'batch, time, features'),
    ({'use_mask': True}, (shapes.ShapeDtype((2, 5, 3)),
                          shapes.ShapeDtype((2, 4))), 'mask must have shape'),
    ({'use_initial_state': True}, (shapes.ShapeDtype((2, 5, 3)),
                                   shapes.ShapeDtype((2, 7))), 'initial state'),
])
def test_bad_shapes_are_named(kwargs, signature, message):
  with pytest.raises(Exception, match=message):
    rnn.ElmanRNN(4, **kwargs).init(signature)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='Unknown activation'):
    rnn.ElmanRNN(4, activation='swishy')
  with pytest.raises(ValueError, match='return the sequence, the state'):
    rnn.ElmanRNN(4, return_sequences=False)
  with pytest.raises(ValueError, match='Unknown recurrent cell'):
    rnn.RecurrentLayer('transformer', 4)


def test_bfloat16_input_computes_in_bfloat16_with_float32_weights():
  x = _random((3, 7, 4), seed=9)
  layer = rnn.ElmanRNN(5)
  w_xh, w_hh, b = _init(layer, x)
  want, _ = numpy_elman(x, w_xh, w_hh, b)
  got = layer(jnp.asarray(x, jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa: about 2-3 significant digits.
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=5e-2)

  def loss(weights, x):
    out, _ = layer.pure_fn(x, weights, layer.state, layer.rng)
    return jnp.sum(out.astype(jnp.float32) ** 2)
  low = jnp.asarray(x, jnp.bfloat16)
  grads = jax.grad(loss)(layer.weights, low)
  assert [g.dtype for g in grads] == [jnp.float32] * 3
  # float32 at the same (rounded) input, so only the arithmetic differs.
  want_grads = jax.grad(loss)(layer.weights, np.float32(low))
  # The weights are rounded to bfloat16's 8 significant bits (up to 2^-9,
  # 0.2%), and so are the products, states and outputs of each of the 7
  # steps; the gradients then differ by up to 2% of their largest entry
  # (seeds 9-14). 5% leaves room for that and fails a wrong gradient.
  for name, g, w in zip(['W_xh', 'W_hh', 'b_h'], grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=0, err_msg=name,
                               atol=0.05 * np.abs(w).max())
