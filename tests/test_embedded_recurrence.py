"""Tests of models/embedded_recurrence.py: the input product taken per
vocabulary row gives what the embedding followed by the recurrent layer
gives (trax's Embedding and the layer, run one after the other), values and
gradients, on both of its paths."""

import jax
from jax import numpy as jnp
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes
from trax.layers import base

from models import rnn
from models.embedded_recurrence import EmbeddedRecurrence

VOCAB, D_EMBED, UNITS = 7, 5, 6


def _inputs(batch, time, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, VOCAB, (batch, time)).astype(np.int32)
  mask = (np.arange(time)[None] < rng.integers(1, time + 1, batch)[:, None])
  return tokens, mask.astype(np.float32)


def _layers(cell, batch, time, use_mask, mode='eval', rate=0.0):
  """(EmbeddedRecurrence, the same two layers in a Serial), one set of weights."""
  def recurrence():
    return rnn.CELLS[cell](UNITS, mode, use_mask=use_mask,
                           use_initial_state=True, return_state=True)
  fused = EmbeddedRecurrence(tl.Embedding(VOCAB, D_EMBED), recurrence(),
                             rate, mode=mode)
  state_width = fused.state_width
  signature = [shapes.ShapeDtype((batch, time), np.int32)]
  if use_mask:
    signature.append(shapes.ShapeDtype((batch, time), np.float32))
  signature.append(shapes.ShapeDtype((batch, state_width), np.float32))
  fused.init(tuple(signature), rng=jax.random.PRNGKey(1))
  plain = tl.Serial(tl.Embedding(VOCAB, D_EMBED), recurrence())
  plain.init(tuple(signature))
  plain.weights = fused.weights
  return fused, plain, state_width


def _run(layer, weights, inputs):
  return layer.pure_fn(inputs, weights, layer.state, jax.random.PRNGKey(2))[0]


# Batches of 3 × 4 = 12 tokens: more than the vocabulary's 7 rows, the
# product is taken per row; of 1 × 4 tokens, fewer, and it is taken per token.
@pytest.mark.parametrize('batch', [3, 1])
@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
@pytest.mark.parametrize('use_mask', [False, True])
def test_values_and_gradients_equal_the_embedding_then_the_layer(
    cell, batch, use_mask):
  time = 4
  fused, plain, width = _layers(cell, batch, time, use_mask)
  tokens, mask = _inputs(batch, time)
  h0 = np.random.default_rng(3).normal(size=(batch, width)).astype(np.float32)
  inputs = (tokens, mask, h0) if use_mask else (tokens, h0)

  def loss(layer):
    def of(weights):
      outputs, h_last = _run(layer, weights, inputs)
      return jnp.sum(jnp.sin(outputs)) + jnp.sum(h_last ** 2)
    return of

  value, grads = jax.value_and_grad(loss(fused))(fused.weights)
  want_value, want_grads = jax.value_and_grad(loss(plain))(fused.weights)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for got, want in zip(jax.tree_util.tree_leaves(grads),
                       jax.tree_util.tree_leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_weights_flatten_as_the_serial_of_the_two_layers():
  fused, plain, _ = _layers('gru', 2, 3, use_mask=False)
  got = tl.flatten_weights_and_state(fused.weights, ())[0]
  want = tl.flatten_weights_and_state(plain.weights, ())[0]
  assert [w.shape for w in got] == [w.shape for w in want]


def test_predict_mode_one_token_at_a_time_equals_the_whole_sequence():
  tokens, _ = _inputs(2, 5, seed=4)
  whole = EmbeddedRecurrence(tl.Embedding(VOCAB, D_EMBED),
                             rnn.CELLS['elman'](UNITS, 'eval'), mode='eval')
  whole.init(shapes.signature(tokens))
  step = EmbeddedRecurrence(tl.Embedding(VOCAB, D_EMBED),
                            rnn.CELLS['elman'](UNITS, 'predict'),
                            mode='predict')
  step.init(shapes.signature(tokens[:, :1]))
  step.weights = whole.weights
  outputs = [step(tokens[:, t:t + 1]) for t in range(tokens.shape[1])]
  np.testing.assert_allclose(np.concatenate(outputs, axis=1), whole(tokens),
                             rtol=1e-5, atol=1e-6)


def test_dropout_acts_on_the_projected_inputs_in_training_only():
  tokens, _ = _inputs(4, 8, seed=5)
  layers = {}
  for mode in ('train', 'eval'):
    layer = EmbeddedRecurrence(tl.Embedding(VOCAB, D_EMBED),
                               rnn.CELLS['elman'](UNITS, mode,
                                                  activation='identity'),
                               rate=0.5, mode=mode)
    layer.init(shapes.signature(tokens), rng=jax.random.PRNGKey(0))
    layers[mode] = layer
  layers['train'].weights = layers['eval'].weights
  w_xh, w_hh, b_h = layers['eval'].weights[1]
  kept = _run(layers['train'], layers['train'].weights, tokens)
  # With the identity activation and W_hh = 0, h_t is the dropped-out
  # projection itself: each unit either zero or the projection doubled.
  layers['train'].weights = (layers['train'].weights[0],
                             (w_xh, jnp.zeros_like(w_hh), b_h))
  dropped = np.asarray(_run(layers['train'], layers['train'].weights, tokens))
  projected = np.asarray(layers['eval'].weights[0])[tokens] @ w_xh + b_h
  is_zero = dropped == 0.0
  np.testing.assert_allclose(dropped[~is_zero], 2 * projected[~is_zero],
                             rtol=1e-5)
  assert 0.3 < is_zero.mean() < 0.7
  assert not np.allclose(kept, _run(layers['eval'], layers['eval'].weights,
                                    tokens))


def test_token_ids_of_the_wrong_rank_are_refused():
  layer = EmbeddedRecurrence(tl.Embedding(VOCAB, D_EMBED),
                             rnn.CELLS['elman'](UNITS, 'eval'))
  # trax passes the error on inside its LayerError, message included.
  with pytest.raises(base.LayerError, match='token ids of shape'):
    layer.init(shapes.ShapeDtype((2, 3, 4), np.int32))
