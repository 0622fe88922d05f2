"""The toolkit's shared-weight recurrent layer and the recurrent stacks built on it.

`ElmanRNN` computes, for every sequence in the batch,

    h_t = g(x_t · W_xh + h_{t-1} · W_hh + b_h)

with one set of weights (W_xh, W_hh, b_h) applied at every time step, so the
parameter count does not depend on the sequence length. The input projection
x_t · W_xh has no recurrence in it, so it is done for all steps at once as one
large matrix product; only h · W_hh runs inside the scan over time, whose
hand-written gradient is in models/recurrence.py.
"""

from collections.abc import Callable
from typing import Any

from jax import numpy as jnp
from trax import fastmath
from trax import layers as tl
from trax.layers import base
from trax.layers import initializers as init

from models.recurrence import check_activation, elman_scan


class ElmanRNN(base.Layer):
  """Elman (simple) RNN layer whose weights are shared across time steps.

  Inputs, in stack order: x f32[batch, time, features], then `mask`
  [batch, time] if `use_mask`, then h0 f32[batch, n_units] if
  `use_initial_state`. Outputs: the sequence f32[batch, time, n_units] if
  `return_sequences`, then the final state f32[batch, n_units] if
  `return_state`. With a mask, the final state is the state after the last
  real step.

  In `mode='predict'` the layer keeps its hidden state between calls in its
  layer state, so feeding a sequence one step (or one chunk) at a time gives
  the same outputs as one call on the whole sequence. An initial-state input
  is then used on the first call only.

  The layer computes in its input's dtype: given bfloat16 inputs, its
  float32 weights are cast to bfloat16 for the products (see
  models/precision.py).
  """

  def __init__(self, n_units: int, activation: str | Callable = 'tanh',
               kernel_initializer: Callable = init.GlorotUniformInitializer(),
               recurrent_initializer: Callable = init.OrthogonalInitializer(),
               bias_initializer: Callable = init.RandomNormalInitializer(0.0),
               use_mask: bool = False, use_initial_state: bool = False,
               return_sequences: bool = True, return_state: bool = False,
               mode: str = 'train'):
    if not (return_sequences or return_state):
      raise ValueError('ElmanRNN must return the sequence, the state or both.')
    super().__init__(n_in=1 + int(use_mask) + int(use_initial_state),
                     n_out=int(return_sequences) + int(return_state),
                     name=f'ElmanRNN_{n_units}')
    self._n_units = n_units
    check_activation(activation)
    self._activation = activation
    self._initializers = (kernel_initializer, recurrent_initializer,
                          bias_initializer)
    self._use_mask = use_mask
    self._use_initial_state = use_initial_state
    self._return_sequences = return_sequences
    self._return_state = return_state
    self._mode = mode

  def _unpack(self, inputs):
    """Splits the layer's inputs into (x, mask or None, h0 or None)."""
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    x = inputs.pop(0)
    mask = inputs.pop(0) if self._use_mask else None
    h0 = inputs.pop(0) if self._use_initial_state else None
    return x, mask, h0

  def forward(self, inputs: Any) -> Any:
    """Runs the recurrence over every step of the input sequences."""
    x, mask, h0 = self._unpack(inputs)
    w_xh, w_hh, b_h = (w.astype(x.dtype) for w in self.weights)
    if h0 is None:
      h0 = jnp.zeros((x.shape[0], self._n_units), x.dtype)
    if self._mode == 'predict':
      h_carried, started = self.state
      h0 = jnp.where(started, h_carried, h0)
    outputs, h_last = elman_scan(x @ w_xh + b_h, mask, h0, w_hh,
                                 self._activation)
    if self._mode == 'predict':
      self.state = (h_last, jnp.array(True))
    results = ([outputs] if self._return_sequences else []) + (
        [h_last] if self._return_state else [])
    return results[0] if len(results) == 1 else tuple(results)

  def init_weights_and_state(self, input_signature: Any) -> None:
    """Checks the input shapes and draws W_xh, W_hh and b_h."""
    x_sig, mask_sig, h0_sig = self._unpack(input_signature)
    if len(x_sig.shape) != 3:
      raise ValueError(f'ElmanRNN expects inputs of shape (batch, time, '
                       f'features); got shape {x_sig.shape}.')
    batch, length, n_features = x_sig.shape
    if mask_sig is not None and tuple(mask_sig.shape) != (batch, length):
      raise ValueError(f'ElmanRNN mask must have shape {(batch, length)} '
                       f'(batch, time); got {mask_sig.shape}.')
    if h0_sig is not None and tuple(h0_sig.shape) != (batch, self._n_units):
      raise ValueError(f'ElmanRNN initial state must have shape '
                       f'{(batch, self._n_units)}; got {h0_sig.shape}.')
    kernel_init, recurrent_init, bias_init = self._initializers
    rng_xh, rng_hh, rng_b = fastmath.random.split(self.rng, 3)
    units = self._n_units
    self.weights = (kernel_init((n_features, units), rng_xh),
                    recurrent_init((units, units), rng_hh),
                    bias_init((units,), rng_b))
    if self._mode == 'predict':
      self.state = (jnp.zeros((batch, units), x_sig.dtype), jnp.array(False))


def _trax_gru(n_units, mode, use_mask=False):
  if use_mask:
    return _masked_trax_cell(tl.GRUCell(n_units), n_units, mode)
  return tl.GRU(n_units, mode=mode)


def _trax_lstm(n_units, mode, use_mask=False):
  if use_mask:
    return _masked_trax_cell(tl.LSTMCell(n_units), 2 * n_units, mode)
  return tl.LSTM(n_units, mode=mode)


# Recurrent layers selectable by name, each (n_units, mode, use_mask) ->
# Layer taking x [batch, time, features] (and, with use_mask, the mask
# [batch, time]) to [batch, time, n_units]. trax's unmasked GRU and LSTM
# need inputs as wide as their state; the others accept any width.
CELLS = {
    'elman': lambda n_units, mode, use_mask=False, **options: ElmanRNN(
        n_units, use_mask=use_mask, mode=mode, **options),
    'gru': _trax_gru,
    'lstm': _trax_lstm,
}


def ConfiguredElman(n_units: int, mode: str = 'train',  # pylint: disable=invalid-name
                    **options: Any) -> ElmanRNN:
  """An ElmanRNN with the options bound in gin (e.g. its activation).

  `options` are further ElmanRNN arguments, such as use_initial_state.
  """
  return CELLS['elman'](n_units, mode, **options)


def RecurrentLayer(cell: str, n_units: int, mode: str = 'train',  # pylint: disable=invalid-name
                   use_mask: bool = False) -> tl.Layer:
  """Returns the sequence-to-sequence recurrent layer called `cell`.

  With `use_mask` it takes (x, mask) and skips padding steps: the state is
  carried over them unchanged and their outputs are zero.
  """
  if cell not in CELLS:
    raise ValueError(f'Unknown recurrent cell {cell!r}; '
                     f'choose one of {sorted(CELLS)}.')
  return CELLS[cell](n_units, mode, use_mask=use_mask)


def StackedElmanRNN(n_units: int, n_layers: int, use_mask: bool = False,  # pylint: disable=invalid-name
                    dropout: float = 0.0, mode: str = 'train',
                    layer_options: dict[str, Any] | None = None) -> tl.Serial:
  """Returns `n_layers` ElmanRNN layers, each feeding the next.

  Inputs: x f32[batch, time, features] (and mask [batch, time] if
  `use_mask`). Output: f32[batch, time, n_units] (and the mask, unchanged).
  Dropout, if any, is applied between layers. `layer_options` is a dict of
  further ElmanRNN arguments (e.g. {'activation': 'relu'}); a dict rather
  than **kwargs, so gin can check every parameter name bound here.
  """
  layers = []
  for i in range(n_layers):
    if i > 0 and dropout:
      layers.append(tl.Dropout(rate=dropout, mode=mode))
    rnn = ElmanRNN(n_units, use_mask=use_mask, mode=mode,
                   **(layer_options or {}))
    if use_mask:                         # x, mask
      layers += [tl.Select([0, 1, 1]),   # x, mask, mask
                 rnn]                    # h, mask
    else:
      layers.append(rnn)
  return tl.Serial(layers, name=f'StackedElmanRNN_{n_layers}x{n_units}')


def _masked_step(cell):
  """Wraps a trax cell (x_t, state) -> (y_t, state) to skip padding steps.

  The wrapped step takes (x_t, mask_t, state) and returns (y_t, state): at a
  padding step the state is carried unchanged and the output is zero, as in
  ElmanRNN.
  """
  def keep_where_real(y, new_state, mask, state):
    real = mask[:, None] > 0
    return jnp.where(real, y, 0.0), jnp.where(real, new_state, state)

  return tl.Serial(                                    # x, mask, state
      tl.Select([0, 2, 1, 2]),                         # x, state, mask, state
      cell,                                            # y, state', mask, state
      tl.Fn('KeepWhereReal', keep_where_real, n_out=2),  # y, state
  )


def _masked_trax_cell(cell, state_width, mode):
  """(x, mask) -> outputs, the trax `cell` run over the real steps only."""
  def with_zero_state(x, mask):
    return x, mask, jnp.zeros((x.shape[0], state_width), x.dtype)

  return tl.Serial(                                        # x, mask
      tl.Fn('WithZeroState', with_zero_state, n_out=3),   # x, mask, state
      tl.Scan(_masked_step(cell), axis=1, mode=mode),     # y, state
      tl.Select([0], n_in=2),                             # y
  )


def MaskedRNN(cell: str, n_units: int, n_layers: int = 1,  # pylint: disable=invalid-name
              bidirectional: bool = False, dropout: float = 0.0,
              mode: str = 'train') -> tl.Serial:
  """Stacked recurrent layers over padded sequences, optionally bidirectional.

  Inputs: x f32[batch, length, features], mask f32[batch, length] (1 for
  real steps, 0 for the padding after each sequence). Outputs: states
  f32[batch, length, n_units], or [..., 2 * n_units] if `bidirectional`
  (forward states, then backward), zero at padding; and the mask.

  The backward layer runs over the whole reversed array, where each
  sequence's padding comes first; padding steps carry the initial state
  unchanged, so it starts from that state at the sequence's last real step.
  """
  layers = []
  for i in range(n_layers):
    if i > 0:
      layers.append(tl.Dropout(rate=dropout, mode=mode))
    layers.append(_bidirectional(cell, n_units, mode) if bidirectional
                  else tl.Serial(tl.Select([0, 1, 1]),
                                 RecurrentLayer(cell, n_units, mode,
                                                use_mask=True)))
  direction = 'Bidirectional' if bidirectional else 'Masked'
  return tl.Serial(layers, name=f'{direction}RNN_{cell}_{n_layers}x{n_units}')


def _bidirectional(cell, n_units, mode):
  """(x, mask) -> (forward and backward states side by side, mask)."""
  def reverse_both(x, mask):
    return jnp.flip(x, axis=1), jnp.flip(mask, axis=1)

  return tl.Serial(                                         # x, mask
      tl.Branch(
          RecurrentLayer(cell, n_units, mode, use_mask=True),
          [tl.Fn('ReverseTime', reverse_both, n_out=2),     # reversed x, mask
           RecurrentLayer(cell, n_units, mode, use_mask=True),
           tl.Fn('ReverseTime', lambda h: jnp.flip(h, axis=1))],
          tl.Select([1], n_in=2)),                          # fwd, bwd, mask
      tl.Concatenate(n_items=2),                            # states, mask
  )
