"""The encoder-decoder's attention weights, as the report shows them."""

import jax
import numpy as np
import pytest
from trax import layers as tl
from trax import shapes

import models
from rnn_toolkit.token_ids import PAD_ID
from models import seq2seq

VOCAB = 9


def _model_and_batch(attention=True):
  model = models.RNNSeq2Seq(VOCAB, d_model=8, n_units=12, attention=attention,
                            dropout=0.0, mode='eval')
  rng = np.random.default_rng(0)
  source = rng.integers(3, VOCAB, (3, 7)).astype(np.int32)
  source[1, 4:] = PAD_ID
  target = rng.integers(3, VOCAB, (3, 5)).astype(np.int32)
  model.init((shapes.signature(source), shapes.signature(target)))
  return model, source, target


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def test_attention_weights_are_the_ones_the_model_reads():
  model, source, target = _model_and_batch()
  weights = np.asarray(seq2seq.attention_of(model, source, target))
  assert weights.shape == (3, 5, 7)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(weights[1, :, 4:], 0.0)  # padding
  # Rebuild the output from these weights: the context is their mix of the
  # encoder states, then the attention's output layer, Dense and LogSoftmax.
  decoder = model.sublayers[-1]
  at = [layer.name for layer in decoder.sublayers].index(seq2seq.ATTENTION)
  decoded, encoded, _ = _stack_before(model, at, source, target)
  w_features, b_features = decoder.sublayers[at].sublayers[-2].weights
  w_out, b_out = decoder.sublayers[-2].weights
  context = np.einsum('bts,bsd->btd', weights, encoded)
  features = np.tanh(np.concatenate([decoded, context], axis=-1)
                     @ np.asarray(w_features) + np.asarray(b_features))
  logits = features @ np.asarray(w_out) + np.asarray(b_out)
  want = np.log(_softmax(logits))
  np.testing.assert_allclose(np.asarray(model((source, target))), want,
                             atol=1e-5)


def _stack_before(model, index, source, target):
  """What the model's stack holds before its decoder's sublayer `index`, run by trax."""
  prefix = tl.Serial(model.sublayers[:-1], model.sublayers[-1].sublayers[:index])
  return [np.asarray(a) for a in _run(prefix, (source, target))]


def test_a_model_without_attention_has_none_to_show():
  model, source, target = _model_and_batch(attention=False)
  with pytest.raises(ValueError, match='no attention'):
    seq2seq.attention_of(model, source, target)


@pytest.mark.parametrize('build', [
    lambda: _model_and_batch(),
    lambda: _model_and_batch(attention=False)])
def test_the_context_part_then_the_decoder_is_the_whole_model(build):
  model, source, target = build()
  context, decoder = seq2seq.split_at_decoder(model)
  stack = _run(context, (source, target))
  np.testing.assert_array_equal(np.asarray(stack[0]), target)
  np.testing.assert_allclose(np.asarray(_run(decoder, stack)),
                             np.asarray(model((source, target))), atol=1e-6)


def _run(layer, inputs):
  outputs, _ = layer.pure_fn(inputs, layer.weights, layer.state,
                             jax.random.PRNGKey(0))
  return outputs


def test_only_encoder_decoders_split_at_a_decoder():
  with pytest.raises(ValueError, match='not an encoder-decoder'):
    seq2seq.split_at_decoder(models.RNNLanguageModel(VOCAB))
