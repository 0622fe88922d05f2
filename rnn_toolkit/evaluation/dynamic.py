"""Dynamic evaluation (Krause et al., 2018): the model adapts to the text it
is scoring.

The split is read as streams (evaluation/streaming.py). Each segment, the
next window of every stream, is first scored with the current weights and
only then learned from: one gradient step on that segment's loss, and a
pull back toward the trained weights,

    sgd:  θ ← θ − lr·g + decay·(θ₀ − θ)
    rms:  θ ← θ − lr·g / (√ms + ε) + decay·(θ₀ − θ)

where ms is the running mean of g² over the segments read so far (the
RMS-normalised step). The adapted weights live only in memory: the run's
checkpoints are read, never written.
"""

from typing import Any, Iterable, NamedTuple

import jax
from jax import numpy as jnp
import numpy as np

from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation import streaming

METHODS = ('sgd', 'rms')
_EPSILON = 1e-8


class DynamicEvaluation(NamedTuple):
  """How weights adapt while a text is scored.

  Attributes:
    method: 'rms' (RMS-normalised steps) or 'sgd'.
    learning_rate: the step size, per segment.
    decay: the fraction of the way back to the trained weights taken after
      each segment (0: none).
    streams: streams read side by side; each segment is one window of every
      stream, and the text adapts to in fewer, larger steps the more there are.
  """
  method: str = 'rms'
  learning_rate: float = 1.5e-4
  decay: float = 1e-3
  streams: int = 1

  def checked(self) -> 'DynamicEvaluation':
    problems = []
    if self.method not in METHODS:
      problems.append(f'method must be one of {", ".join(METHODS)} (got '
                      f'{self.method!r})')
    if not self.learning_rate >= 0:
      problems.append(f'the learning rate must be >= 0 (got '
                      f'{self.learning_rate})')
    if not 0 <= self.decay <= 1:
      problems.append(f'the decay must be in [0, 1] (got {self.decay})')
    if not (isinstance(self.streams, int) and self.streams >= 1):
      problems.append(f'streams must be a whole number >= 1 (got '
                      f'{self.streams!r})')
    if problems:
      raise UsageError(f'Bad dynamic evaluation settings: '
                       f'{"; ".join(problems)}. Fix --dynamic_lr, '
                       f'--dynamic_decay or the DynamicEvaluation bindings.')
    return self

  def describe(self) -> dict[str, Any]:
    return self._asdict()


def dynamic_evaluation(method: str = 'rms', learning_rate: float = 1.5e-4,
                       decay: float = 1e-3,
                       streams: int = 1) -> DynamicEvaluation:
  """The settings as gin binds them (`dynamic_evaluation.learning_rate`)."""
  return DynamicEvaluation(method, learning_rate, decay, streams)


def adapting_scorer(model: Any, settings: DynamicEvaluation) -> Any:
  """A jitted fn: (weights, trained weights, ms, count, state, batch) ->
  (sums, weights, ms, count, state): scores the batch, then learns from it.

  The sums are (Σ w·nll, Σ w·correct, Σ w), as evaluation/streaming.py's.
  """
  tree_map = jax.tree_util.tree_map

  def loss(weights, state, batch):
    inputs, resets, targets, mask = batch
    log_probs, state = model.pure_fn((inputs, resets), weights, state,
                                     jax.random.PRNGKey(0))
    sums = streaming.weighted_sums(log_probs, targets, mask)
    return sums[0] / jnp.maximum(sums[2], 1.0), (sums, state)

  def step(weights, trained, ms, count, state, batch):
    grads, (sums, state) = jax.grad(loss, has_aux=True)(weights, state, batch)
    count = count + 1
    if settings.method == 'rms':
      ms = tree_map(lambda m, g: m + (g * g - m) / count, ms, grads)
      grads = tree_map(lambda g, m: g / (jnp.sqrt(m) + _EPSILON), grads, ms)
    weights = tree_map(
        lambda w, g, w0: w - settings.learning_rate * g
        + settings.decay * (w0 - w), weights, grads, trained)
    return sums, weights, ms, count, state

  return jax.jit(step)


def score_adapting(model: Any, state: Any, batches: Iterable[tuple],
                   settings: DynamicEvaluation) -> np.ndarray:
  """[Σ w·nll, Σ w·correct, Σ w] of `batches`, each scored before the
  weights learn from it; `model`'s own weights are left as they were."""
  trained = model.weights
  weights, ms = trained, jax.tree_util.tree_map(jnp.zeros_like, trained)
  count = jnp.zeros((), jnp.float32)
  step = adapting_scorer(model, settings)
  totals = np.zeros(3)
  for batch in batches:
    sums, weights, ms, count, state = step(weights, trained, ms, count,
                                           state, batch)
    totals += np.array([float(s) for s in sums])
  return totals
