"""Mixed precision: compute in a narrower dtype, keep weights and loss float32.

On TPUs and recent GPUs, matrix products in bfloat16 run several times
faster than in float32 and halve the activations' memory, while float32
weights keep small updates from rounding away. A model casts its
activations to the compute dtype after the embedding and back to float32
before the log-softmax; layers in between compute in the dtype of their
input, casting their float32 weights to it on the fly (the gradients reach
the float32 weights through that cast).
"""

from typing import Any

import jax
from jax import numpy as jnp
from trax import layers as tl

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype_of(name: str) -> Any:
  """The jnp dtype called `name`; ValueError names the choices."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f'Unknown compute_dtype {name!r}; choose one of '
                     f'{sorted(COMPUTE_DTYPES)}.')
  return COMPUTE_DTYPES[name]


def Cast(dtype: Any) -> tl.Layer:  # pylint: disable=invalid-name
  """A layer casting its (floating-point) input to `dtype`."""
  name = jnp.dtype(dtype).name
  return tl.Fn(f'CastTo_{name}', lambda x: x.astype(dtype))


class Dense(tl.Dense):
  """trax's Dense, computing in its input's dtype with float32 weights.

  trax's own Dense would promote a bfloat16 input to float32 by multiplying
  it with float32 weights.
  """

  def forward(self, x: jax.Array) -> jax.Array:
    w, b = self.weights
    return jnp.dot(x, w.astype(x.dtype)) + b.astype(x.dtype)
