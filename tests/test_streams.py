"""Tests of the stream layout (data/streams.py), against brute-force checks.

Each document's character at position p is the id 1000 * (d + 1) + p, so
a step's ids say which document and position it reads and predicts.
"""

import itertools

import numpy as np
import pytest

from data import streams
from rnn_toolkit.token_ids import PAD_ID

SEQ_LEN = 8


def _documents(*lengths):
  return [1000 * (d + 1) + np.arange(n, dtype=np.int32)
          for d, n in enumerate(lengths)]


def _where(char_id):
  """(document, position) of a character id."""
  return char_id // 1000 - 1, char_id % 1000


def _steps_of_each_row(batches):
  """[[(input, target, reset of its window, first step of its window)]] per row."""
  rows = []
  for row in range(len(batches[0][0])):
    steps = []
    for inputs, resets, targets, weights in batches:
      for t in range(SEQ_LEN):
        if weights[row, t]:
          steps.append((inputs[row, t], targets[row, t], resets[row], t == 0))
    rows.append(steps)
  return rows


def _check_streams_are_contiguous_text(batches, reset_each_epoch=True):
  """Each row reads documents in order; resets exactly where they start."""
  for steps in _steps_of_each_row(batches):
    for k, (inputs, target, reset, first_step) in enumerate(steps):
      doc, pos = _where(target)
      # The input is the previous character of the same document.
      assert inputs == (PAD_ID if pos == 0 else target - 1)
      if pos == 0:
        assert first_step and reset == 1  # a document starts a window, reset
      elif k == 0:
        assert reset == float(reset_each_epoch)
      else:
        previous_doc, previous_pos = _where(steps[k - 1][1])
        assert (previous_doc, previous_pos) == (doc, pos - 1)  # no jump
        assert not (first_step and reset)  # the state carries on


@pytest.mark.parametrize('lengths', [(300,), (30, 7, 61, 8, 100), (9,) * 12])
@pytest.mark.parametrize('reset_each_epoch', [True, False])
def test_each_row_of_an_epoch_is_contiguous_text(lengths, reset_each_epoch):
  docs = _documents(*lengths)
  for epoch in range(3):
    batches = streams.training_epoch(docs, SEQ_LEN, 4, seed=5, epoch=epoch,
                                     reset_each_epoch=reset_each_epoch)
    _check_streams_are_contiguous_text(batches, reset_each_epoch)


@pytest.mark.parametrize('lengths', [(300,), (30, 7, 61, 8, 100)])
def test_an_epoch_trains_every_character_at_most_once_and_misses_few(lengths):
  docs, rows = _documents(*lengths), 4
  for epoch in range(3):
    batches = streams.training_epoch(docs, SEQ_LEN, rows, 0, epoch)
    seen = [t for steps in _steps_of_each_row(batches) for _, t, _, _ in steps]
    assert len(seen) == len(set(seen))
    # Only the windows left over after dealing them to the rows are missed.
    assert sum(lengths) - len(seen) <= (rows - 1) * SEQ_LEN


def test_windows_are_cut_at_new_places_each_epoch():
  docs = _documents(500)

  def window_starts(epoch):
    batches = streams.training_epoch(docs, SEQ_LEN, 2, 0, epoch)
    return {_where(targets[row, 0])[1] % SEQ_LEN
            for _, _, targets, weights in batches
            for row in range(2) if weights[row, 0]}

  cuts = [window_starts(epoch) for epoch in range(6)]
  assert len({frozenset(c) for c in cuts}) > 1


@pytest.mark.parametrize('start', [0, 1, 7, 23, 40])
def test_resuming_at_a_batch_continues_the_same_stream(start):
  docs = _documents(150, 40, 70)
  straight = list(itertools.islice(
      streams.training_batches(docs, SEQ_LEN, 3, seed=2), 60))
  resumed = list(itertools.islice(
      streams.training_batches(docs, SEQ_LEN, 3, seed=2, start=start),
      60 - start))
  for want, got in zip(straight[start:], resumed, strict=True):
    for a, b in zip(want, got, strict=True):
      np.testing.assert_array_equal(a, b)


def test_each_process_keeps_its_rows_of_the_same_global_batches():
  docs = _documents(200, 90)
  whole = list(itertools.islice(streams.training_batches(docs, SEQ_LEN, 4, 1),
                                30))
  halves = [list(itertools.islice(streams.training_batches(
      docs, SEQ_LEN, 4, 1, keep_rows=rows), 30))
            for rows in (slice(0, 2), slice(2, 4))]
  for batch, first, second in zip(whole, *halves):
    for a, b, c in zip(batch, first, second):
      np.testing.assert_array_equal(a, np.concatenate([b, c]))


@pytest.mark.parametrize('rows', [1, 3, 7, 40])
@pytest.mark.parametrize('warmup', [0, 5, 20, 1000])
def test_evaluation_scores_every_character_once_after_its_context(rows,
                                                                  warmup):
  docs = _documents(45, 3, 70, 17)
  batches = streams.evaluation_streams(docs, SEQ_LEN, rows, warmup)
  scored = []
  for steps_and_weights in _rows_with_weights(batches):
    read = []  # positions of one document read so far in this stream
    for inputs, target, weight, reset in steps_and_weights:
      doc, pos = _where(target)
      assert inputs == (PAD_ID if pos == 0 else target - 1)
      if reset:
        read = []
      # A stream reads a document from its start, or from a reset inside
      # it, and never jumps.
      assert not read or read[-1] == (doc, pos - 1)
      read.append((doc, pos))
      if weight:
        scored.append((doc, pos))
        # Its context: the document's start, or at least `warmup` steps.
        assert read[0][1] == 0 or len(read) - 1 >= min(warmup, pos)
  assert sorted(scored) == [(d, p) for d, n in enumerate((45, 3, 70, 17))
                            for p in range(n)]


def _rows_with_weights(batches):
  """Per row, its real steps: (input, target, weight, reset before it)."""
  for row in range(len(batches[0][0])):
    steps = []
    for inputs, resets, targets, weights in batches:
      for t in range(SEQ_LEN):
        if targets[row, t] != PAD_ID:
          steps.append((inputs[row, t], targets[row, t], weights[row, t],
                        t == 0 and resets[row] == 1))
    yield steps


def test_one_evaluation_stream_is_the_documents_in_order():
  docs = _documents(20, 5)
  batches = streams.evaluation_streams(docs, SEQ_LEN, rows=1, warmup=0)
  targets = np.concatenate([b[2][0] for b in batches])
  weights = np.concatenate([b[3][0] for b in batches])
  np.testing.assert_array_equal(targets[weights > 0],
                                np.concatenate(docs))
