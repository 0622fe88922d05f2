"""Tests of the recurrent language model."""

import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

import models

VOCAB = 11


def _tokens(shape, seed=0):
  return np.random.default_rng(seed).integers(1, VOCAB, size=shape).astype(np.int32)


def _model(cell, mode='eval', **kwargs):
  model = models.RNNLanguageModel(VOCAB, d_model=8, cell=cell, mode=mode, **kwargs)
  model.init(shapes.ShapeDtype((2, 6), np.int32))
  return model


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
def test_outputs_are_log_probabilities_for_every_position(cell):
  log_probs = np.asarray(_model(cell)(_tokens((2, 6))))
  assert log_probs.shape == (2, 6, VOCAB)
  np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
def test_position_t_sees_only_tokens_before_t(cell):
  model = _model(cell, n_layers=2)
  tokens = _tokens((2, 6), seed=1)
  changed = tokens.copy()
  changed[:, 3] = (changed[:, 3] % (VOCAB - 1)) + 1
  before, after = np.asarray(model(tokens)), np.asarray(model(changed))
  np.testing.assert_array_equal(before[:, :4], after[:, :4])
  assert np.all(np.abs(before[:, 4:] - after[:, 4:]).max(axis=-1) > 0)


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
def test_predict_mode_fed_previous_tokens_equals_eval_mode(cell):
  eval_model = _model(cell, n_layers=2)
  tokens = _tokens((2, 6), seed=2)
  want = np.asarray(eval_model(tokens))
  predict = models.RNNLanguageModel(VOCAB, d_model=8, n_layers=2, cell=cell,
                                    mode='predict')
  predict.init(shapes.ShapeDtype((2, 1), np.int32))
  predict.weights = eval_model.weights
  previous = np.concatenate([np.zeros((2, 1), np.int32), tokens[:, :-1]], 1)
  got = [np.asarray(predict(previous[:, t:t + 1])) for t in range(6)]
  np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5)


def test_dropout_is_active_only_in_training():
  tokens = _tokens((2, 6), seed=3)
  train_model = models.RNNLanguageModel(VOCAB, d_model=8, dropout=0.5)
  train_model.init(shapes.signature(tokens))
  eval_model = models.RNNLanguageModel(VOCAB, d_model=8, dropout=0.5,
                                       mode='eval')
  eval_model.init(shapes.signature(tokens))
  eval_model.weights = train_model.weights
  first = np.asarray(eval_model(tokens))
  np.testing.assert_allclose(first, np.asarray(eval_model(tokens)))
  assert np.abs(np.asarray(train_model(tokens)) - first).max() > 1e-4


@pytest.mark.parametrize('cell', ['elman', 'gru', 'lstm'])
def test_bfloat16_compute_stays_close_to_float32(cell):
  full = _model(cell)
  mixed = models.RNNLanguageModel(VOCAB, d_model=8, cell=cell, mode='eval',
                                  compute_dtype='bfloat16')
  signature = shapes.ShapeDtype((2, 6), np.int32)
  mixed.init(signature)
  # The same float32 weights in both (the casts add layers without weights).
  flat, _ = tl.flatten_weights_and_state(full.weights, full.state)
  mixed.weights, _ = tl.unflatten_weights_and_state(
      flat, (), mixed.weights_and_state_signature(signature),
      weights_only=True)
  tokens = _tokens((2, 6))
  log_probs = mixed(tokens)
  assert log_probs.dtype == np.float32  # the loss is taken in float32
  np.testing.assert_allclose(np.asarray(log_probs), np.asarray(full(tokens)),
                             atol=5e-2)


def test_unknown_compute_dtype_is_named():
  with pytest.raises(ValueError, match="compute_dtype 'float16'.*bfloat16"):
    models.RNNLanguageModel(VOCAB, compute_dtype='float16')
