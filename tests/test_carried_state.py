"""Tests of carried recurrent state: models/carried_state.py, the stateful
RNNLanguageModel and streaming evaluation, against independent references.

The Elman references are written from the formula, h_t = tanh(x_t·W_xh +
h_{t-1}·W_hh + b), in NumPy or plain jax.numpy; GRU and LSTM are checked
against trax's own layers run over the whole sequence, and against finite
differences.
"""

import jax
from jax import numpy as jnp
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

from data import streams
import models
from rnn_toolkit.evaluation import streaming

VOCAB, UNITS, ROWS, WINDOW = 9, 6, 3, 5


def _signature(rows=ROWS, length=WINDOW):
  return (shapes.ShapeDtype((rows, length), np.int32),
          shapes.ShapeDtype((rows,), np.float32))


def _stateful(cell='elman', rows=ROWS, length=WINDOW, n_layers=1, seed=0):
  model = models.RNNLanguageModel(VOCAB, d_model=UNITS, cell=cell,
                                  n_layers=n_layers, stateful=True,
                                  mode='eval')
  model.init(_signature(rows, length), rng=jax.random.PRNGKey(seed))
  return model


def _ids(shape, seed):
  return np.random.default_rng(seed).integers(1, VOCAB, shape).astype(np.int32)


def _apply(model, weights, state, inputs, resets):
  return model.pure_fn((inputs, resets), weights, state,
                       jax.random.PRNGKey(0))


def _nll(log_probs, targets):
  return -jnp.sum(jnp.take_along_axis(log_probs, targets[..., None], -1))


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
def test_windows_read_with_carried_state_equal_one_pass(cell):
  """Two windows, the state carried, read like the whole sequence at once
  by trax's layers (the model without `stateful`, which shifts its input)."""
  model = _stateful(cell, n_layers=2)
  text = _ids((ROWS, 2 * WINDOW), seed=1)
  previous = np.concatenate([np.zeros((ROWS, 1), np.int32), text[:, :-1]], 1)
  first, state = _apply(model, model.weights, model.state,
                        previous[:, :WINDOW], np.ones(ROWS, np.float32))
  second, _ = _apply(model, model.weights, state, previous[:, WINDOW:],
                     np.zeros(ROWS, np.float32))
  plain = models.RNNLanguageModel(VOCAB, d_model=UNITS, cell=cell, n_layers=2,
                                  mode='eval')
  plain.init(shapes.signature(text))
  plain.weights, _ = tl.unflatten_weights_and_state(
      tl.flatten_weights_and_state(model.weights, ())[0], (),
      plain.weights_and_state_signature(shapes.signature(text)),
      weights_only=True)
  np.testing.assert_allclose(np.concatenate([first, second], axis=1),
                             plain(text), atol=1e-5)


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
def test_a_reset_row_starts_from_zeros(cell):
  model = _stateful(cell)
  inputs = _ids((ROWS, WINDOW), seed=2)
  _, warm = _apply(model, model.weights, model.state, _ids((ROWS, WINDOW), 3),
                   np.ones(ROWS, np.float32))
  fresh, _ = _apply(model, model.weights, model.state, inputs,
                    np.ones(ROWS, np.float32))
  got, _ = _apply(model, model.weights, warm, inputs,
                  np.array([1, 0, 1], np.float32))
  got, fresh = np.asarray(got), np.asarray(fresh)
  np.testing.assert_allclose(got[[0, 2]], fresh[[0, 2]], atol=1e-6)
  assert np.abs(got[1] - fresh[1]).max() > 1e-3  # row 1 carried its state


def _elman_reference(params, inputs, h0):
  """log-probs and final state of the one-layer Elman LM, from the formula."""
  embedding, w_xh, w_hh, b_h, w_out, b_out = params
  h, outputs = h0, []
  for t in range(inputs.shape[1]):
    h = jnp.tanh(embedding[inputs[:, t]] @ w_xh + h @ w_hh + b_h)
    outputs.append(jax.nn.log_softmax(h @ w_out + b_out))
  return jnp.stack(outputs, axis=1), h


def test_two_windows_trained_with_carried_state_equal_the_reference():
  """The second window's gradient treats the carried state as a constant:
  truncated backpropagation through time."""
  model = _stateful('elman')
  params = tl.flatten_weights_and_state(model.weights, ())[0]
  text = _ids((ROWS, 2 * WINDOW + 1), seed=4)
  inputs, targets = text[:, :-1], text[:, 1:]
  halves = (slice(0, WINDOW), slice(WINDOW, 2 * WINDOW))
  resets = (np.ones(ROWS, np.float32), np.zeros(ROWS, np.float32))

  def model_loss(flat, state, half, reset):
    weights, _ = tl.unflatten_weights_and_state(
        flat, (), model.weights_and_state_signature(_signature()),
        weights_only=True)
    log_probs, state = _apply(model, weights, state, inputs[:, half], reset)
    return _nll(log_probs, targets[:, half]), state

  state = model.state
  got = []
  for half, reset in zip(halves, resets):
    (loss, state), grads = jax.value_and_grad(model_loss, has_aux=True)(
        params, state, half, reset)
    got.append((loss, grads))

  h = np.zeros((ROWS, UNITS), np.float32)
  for (loss, grads), half in zip(got, halves):
    def reference_loss(p, h0=h, half=half):
      log_probs, _ = _elman_reference(p, inputs[:, half], h0)
      return _nll(log_probs, targets[:, half])
    want_loss, want_grads = jax.value_and_grad(reference_loss)(params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for a, b in zip(grads, want_grads, strict=True):
      np.testing.assert_allclose(a, b, atol=1e-5)
    h = np.asarray(_elman_reference(params, inputs[:, half], h)[1])


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_the_carried_state_passes_no_gradient_by_finite_differences(cell):
  model = _stateful(cell)
  flat = tl.flatten_weights_and_state(model.weights, ())[0]
  signature = model.weights_and_state_signature(_signature())
  inputs, targets = _ids((ROWS, WINDOW), 5), _ids((ROWS, WINDOW), 6)
  _, carried = _apply(model, model.weights, model.state,
                      _ids((ROWS, WINDOW), 7), np.ones(ROWS, np.float32))

  def loss(flat_weights):  # the carried state is held fixed
    weights, _ = tl.unflatten_weights_and_state(flat_weights, (), signature,
                                                weights_only=True)
    log_probs, _ = _apply(model, weights, carried, inputs,
                          np.zeros(ROWS, np.float32))
    return _nll(log_probs, targets)

  grads = jax.grad(loss)(flat)
  rng = np.random.default_rng(0)
  for i in range(1, len(flat)):  # all but the embedding
    for _ in range(2):
      index = tuple(rng.integers(n) for n in flat[i].shape)
      eps = 1e-2
      bumped = [np.array(w, np.float64) for w in flat]
      bumped[i][index] += eps
      up = float(loss([jnp.asarray(w, jnp.float32) for w in bumped]))
      bumped[i][index] -= 2 * eps
      down = float(loss([jnp.asarray(w, jnp.float32) for w in bumped]))
      np.testing.assert_allclose(grads[i][index], (up - down) / (2 * eps),
                                 rtol=2e-2, atol=2e-3)


def _numpy_elman_nll(params, documents):
  """Σ nll of every character of `documents`, each read from a zero state."""
  embedding, w_xh, w_hh, b_h, w_out, b_out = (np.asarray(p, np.float64)
                                              for p in params)
  total = 0.0
  for ids in documents:
    h, previous = np.zeros(UNITS), 0
    for char in ids:
      h = np.tanh(embedding[previous] @ w_xh + h @ w_hh + b_h)
      logits = h @ w_out + b_out
      top = logits.max()
      total += top + np.log(np.exp(logits - top).sum()) - logits[char]
      previous = char
  return total


DOCUMENTS = [np.random.default_rng(n).integers(2, VOCAB, n).astype(np.int32)
             for n in (23, 4, 41, 12)]


@pytest.mark.parametrize('rows,warmup', [(1, 0), (4, 1000)])
def test_streaming_evaluation_equals_a_numpy_loop_over_the_text(rows, warmup):
  """One stream, or streams whose warm-up reaches back to each document's
  start, score exactly what reading every document from its start does."""
  model = _stateful('elman', rows=rows)
  params = tl.flatten_weights_and_state(model.weights, ())[0]
  batches = streams.evaluation_streams(DOCUMENTS, WINDOW, rows, warmup)
  nll, _, count = streaming.score_streams(model, model.weights, model.state,
                                          batches)
  assert count == sum(len(d) for d in DOCUMENTS)
  np.testing.assert_allclose(nll, _numpy_elman_nll(params, DOCUMENTS),
                             rtol=1e-5)


def test_a_documents_loss_does_not_depend_on_the_one_before():
  model = _stateful('elman', rows=1)

  def nll(documents):
    return streaming.score_streams(
        model, model.weights, model.state,
        streams.evaluation_streams(documents, WINDOW, 1, 0))[0]

  first, second, other = DOCUMENTS[2], DOCUMENTS[0], DOCUMENTS[3]
  alone = nll([second])
  np.testing.assert_allclose(nll([first, second]) - nll([first]), alone,
                             rtol=1e-5)
  np.testing.assert_allclose(nll([other, second]) - nll([other]), alone,
                             rtol=1e-5)


@pytest.mark.parametrize('cell', ['elman', 'gru'])
def test_a_stateful_models_weights_load_into_the_generating_model(cell):
  """Predict mode, fed one character at a time, continues the stream."""
  model = _stateful(cell, rows=1, length=8)
  text = _ids((1, 9), seed=8)
  want, _ = _apply(model, model.weights, model.state, text[:, :-1],
                   np.ones(1, np.float32))
  predict = models.RNNLanguageModel(VOCAB, d_model=UNITS, cell=cell,
                                    stateful=True, mode='predict')
  predict.init(shapes.ShapeDtype((1, 1), np.int32))
  predict.weights, _ = tl.unflatten_weights_and_state(
      tl.flatten_weights_and_state(model.weights, ())[0], (),
      predict.weights_and_state_signature(shapes.ShapeDtype((1, 1), np.int32)),
      weights_only=True)
  got = [np.asarray(predict(text[:, t:t + 1])) for t in range(8)]
  np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5)
