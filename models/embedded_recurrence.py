"""An embedding and the recurrent layer reading it, as one layer.

A recurrent layer's first act is its input product, x_t · W_xh (and the
GRU's and LSTM's x_t parts), for every step of the batch. When x_t is a
token's embedding, that product is one of vocabulary-size rows: for a
character model of 65 symbols read in batches of 64 × 128 steps, 65 rows
instead of 8,192. `EmbeddedRecurrence` therefore projects the embedding
table once per call and looks every step's projection up in it, which
takes the input product, about half of a character model's training step
on a CPU, out of the step. The result, its gradients and its weights are
those of the embedding followed by the recurrent layer; where the batch
holds fewer tokens than the vocabulary has rows, it looks the embeddings
up first and projects them, as the two layers would.

Dropout after the embedding can't be moved past the product, so the layer
drops out the projected inputs instead: the noise reaches the recurrence
at the same place, scaled by W_xh.
"""

from typing import Any

import jax
from jax import numpy as jnp
from trax import layers as tl
from trax import shapes
from trax.layers import base

from models import dropout
from models.sequence_layer import SequenceLayer


class EmbeddedRecurrence(base.Layer):
  """tl.Embedding, then `recurrence`, with the input product per vocab row.

  Inputs: token ids int32[batch, time], then the recurrence's further
  inputs (mask, initial state). Outputs: the recurrence's. Weights and
  state: (the embedding's, the recurrence's), so the weights flatten to
  the same leaves, in the same order, as tl.Serial(embedding, recurrence).

  Args:
    embedding: a tl.Embedding.
    recurrence: a SequenceLayer (models/rnn.py, models/gated_rnn.py).
    rate: rate of dropout on the projected inputs, in training
      (models/dropout.py).
    compute_dtype: the dtype the embeddings are given to the recurrence in
      (it may compute in another, as the GRU and LSTM do).
    mode: 'train', 'eval' or 'predict'.
  """

  def __init__(self, embedding: tl.Embedding, recurrence: SequenceLayer,
               rate: float = 0.0, compute_dtype: Any = jnp.float32,
               mode: str = 'train'):
    super().__init__(n_in=recurrence.n_in, n_out=recurrence.n_out,
                     name=f'Embedded{recurrence.name}')
    self._sublayers = [embedding, recurrence]
    # With sublayers, these only mark that the sublayers hold their own.
    self._weights, self._state = (None, None), (None, None)
    dropout.kept_levels(rate)
    self._dropout = rate if mode == 'train' else 0.0
    self._dtype = compute_dtype

  @property
  def state_width(self) -> int:
    return self._sublayers[1].state_width

  def forward(self, inputs: Any) -> Any:
    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    tokens, *others = inputs
    recurrence = self._sublayers[1]
    table, weights = self.weights
    table = table.astype(recurrence.compute_dtype(self._dtype))
    projected = self._drop(_projected(recurrence, weights, table, tokens))
    _, mask, h0 = recurrence._unpack((None, *others))  # pylint: disable=protected-access
    outputs, state = recurrence.run_projected(weights, self.state[1],
                                              projected, (mask, h0))
    self.state = (self.state[0], state)
    return outputs

  def _drop(self, projected):
    if not self._dropout:
      return projected
    rngs = jax.random.split(self.rng, len(projected))
    return tuple(dropout.drop(rng, p, self._dropout)
                 for rng, p in zip(rngs, projected))

  def init_weights_and_state(self, input_signature: Any) -> None:
    signature = (tuple(input_signature)
                 if isinstance(input_signature, (list, tuple))
                 else (input_signature,))
    tokens_sig, *others = signature
    if len(tokens_sig.shape) != 2:
      raise ValueError(f'{self.name} expects token ids of shape (batch, '
                       f'time); got shape {tokens_sig.shape}.')
    embedding, recurrence = self._sublayers
    table, embedding_state = embedding.init(tokens_sig, use_cache=True)
    x_sig = shapes.ShapeDtype(tokens_sig.shape + table.shape[-1:],
                              self._dtype)
    weights, state = recurrence.init((x_sig, *others) if others else x_sig,
                                     use_cache=True)
    self.weights, self.state = (table, weights), (embedding_state, state)


def _projected(recurrence, weights, table, tokens):
  """The recurrence's projected inputs at every step of `tokens`."""
  # With a symbolic number of tokens (jax.export), the table can't be
  # compared with it, and each token is projected.
  if (not jax.export.is_symbolic_dim(tokens.size)
      and table.shape[0] < tokens.size):
    # Looked up in float32, so that the gradient's sum over every step
    # that reads a row is taken in float32 whatever the compute dtype.
    return tuple(jnp.take(rows.astype(jnp.float32), tokens,
                          axis=0).astype(rows.dtype)
                 for rows in recurrence.project(weights, table))
  return recurrence.project(weights, jnp.take(table, tokens, axis=0))
