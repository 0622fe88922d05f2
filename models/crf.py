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

trax has no CRF (google/trax#1162), hence this module. Pure functions of
arrays, so they serve training, evaluation and export alike.
"""

import re
from typing import Sequence

import jax
from jax import numpy as jnp
import numpy as np

# The score given to a forbidden transition: finite, so that sums and
# their gradients stay finite, and far below any real path.
FORBIDDEN = -1e4


def log_partition(scores: jax.Array, transitions: jax.Array,
                  start: jax.Array, end: jax.Array,
                  mask: jax.Array) -> jax.Array:
  """f32[batch]: log Σ over every tag sequence of exp(its score).

  Args:
    scores: f32[batch, time, tags], each word's emission scores.
    transitions: f32[tags, tags], the score of tag i followed by tag j.
    start, end: f32[tags], the scores of a sequence's first and last tag.
    mask: [batch, time], nonzero at real words (a prefix of each row; a
      row needs one at least).
  """
  def step(alpha, inputs):
    scores_t, real = inputs
    moved = jax.nn.logsumexp(alpha[:, :, None] + transitions, axis=1)
    return jnp.where(real[:, None], moved + scores_t, alpha), None

  alpha = start + scores[:, 0]
  alpha, _ = jax.lax.scan(step, alpha, (_time_major(scores[:, 1:]),
                                        _time_major(mask[:, 1:] != 0)))
  return jax.nn.logsumexp(alpha + end, axis=-1)


def sequence_score(scores: jax.Array, tags: jax.Array,
                   transitions: jax.Array, start: jax.Array,
                   end: jax.Array, mask: jax.Array) -> jax.Array:
  """f32[batch]: the score of the tag sequences `tags` int32[batch, time]
  (their padding ignored); the other arguments as `log_partition`'s."""
  real = mask != 0
  emitted = jnp.take_along_axis(scores, tags[..., None], axis=-1)[..., 0]
  moves = transitions[tags[:, :-1], tags[:, 1:]] * real[:, 1:]
  last = jnp.take_along_axis(tags, _last_index(real)[:, None], axis=1)[:, 0]
  return (start[tags[:, 0]] + jnp.sum(emitted * real, axis=1)
          + jnp.sum(moves, axis=1) + end[last])


def negative_log_likelihood(scores: jax.Array, tags: jax.Array,
                            transitions: jax.Array, start: jax.Array,
                            end: jax.Array, mask: jax.Array) -> jax.Array:
  """f32[batch]: −log p(tags | scores), log Z − the tags' score."""
  return (log_partition(scores, transitions, start, end, mask)
          - sequence_score(scores, tags, transitions, start, end, mask))


def viterbi(scores: jax.Array, transitions: jax.Array, start: jax.Array,
            end: jax.Array, mask: jax.Array) -> jax.Array:
  """int32[batch, time]: each row's best-scoring tags (0 at padding)."""
  def forward(best, inputs):
    scores_t, real = inputs
    candidates = best[:, :, None] + transitions  # [batch, from, to]
    came_from = jnp.argmax(candidates, axis=1)
    moved = jnp.max(candidates, axis=1) + scores_t
    # At padding the path stays put: the best tag points to itself.
    came_from = jnp.where(real[:, None], came_from,
                          jnp.arange(scores.shape[-1])[None])
    return jnp.where(real[:, None], moved, best), came_from

  best = start + scores[:, 0]
  best, came_from = jax.lax.scan(forward, best, (
      _time_major(scores[:, 1:]), _time_major(mask[:, 1:] != 0)))
  last = jnp.argmax(best + end, axis=-1)

  def backward(tag, pointers):
    previous = jnp.take_along_axis(pointers, tag[:, None], axis=1)[:, 0]
    return previous, tag

  first, later = jax.lax.scan(backward, last, came_from, reverse=True)
  tags = jnp.concatenate([first[:, None], _time_major(later)], axis=1)
  return jnp.where(mask != 0, tags, 0).astype(jnp.int32)


def iob_constraints(tag_names: Sequence[str]) -> tuple[np.ndarray,
                                                        np.ndarray]:
  """(f32[tags, tags], f32[tags]): 0 where IOB2 allows a transition (or a
  first tag) and FORBIDDEN where it does not: I-X only after B-X or I-X.

  Raises:
    ValueError: a tag is not O, B-X or I-X, so the scheme can't be read.
  """
  unreadable = [t for t in tag_names if not re.fullmatch(r'O|[BI]-.+', t)]
  if unreadable:
    raise ValueError(
        f'The CRF can forbid invalid IOB2 transitions only between tags '
        f'named O, B-TYPE or I-TYPE, but the tags include '
        f'{", ".join(map(repr, unreadable[:3]))}. Turn the constraint off, '
        f'or convert the tags to IOB2.')
  def allowed(before, after):
    return not after.startswith('I-') or before in (f'B-{after[2:]}', after)
  transitions = np.array([[0.0 if allowed(a, b) else FORBIDDEN
                           for b in tag_names] for a in tag_names],
                         np.float32)
  start = np.array([FORBIDDEN if t.startswith('I-') else 0.0
                    for t in tag_names], np.float32)
  return transitions, start


def first_invalid_iob(tags: Sequence[str]) -> int | None:
  """The position of the first tag IOB2 forbids where it stands, or None."""
  before = 'O'
  for i, tag in enumerate(tags):
    if tag.startswith('I-') and before not in (f'B-{tag[2:]}', tag):
      return i
    before = tag
  return None


def _time_major(a):
  return jnp.swapaxes(a, 0, 1)


def _last_index(real):
  """int32[batch]: the index of each row's last real word."""
  return jnp.sum(real, axis=1).astype(jnp.int32) - 1
