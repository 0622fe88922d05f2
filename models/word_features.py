"""What the recurrent layers read of each word: its embedding, and what its
characters say.

A word-level model knows only the words it was trained on: in CoNLL-2003
a third of the test set's names never occur in training, and each would
be the one unknown id. Read from its characters, a word unseen in
training still shows its capital, its suffix, its digits. So a text's
words can come with their characters, int32[batch, length, 1 + max_chars]
(the word id, then the character ids, PAD_ID after the word's end), and
`WordVectors` joins the word's embedding with a summary of its
characters: the final states of a bidirectional recurrent layer over them
(the toolkit's Elman layer by default), or the max over a convolution.

Word dropout replaces words by the unknown id while training, so that the
unknown id's embedding is learned, and words rare in training are learned
from their characters too.
"""

from typing import Any

import jax
from jax import numpy as jnp
from trax import layers as tl
from trax.layers import base

from models import rnn
from rnn_toolkit.token_ids import PAD_ID, UNK_ID

CHAR_ENCODERS = ('conv', *rnn.CELLS)
CONV_WIDTH = 3  # characters each filter reads: trigrams, as in suffixes


def WordVectors(vocab_size: int, d_model: int, n_chars: int = 0,  # pylint: disable=invalid-name
                char_encoder: str | None = None, d_char: int = 32,
                char_units: int = 32, word_dropout: float = 0.0,
                mode: str = 'train') -> Any:
  """ids -> f32[batch, length, d_model (+ the characters' features)].

  Words only, it is the layers it always was (an Embedding, after the
  word dropout if any), so that runs saved before keep their weights.

  Args:
    vocab_size: number of word ids.
    d_model: width of the word embeddings.
    n_chars: number of character ids (the run's character vocabulary);
      0 when the words come without their characters.
    char_encoder: None (words only, ids int32[batch, length]); 'conv' or a
      recurrent cell of `models.rnn.CELLS` ('elman', 'gru', 'lstm'), with
      ids int32[batch, length, 1 + max_chars]. A cell adds 2 · char_units
      features (the final forward and backward states), 'conv' char_units.
    d_char: width of the character embeddings.
    char_units: units of the character layer (each direction) or filters
      of the convolution.
    word_dropout: the rate at which words become the unknown id in training.
    mode: 'train', 'eval' or 'predict'.
  """
  if char_encoder is not None and char_encoder not in CHAR_ENCODERS:
    raise ValueError(f'Unknown char_encoder {char_encoder!r}; choose None or '
                     f'one of {CHAR_ENCODERS}.')
  dropout = [WordDropout(word_dropout, mode)] if word_dropout else []
  if char_encoder is None:
    return dropout + [tl.Embedding(vocab_size, d_model)]
  if n_chars < 1:
    raise ValueError(
        f'char_encoder {char_encoder!r} reads each word\'s characters, but '
        f'the model was given none (n_chars = {n_chars}): set the pipeline\'s '
        f'max_word_chars (e.g. TaggingInputs.max_word_chars = 20).')
  return tl.Serial(
      tl.Branch([tl.Fn('WordIds', word_ids), dropout,
                 tl.Embedding(vocab_size, d_model)],      # words
                [tl.Fn('CharIds', lambda ids: ids[..., 1:]),
                 CharacterFeatures(n_chars, char_encoder, d_char, char_units,
                                   mode)]),               # words, characters
      tl.Concatenate(),                                   # vectors
      name=f'WordVectors_{char_encoder}')


def is_word_vectors(layer: tl.Layer) -> bool:
  """Whether `layer` is a WordVectors of words and characters (the word-only
  kind is an Embedding among the model's layers)."""
  return layer.name.startswith('WordVectors_')


def word_ids(ids: jax.Array) -> jax.Array:
  """int32[batch, length]: the word ids of either kind of input."""
  return ids[..., 0] if ids.ndim == 3 else ids


def CharacterFeatures(n_chars: int, encoder: str, d_char: int,  # pylint: disable=invalid-name
                      units: int, mode: str) -> tl.Serial:
  """chars int32[batch, length, max_chars] -> f32[batch, length, features].

  Every word is one short sequence: the words of the whole batch run
  through the character layer as its rows.
  """
  summary = (_MaxOverConvolution(units) if encoder == 'conv'
             else _FinalStates(encoder, units, mode))
  return tl.Serial(                                 # chars
      tl.Select([0, 0]),                            # chars, chars
      tl.Fn('WordsAsRows', _words_as_rows, n_out=2),  # rows, mask, chars
      tl.Embedding(n_chars, d_char),                # vectors, mask, chars
      summary,                                      # features, chars
      tl.Fn('RowsAsWords',
            lambda f, chars: f.reshape(*chars.shape[:2], f.shape[-1])),
      name=f'CharacterFeatures_{encoder}')


def _words_as_rows(chars):
  rows = chars.reshape(-1, chars.shape[-1])
  return rows, (rows != PAD_ID).astype(jnp.float32)


def _FinalStates(cell: str, units: int, mode: str) -> tl.Serial:  # pylint: disable=invalid-name
  """(x [rows, time, d], mask) -> the forward state after each row's last
  real step joined with the backward state after its first, [rows, 2u]."""
  mode = 'eval' if mode == 'predict' else mode  # each word is read whole
  def final_state():
    layer = rnn.CELLS[cell](units, mode, use_mask=True,
                            return_sequences=False, return_state=True)
    if layer.state_width == units:
      return layer
    # An LSTM's state is (c, h) side by side: its output is h.
    return tl.Serial(layer, tl.Fn('Output', lambda state: state[:, -units:]))
  def reverse_both(x, mask):
    return jnp.flip(x, axis=1), jnp.flip(mask, axis=1)
  return tl.Serial(                                    # x, mask
      tl.Branch(final_state(),
                [tl.Fn('ReverseTime', reverse_both, n_out=2),
                 final_state()]),                      # forward, backward
      tl.Concatenate(),                                # features
  )


def _MaxOverConvolution(filters: int) -> tl.Serial:  # pylint: disable=invalid-name
  """(x [rows, time, d], mask) -> each filter's largest response over the
  row's real characters, [rows, filters] (0 for a row of padding).

  The padding characters' vectors are zeroed first, so that a word's last
  window reads the same zeros whether the word was cut or padded."""
  def zero_padding(x, mask):
    return x * mask[..., None], mask

  def max_over_real(h, mask):
    real = mask[..., None] > 0
    pooled = jnp.max(jnp.where(real, h, -jnp.inf), axis=1)
    return jnp.where(jnp.any(real, axis=1), pooled, 0.0)
  return tl.Serial(                                    # x, mask
      tl.Fn('ZeroPadding', zero_padding, n_out=2),     # x, mask
      tl.Conv1d(filters, CONV_WIDTH, padding='SAME'),  # responses, mask
      tl.Relu(),
      tl.Fn('MaxOverRealChars', max_over_real),        # features
  )


def check_ids(ids: jax.Array, expect_chars: bool) -> None:
  """Refuses ids of the other kind, whose mistake (characters given and not
  read, or asked for and not given) would otherwise surface as a shape
  error deep in the model."""
  if (ids.ndim == 3) == expect_chars:
    return
  raise ValueError(
      'The model reads each word\'s characters (char_encoder), but the '
      'pipeline gives word ids only: set its max_word_chars (e.g. '
      'TaggingInputs.max_word_chars = 20).' if expect_chars else
      'The pipeline gives each word\'s characters (max_word_chars), but '
      'the model reads none: set its char_encoder (e.g. '
      'RNNTagger.char_encoder = \'elman\'), or max_word_chars = 0.')


class WordDropout(base.Layer):
  """Replaces real words by UNK_ID at `rate` in train mode (padding stays)."""

  def __init__(self, rate: float = 0.0, mode: str = 'train'):
    super().__init__(name=f'WordDropout_{rate}')
    if not 0.0 <= rate < 1.0:
      raise ValueError(f'word_dropout must be in [0, 1); got {rate}.')
    self._rate = rate if mode == 'train' else 0.0

  def forward(self, ids: jax.Array) -> jax.Array:
    if not self._rate:
      return ids
    dropped = jax.random.bernoulli(self.rng, self._rate, ids.shape)
    return jnp.where(dropped & (ids != PAD_ID), UNK_ID, ids).astype(ids.dtype)
