"""models/crf.py against brute force: every tag sequence enumerated."""

import itertools

import jax
from jax import numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
from trax import shapes

from models import crf
from rnn_toolkit import tag_scheme

TAGS, TIME = 3, 4
LENGTHS = (4, 2, 1)  # real words per row: whole, padded, one word


def _problem(seed):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(len(LENGTHS), TIME, TAGS)).astype(np.float32)
  transitions, start, end = (rng.normal(size=shape).astype(np.float32)
                             for shape in ((TAGS, TAGS), (TAGS,), (TAGS,)))
  mask = (np.arange(TIME)[None] < np.array(LENGTHS)[:, None]).astype(
      np.float32)
  return scores, transitions, start, end, mask


def _path_score(scores, path, transitions, start, end):
  """The score of one tag path over a row's real words, written out."""
  total = start[path[0]] + end[path[-1]]
  for t, tag in enumerate(path):
    total += scores[t, tag]
    if t:
      total += transitions[path[t - 1], tag]
  return total


def _paths(length):
  return itertools.product(range(TAGS), repeat=length)


@pytest.mark.parametrize('seed', [0, 1])
def test_log_partition_and_viterbi_equal_enumeration(seed):
  scores, transitions, start, end, mask = _problem(seed)
  potentials = crf.potentials(scores, transitions, start, end, mask)
  log_z = crf.log_partition(potentials, mask)
  best = crf.viterbi(potentials, mask)
  for row, length in enumerate(LENGTHS):
    by_path = {path: _path_score(np.float64(scores[row]), path, transitions,
                                 start, end) for path in _paths(length)}
    totals = np.array(list(by_path.values()))
    want = totals.max() + np.log(np.exp(totals - totals.max()).sum())
    np.testing.assert_allclose(log_z[row], want, rtol=1e-5)
    assert tuple(best[row, :length]) == max(by_path, key=by_path.get)
    assert not best[row, length:].any()  # padding is tag 0


def test_sequence_score_equals_the_written_out_sum():
  scores, transitions, start, end, mask = _problem(2)
  tags = np.random.default_rng(3).integers(0, TAGS, (len(LENGTHS), TIME))
  got = crf.sequence_score(
      crf.potentials(scores, transitions, start, end, mask), tags, mask)
  for row, length in enumerate(LENGTHS):
    want = _path_score(np.float64(scores[row]), tuple(tags[row, :length]),
                       transitions, start, end)
    np.testing.assert_allclose(got[row], want, rtol=1e-5)


def test_the_likelihoods_of_all_paths_sum_to_one():
  scores, transitions, start, end, mask = _problem(4)
  row, length = 1, LENGTHS[1]
  total = 0.0
  for path in _paths(length):
    tags = np.zeros((len(LENGTHS), TIME), np.int32)
    tags[row, :length] = path
    nll = crf.negative_log_likelihood(
        crf.potentials(scores, transitions, start, end, mask), tags, mask)
    total += float(np.exp(-nll[row]))
  np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_gradients_equal_finite_differences():
  scores, transitions, start, end, mask = _problem(5)
  tags = np.random.default_rng(6).integers(0, TAGS, (len(LENGTHS), TIME))

  def loss(scores, transitions, start, end):
    return jnp.sum(crf.negative_log_likelihood(
        crf.potentials(scores, transitions, start, end, mask), tags, mask))
  check_grads(loss, (scores, transitions, start, end), order=1,
              modes=['rev'], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_padding_changes_nothing():
  # The same rows with more padding, of any scores and tags, give the same
  # likelihood, gradients and best tags at the real words.
  scores, transitions, start, end, mask = _problem(7)
  rng = np.random.default_rng(8)
  tags = rng.integers(0, TAGS, (len(LENGTHS), TIME))
  extra = 3
  padded_scores = np.concatenate(
      [scores, 50 * rng.normal(size=(len(LENGTHS), extra, TAGS))], 1
  ).astype(np.float32)
  padded_tags = np.concatenate(
      [tags, rng.integers(0, TAGS, (len(LENGTHS), extra))], 1)
  padded_mask = np.concatenate([mask, np.zeros((len(LENGTHS), extra))], 1)

  def loss(scores, tags, mask):
    return jnp.sum(crf.negative_log_likelihood(
        crf.potentials(scores, transitions, start, end, mask), tags, mask))
  value, grad = jax.value_and_grad(loss)(scores, tags, mask)
  padded_value, padded_grad = jax.value_and_grad(loss)(
      padded_scores, padded_tags, padded_mask)
  np.testing.assert_allclose(padded_value, value, rtol=1e-6)
  np.testing.assert_allclose(padded_grad[:, :TIME], grad * mask[..., None],
                             atol=1e-6)
  assert not np.asarray(padded_grad[:, TIME:]).any()
  best = crf.viterbi(crf.potentials(scores, transitions, start, end, mask),
                     mask)
  padded_best = crf.viterbi(crf.potentials(padded_scores, transitions, start,
                                           end, padded_mask), padded_mask)
  np.testing.assert_array_equal(padded_best[:, :TIME], best)


NAMES = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']


def test_iob_constraints_leave_only_valid_paths_to_viterbi():
  # Scores that favour I- tags everywhere: unconstrained, the best path
  # breaks IOB2; constrained, it is the best of the valid paths.
  rng = np.random.default_rng(9)
  scores = rng.normal(size=(1, 5, len(NAMES))).astype(np.float32)
  scores[..., [2, 4]] += 3.0
  transitions, start = crf.iob_constraints(NAMES)
  end, mask = np.zeros(len(NAMES), np.float32), np.ones((1, 5), np.float32)
  free = crf.viterbi(crf.potentials(scores, np.zeros_like(transitions),
                                    np.zeros_like(start), end, mask), mask)
  assert tag_scheme.first_invalid([NAMES[i] for i in free[0]]) is not None
  best = crf.viterbi(crf.potentials(scores, transitions, start, end, mask),
                     mask)
  valid = {path: float(scores[0, np.arange(5), list(path)].sum())
           for path in itertools.product(range(len(NAMES)), repeat=5)
           if tag_scheme.first_invalid([NAMES[i] for i in path]) is None}
  assert tuple(best[0]) == max(valid, key=valid.get)


def test_an_unreadable_tag_scheme_is_named():
  with pytest.raises(ValueError, match="'NN'.*IOB2"):
    crf.iob_constraints(['O', 'B-PER', 'NN'])


def test_a_row_of_padding_alone_scores_nothing():
  # Eval batches end in rows of weight 0: no path, log Z 0, tags 0.
  scores, transitions, start, end, mask = _problem(13)
  mask[1] = 0
  potentials = crf.potentials(scores, transitions, start, end, mask)
  tags = np.ones((len(LENGTHS), TIME), np.int32)
  assert crf.log_partition(potentials, mask)[1] == 0
  assert crf.negative_log_likelihood(potentials, tags, mask)[1] == 0
  assert not np.asarray(crf.viterbi(potentials, mask))[1].any()


def test_the_crf_layer_loss_and_accuracy_are_the_functions_of_its_weights():
  scores, transitions, start, end, mask = _problem(10)
  names = ['O', 'B-PER', 'I-PER']
  layer = crf.CRF(names, constrain_iob=True)
  layer.init((shapes.signature(scores), shapes.signature(mask)))
  layer.weights = (jnp.asarray(transitions), jnp.asarray(start),
                   jnp.asarray(end))
  fixed_transitions, fixed_start = crf.iob_constraints(names)
  potentials = crf.potentials(scores, transitions + fixed_transitions,
                              start + fixed_start, end, mask)
  np.testing.assert_allclose(layer((scores, mask)), potentials, rtol=1e-6)
  np.testing.assert_allclose(layer.transitions,
                             transitions + fixed_transitions)
  tags = np.random.default_rng(11).integers(0, TAGS, (len(LENGTHS), TIME))
  loss = crf.Loss()((potentials, tags, mask))
  want = (np.sum(crf.negative_log_likelihood(potentials, tags, mask))
          / mask.sum())
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  best = np.asarray(crf.viterbi(potentials, mask))
  accuracy = crf.Accuracy()((potentials, tags, mask))
  np.testing.assert_allclose(
      accuracy, np.sum((best == tags) * mask) / mask.sum(), rtol=1e-6)


def test_log_probabilities_are_scored_word_by_word():
  # Not a CRF's output: each target's own −log p, and the argmax.
  rng = np.random.default_rng(12)
  log_probs = np.log(rng.dirichlet(np.ones(TAGS), (2, TIME))).astype(
      np.float32)
  tags = rng.integers(0, TAGS, (2, TIME))
  mask = np.ones((2, TIME), np.float32)
  assert not crf.is_crf_output(log_probs)
  np.testing.assert_allclose(
      crf.token_nll(log_probs, tags, mask),
      -np.take_along_axis(log_probs, tags[..., None], -1)[..., 0])
  np.testing.assert_array_equal(crf.predictions(log_probs, mask),
                                log_probs.argmax(-1))
