"""Recurrent classifiers: of texts (many-to-one), of each word (many-to-many,
aligned) and of a feature vector (one-to-one)."""

from jax import numpy as jnp
from trax import layers as tl

from models import rnn
from rnn_toolkit.token_ids import PAD_ID

POOLINGS = ('last', 'mean', 'max')
BODIES = ('rnn', 'dense')


def RNNClassifier(vocab_size: int, n_classes: int, d_model: int = 128,  # pylint: disable=invalid-name
                  n_units: int = 256, n_layers: int = 1, cell: str = 'elman',
                  bidirectional: bool = True, pooling: str = 'max',
                  dropout: float = 0.5, mode: str = 'train') -> tl.Serial:
  """Returns a classifier: log-probabilities of the classes of each text.

  Input: int32[batch, length] token ids, PAD_ID after each text's end.
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
    mode: 'train', 'eval' or 'predict'.
  """
  if pooling not in POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r}; choose one of {POOLINGS}.')
  return tl.Serial(                                   # tokens
      Encoder(vocab_size, d_model, cell, n_units, n_layers, bidirectional,
              dropout, mode),                         # states, mask
      Pool(pooling, bidirectional),                   # features
      tl.Dropout(rate=dropout, mode=mode),
      tl.Dense(n_classes),                            # logits
      tl.LogSoftmax(),                                # log-probabilities
      name=f'RNNClassifier_{cell}',
  )


def RNNTagger(vocab_size: int, n_tags: int, d_model: int = 128,  # pylint: disable=invalid-name
              n_units: int = 256, n_layers: int = 1, cell: str = 'elman',
              bidirectional: bool = True, dropout: float = 0.5,
              mode: str = 'train') -> tl.Serial:
  """Returns a tagger: log-probabilities of the tags of every token.

  Input: int32[batch, length] token ids, PAD_ID after each text's end.
  Output: f32[batch, length, n_tags]; the arguments are as in RNNClassifier.
  """
  return tl.Serial(                                   # tokens
      Encoder(vocab_size, d_model, cell, n_units, n_layers, bidirectional,
              dropout, mode),                         # states, mask
      tl.Select([0], n_in=2),                         # states
      tl.Dropout(rate=dropout, mode=mode),
      tl.Dense(n_tags),                               # logits
      tl.LogSoftmax(),                                # log-probabilities
      name=f'RNNTagger_{cell}',
  )


def Encoder(vocab_size: int, d_model: int, cell: str, n_units: int,  # pylint: disable=invalid-name
            n_layers: int, bidirectional: bool, dropout: float,
            mode: str) -> list[tl.Layer]:
  """tokens -> (states f32[batch, length, units], mask f32[batch, length])."""
  return [                                            # tokens
      tl.Branch([], _PaddingMask()),                  # tokens, mask
      tl.Embedding(vocab_size, d_model),              # vectors, mask
      tl.Dropout(rate=dropout, mode=mode),
      rnn.MaskedRNN(cell, n_units, n_layers, bidirectional, dropout,
                    mode=mode),                       # states, mask
  ]


def _PaddingMask():  # pylint: disable=invalid-name
  return tl.Fn('PaddingMask',
               lambda tokens: (tokens != PAD_ID).astype(jnp.float32))


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
