"""Recurrent classifiers: of texts (many-to-one), of each word (many-to-many,
aligned) and of a feature vector (one-to-one)."""

from typing import Any, Sequence

from jax import numpy as jnp
from trax import layers as tl

from models import crf
from models import rnn
from models import word_features
from rnn_toolkit.token_ids import PAD_ID

POOLINGS = ('last', 'mean', 'max')
TAGGER_OUTPUTS = ('softmax', 'crf')
BODIES = ('rnn', 'dense')


def RNNClassifier(vocab_size: int, n_classes: int, d_model: int = 128,  # pylint: disable=invalid-name
                  n_units: int = 256, n_layers: int = 1, cell: str = 'elman',
                  bidirectional: bool = True, pooling: str = 'max',
                  dropout: float = 0.5, n_chars: int = 0,
                  char_encoder: str | None = None, d_char: int = 32,
                  char_units: int = 32, word_dropout: float = 0.0,
                  mode: str = 'train') -> tl.Serial:
  """Returns a classifier: log-probabilities of the classes of each text.

  Input: int32[batch, length] token ids, PAD_ID after each text's end; with
  a char_encoder, int32[batch, length, 1 + max_chars], each word's id and
  then its characters' (models/word_features.py).
  Output: f32[batch, n_classes]. Padding changes nothing: recurrent layers
  carry their state over padding steps and pooling reads real steps only.

  Args:
    vocab_size: number of token ids.
    n_classes: number of classes.
    d_model: width of the word embeddings.
    n_units: units of each recurrent layer (each direction).
    n_layers: stacked recurrent layers.
    cell: recurrent layer, a name in `models.rnn.CELLS`.
    bidirectional: run a second recurrent layer over the reversed text.
    pooling: how the states become one vector: 'last' (the state after the
      last word; with `bidirectional`, also the backward state after the
      first word), 'mean' or 'max' over the real steps.
    dropout: dropout rate after the embedding, between recurrent layers and
      before the output layer.
    n_chars, char_encoder, d_char, char_units, word_dropout: what the
      recurrent layers read of each word, as in `word_features.WordVectors`
      (n_chars comes from the pipeline).
    mode: 'train', 'eval' or 'predict'.
  """
  if pooling not in POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r}; choose one of {POOLINGS}.')
  return tl.Serial(                                   # tokens
      _WordEncoder(vocab_size, d_model, n_chars, char_encoder, d_char,
                   char_units, word_dropout, cell, n_units, n_layers,
                   bidirectional, dropout, mode),     # states, mask
      Pool(pooling, bidirectional),                   # features
      tl.Dropout(rate=dropout, mode=mode),
      tl.Dense(n_classes),                            # logits
      tl.LogSoftmax(),                                # log-probabilities
      name=f'RNNClassifier_{cell}',
  )


def RNNTagger(vocab_size: int, n_tags: int, d_model: int = 128,  # pylint: disable=invalid-name
              n_units: int = 256, n_layers: int = 1, cell: str = 'elman',
              bidirectional: bool = True, dropout: float = 0.5,
              output: str = 'softmax', constrain_iob: bool = True,
              tag_names: Sequence[str] = (), n_chars: int = 0,
              char_encoder: str | None = None, d_char: int = 32,
              char_units: int = 32, word_dropout: float = 0.0,
              mode: str = 'train') -> tl.Serial:
  """Returns a tagger: scores of the tags of every token.

  Input: as RNNClassifier's. Output, with `output`:
  - 'softmax': f32[batch, length, n_tags], each word's tag log-probabilities;
  - 'crf': f32[batch, length, n_tags, n_tags], a linear-chain CRF's
    potentials over the tag sequences (models/crf.py), whose best sequence
    is found by Viterbi (`crf.predictions`).

  Args:
    output: 'softmax' or 'crf'.
    constrain_iob: a CRF's paths obey IOB2 (I-X only after B-X or I-X).
    tag_names: the tags in id order (from the pipeline), which the IOB2
      constraint reads.
    The others are as in RNNClassifier.
  """
  if output not in TAGGER_OUTPUTS:
    raise ValueError(f'Unknown tagger output {output!r}; choose one of '
                     f'{TAGGER_OUTPUTS}.')
  encoder = _WordEncoder(vocab_size, d_model, n_chars, char_encoder, d_char,
                         char_units, word_dropout, cell, n_units, n_layers,
                         bidirectional, dropout, mode)
  if output == 'crf':
    return tl.Serial(                                 # tokens
        encoder,                                      # states, mask
        tl.Dropout(rate=dropout, mode=mode),
        tl.Dense(n_tags),                             # scores, mask
        crf.CRF(_tag_names(tag_names, n_tags), constrain_iob),  # potentials
        name=f'RNNTagger_{cell}_crf',
    )
  return tl.Serial(                                   # tokens
      encoder,                                        # states, mask
      tl.Select([0], n_in=2),                         # states
      tl.Dropout(rate=dropout, mode=mode),
      tl.Dense(n_tags),                               # logits
      tl.LogSoftmax(),                                # log-probabilities
      name=f'RNNTagger_{cell}',
  )


def _tag_names(tag_names, n_tags):
  if len(tag_names) != n_tags:
    raise ValueError(f'A CRF tagger needs the names of its {n_tags} tags '
                     f'(tag_names, which the pipeline gives); got '
                     f'{len(tag_names)}.')
  return tag_names


def _WordEncoder(vocab_size, d_model, n_chars, char_encoder, d_char,  # pylint: disable=invalid-name
                 char_units, word_dropout, cell, n_units, n_layers,
                 bidirectional, dropout, mode):
  """The classifier's and tagger's Encoder over `WordVectors` of their
  arguments."""
  words = word_features.WordVectors(vocab_size, d_model, n_chars,
                                    char_encoder, d_char, char_units,
                                    word_dropout, mode)
  return Encoder(words, cell, n_units, n_layers, bidirectional, dropout,
                 mode, reads_chars=char_encoder is not None)


def Encoder(words: Any, cell: str, n_units: int, n_layers: int,  # pylint: disable=invalid-name
            bidirectional: bool, dropout: float, mode: str,
            reads_chars: bool = False) -> list[tl.Layer]:
  """tokens -> (states f32[batch, length, units], mask f32[batch, length]).

  `words` are the layers that make each word a vector
  (`word_features.WordVectors`); `reads_chars`, whether they read the
  words' characters.
  """
  return [                                            # tokens
      tl.Branch([], _PaddingMask(reads_chars)),       # tokens, mask
      words,                                          # vectors, mask
      tl.Dropout(rate=dropout, mode=mode),
      rnn.MaskedRNN(cell, n_units, n_layers, bidirectional, dropout,
                    mode=mode),                       # states, mask
  ]


def _PaddingMask(reads_chars):  # pylint: disable=invalid-name
  def mask(tokens):
    word_features.check_ids(tokens, expect_chars=reads_chars)
    return (word_features.word_ids(tokens) != PAD_ID).astype(jnp.float32)
  return tl.Fn('PaddingMask', mask)


def Pool(pooling: str, bidirectional: bool) -> tl.Layer:  # pylint: disable=invalid-name
  """(states f32[batch, length, d], mask) -> f32[batch, d]."""
  def pool(states, mask):
    real = mask[:, :, None] > 0
    if pooling == 'mean':
      return (jnp.sum(jnp.where(real, states, 0.0), axis=1)
              / jnp.maximum(jnp.sum(mask, axis=1), 1.0)[:, None])
    if pooling == 'max':
      pooled = jnp.max(jnp.where(real, states, -jnp.inf), axis=1)
      return jnp.where(jnp.any(real, axis=1), pooled, 0.0)
    last = jnp.maximum(jnp.sum(mask, axis=1).astype(jnp.int32) - 1, 0)
    after_last = jnp.take_along_axis(states, last[:, None, None], axis=1)[:, 0]
    if not bidirectional:
      return after_last
    half = states.shape[-1] // 2  # backward states: their last step is step 0
    return jnp.concatenate([after_last[:, :half], states[:, 0, half:]], -1)

  return tl.Fn(f'{pooling.capitalize()}Pool', pool)


def VectorClassifier(n_classes: int, body: str = 'rnn', n_units: int = 256,  # pylint: disable=invalid-name
                     n_layers: int = 2, dropout: float = 0.0,
                     mode: str = 'train') -> tl.Serial:
  """Returns a one-to-one classifier: log-probabilities of a vector's classes.

  Input: f32[batch, n_features]. Output: f32[batch, n_classes].

  Args:
    n_classes: number of classes.
    body: 'rnn' runs the toolkit's ElmanRNN for a single step per layer,
      h_1 = g(x · W_xh + h_0 · W_hh + b_h) with h_0 = 0 (so W_hh gets no
      gradient: one step has no recurrence); 'dense' is a stack of Dense
      layers with ReLU.
    n_units: width of each layer.
    n_layers: layers in the body.
    dropout: dropout rate after each layer.
    mode: 'train', 'eval' or 'predict' (the same as 'eval': one step keeps
      nothing between calls).
  """
  if body not in BODIES:
    raise ValueError(f'Unknown body {body!r}; choose one of {BODIES}.')
  mode = 'eval' if mode == 'predict' else mode
  if body == 'rnn':
    layers = [tl.Fn('AsOneStep', lambda x: x[:, None, :])]   # x [batch, 1, n]
    layers += [[rnn.ConfiguredElman(n_units, mode),
                tl.Dropout(rate=dropout, mode=mode)] for _ in range(n_layers)]
    layers += [tl.Fn('TheStep', lambda h: h[:, 0])]          # h [batch, units]
  else:
    layers = [[tl.Dense(n_units), tl.Relu(), tl.Dropout(rate=dropout, mode=mode)]
              for _ in range(n_layers)]
  return tl.Serial(                                   # features
      layers,                                         # hidden
      tl.Dense(n_classes),                            # logits
      tl.LogSoftmax(),                                # log-probabilities
      name=f'VectorClassifier_{body}',
  )
