"""Character-level language-model input pipeline over any TFDS text dataset.

Every example's text becomes character ids, is cut into windows of
`seq_len` characters (the last window of an example is padded, and padding
gets loss weight 0), and windows are batched as trax expects:
(inputs int32[batch, seq_len], targets int32[batch, seq_len],
weights f32[batch, seq_len]) with inputs == targets, since the model shifts
its input right by itself.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data import tfds_io
from data.batching import pad_batch
from rnn_toolkit.errors import UsageError, check_positive
from data.vocab import CharVocab, FIRST_CHAR_ID, PAD_ID, UNK_ID, check_kind


class CharLMInputs:
  """Builds the vocabulary and the train/eval batch streams of one dataset.

  Args:
    dataset: TFDS name of a dataset with a text feature.
    text_key: name of the text feature.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    train_split: split to train on and to build the vocabulary from.
    eval_split: split evaluated during training.
    seq_len: characters per training window.
    batch_size: windows per batch.
    shuffle_buffer: windows held in the shuffle buffer.
    vocab_max_examples: training examples read to build the vocabulary.
    data_shards: parts the training split is read in (see `train_shards`);
      None: one per process, so each host of a multi-host run reads only
      its own part. The data order depends on it, so pin it to compare runs
      on different numbers of hosts.
    download: whether TFDS may download an absent dataset.
  """

  task = 'language_model'  # rnn_toolkit/tasks.py

  def __init__(self, dataset='tiny_shakespeare', text_key='text',
               data_dir=None, train_split='train', eval_split='validation',
               seq_len=256, batch_size=64, shuffle_buffer=10_000,
               vocab_max_examples=100_000, data_shards=None, download=True):
    check_positive('CharLMInputs', seq_len=seq_len, batch_size=batch_size,
                   shuffle_buffer=shuffle_buffer,
                   vocab_max_examples=vocab_max_examples,
                    **({} if data_shards is None else {'data_shards': data_shards}))
    self.dataset = dataset
    self.text_key = text_key
    self.train_split = train_split
    self.eval_split = eval_split
    self.seq_len = seq_len
    self.batch_size = batch_size
    self.shuffle_buffer = shuffle_buffer
    self.vocab_max_examples = vocab_max_examples
    self.data_shards = data_shards
    self.builder = tfds_io.get_builder(dataset, data_dir, download)
    for split in (train_split, eval_split):
      tfds_io.check_split_and_feature(self.builder, split, text_key)

  def build_vocab(self):
    """Returns the CharVocab of the training split's characters."""
    ds = self._texts(self.train_split).take(self.vocab_max_examples)
    vocab = CharVocab.from_texts(
        (t.decode('utf-8') for t in tfds.as_numpy(ds)), dataset=self.dataset)
    if not vocab.chars:
      raise UsageError(f'The train split {self.train_split!r} of '
                       f'{self.dataset} holds no text. Bind '
                       f'CharLMInputs.train_split to a split with examples.')
    return vocab

  def model_dimensions(self, vocab):
    """The sizes the model is built with."""
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size}

  def check_vocab(self, vocab):
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, CharVocab, type(self).__name__)

  def input_signature(self):
    """The model input of a batch."""
    return shapes.ShapeDtype((self.batch_size, self.seq_len), np.int32)

  def train_shards(self, process_count=1):
    """How many parts the training split is read in; see tfds_io.train_parts."""
    return tfds_io.train_parts(self, process_count)

  def train_batches(self, vocab, seed=0, start=0, process_index=0,
                    process_count=1):
    """Endless, shuffled training batches; window boundaries move each epoch.

    The stream is a function of `seed` and `train_shards()` alone; `start`
    skips its first batches, so a resumed run continues exactly where it
    stopped.

    Args:
      vocab: the CharVocab to encode with.
      seed: seed of the data order.
      start: how many batches to skip.
      process_index: which process this is; each yields only its own rows
        of every global batch, read from its own parts of the split.
      process_count: how many processes feed the global batches.
    """
    shards = self.train_shards(process_count)
    # tf.data's seeded shuffles also depend on TF's global seed, which trax's
    # Loop sets (to the same seed) when it starts. Setting it first makes
    # the stream the same whether or not a Loop ran before in this process.
    tf.random.set_seed(seed)
    ds = tfds_io.read_in_parts(
        self.train_split, shards, seed, self.batch_size, process_index,
        process_count, lambda split, part_seed, rows: self._train_windows(
            vocab, part_seed, split, rows))
    return iter(tfds.as_numpy(ds.skip(start).prefetch(tf.data.AUTOTUNE)))

  def _train_windows(self, vocab, seed, split, batch_size):
    """Shuffled batches of windows from `split`, repeated without end."""
    encode = _encoder(vocab)
    seq_len = self.seq_len

    def windows(index, text):
      ids = encode(text)
      seed_pair = tf.stack([tf.cast(seed, tf.int64), index])
      offset = _random_offset(tf.size(ids), seq_len, seed_pair)
      return tf.data.Dataset.from_tensor_slices(
          _cut_at(ids, offset, seq_len))

    return (self._texts(split, shuffle_seed=seed)
            .shuffle(1_000, seed=seed)              # examples
            .repeat()
            .enumerate()                            # (index, text)
            .flat_map(windows)                      # windows
            .shuffle(self.shuffle_buffer, seed=seed)
            .batch(batch_size, drop_remainder=True)
            .map(_with_weights, num_parallel_calls=tf.data.AUTOTUNE))

  def eval_batches(self, vocab, split=None, rows=slice(None)):
    """One ordered pass over `split` (default eval_split), every character once.

    The last batch is padded to `batch_size` with all-padding windows, whose
    weights are 0, so every batch has the same shape. `rows` is as in
    `train_batches`.
    """
    split = split or self.eval_split
    tfds_io.check_split_and_feature(self.builder, split, self.text_key)
    encode = _encoder(vocab)
    seq_len = self.seq_len
    ds = (self._texts(split)
          .flat_map(lambda t: tf.data.Dataset.from_tensor_slices(
              _cut(encode(t), seq_len)))
          .batch(self.batch_size)
          .map(_with_weights)
          .prefetch(tf.data.AUTOTUNE))
    return (tuple(a[rows] for a in pad_batch(b, self.batch_size))
            for b in tfds.as_numpy(ds))

  def _texts(self, split, shuffle_seed=None):
    """The text feature of `split`, as a tf.data.Dataset of strings."""
    return tfds_io.read_split(self.builder, split, shuffle_seed).map(
        lambda ex: ex[self.text_key])


def _encoder(vocab):
  """Returns a TF function mapping a UTF-8 string to int32 character ids."""
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant([ord(c) for c in vocab.chars], tf.int32),
          tf.range(FIRST_CHAR_ID, vocab.size, dtype=tf.int32)),
      default_value=UNK_ID)
  return lambda text: table.lookup(tf.strings.unicode_decode(text, 'UTF-8'))


def _random_offset(length, seq_len, seed_pair):
  """A start offset in [0, seq_len) for texts longer than one window, else 0."""
  limit = tf.where(length > seq_len, seq_len, 1)
  return tf.random.stateless_uniform([], seed_pair, 0, limit, dtype=tf.int32)


def _cut(ids, seq_len):
  """int32[n] -> int32[ceil(n / seq_len), seq_len], the tail padded with PAD_ID."""
  pad = (-tf.size(ids)) % seq_len
  return tf.reshape(tf.pad(ids, [[0, pad]], constant_values=PAD_ID),
                    [-1, seq_len])


def _cut_at(ids, offset, seq_len):
  """Windows whose boundaries sit at `offset` + k·seq_len; no id is dropped.

  The text before the offset becomes a short window of its own, so the start
  of every example is trained on in every epoch.
  """
  return tf.concat([_cut(ids[:offset], seq_len), _cut(ids[offset:], seq_len)],
                   axis=0)


def _with_weights(windows):
  weights = tf.cast(tf.not_equal(windows, PAD_ID), tf.float32)
  return windows, windows, weights
