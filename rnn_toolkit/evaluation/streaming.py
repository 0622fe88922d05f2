"""Scoring a language model over whole texts, its state carried throughout.

A stateful language model (RNNLanguageModel with stateful=True, in eval
mode) reads a split as the streams of data/streams.py: batch after batch,
each row continuing its text from the state the previous batch left. The
figures are those of one model reading every document from its start:
nats per character (`loss`), bits per character and perplexity.
"""

import inspect
import math
from typing import Any, Callable, Iterable

import jax
from jax import numpy as jnp
import numpy as np


def stream_scorer(model: Any) -> Callable[..., tuple]:
  """A jitted fn: (weights, state, batch) -> ((Σ w·nll, Σ w·correct, Σ w), state).

  `batch` is (previous ids, resets, target ids, weights); `state` is the
  model's, carried recurrent states included, and the one returned is what
  the next batch of the same streams starts from.
  """
  def score(weights, state, batch):
    inputs, resets, targets, mask = batch
    log_probs, state = model.pure_fn((inputs, resets), weights, state,
                                     jax.random.PRNGKey(0))
    return weighted_sums(log_probs, targets, mask), state
  return jax.jit(score)


def weighted_sums(log_probs: jax.Array, targets: jax.Array,
                  mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(Σ w·nll, Σ w·correct, Σ w) of next-character guesses."""
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(log_probs, axis=-1) == targets).astype(jnp.float32)
  return jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask)


def score_streams(model: Any, weights: Any, state: Any,
                  batches: Iterable[tuple], scorer: Callable | None = None
                  ) -> np.ndarray:
  """[Σ w·nll, Σ w·correct, Σ w] over `batches`, read in order as streams.

  `state` is the model's state for batches of that many rows; its carried
  part does not matter, as every stream's first window resets it.
  """
  scorer = scorer or stream_scorer(model)
  totals = np.zeros(3)
  for batch in batches:
    sums, state = scorer(weights, state, batch)
    totals += np.array([float(s) for s in sums])
  return totals


def stream_metrics(totals: np.ndarray) -> dict[str, float]:
  """loss (nats per character), bits_per_char, perplexity and accuracy."""
  nll, correct, count = totals
  loss = nll / count
  return {'loss': loss, 'bits_per_char': loss / math.log(2),
          'perplexity': math.exp(loss), 'accuracy': correct / count}


def can_stream(model_fn: Callable[..., Any]) -> bool:
  """Whether models of `model_fn` can carry their state: take `stateful`."""
  try:
    return 'stateful' in inspect.signature(model_fn).parameters
  except (TypeError, ValueError):
    return False
