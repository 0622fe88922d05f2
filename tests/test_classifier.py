"""The text classifier and tagger models: masking, pooling and masked cells."""

import jax
from jax import numpy as jnp
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

import models
from models import classifier, rnn

VOCAB = 30


def _init(layer, *signature):
  layer.init(tuple(shapes.ShapeDtype(s, d) for s, d in signature)
             if len(signature) > 1 else shapes.ShapeDtype(*signature[0]))
  return layer


def _tokens(rng, lengths, width):
  """int32[len(lengths), width]: random ids >= 2, PAD_ID after each length."""
  tokens = rng.integers(2, VOCAB, size=(len(lengths), width)).astype(np.int32)
  for row, n in zip(tokens, lengths):
    row[n:] = 0
  return tokens


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
@pytest.mark.parametrize('pooling', classifier.POOLINGS)
@pytest.mark.parametrize('bidirectional', [True, False])
def test_padding_does_not_change_a_prediction(cell, pooling, bidirectional):
  model = classifier.RNNClassifier(VOCAB, 3, d_model=8, n_units=6,
                                   n_layers=2, cell=cell, pooling=pooling,
                                   bidirectional=bidirectional, mode='eval')
  _init(model, ((4, 12), np.int32))
  batch = _tokens(np.random.default_rng(0), [5, 12, 1, 8], 12)
  together = model(batch)
  for row, n in zip(range(4), [5, 12, 1, 8]):
    alone = model(batch[row:row + 1, :n])
    np.testing.assert_allclose(together[row], alone[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.exp(together).sum(-1), 1.0, rtol=1e-5)


def test_tagger_gives_each_real_token_the_tags_it_would_get_alone():
  model = classifier.RNNTagger(VOCAB, 5, d_model=8, n_units=6, mode='eval')
  _init(model, ((3, 10), np.int32))
  batch = _tokens(np.random.default_rng(1), [4, 10, 7], 10)
  together = model(batch)
  assert together.shape == (3, 10, 5)
  for row, n in enumerate([4, 10, 7]):
    alone = model(batch[row:row + 1, :n])
    np.testing.assert_allclose(together[row, :n], alone[0], rtol=1e-5,
                               atol=1e-6)


def _numpy_elman(x, w_xh, w_hh, b):
  h = np.zeros(w_hh.shape[0])
  states = []
  for x_t in x:
    h = np.tanh(x_t @ w_xh + h @ w_hh + b)
    states.append(h)
  return np.array(states)


def test_bidirectional_states_match_a_numpy_loop_over_the_real_steps():
  layer = rnn.MaskedRNN('elman', 5, bidirectional=True)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 7, 3)).astype(np.float32)
  mask = np.array([[1] * 4 + [0] * 3, [1] * 7], np.float32)
  _init(layer, ((2, 7, 3), np.float32), ((2, 7), np.float32))
  states, mask_out = layer((x, mask))
  np.testing.assert_array_equal(mask_out, mask)
  (fw, bw) = [tuple(map(np.asarray, w)) for w in _elman_weights(layer)]
  for row, n in enumerate([4, 7]):
    want_fwd = _numpy_elman(x[row, :n], *fw)
    want_bwd = _numpy_elman(x[row, :n][::-1], *bw)[::-1]
    np.testing.assert_allclose(states[row, :n], np.concatenate(
        [want_fwd, want_bwd], -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(states[row, n:], 0.0)


def _elman_weights(layer):
  """The (W_xh, W_hh, b) of each ElmanRNN in `layer`, in order."""
  found = []
  def visit(sublayer):
    if isinstance(sublayer, models.ElmanRNN):
      found.append(sublayer.weights)
    for child in sublayer.sublayers:
      visit(child)
  visit(layer)
  return found


@pytest.mark.parametrize('cell, trax_layer', [('gru', tl.GRU),
                                              ('lstm', tl.LSTM)])
def test_masked_trax_cells_equal_trax_layers_on_the_real_steps(cell,
                                                               trax_layer):
  masked = rnn.RecurrentLayer(cell, 4, use_mask=True)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 6, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6], np.float32)
  _init(masked, ((2, 6, 4), np.float32), ((2, 6), np.float32))
  reference = _init(trax_layer(4), ((1, 3, 4), np.float32))
  reference.weights = _cell_weights(masked, reference)
  got = masked((x, mask))
  for row, n in enumerate([3, 6]):
    np.testing.assert_allclose(got[row, :n], reference(x[row:row + 1, :n])[0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[row, n:], 0.0)


def _cell_weights(masked, reference):
  """`reference`'s weights tree, with the masked layer's cell weights in it."""
  cell_weights = [w for w in jax.tree_util.tree_leaves(masked.weights)]
  leaves, tree = jax.tree_util.tree_flatten(reference.weights)
  assert [l.shape for l in leaves] == [w.shape for w in cell_weights]
  return jax.tree_util.tree_unflatten(tree, cell_weights)


@pytest.mark.parametrize('pooling', classifier.POOLINGS)
def test_pooling_matches_numpy(pooling):
  rng = np.random.default_rng(4)
  states = rng.normal(size=(3, 5, 4)).astype(np.float32)
  lengths = [2, 5, 0]
  mask = (np.arange(5)[None] < np.array(lengths)[:, None]).astype(np.float32)
  got = classifier.Pool(pooling, bidirectional=True)((states, mask))
  for row, n in enumerate(lengths):
    real = states[row, :n]
    if n == 0:
      want = np.zeros(4) if pooling != 'last' else states[row, 0]
    elif pooling == 'mean':
      want = real.mean(0)
    elif pooling == 'max':
      want = real.max(0)
    else:  # forward half after the last step, backward half after step 0
      want = np.concatenate([real[-1, :2], real[0, 2:]])
    np.testing.assert_allclose(got[row], want, rtol=1e-6)


def test_unknown_pooling_is_refused():
  with pytest.raises(ValueError, match='pooling'):
    classifier.RNNClassifier(VOCAB, 2, pooling='sum')


def test_gradients_reach_every_weight():
  model = classifier.RNNClassifier(VOCAB, 2, d_model=8, n_units=6,
                                   mode='train', dropout=0.0)
  _init(model, ((2, 9), np.int32))
  tokens = _tokens(np.random.default_rng(5), [3, 9], 9)

  def loss(weights):
    log_probs, _ = model.pure_fn(tokens, weights, model.state,
                                 jax.random.PRNGKey(0))
    return -jnp.sum(log_probs[:, 0])

  grads = jax.grad(loss)(model.weights)
  assert all(float(jnp.abs(g).sum()) > 0
             for g in jax.tree_util.tree_leaves(grads))
