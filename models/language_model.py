"""Recurrent language models (the many-to-many application type)."""

from jax import numpy as jnp
from trax import layers as tl

from models import carried_state
from models import precision
from models import rnn
from models.dropout import ByteDropout
from models.embedded_recurrence import EmbeddedRecurrence


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
    dropout: dropout rate on the first layer's projected inputs (the
      embedding's product with W_xh, models/embedded_recurrence.py) and
      after each recurrent layer, drawn as models/dropout.py draws it.
    compute_dtype: 'float32', or 'bfloat16' to run the activations and the
      Elman and output products in bfloat16 (weights and loss stay float32;
      the GRU and LSTM compute in float32 either way).
    stateful: carry the recurrent state from batch to batch, as above.
    mode: 'train', 'eval' or 'predict'.
  """
  dtype = precision.compute_dtype_of(compute_dtype)
  streaming = stateful and mode != 'predict'

  def drop():
    return ByteDropout(rate=dropout, mode=mode)

  if cell not in rnn.CELLS:
    raise ValueError(f'Unknown recurrent cell {cell!r}; '
                     f'choose one of {sorted(rnn.CELLS)}.')

  def recurrent_layer(first):
    options = dict(use_initial_state=True, return_state=True) if streaming else {}
    layer = rnn.CELLS[cell](d_model, mode, **options)
    width = layer.state_width
    if first:  # it reads the embeddings: its input product is per vocab row
      layer = EmbeddedRecurrence(tl.Embedding(vocab_size, d_model), layer,
                                 dropout, dtype, mode)
    return carried_state.CarriedState(layer, width) if streaming else layer

  recurrent_layers = [[recurrent_layer(i == 0), drop()]
                      for i in range(n_layers)]

  # The other inputs (a stream's resets) ride below the top of the stack,
  # read by the recurrent layers alone.
  return tl.Serial(                       # tokens (, resets)
      [] if streaming else tl.ShiftRight(mode=mode),  # previous tokens
      recurrent_layers,                   # hidden states (embedded inside)
      precision.Dense(vocab_size),        # logits
      # The loss is taken in float32.
      [] if dtype == jnp.float32 else precision.Cast(jnp.float32),
      tl.LogSoftmax(),                    # log-probabilities (, resets)
      tl.Select([0], n_in=2) if streaming else [],  # log-probabilities
      name=f'RNNLanguageModel_{cell}',
  )
