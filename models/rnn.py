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
from trax.layers import initializers as init

from models.gated_rnn import GatedRNN
from models.recurrence import check_activation, elman_scan, input_projection
from models.sequence_layer import SequenceLayer


class ElmanRNN(SequenceLayer):
  """Elman (simple) RNN layer whose weights are shared across time steps.

  Its inputs, outputs and predict mode are SequenceLayer's
  (models/sequence_layer.py); its state is h, f32[batch, n_units].

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
    super().__init__('ElmanRNN', n_units, n_units, use_mask,
                     use_initial_state, return_sequences, return_state, mode)
    check_activation(activation)
    self._activation = activation
    self._initializers = (kernel_initializer, recurrent_initializer,
                          bias_initializer)

  def project(self, weights, x):
    """(x · W_xh + b_h,), in x's dtype."""
    w_xh, _, b_h = weights
    return (input_projection(x, w_xh.astype(x.dtype), b_h.astype(x.dtype)),)

  def _scan(self, weights, projected, mask, h0):
    x_proj, = projected
    return elman_scan(x_proj, mask, h0, weights[1].astype(x_proj.dtype),
                      self._activation)

  def _init_weights(self, n_features):
    """W_xh, W_hh and b_h."""
    kernel_init, recurrent_init, bias_init = self._initializers
    rng_xh, rng_hh, rng_b = fastmath.random.split(self.rng, 3)
    units = self._n_units
    return (kernel_init((n_features, units), rng_xh),
            recurrent_init((units, units), rng_hh),
            bias_init((units,), rng_b))


def _gated(cell):
  return lambda n_units, mode, use_mask=False, **options: GatedRNN(
      cell, n_units, use_mask=use_mask, mode=mode, **options)


# Recurrent layers selectable by name, each (n_units, mode, use_mask,
# **options) -> Layer taking x [batch, time, features] (and, with use_mask,
# the mask [batch, time]) to [batch, time, n_units]. The options are those
# ElmanRNN and GatedRNN share (use_initial_state, return_state...). The
# GRU and LSTM are trax's cells, computed faster (models/gated_rnn.py).
CELLS = {
    'elman': lambda n_units, mode, use_mask=False, **options: ElmanRNN(
        n_units, use_mask=use_mask, mode=mode, **options),
    'gru': _gated('gru'),
    'lstm': _gated('lstm'),
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
