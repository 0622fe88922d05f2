"""Dropout that draws a quarter of the random bits trax's does.

tl.Dropout draws one float32 uniform, 32 random bits, per element. On a
CPU, generating them (JAX's threefry) is slow: one mask over a char
model's 64 × 128 × 512 activations took over a quarter as long as the rest of
the model's training step (benchmarks/lm_step.py). Here each 32-bit word
gives four elements one byte each, and an element is kept where its byte
is below round(256 · (1 − rate)), in an eighth of the time. So the rate
is a multiple of 1/256, the nearest to the one asked for (0.1 becomes
26/256 = 0.1016). Kept elements are scaled by 1 / (the keep
probability), as in trax, so the expected output is the input."""

from typing import Any

import jax
from jax import numpy as jnp
from trax.layers import base

LEVELS = 256  # one byte per element


def kept_levels(rate: float) -> int:
  """Of the 256 byte values, how many keep an element."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'A dropout rate must be in [0, 1); got {rate}.')
  return round(LEVELS * (1.0 - rate))


def drop(rng: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """x with each element zeroed at `rate` (in 1/256ths), the rest scaled."""
  kept = kept_levels(rate)
  if kept == LEVELS:
    return x
  words = jax.random.bits(rng, (-(-x.size // 4),), jnp.uint32)
  levels = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)
  keep = levels[:x.size].reshape(x.shape) < kept
  return jnp.where(keep, x * (LEVELS / kept), 0).astype(x.dtype)


class ByteDropout(base.Layer):
  """tl.Dropout's layer (active in train mode only), drawn by `drop`."""

  def __init__(self, rate: float = 0.0, mode: str = 'train'):
    super().__init__(name=f'ByteDropout_{rate}')
    kept_levels(rate)
    self._rate = rate if mode == 'train' else 0.0

  def forward(self, x: Any) -> Any:
    return drop(self.rng, x, self._rate) if self._rate else x
