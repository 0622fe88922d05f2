"""A linear-chain conditional random field over a tagger's per-word scores.

A tagger's softmax picks each word's tag on its own; a CRF scores whole
tag sequences, so that I-PER after B-ORG, say, costs what the data says it
should. With emission scores s[t, y] from the recurrent layers and learned
transition scores T[y, y'], the score of tags y_1..y_n is

    start[y_1] + Σ_t s[t, y_t] + Σ_t T[y_t, y_t+1] + end[y_n]

and the loss is its negative log-likelihood, log Z − score, with log Z
summed over every tag sequence by the forward algorithm in log space.
Decoding takes the best sequence (Viterbi). Padding is masked: a row's
real words are a prefix, and its padding changes nothing.

The `CRF` layer, a tagger's last, holds T, start and end as weights and
outputs `potentials`: every term above, per word, as one array. The loss
(`Loss`), Viterbi decoding (`predictions`) and evaluation then need only
that output and the mask, so the trainer, evaluate.py, Run.tag and the
exported tagger share these pure functions.

trax has no CRF (google/trax#1162), hence this module.
"""

from typing import Sequence

import jax
from jax import numpy as jnp
import numpy as np
from trax import layers as tl
from trax.layers import base

from rnn_toolkit import tag_scheme

# The score given to a forbidden transition: finite, so that sums and
# their gradients stay finite, and far below any real path.
FORBIDDEN = -1e4


def potentials(scores: jax.Array, transitions: jax.Array,
               start: jax.Array, end: jax.Array,
               mask: jax.Array) -> jax.Array:
  """f32[batch, time, tags, tags]: every score of a step, as one array.

  P[b, t, i, j] is what tag j at word t adds after tag i at word t-1: its
  emission score and the transition i→j, the start score at t = 0 (where i
  is ignored) and the end score at each row's last real word. A path's
  score is then P[0, ·, y_0] + Σ_t P[t, y_t-1, y_t] over the real words;
  the functions below take this array, which is what a CRF tagger outputs
  (so that its loss and decoding need nothing but the output and the mask).

  Args:
    scores: f32[batch, time, tags], each word's emission scores.
    transitions: f32[tags, tags], the score of tag i followed by tag j.
    start, end: f32[tags], the scores of a sequence's first and last tag.
    mask: [batch, time], nonzero at real words (a prefix of each row).
  """
  real = mask != 0
  steps = jnp.arange(mask.shape[1])
  last = steps[None] == _last_index(real)[:, None]
  first = steps[None] == 0
  unary = (scores + jnp.where(last[..., None], end, 0.0)
           + jnp.where(first[..., None], start, 0.0))
  pairwise = jnp.where(steps[:, None, None] > 0, transitions, 0.0)
  return unary[:, :, None, :] + pairwise[None]


def log_partition(potentials: jax.Array, mask: jax.Array) -> jax.Array:
  """f32[batch]: log Σ over every tag sequence of exp(its score).

  Args:
    potentials: f32[batch, time, tags, tags], as `potentials` gives them.
    mask: [batch, time], nonzero at real words (a prefix of each row).
  """
  def step(alpha, inputs):
    potentials_t, real = inputs
    moved = jax.nn.logsumexp(alpha[:, :, None] + potentials_t, axis=1)
    return jnp.where(real[:, None], moved, alpha), None

  alpha, _ = jax.lax.scan(step, _from_the_start(potentials), (
      _time_major(potentials), _time_major(mask != 0)))
  return jax.nn.logsumexp(alpha, axis=-1)


def sequence_score(potentials: jax.Array, tags: jax.Array,
                   mask: jax.Array) -> jax.Array:
  """f32[batch]: the score of the tag sequences `tags` int32[batch, time]
  (their padding ignored); the other arguments as `log_partition`'s."""
  previous = jnp.concatenate([tags[:, :1], tags[:, :-1]], axis=1)
  rows = jnp.take_along_axis(potentials, previous[..., None, None], axis=2)
  chosen = jnp.take_along_axis(rows[:, :, 0], tags[..., None], axis=-1)
  return jnp.sum(jnp.where(mask != 0, chosen[..., 0], 0.0), axis=1)


def negative_log_likelihood(potentials: jax.Array, tags: jax.Array,
                            mask: jax.Array) -> jax.Array:
  """f32[batch]: −log p(tags | potentials), log Z − the tags' score."""
  return (log_partition(potentials, mask)
          - sequence_score(potentials, tags, mask))


def viterbi(potentials: jax.Array, mask: jax.Array) -> jax.Array:
  """int32[batch, time]: each row's best-scoring tags (0 at padding)."""
  n_tags = potentials.shape[-1]

  def forward(best, inputs):
    potentials_t, real = inputs
    candidates = best[:, :, None] + potentials_t  # [batch, from, to]
    came_from = jnp.argmax(candidates, axis=1)
    # At padding the path stays put: the best tag points to itself.
    came_from = jnp.where(real[:, None], came_from, jnp.arange(n_tags)[None])
    return (jnp.where(real[:, None], jnp.max(candidates, axis=1), best),
            came_from)

  best, came_from = jax.lax.scan(forward, _from_the_start(potentials), (
      _time_major(potentials), _time_major(mask != 0)))

  def backward(tag, pointers):
    previous = jnp.take_along_axis(pointers, tag[:, None], axis=1)[:, 0]
    return previous, tag

  _, tags = jax.lax.scan(backward, jnp.argmax(best, axis=-1), came_from,
                         reverse=True)
  return jnp.where(mask != 0, _time_major(tags), 0).astype(jnp.int32)


def iob_constraints(tag_names: Sequence[str]) -> tuple[np.ndarray,
                                                        np.ndarray]:
  """(f32[tags, tags], f32[tags]): 0 where IOB2 allows a transition (or a
  first tag) and FORBIDDEN where it does not: I-X only after B-X or I-X.

  Raises:
    ValueError: a tag is not O, B-X or I-X, so the scheme can't be read.
  """
  unreadable = tag_scheme.unreadable(tag_names)
  if unreadable:
    raise ValueError(
        f'The CRF can forbid invalid IOB2 transitions only between tags '
        f'named O, B-TYPE or I-TYPE, but the tags include '
        f'{", ".join(map(repr, unreadable[:3]))}. Bind RNNTagger.'
        f'constrain_iob = False, or convert the tags to IOB2.')
  def score(before, after):
    return 0.0 if tag_scheme.may_follow(before, after) else FORBIDDEN
  transitions = np.array([[score(a, b) for b in tag_names]
                          for a in tag_names], np.float32)
  start = np.array([score('O', t) for t in tag_names], np.float32)
  return transitions, start


class CRF(base.Layer):
  """(emission scores f32[batch, time, tags], mask) -> potentials.

  Its weights are the transition, start and end scores, learned with the
  rest of the tagger (zero at first). With `constrain_iob`, transitions
  IOB2 forbids (O → I-PER, B-ORG → I-PER, a first I-X) are held at
  FORBIDDEN, in training as in decoding: no gold path takes them (a
  dataset whose tags do is refused before training), so the likelihood
  and the decoder agree on which paths exist.
  """

  def __init__(self, tag_names: Sequence[str], constrain_iob: bool = True):
    super().__init__(n_in=2, n_out=1, name=f'CRF_{len(tag_names)}')
    self._n_tags = len(tag_names)
    self._tag_names = tuple(tag_names)
    self._constrains_iob = constrain_iob
    if constrain_iob:
      self._fixed = iob_constraints(tag_names)
    else:
      self._fixed = (np.zeros((self._n_tags,) * 2, np.float32),
                     np.zeros(self._n_tags, np.float32))

  def forward(self, inputs):
    scores, mask = inputs
    transitions, start, end = self.weights
    fixed_transitions, fixed_start = self._fixed
    return potentials(scores.astype(jnp.float32),
                      transitions + fixed_transitions, start + fixed_start,
                      end, mask)

  def init_weights_and_state(self, input_signature):
    scores, mask = input_signature
    if scores.shape[-1] != self._n_tags or len(scores.shape) != 3:
      raise ValueError(f'A CRF over {self._n_tags} tags takes scores of shape '
                       f'(batch, time, {self._n_tags}); got {scores.shape}.')
    if tuple(mask.shape) != tuple(scores.shape[:2]):
      raise ValueError(f'The CRF\'s mask must have shape {scores.shape[:2]}; '
                       f'got {mask.shape}.')
    n = self._n_tags
    self.weights = (jnp.zeros((n, n)), jnp.zeros(n), jnp.zeros(n))

  @property
  def tag_names(self) -> tuple[str, ...]:
    return self._tag_names

  @property
  def constrains_iob(self) -> bool:
    return self._constrains_iob

  @property
  def transitions(self) -> np.ndarray:
    """The learned transition scores, f32[tags, tags] (forbidden ones as
    FORBIDDEN)."""
    return np.asarray(self.weights[0]) + self._fixed[0]


def find(model: tl.Layer) -> CRF | None:
  """The CRF among `model`'s layers, at any depth, or None."""
  if isinstance(model, CRF):
    return model
  return next((found for layer in model.sublayers
               if (found := find(layer)) is not None), None)


def is_crf_output(output: jax.Array) -> bool:
  """Whether a tagger's output is a CRF's potentials (rank 4), not
  per-word log-probabilities (rank 3)."""
  return output.ndim == 4


def predictions(output: jax.Array, mask: jax.Array) -> jax.Array:
  """A model's likeliest ids: a CRF's Viterbi tags, int32[batch, time], or
  the argmax of log-probabilities (of any model: int32[batch] of a
  classifier's)."""
  if is_crf_output(output):
    return viterbi(output, mask)
  return jnp.argmax(output, axis=-1).astype(jnp.int32)


def token_nll(output: jax.Array, targets: jax.Array,
              mask: jax.Array) -> jax.Array:
  """f32[batch, time] whose real words sum to each row's −log p(targets):
  a CRF's sentence NLL sits at the first word; with log-probabilities (of
  any model), each target's own. (Rows of mask 0 are not scored.)"""
  if not is_crf_output(output):
    return -jnp.take_along_axis(output, targets[..., None], axis=-1)[..., 0]
  nll = negative_log_likelihood(output, targets, mask)
  return jnp.zeros(targets.shape, nll.dtype).at[:, 0].set(nll)


def Loss() -> tl.Layer:  # pylint: disable=invalid-name
  """(potentials, tags, weights) -> the NLL per weighted word, averaged as
  trax's WeightedCategoryCrossEntropy averages a softmax tagger's."""
  def loss(output, targets, weights):
    return (jnp.sum(token_nll(output, targets, weights) * weights)
            / jnp.sum(weights))
  return tl.Fn('CRFLoss', loss)


def Accuracy() -> tl.Layer:  # pylint: disable=invalid-name
  """(potentials, tags, weights) -> the weighted share of Viterbi tags right."""
  def accuracy(output, targets, weights):
    right = predictions(output, weights) == targets
    return jnp.sum(right * weights) / jnp.sum(weights)
  return tl.Fn('CRFAccuracy', accuracy)


def _from_the_start(potentials):
  """f32[batch, tags]: the scores before the first word, from which a step
  over word 0's potentials (whose rows are all alike) gives that word's
  row alone. A step over every word, the first included, keeps the scans'
  lengths the sequence's, which symbolic shapes (jax.export) need."""
  n_tags = potentials.shape[-1]
  alone = jnp.where(jnp.arange(n_tags) == 0, 0.0, _NEVER)
  return jnp.broadcast_to(alone, (potentials.shape[0], n_tags)).astype(
      potentials.dtype)


# Far below any path's score, yet finite: exp of it is 0, and so are the
# gradients through it.
_NEVER = -1e30


def _time_major(a):
  return jnp.swapaxes(a, 0, 1)


def _last_index(real):
  """int32[batch]: the index of each row's last real word."""
  return jnp.sum(real, axis=1).astype(jnp.int32) - 1
