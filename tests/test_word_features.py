"""models/word_features.py: characters read against NumPy, word dropout."""

import jax
import numpy as np
import pytest
from trax import shapes

import models
from models import classifier, word_features
from rnn_toolkit.token_ids import PAD_ID, UNK_ID

N_CHARS, MAX_CHARS = 12, 5


def _words(rng, lengths_by_row, width):
  """int32[rows, width, 1 + MAX_CHARS]: random words, each word its id then
  `length` character ids; a length of 0 is a padding word, all PAD_ID."""
  ids = np.zeros((len(lengths_by_row), width, 1 + MAX_CHARS), np.int32)
  for row, lengths in zip(ids, lengths_by_row):
    for cell, n in zip(row, lengths):
      cell[0] = rng.integers(2, 20) if n else PAD_ID
      cell[1:1 + n] = rng.integers(2, N_CHARS, n)
  return ids


def _numpy_elman(x, w_xh, w_hh, b):
  h = np.zeros(w_hh.shape[0])
  for x_t in x:
    h = np.tanh(x_t @ w_xh + h @ w_hh + b)
  return h


def test_the_character_states_are_a_numpy_loop_over_each_words_characters():
  layer = word_features.CharacterFeatures(N_CHARS, 'elman', d_char=4,
                                          units=3, mode='eval')
  rng = np.random.default_rng(0)
  chars = _words(rng, [[3, 5, 1], [2, 0, 0]], 3)[..., 1:]
  layer.init(shapes.ShapeDtype(chars.shape, np.int32))
  got = np.asarray(layer(chars))
  table = np.asarray(layer.weights[2])  # the character embedding
  branch = layer.weights[3][0][1]  # (forward, (reversal, backward))
  forward, backward = (tuple(map(np.asarray, w))
                       for w in (branch[0], branch[1][1]))
  for row in range(2):
    for word in range(3):
      x = table[[c for c in chars[row, word] if c != PAD_ID]]
      want = (np.concatenate([_numpy_elman(x, *forward),
                              _numpy_elman(x[::-1], *backward)])
              if len(x) else np.zeros(6))
      np.testing.assert_allclose(got[row, word], want, rtol=1e-5, atol=1e-6)


def test_the_convolution_takes_each_filters_largest_response_over_real_chars():
  layer = word_features.CharacterFeatures(N_CHARS, 'conv', d_char=4,
                                          units=3, mode='eval')
  chars = _words(np.random.default_rng(1), [[4, 1], [5, 0]], 2)[..., 1:]
  layer.init(shapes.ShapeDtype(chars.shape, np.int32))
  got = np.asarray(layer(chars))
  table = np.asarray(layer.weights[2])
  kernel, bias = (np.asarray(w) for w in layer.weights[3][1])  # Conv1d
  for row in range(2):
    for word in range(2):
      n = int(np.sum(chars[row, word] != PAD_ID))
      if not n:
        np.testing.assert_array_equal(got[row, word], 0.0)
        continue
      # 'SAME' padding over the whole word, its padding characters zeros
      # (as past its ends); only real positions are pooled.
      real = (chars[row, word] != PAD_ID)[:, None]
      x = np.pad(table[chars[row, word]] * real, ((1, 1), (0, 0)))
      responses = [np.maximum(np.einsum('kd,kdf->f', x[t:t + 3], kernel)
                              + bias, 0) for t in range(n)]
      np.testing.assert_allclose(got[row, word], np.max(responses, axis=0),
                                 rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_a_gated_cell_gives_its_outputs_not_its_memory(cell):
  # An LSTM's state is (c, h): its features are h, 2 · units of them, as
  # the forward outputs at a word's last character and the backward ones
  # at its first.
  layer = word_features.CharacterFeatures(N_CHARS, cell, d_char=4, units=3,
                                          mode='eval')
  chars = _words(np.random.default_rng(5), [[3, 5]], 2)[..., 1:]
  layer.init(shapes.ShapeDtype(chars.shape, np.int32))
  got = np.asarray(layer(chars))
  assert got.shape == (1, 2, 6)
  embedded = np.asarray(layer.weights[2])[chars[0]]
  branch_weights = layer.weights[3][0][1]
  for direction, weights, order in ((0, branch_weights[0], 1),
                                    (1, branch_weights[1][1], -1)):
    sequence_layer = models.rnn.CELLS[cell](3, 'eval')
    sequence_layer.init(shapes.ShapeDtype((1, 5, 4), np.float32))
    # An LSTM's layer is followed by the slice of its h.
    sequence_layer.weights = weights[0] if cell == 'lstm' else weights
    for word in range(2):
      n = int(np.sum(chars[0, word] != PAD_ID))
      outputs = np.asarray(sequence_layer(embedded[word, :n][::order][None]))
      np.testing.assert_allclose(got[0, word, 3 * direction:3 * direction + 3],
                                 outputs[0, -1], rtol=1e-5, atol=1e-6)


def test_word_dropout_replaces_real_words_only_and_only_in_training():
  ids = np.full((64, 50), 7, np.int32)
  ids[:, 40:] = PAD_ID
  layer = word_features.WordDropout(0.25, mode='train')
  layer.init(shapes.signature(ids), rng=jax.random.PRNGKey(3))
  dropped = np.asarray(layer(ids))
  assert set(np.unique(dropped[:, :40])) == {7, UNK_ID}
  assert not dropped[:, 40:].any()
  assert abs(np.mean(dropped[:, :40] == UNK_ID) - 0.25) < 0.02
  still = word_features.WordDropout(0.25, mode='eval')
  still.init(shapes.signature(ids))
  np.testing.assert_array_equal(still(ids), ids)


def test_a_char_tagger_gives_each_real_word_the_tags_it_would_get_alone():
  model = classifier.RNNTagger(30, 5, d_model=8, n_units=6, n_chars=N_CHARS,
                               char_encoder='elman', d_char=4, char_units=3,
                               output='crf',
                               tag_names=['O', 'B-A', 'I-A', 'B-B', 'I-B'],
                               mode='eval')
  rng = np.random.default_rng(4)
  lengths = [[3, 1, 5, 2], [2, 4, 0, 0]]
  batch = _words(rng, lengths, 4)
  model.init(shapes.signature(batch))
  together = np.asarray(model(batch))
  assert together.shape == (2, 4, 5, 5)
  alone = np.asarray(model(batch[1:, :2]))
  np.testing.assert_allclose(together[1, :2], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('char_encoder, per_word, message', [
    ('elman', (), 'gives word ids only.*max_word_chars'),
    (None, (1 + MAX_CHARS,), 'reads none.*char_encoder'),
])
def test_words_and_characters_must_be_given_as_read(char_encoder, per_word,
                                                    message):
  model = classifier.RNNClassifier(30, 2, d_model=8, n_units=6,
                                   n_chars=N_CHARS, char_encoder=char_encoder)
  with pytest.raises(Exception, match=message):
    model.init(shapes.ShapeDtype((2, 4, *per_word), np.int32))


def test_an_unknown_char_encoder_is_named():
  with pytest.raises(ValueError, match="'cnn'.*conv"):
    word_features.WordVectors(30, 8, N_CHARS, 'cnn')
