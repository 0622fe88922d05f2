"""Input pipelines for labelled text: one label per text, or one tag per word.

`TextClassificationInputs` reads any TFDS dataset with a text feature and a
ClassLabel feature; texts are split into lower-cased words (punctuation marks
are words of their own). `TaggingInputs` reads token-level tagging datasets
(a sequence of words and a sequence of ClassLabel tags, as in `conll2003`).

Words become ids through a vocabulary built from the training split, and
batches are what trax trains on: (tokens int32[batch, length], labels
int32[batch] or int32[batch, length], weights of the same shape as labels).
`length` is the longest text of the batch rounded up to a bucket boundary:
training texts of similar length are batched together, so short sentences
don't pay for long ones, and XLA compiles the step for a handful of shapes.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data import tfds_io
from data.batching import pad_batch
from data.tokenize import lower, split_at_spaces, split_words
from data.vocab import (FIRST_CHAR_ID as FIRST_WORD_ID, PAD_ID, WordVocab,
                        check_kind)
from rnn_toolkit.errors import UsageError, check_positive

# Batches are padded to one of these lengths below `max_len`, or `max_len`.
BUCKET_BOUNDARIES = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
                     1024)


class TextClassificationInputs:
  """Builds the vocabulary and the train/eval batch streams of one dataset.

  Args:
    dataset: TFDS name of a dataset with a text and a ClassLabel feature.
    text_key: name of the text feature.
    label_key: name of the class-label feature.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    train_split: split to train on and to build the vocabulary from.
    eval_split: split evaluated during training.
    batch_size: texts per batch.
    max_len: texts longer than this many words are cut to their first
      `max_len` words.
    vocab_size: largest number of ids, the padding and unknown ids included;
      the most frequent training words get the others.
    min_count: training-split occurrences a word needs to get its own id.
    shuffle_buffer: texts held in the shuffle buffer.
    data_shards: parts the training split is read in (see
      `tfds_io.train_parts`); None: one per process.
    download: whether TFDS may download an absent dataset.
  """

  task = 'classification'  # rnn_toolkit/tasks.py

  def __init__(self, dataset='glue/sst2', text_key='sentence',
               label_key='label', data_dir=None, train_split='train',
               eval_split='validation', batch_size=64, max_len=256,
               vocab_size=20_000, min_count=1, shuffle_buffer=20_000,
               data_shards=None, download=True):
    check_positive(type(self).__name__, batch_size=batch_size,
                   max_len=max_len, vocab_size=vocab_size,
                   min_count=min_count, shuffle_buffer=shuffle_buffer,
                   **({} if data_shards is None
                      else {'data_shards': data_shards}))
    if vocab_size <= FIRST_WORD_ID:
      raise UsageError(
          f'{type(self).__name__}.vocab_size = {vocab_size} leaves no id for '
          f'words: ids 0 and 1 are padding and unknown words. Bind it to '
          f'{FIRST_WORD_ID + 1} or more.')
    self.dataset = dataset
    self.text_key = text_key
    self.label_key = label_key
    self.train_split = train_split
    self.eval_split = eval_split
    self.batch_size = batch_size
    self.max_len = max_len
    self.vocab_size = vocab_size
    self.min_count = min_count
    self.shuffle_buffer = shuffle_buffer
    self.data_shards = data_shards
    self.builder = tfds_io.get_builder(dataset, data_dir, download)
    for split in (train_split, eval_split):
      tfds_io.check_split_and_feature(self.builder, split, text_key)
    per_word = self.task == 'tagging'
    tfds_io.check_feature_kind(self.builder, text_key, per_word)
    self.labels = tfds_io.class_names(self.builder, label_key, per_word)
    self._checked_splits = set()

  @property
  def boundaries(self):
    """The lengths batches are padded to, the last one `max_len`."""
    return [b for b in BUCKET_BOUNDARIES if b < self.max_len] + [self.max_len]

  def build_vocab(self):
    """Returns the WordVocab of the training split, checking its labels."""
    self._check_split(self.train_split)
    counts = collections.Counter()
    for words, labels in tfds.as_numpy(self._examples(self.train_split)):
      counts.update(words)
      self._check_labels(labels, self.train_split)
    vocab = WordVocab.from_counts(counts, self.vocab_size, self.min_count,
                                  labels=self.labels, dataset=self.dataset)
    if not vocab.words:
      raise UsageError(f'No word of the train split {self.train_split!r} of '
                       f'{self.dataset} occurs {self.min_count} times or more '
                       f'(min_count). Lower {type(self).__name__}.min_count, '
                       f'or bind train_split to a split with text.')
    return vocab

  def model_dimensions(self, vocab):
    """The sizes the model is built with: its vocabulary and its classes."""
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size, 'n_classes': len(vocab.labels)}

  def check_vocab(self, vocab):
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, WordVocab, type(self).__name__)

  def input_signature(self):
    """The model input of a training batch (of the shortest bucket)."""
    return shapes.ShapeDtype((self.batch_size, self.boundaries[0]), np.int32)

  def train_shards(self, process_count=1):
    """How many parts the training split is read in; see tfds_io.train_parts."""
    return tfds_io.train_parts(self, process_count)

  def train_batches(self, vocab, seed=0, start=0, process_index=0,
                    process_count=1):
    """Endless, shuffled training batches; see CharLMInputs.train_batches."""
    shards = self.train_shards(process_count)
    self._check_split(self.train_split)
    tf.random.set_seed(seed)  # as in CharLMInputs.train_batches
    table = vocab.lookup_table()

    def stream(split, part_seed, rows):
      return self._train_stream(table, split, part_seed, rows, shards > 1)

    ds = tfds_io.read_in_parts(self.train_split, shards, seed, self.batch_size,
                               process_index, process_count, stream)
    ds = ds.skip(start).prefetch(tf.data.AUTOTUNE)
    return (self._checked(b, self.train_split) for b in tfds.as_numpy(ds))

  def eval_batches(self, vocab, split=None, rows=slice(None)):
    """One ordered pass over `split` (default eval_split), every text once.

    The last batch is padded with rows of weight 0 to `batch_size`.
    """
    split = split or self.eval_split
    tfds_io.check_split_and_feature(self.builder, split, self.text_key)
    self._check_split(split)
    ds = (self._encoded(vocab.lookup_table(), split)
          .padded_batch(self.batch_size)
          .map(self._pad_to_boundary)
          .map(_with_weights)
          .prefetch(tf.data.AUTOTUNE))
    return (tuple(a[rows] for a in pad_batch(self._checked(b, split),
                                             self.batch_size))
            for b in tfds.as_numpy(ds))

  def encode(self, vocab, texts):
    """int32[len(texts), length]: `texts` (strings) as one batch of ids.

    Raises:
      UsageError: a text has no words.
    """
    table = vocab.lookup_table()
    ids = [table.lookup(self.split_text(tf.constant(t))).numpy() for t in texts]
    empty = [t for t, row in zip(texts, ids) if not row.size]
    if empty:
      raise UsageError(f'--predict {empty[0]!r} has no words to classify. '
                       f'Pass a text with at least one word.')
    batch = np.full((len(ids), max(map(len, ids), default=0)), PAD_ID, np.int32)
    for row, text_ids in zip(batch, ids):
      row[:len(text_ids)] = text_ids
    return self._pad_to_boundary(batch, None)[0].numpy()

  def split_text(self, text):
    """string -> string[n]: the words of `text`, cut to `max_len`."""
    return split_words(text)[:self.max_len]

  def _examples(self, split, shuffle_seed=None):
    """(words string[n], label) pairs of `split`, as a tf.data.Dataset."""
    return tfds_io.read_split(self.builder, split, shuffle_seed).map(
        lambda ex: (self.split_text(ex[self.text_key]),
                    tf.cast(ex[self.label_key], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _encoded(self, table, split, shuffle_seed=None):
    return self._examples(split, shuffle_seed).map(
        lambda words, labels: (table.lookup(words), labels),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _train_stream(self, table, split, seed, rows, fixed_length):
    """Shuffled batches of `rows` texts from `split`, repeated without end.

    With `fixed_length`, every batch is padded to `max_len`: the parts of a
    multi-part stream must give batches of one shape to be put side by side.
    """
    ds = (self._encoded(table, split, shuffle_seed=seed)
          .shuffle(self.shuffle_buffer, seed=seed)
          .repeat())
    if fixed_length:
      ds = ds.padded_batch(rows, padded_shapes=self._padded_shapes(),
                           drop_remainder=True)
    else:
      ds = ds.bucket_by_sequence_length(
          lambda ids, labels: tf.size(ids),
          bucket_boundaries=[b + 1 for b in self.boundaries[:-1]],
          bucket_batch_sizes=[rows] * len(self.boundaries),
          drop_remainder=True).map(self._pad_to_boundary)
    return ds.map(_with_weights)

  def _padded_shapes(self):
    return ([self.max_len], [])

  def _pad_to_boundary(self, ids, labels):
    """Pads int32[batch, n] ids to the first bucket boundary >= n."""
    boundaries = tf.constant(self.boundaries)
    n = tf.shape(ids)[1]
    length = tf.gather(boundaries, tf.argmax(boundaries >= n))
    return tf.pad(ids, [[0, 0], [0, length - n]],
                  constant_values=PAD_ID), labels

  def _check_split(self, split):
    """Raises UsageError if an example of `split` is one this can't use.

    Called before a split is read; a text's labels are checked batch by
    batch instead (`_checked`), where the words are at hand.
    """
    del split

  def _check_labels(self, labels, split):
    """Raises UsageError if a label id is not one of the classes."""
    outside = labels[(labels < 0) | (labels >= len(self.labels))]
    if outside.size:
      raise UsageError(
          f'Split {split!r} of {self.dataset} has an example labelled '
          f'{int(outside.flat[0])}, outside the {len(self.labels)} classes '
          f'{self.labels} of its {self.label_key!r} feature (TFDS marks '
          f'unlabelled test examples with -1). Evaluate a split with labels.')

  def _checked(self, batch, split):
    tokens, labels, weights = batch
    self._check_labels(labels[weights > 0], split)
    return batch


class TaggingInputs(TextClassificationInputs):
  """Batches of (tokens, tags, weights) from a token-level tagging dataset.

  Args:
    dataset: TFDS name of a dataset with a sequence-of-words feature and a
      sequence-of-ClassLabel feature (`conll2003`: 'tokens', 'ner').
    text_key: name of the words feature.
    label_key: name of the tags feature.
    lowercase: whether words are lower-cased (for NER, case is a clue).
    The others are as in TextClassificationInputs.
  """

  task = 'tagging'

  def __init__(self, dataset='conll2003', text_key='tokens', label_key='ner',
               lowercase=False, data_dir=None, train_split='train',
               eval_split='dev', batch_size=32, max_len=128,
               vocab_size=30_000, min_count=1, shuffle_buffer=20_000,
               data_shards=None, download=True):
    self.lowercase = lowercase
    super().__init__(dataset, text_key, label_key, data_dir, train_split,
                     eval_split, batch_size, max_len, vocab_size, min_count,
                     shuffle_buffer, data_shards, download)

  def model_dimensions(self, vocab):
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size, 'n_tags': len(vocab.labels)}

  def split_text(self, text):
    """string -> string[n]: whitespace-separated words, as the dataset's."""
    words = split_at_spaces(text)
    return (lower(words) if self.lowercase else words)[:self.max_len]

  def _check_split(self, split):
    """Raises UsageError if an example of `split` has not one tag per word.

    Cutting the longer to the shorter would pair words with other words'
    tags; the first such example is named, so it can be fixed.
    """
    if split in self._checked_splits:
      return
    words, tags = self.text_key, self.label_key
    found = tfds_io.first_example_where(
        self.builder, split,
        lambda ex: tf.size(ex[words]) != tf.size(ex[tags]),
        lambda ex: (ex[words], tf.size(ex[tags])))
    if found:
      index, (text, n_tags) = found
      raise UsageError(
          f'Example {index} of split {split!r} of {self.dataset} has '
          f'{len(text)} words ({words!r}) but {n_tags} tags ({tags!r}); its '
          f'words begin {tfds_io.first_words(text)}. A tagging dataset '
          f'needs one tag per word, and which tag goes with which word '
          f'cannot be guessed. Fix or remove that example in the dataset, '
          f'or bind TaggingInputs.text_key and label_key to features of one '
          f'tag per word.')
    self._checked_splits.add(split)

  def _examples(self, split, shuffle_seed=None):
    def words_and_tags(ex):
      # One tag per word (see _check_split); both cut to max_len.
      words, tags = ex[self.text_key], tf.cast(ex[self.label_key], tf.int32)
      words, tags = words[:self.max_len], tags[:self.max_len]
      return (lower(words) if self.lowercase else words), tags
    return tfds_io.read_split(self.builder, split, shuffle_seed).map(
        words_and_tags, num_parallel_calls=tf.data.AUTOTUNE)

  def _padded_shapes(self):
    return ([self.max_len], [self.max_len])

  def _pad_to_boundary(self, ids, tags):
    padded, _ = super()._pad_to_boundary(ids, None)
    if tags is not None:
      tags = tf.pad(tags, [[0, 0], [0, tf.shape(padded)[1] - tf.shape(tags)[1]]])
    return padded, tags


def _with_weights(ids, labels):
  """Weight 1 for each real label: every text, or every real word's tag."""
  if labels.shape.rank == 1:
    return ids, labels, tf.ones_like(labels, tf.float32)
  return ids, labels, tf.cast(ids != PAD_ID, tf.float32)
