"""Recurrent layers that carry their final state into the next batch.

Truncated backpropagation through time over contiguous streams (char-rnn,
AWD-LSTM): row b of batch k+1 continues the text of row b of batch k, so
each recurrent layer starts a batch from the state it ended the previous
one in. Gradients stop at that boundary; the state is the layer's trax
state, so trax's training step threads it from step to step and the
checkpoint holds it with the rest of the model state.

A stream also says where its state must start afresh: a row whose reset
flag is 1 (a document, or a stream, starts in it) begins from zeros.
Documents start only at the first step of a window (data/char_lm.py pads
them to whole windows), so one flag per row and batch is enough.
"""

from typing import Any

import jax
from jax import numpy as jnp
from trax import layers as tl
from trax import shapes
from trax.layers import base


class CarriedState(base.Layer):
  """Runs `recurrence` from the state it ended the previous call in.

  Inputs: x f32[batch, time, features] (or the token ids an
  EmbeddedRecurrence reads), reset f32[batch] (1: start this row from
  zeros). Outputs: the recurrence's sequence f32[batch, time, n_units]
  and `reset`, unchanged, for the next recurrent layer.

  `recurrence` maps (x, h0 f32[batch, state_width]) to (sequence, final
  state), casting h0 to the dtype it computes in. The carried state is
  kept in float32 whatever the compute dtype, so that the model state, and
  the checkpoint, have one dtype.
  """

  def __init__(self, recurrence: tl.Layer, state_width: int):
    super().__init__(n_in=2, n_out=2, name=f'Carried{recurrence.name}')
    self._sublayers = [recurrence]
    self._state_width = state_width
    self._weights = (None,)
    self._state = (None, ())

  @property
  def sublayer(self) -> tl.Layer:
    return self._sublayers[0]

  @property
  def state(self) -> tuple:
    """(the recurrence's own state, the carried state f32[batch, width])."""
    return (self.sublayer.state, self._state[1])

  @state.setter
  def state(self, state: Any) -> None:
    if isinstance(state, dict) and state == base.GET_STATE_FROM_CACHE:
      return
    self._state = (None, state[1])
    self.sublayer.state = state[0]

  def forward(self, inputs: Any) -> Any:
    x, reset = inputs
    sublayer_state, carried = self.state
    # The previous batch's graph is gone; stopping the gradient says so.
    carried = jax.lax.stop_gradient(carried)
    h0 = jnp.where(reset[:, None] > 0, 0.0, carried)
    (outputs, h_last), sublayer_state = self.sublayer.pure_fn(
        (x, h0), self.weights[0], sublayer_state, self.rng)
    self.state = (sublayer_state, h_last.astype(jnp.float32))
    return outputs, reset

  def init_weights_and_state(self, input_signature: Any) -> None:
    x_sig, reset_sig = input_signature
    if (len(x_sig.shape) not in (2, 3)
        or tuple(reset_sig.shape) != x_sig.shape[:1]):
      raise ValueError(f'{self.name} takes x [batch, time, features] (or '
                       f'token ids [batch, time]) and reset [batch]; got '
                       f'shapes {x_sig.shape} and {reset_sig.shape}.')
    batch = x_sig.shape[0]
    h0_sig = shapes.ShapeDtype((batch, self._state_width), jnp.float32)
    weights, state = self.sublayer.init((x_sig, h0_sig), use_cache=True)
    self.state = (state, jnp.zeros((batch, self._state_width), jnp.float32))
    self.weights = (weights,)


def map_carried(model: tl.Layer, state: Any, fn: Any) -> Any:
  """`state` (of `model`) with `fn` applied to every carried state in it.

  The carried states are the arrays of the model state whose rows are the
  batch's rows; data-parallel training splits them over the devices with
  the batch (rnn_toolkit/training/loop.py).
  """
  if isinstance(model, CarriedState):
    return (map_carried(model.sublayer, state[0], fn), fn(state[1]))
  sublayers = model.sublayers
  if sublayers and isinstance(state, tuple) and len(state) == len(sublayers):
    return tuple(map_carried(layer, part, fn)
                 for layer, part in zip(sublayers, state))
  return state
