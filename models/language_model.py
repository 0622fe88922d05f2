"""Recurrent language models (the many-to-many application type)."""

from jax import numpy as jnp
from trax import layers as tl

from models import carried_state
from models import precision
from models import rnn


def RNNLanguageModel(vocab_size: int, d_model: int = 512, n_layers: int = 1,  # pylint: disable=invalid-name
                     cell: str = 'elman', dropout: float = 0.0,
                     compute_dtype: str = 'float32', stateful: bool = False,
                     mode: str = 'train') -> tl.Serial:
  """Returns a next-token model: log-probabilities for every position.

  Input: int32[batch, time] token ids. Output: f32[batch, time, vocab_size],
  log-probabilities of the token at each position given the ones before it
  (the input is shifted right by one inside the model, so inputs and targets
  are the same sequence). In `mode='predict'` the shift is skipped: the caller
  feeds the previous token and the recurrent layers carry their state.

  With `stateful`, the model reads contiguous streams (truncated BPTT): its
  inputs are (input ids int32[batch, time], reset f32[batch]), the input ids
  are the targets shifted by one (the pipeline shifts them, across window
  boundaries), and every recurrent layer starts from the state it ended the
  previous batch in, or from zeros in a row whose reset is 1
  (models/carried_state.py). Its weights are those of the model without
  `stateful`; in predict mode, which carries state anyway, it is that model.

  Args:
    vocab_size: number of token ids.
    d_model: width of the embeddings and of every recurrent layer.
    n_layers: number of stacked recurrent layers.
    cell: recurrent layer, a name in `models.rnn.CELLS` ('elman' is the
      toolkit's shared-weight layer; 'gru' and 'lstm' are trax's cells, in
      models/gated_rnn.py).
    dropout: dropout rate after the embedding and after each recurrent layer.
    compute_dtype: 'float32', or 'bfloat16' to run the activations and the
      Elman and output products in bfloat16 (weights and loss stay float32;
      the GRU and LSTM compute in float32 either way).
    stateful: carry the recurrent state from batch to batch, as above.
    mode: 'train', 'eval' or 'predict'.
  """
  dtype = precision.compute_dtype_of(compute_dtype)
  streaming = stateful and mode != 'predict'

  def drop():
    return tl.Dropout(rate=dropout, mode=mode)

  def recurrent_layer():
    if streaming:
      return carried_state.CarriedRecurrentLayer(cell, d_model, mode=mode)
    return rnn.RecurrentLayer(cell, d_model, mode=mode)

  recurrent_layers = [[recurrent_layer(), drop()] for _ in range(n_layers)]
  # In float32 the casts are left out, so the layers, and the random
  # initial weights drawn for them, are those of a model without the option.
  def cast(to):
    return [] if dtype == jnp.float32 else precision.Cast(to)

  # The other inputs (a stream's resets) ride below the top of the stack,
  # read by the recurrent layers alone.
  return tl.Serial(                       # tokens (, resets)
      [] if streaming else tl.ShiftRight(mode=mode),  # previous tokens
      tl.Embedding(vocab_size, d_model),  # vectors
      cast(dtype),                        # vectors in the compute dtype
      drop(),
      recurrent_layers,                   # hidden states
      precision.Dense(vocab_size),        # logits
      cast(jnp.float32),                  # the loss is taken in float32
      tl.LogSoftmax(),                    # log-probabilities (, resets)
      tl.Select([0], n_in=2) if streaming else [],  # log-probabilities
      name=f'RNNLanguageModel_{cell}',
  )
