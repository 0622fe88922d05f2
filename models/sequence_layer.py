"""What the toolkit's recurrent layers share: `SequenceLayer`.

ElmanRNN (models/rnn.py) and GatedRNN (models/gated_rnn.py) take the same
inputs and give the same outputs, keep their state the same way in predict
mode, and check the same shapes; they differ only in their input products
(`project`), recurrence (`_scan`) and weights (`_init_weights`).
"""

import abc
from typing import Any

import jax
from jax import numpy as jnp
from trax.layers import base


class SequenceLayer(base.Layer, abc.ABC):
  """A recurrent layer over [batch, time, features].

  Inputs, in stack order: x f32[batch, time, features], then `mask`
  [batch, time] if `use_mask` (0 marks padding, where the state is carried
  unchanged and the output is zero), then the initial state
  f32[batch, state_width] if `use_initial_state`. Outputs: the sequence
  f32[batch, time, n_units] if `return_sequences`, then the final state
  f32[batch, state_width] if `return_state` (with a mask, the state after
  the last real step).

  In `mode='predict'` the layer keeps its state between calls in its layer
  state, so feeding a sequence one step (or one chunk) at a time gives the
  same outputs as one call on the whole sequence. An initial-state input is
  then used on the first call only.
  """

  def __init__(self, name: str, n_units: int, state_width: int,
               use_mask: bool, use_initial_state: bool,
               return_sequences: bool, return_state: bool, mode: str):
    if not (return_sequences or return_state):
      raise ValueError(f'{name} must return the sequence, the state or both.')
    super().__init__(n_in=1 + int(use_mask) + int(use_initial_state),
                     n_out=int(return_sequences) + int(return_state),
                     name=f'{name}_{n_units}')
    self._kind, self._n_units, self._state_width = name, n_units, state_width
    self._use_mask, self._use_initial_state = use_mask, use_initial_state
    self._return_sequences = return_sequences
    self._return_state = return_state
    self._mode = mode

  @property
  def state_width(self) -> int:
    return self._state_width

  @abc.abstractmethod
  def project(self, weights: Any, x: jax.Array) -> tuple[jax.Array, ...]:
    """x's part of every step's products: arrays [..., k], biases included.

    It has no recurrence in it, so it is one large product over all steps,
    computed in x's dtype; `x` may have any leading shape.
    """

  @abc.abstractmethod
  def _scan(self, weights: Any, projected: tuple[jax.Array, ...],
            mask: jax.Array | None,
            h0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(outputs [batch, time, n_units], final state) from h0."""

  @abc.abstractmethod
  def _init_weights(self, n_features: int) -> Any:
    """The layer's weights for inputs of `n_features` features."""

  def compute_dtype(self, dtype: Any) -> Any:
    """The dtype the layer computes (and keeps its state) in, given x's."""
    return dtype

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
    x = x.astype(self.compute_dtype(x.dtype))
    results, self.state = self.run_projected(
        self.weights, self.state, self.project(self.weights, x), (mask, h0))
    return results

  def run_projected(self, weights: Any, state: Any,
                    projected: tuple[jax.Array, ...],
                    others: tuple[Any, Any]) -> tuple[Any, Any]:
    """The layer's outputs, and its new state, from projected inputs.

    What `forward` does after `project`, as a pure function, for a caller
    that projects the inputs itself (models/embedded_recurrence.py).

    Args:
      weights: the layer's weights.
      state: the layer's state.
      projected: `project`'s arrays, [batch, time, k] each.
      others: (mask or None, initial state or None), as the layer's
        further inputs give them.
    """
    mask, h0 = others
    x = projected[0]
    if h0 is None:
      h0 = jnp.zeros((x.shape[0], self._state_width), x.dtype)
    if self._mode == 'predict':
      carried, started = state
      h0 = jnp.where(started, carried, h0)
    outputs, h_last = self._scan(weights, projected, mask, h0.astype(x.dtype))
    if self._mode == 'predict':
      state = (h_last, jnp.array(True))
    results = ([outputs] if self._return_sequences else []) + (
        [h_last] if self._return_state else [])
    return (results[0] if len(results) == 1 else tuple(results)), state

  def init_weights_and_state(self, input_signature: Any) -> None:
    """Checks the input shapes, then draws the weights."""
    x_sig, mask_sig, h0_sig = self._unpack(input_signature)
    name = self._kind
    if len(x_sig.shape) != 3:
      raise ValueError(f'{name} expects inputs of shape (batch, time, '
                       f'features); got shape {x_sig.shape}.')
    batch, length, n_features = x_sig.shape
    if mask_sig is not None and tuple(mask_sig.shape) != (batch, length):
      raise ValueError(f'{name} mask must have shape {(batch, length)} '
                       f'(batch, time); got {mask_sig.shape}.')
    width = self._state_width
    if h0_sig is not None and tuple(h0_sig.shape) != (batch, width):
      raise ValueError(f'{name} initial state must have shape '
                       f'{(batch, width)}; got {h0_sig.shape}.')
    self.weights = self._init_weights(n_features)
    if self._mode == 'predict':
      self.state = (jnp.zeros((batch, width),
                              self.compute_dtype(x_sig.dtype)),
                    jnp.array(False))
