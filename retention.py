"""How much a trained language model's recurrent state still holds each input.

The seed's note says a simple RNN carries information along the sequence,
its hold on earlier inputs fading with distance. This module measures it:
for validation windows of T steps, the Frobenius norm of the Jacobian
∂h_T/∂x_t of the top recurrent layer's last state h_T with respect to the
input x_t at step t (the embedding the recurrent layers read there), averaged
over the windows and indexed by the distance T - t.
"""

import trax_compat  # noqa: F401  (must precede the first trax import)

import jax
from jax import numpy as jnp
import numpy as np
from trax import layers as tl

# Output units whose Jacobian rows are computed in one vectorised pass; the
# pass holds units_per_pass copies of the input's gradient.
UNITS_PER_PASS = 32


def split_at_embedding(model):
  """Splits an RNNLanguageModel into (up to its inputs x, x to its states h).

  Args:
    model: a trax Serial with an Embedding, then recurrent layers, then the
      output Dense (as `models.RNNLanguageModel` builds it).

  Returns:
    Two lists of the model's sublayers: through the Embedding, and from there
    to the top recurrent layer's states.

  Raises:
    ValueError: the model has no Embedding followed by an output Dense.
  """
  layers = model.sublayers
  embeddings = [i for i, l in enumerate(layers) if isinstance(l, tl.Embedding)]
  outputs = [i for i, l in enumerate(layers) if isinstance(l, tl.Dense)]
  if len(embeddings) != 1 or not outputs or outputs[-1] < embeddings[0]:
    raise ValueError(f'{model.name} is not an embedding, recurrent layers and '
                     f'an output layer in sequence, as a language model is.')
  return layers[:embeddings[0] + 1], layers[embeddings[0] + 1:outputs[-1]]


def _run(layers, weights, x):
  for layer, w in zip(layers, weights):
    x, _ = layer.pure_fn(x, w, layer.state, jax.random.PRNGKey(0))
  return x


def jacobian_norms(model, tokens):
  """‖∂h_T/∂x_t‖ for every window and step: f32[batch, time].

  Args:
    model: an RNNLanguageModel in eval mode, with its weights.
    tokens: int32[batch, time] windows of the text.

  Returns:
    NumPy f32[batch, time]: entry [b, t] is the Frobenius norm of the
    Jacobian of window b's last top-layer state with respect to its input at
    step t (x_t is the embedding of the token before t: the model shifts its
    input right by one).
  """
  to_inputs, to_states = split_at_embedding(model)
  x = _run(to_inputs, [l.weights for l in to_inputs], jnp.asarray(tokens))
  return np.asarray(_squared_norms(to_states, [l.weights for l in to_states],
                                   x)) ** 0.5


def _squared_norms(layers, weights, x):
  """Σ over state units u and input features of (∂h_T[u]/∂x_t)², per window."""
  n_units = jax.eval_shape(lambda x: _run(layers, weights, x), x).shape[-1]

  @jax.jit
  def rows_squared(weights, x, units):
    h_last, pullback = jax.vjp(lambda x: _run(layers, weights, x)[:, -1], x)

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


def retention_curve(model, tokens):
  """The mean ‖∂h_T/∂x_t‖ over windows, by distance d = T - t.

  Returns:
    NumPy f32[time]: entry d is the mean norm at distance d, from d = 0 (the
    last input, x_T) to d = time - 1 (the first, x_1).
  """
  return jacobian_norms(model, tokens).mean(axis=0)[::-1]
