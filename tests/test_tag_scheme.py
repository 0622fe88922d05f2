"""rnn_toolkit/tag_scheme.py, and the pipeline's rewriting of IOB1 tags."""

import itertools

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities
import tensorflow as tf

from data import text_classification
from rnn_toolkit import tag_scheme

NAMES = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']


def test_first_invalid_finds_what_iob2_forbids():
  assert tag_scheme.first_invalid(['B-PER', 'I-PER', 'O', 'B-LOC']) is None
  assert tag_scheme.first_invalid(['I-PER']) == 0
  assert tag_scheme.first_invalid(['B-PER', 'I-LOC']) == 1
  assert tag_scheme.first_invalid(['O', 'B-PER', 'O', 'I-PER']) == 3
  assert tag_scheme.unreadable(['O', 'B-PER', 'NN', 'E-LOC']) == ['NN',
                                                                  'E-LOC']


def test_as_iob2_keeps_every_entity_and_follows_iob2():
  # Every sequence of four tags: the entities seqeval reads (its default,
  # CoNLL's reading) are the same after, and the result is valid IOB2.
  for tags in itertools.product(NAMES, repeat=4):
    rewritten = tag_scheme.as_iob2(tags)
    assert tag_scheme.first_invalid(rewritten) is None
    assert get_entities(rewritten) == get_entities(list(tags))
    if tag_scheme.first_invalid(tags) is None:
      assert rewritten == list(tags)


def test_the_pipeline_rewrites_tag_ids_as_as_iob2_rewrites_names():
  tables = text_classification._iob2_tables(NAMES)
  rng = np.random.default_rng(0)
  for _ in range(200):
    ids = rng.integers(0, len(NAMES), rng.integers(1, 9)).astype(np.int32)
    got = text_classification._as_iob2(tf.constant(ids), *tables).numpy()
    assert [NAMES[i] for i in got] == tag_scheme.as_iob2(
        [NAMES[i] for i in ids])
