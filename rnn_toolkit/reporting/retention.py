"""How much a trained recurrent model's state still holds each input.

The seed's note says a simple RNN carries information along the sequence,
its hold on earlier inputs fading with distance. This module measures it:
for windows of T steps, the Frobenius norm of the Jacobian ∂h_T/∂x_t of the
top recurrent layer's output h_T at the last step with respect to the input
x_t at step t (the embedding the recurrent layers read there), averaged over
the windows and indexed by the distance T - t.

Language models, text classifiers and taggers are measured alike. In a
bidirectional encoder h_T is the forward state after the whole window
joined with the backward state, which at step T has read x_T only (in the
first layer), so away from d = 0 the curve is the forward direction's.
"""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import jax
from jax import numpy as jnp
import numpy as np
from trax import layers as tl

from models.embedded_recurrence import EmbeddedRecurrence
from models.word_features import is_word_vectors

# Output units whose Jacobian rows are computed in one vectorised pass; the
# pass holds units_per_pass copies of the input's gradient.
UNITS_PER_PASS = 32


def split_at_embedding(
    model: tl.Layer) -> tuple[list[tl.Layer], list[tl.Layer]]:
  """Splits a model into (up to its inputs x, x to its states h).

  Args:
    model: a trax Serial with an Embedding, then recurrent layers, then the
      output Dense (as `models.RNNLanguageModel`, `RNNClassifier` and
      `RNNTagger` build it); an EmbeddedRecurrence counts as both, and a
      WordVectors of words and characters as the Embedding (x is then a
      word's embedding and its characters' features).

  Returns:
    Two lists of the model's sublayers: through the Embedding (to x, or to
    x and the padding mask), and from there through the last layer with
    weights before the output Dense (the top recurrent layer).

  Raises:
    ValueError: the model has no Embedding followed by recurrent layers and
      an output Dense.
  """
  layers = _unfolded(model.sublayers)
  embeddings = [i for i, l in enumerate(layers)
                if isinstance(l, tl.Embedding) or is_word_vectors(l)]
  outputs = [i for i, l in enumerate(layers) if isinstance(l, tl.Dense)]
  weighted = [i for i, l in enumerate(layers)
              if jax.tree_util.tree_leaves(l.weights)]
  if len(embeddings) == 1 and outputs and outputs[-1] > embeddings[0]:
    recurrent = [i for i in weighted if embeddings[0] < i < outputs[-1]]
    if recurrent:
      return layers[:embeddings[0] + 1], layers[embeddings[0] + 1:
                                                recurrent[-1] + 1]
  raise ValueError(f'{model.name} is not an embedding, recurrent layers and '
                   f'an output layer in sequence, as a language model, text '
                   f'classifier or tagger is.')


def _unfolded(layers):
  """`layers`, each EmbeddedRecurrence replaced by its embedding and
  recurrence: the Jacobian is taken with respect to the embeddings."""
  unfolded = []
  for layer in layers:
    unfolded += (layer.sublayers if isinstance(layer, EmbeddedRecurrence)
                 else [layer])
  return unfolded


def _run(layers, weights, inputs):
  """The stack after `layers` (given `weights`) run in sequence on `inputs`."""
  serial = tl.Serial(layers)
  outputs, _ = serial.pure_fn(inputs, tuple(weights), serial.state,
                              jax.random.PRNGKey(0))
  return outputs


def _top(stack):
  return stack[0] if isinstance(stack, (tuple, list)) else stack


def jacobian_norms(model: tl.Layer, tokens: np.ndarray) -> np.ndarray:
  """‖∂h_T/∂x_t‖ for every window and step: f32[batch, time].

  Args:
    model: an RNNLanguageModel, RNNClassifier or RNNTagger in eval mode,
      with its weights.
    tokens: int32[batch, time] windows of text, without padding.

  Returns:
    NumPy f32[batch, time]: entry [b, t] is the Frobenius norm of the
    Jacobian of window b's last top-layer state with respect to its input at
    step t (in a language model x_t embeds the token before t: it shifts
    its input right by one).
  """
  to_inputs, to_states = split_at_embedding(model)
  inputs = _run(to_inputs, [l.weights for l in to_inputs], jnp.asarray(tokens))
  x, *rest = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
  return np.asarray(_squared_norms(to_states, [l.weights for l in to_states],
                                   x, tuple(rest))) ** 0.5


def _squared_norms(layers, weights, x, rest=()):
  """Σ over state units u and input features of (∂h_T[u]/∂x_t)², per window.

  `rest` are the stack's other inputs (the padding mask), held fixed.
  """
  def states(weights, x):
    return _top(_run(layers, weights, (x, *rest) if rest else x))
  n_units = jax.eval_shape(states, weights, x).shape[-1]

  @jax.jit
  def rows_squared(weights, x, units):
    h_last, pullback = jax.vjp(lambda x: states(weights, x)[:, -1], x)

    def gradient(unit):  # of the unit summed over windows: each window's row
      one_hot = jax.nn.one_hot(unit, n_units, dtype=h_last.dtype)
      return pullback(jnp.broadcast_to(one_hot, h_last.shape))[0]
    rows = jax.vmap(gradient)(units).astype(jnp.float32)
    return jnp.sum(rows ** 2, axis=(0, 3))

  total = jnp.zeros(x.shape[:2])
  for start in range(0, n_units, UNITS_PER_PASS):
    units = jnp.arange(start, min(start + UNITS_PER_PASS, n_units))
    total += rows_squared(weights, x, units)
  return total


def retention_curve(model: tl.Layer, tokens: np.ndarray) -> np.ndarray:
  """The mean ‖∂h_T/∂x_t‖ over windows, by distance d = T - t.

  Returns:
    NumPy f32[time]: entry d is the mean norm at distance d, from d = 0 (the
    last input, x_T) to d = time - 1 (the first, x_1).
  """
  return jacobian_norms(model, tokens).mean(axis=0)[::-1]
