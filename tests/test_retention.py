"""The memory-retention diagnostic against finite differences."""

import jax
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

import models
from rnn_toolkit.reporting import retention
from models.rnn import ElmanRNN

VOCAB = 7


def _model_and_tokens(cell, n_layers, shape=(3, 6)):
  model = models.RNNLanguageModel(VOCAB, d_model=4, n_layers=n_layers,
                                  cell=cell, mode='eval')
  model.init(shapes.ShapeDtype(shape, np.int32))
  tokens = np.random.default_rng(0).integers(1, VOCAB, shape).astype(np.int32)
  return model, tokens


def _layers_of(layer, kind):
  """The layers of type `kind` inside `layer`, in the order they run."""
  if isinstance(layer, kind):
    return [layer]
  return [found for sub in layer.sublayers for found in _layers_of(sub, kind)]


def _embedded(model, tokens):
  """x_t: the embedding of the token before t (PAD_ID 0 before the first)."""
  table, = _layers_of(model, tl.Embedding)
  previous = np.pad(tokens, ((0, 0), (1, 0)))[:, :-1]
  return np.asarray(table.weights, np.float64)[previous]


def _elman_layers(layer):
  """The ElmanRNN layers inside `layer`, in the order they run (forward first)."""
  return _layers_of(layer, ElmanRNN)


def _forward_last_state(layers, x):
  """The last state of `layers` (ElmanRNNs, each feeding the next), in NumPy."""
  for layer in layers:
    w_xh, w_hh, b = (np.asarray(w, np.float64) for w in layer.weights)
    h, states = np.zeros((x.shape[0], w_hh.shape[0])), []
    for t in range(x.shape[1]):
      h = np.tanh(x[:, t] @ w_xh + h @ w_hh + b)
      states.append(h)
    x = np.stack(states, axis=1)
  return x[:, -1]


def _elman_last_state(model, x):
  """The top Elman layer's last state, by a float64 NumPy loop."""
  return _forward_last_state(_elman_layers(model), x)


def _finite_difference_norms(last_state, x, eps):
  """‖∂h_T/∂x_t‖_F from central differences, one input coordinate at a time."""
  squared = np.zeros(x.shape[:2])
  for t in range(x.shape[1]):
    for k in range(x.shape[2]):
      step = np.zeros_like(x)
      step[:, t, k] = eps
      column = (last_state(x + step) - last_state(x - step)) / (2 * eps)
      squared[:, t] += np.sum(column ** 2, axis=-1)
  return np.sqrt(squared)


@pytest.mark.parametrize('n_layers', [1, 2])
def test_elman_norms_match_finite_differences_of_a_numpy_loop(n_layers):
  model, tokens = _model_and_tokens('elman', n_layers)
  want = _finite_difference_norms(lambda x: _elman_last_state(model, x),
                                  _embedded(model, tokens), eps=1e-5)
  got = retention.jacobian_norms(model, tokens)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The curve is the mean over windows, read from the last input backwards.
  np.testing.assert_allclose(retention.retention_curve(model, tokens),
                             want.mean(axis=0)[::-1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_gated_cell_norms_match_finite_differences(cell, monkeypatch):
  # More units than one pass takes, so the passes' sums are checked too.
  monkeypatch.setattr(retention, 'UNITS_PER_PASS', 3)
  # The forward pass is the module's own here (the split is checked against
  # an independent loop in the Elman test); the differentiation is not.
  model, tokens = _model_and_tokens(cell, 1)
  _, to_states = retention.split_at_embedding(model)
  weights = [l.weights for l in to_states]
  # Compiled once, not traced again for each of the differences.
  run = jax.jit(lambda x: retention._run(to_states, weights, x))  # pylint: disable=protected-access

  def last_state(x):
    states = run(x.astype(np.float32))
    return np.asarray(states[:, -1], np.float64)
  want = _finite_difference_norms(last_state, _embedded(model, tokens),
                                  eps=1e-2)
  got = retention.jacobian_norms(model, tokens)
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)


def test_without_recurrent_weights_only_the_last_input_is_held():
  model, tokens = _model_and_tokens('elman', 1)
  layer = _elman_layers(model)[0]
  w_xh, w_hh, b = layer.weights
  layer.weights = (w_xh, np.zeros_like(w_hh), b)
  norms = retention.jacobian_norms(model, tokens)
  np.testing.assert_array_equal(norms[:, :-1], 0.0)
  # h_T = tanh(x_T·W_xh + b): its Jacobian is diag(1 - h_T²)·W_xhᵀ.
  h = np.tanh(_embedded(model, tokens)[:, -1] @ np.asarray(w_xh) + b)
  want = np.sqrt((((1 - h ** 2)[:, :, None] * np.asarray(w_xh).T[None]) ** 2)
                 .sum(axis=(1, 2)))
  np.testing.assert_allclose(norms[:, -1], want, rtol=1e-5)


def test_bfloat16_models_give_the_float32_norms_to_bfloat16_precision():
  model, tokens = _model_and_tokens('elman', 2)
  low = models.RNNLanguageModel(VOCAB, d_model=4, n_layers=2,
                                compute_dtype='bfloat16', mode='eval')
  low.init(shapes.signature(tokens))
  # The same weights, layer by layer (the casts between them have none).
  weighted = [[l for l in m.sublayers if jax.tree_util.tree_leaves(l.weights)]
              for m in (model, low)]
  for source, target in zip(*weighted):
    target.weights = source.weights
  got = retention.jacobian_norms(low, tokens)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, retention.jacobian_norms(model, tokens),
                             rtol=0.05, atol=1e-3)


def test_a_model_without_an_embedding_is_refused():
  with pytest.raises(ValueError, match='language model'):
    retention.split_at_embedding(tl.Serial(tl.Dense(3), tl.LogSoftmax()))


# ---- text classifiers and taggers: no shift, a padding mask, directions --

def _text_model(build, tokens, **kwargs):
  model = build(VOCAB, 3, d_model=4, n_units=5, cell='elman', mode='eval',
                **kwargs)
  model.init(shapes.signature(tokens))
  table, = _layers_of(model, tl.Embedding)
  return model, np.asarray(table.weights, np.float64)[tokens]  # no shift


@pytest.mark.parametrize('build, n_layers', [
    (models.RNNClassifier, 1), (models.RNNClassifier, 2), (models.RNNTagger, 1)])
def test_one_direction_text_models_match_a_numpy_loop(build, n_layers):
  tokens = np.random.default_rng(1).integers(1, VOCAB, (3, 6)).astype(np.int32)
  model, x = _text_model(build, tokens, n_layers=n_layers, bidirectional=False)
  layers = _elman_layers(model)
  assert len(layers) == n_layers
  want = _finite_difference_norms(lambda x: _forward_last_state(layers, x), x,
                                  eps=1e-5)
  np.testing.assert_allclose(retention.jacobian_norms(model, tokens), want,
                             rtol=1e-4, atol=1e-6)


def test_a_bidirectional_last_state_holds_earlier_inputs_by_its_forward_half():
  tokens = np.random.default_rng(2).integers(1, VOCAB, (3, 6)).astype(np.int32)
  model, x = _text_model(models.RNNClassifier, tokens)  # bidirectional
  forward, backward = _elman_layers(model)
  got = retention.jacobian_norms(model, tokens)
  want = _finite_difference_norms(lambda x: _forward_last_state([forward], x),
                                  x, eps=1e-5)
  # The backward state at step T has read x_T alone.
  np.testing.assert_allclose(got[:, :-1], want[:, :-1], rtol=1e-4, atol=1e-6)
  backward_only = _finite_difference_norms(
      lambda x: _forward_last_state([backward], x[:, -1:]), x[:, -1:], eps=1e-5)
  np.testing.assert_allclose(got[:, -1] ** 2,
                             want[:, -1] ** 2 + backward_only[:, 0] ** 2,
                             rtol=1e-4)
