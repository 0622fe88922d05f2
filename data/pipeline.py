"""What the fixed-shape pipelines share: a checked dataset and its batch streams.

A subclass says how one example becomes a tuple of fixed-shape arrays, the
model's inputs first, then its targets and their loss weights
(`_examples`); this class turns those into trax's batch streams, in the
fixed order shuffle -> repeat -> batch -> prefetch.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from data import tfds_io
from data.batching import pad_batch
from rnn_toolkit.errors import check_positive


class FixedShapeInputs:
  """Base of `FeatureVectorInputs`, `TranslationInputs` and `CaptioningInputs`.

  Args:
    dataset: TFDS name of the dataset.
    features: {role: feature name} the subclass reads; each is checked.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or
      ~/tensorflow_datasets; the toolkit's generated datasets: its cache).
    train_split: split to train on (and to build the vocabulary from).
    eval_split: split evaluated during training.
    batch_size: examples per batch.
    shuffle_buffer: examples held in the shuffle buffer.
    data_shards: parts the training split is read in (see
      `tfds_io.train_parts`); None: one per process.
    download: whether TFDS may download an absent dataset.
  """

  task = None  # rnn_toolkit/tasks.py

  def __init__(self, dataset, features, data_dir, train_split, eval_split,
               batch_size, shuffle_buffer, data_shards, download):
    check_positive(type(self).__name__, batch_size=batch_size,
                   shuffle_buffer=shuffle_buffer,
                   **({} if data_shards is None
                      else {'data_shards': data_shards}))
    self.dataset = dataset
    self.train_split = train_split
    self.eval_split = eval_split
    self.batch_size = batch_size
    self.shuffle_buffer = shuffle_buffer
    self.data_shards = data_shards
    self.builder = tfds_io.get_builder(dataset, data_dir, download)
    for split in (train_split, eval_split):
      tfds_io.check_split(self.builder, split)
    for role, feature in features.items():
      tfds_io.check_feature(self.builder, feature, role)

  def train_shards(self, process_count=1):
    """How many parts the training split is read in; see tfds_io.train_parts."""
    return tfds_io.train_parts(self, process_count)

  def train_batches(self, vocab, seed=0, start=0, process_index=0,
                    process_count=1):
    """Endless shuffled training batches, from batch `start` of the seeded order.

    See CharLMInputs.train_batches for the sharding over processes.
    """
    shards = self.train_shards(process_count)
    self._check_split(self.train_split)
    tf.random.set_seed(seed)  # map functions with randomness draw from it

    def stream(split, part_seed, rows):
      return (self._examples(vocab, split, training=True,
                             shuffle_seed=part_seed)
              .shuffle(self.shuffle_buffer, seed=part_seed)
              .repeat()
              .batch(rows, drop_remainder=True))

    ds = tfds_io.read_in_parts(self.train_split, shards, seed,
                               self.batch_size, process_index, process_count,
                               stream)
    return iter(tfds.as_numpy(ds.skip(start).prefetch(tf.data.AUTOTUNE)))

  def eval_batches(self, vocab, split=None, rows=slice(None)):
    """One ordered pass over `split` (default eval_split), each example once.

    The last batch is padded with rows of weight 0 to `batch_size`.
    """
    split = split or self.eval_split
    tfds_io.check_split(self.builder, split)
    self._check_split(split)
    ds = (self._examples(vocab, split, training=False)
          .batch(self.batch_size)
          .prefetch(tf.data.AUTOTUNE))
    return (tuple(a[rows] for a in pad_batch(b, self.batch_size))
            for b in tfds.as_numpy(ds))

  def _check_split(self, split):
    """Raises UsageError if an example of `split` is one a subclass can't use.

    Called before a split is read, so a bad example is named before any
    batch (or any file of the run) is made.
    """
    del split  # every example of the base class's fixed shapes will do

  def _read(self, split, shuffle_seed=None):
    return tfds_io.read_split(self.builder, split, shuffle_seed)

  def _examples(self, vocab, split, training, shuffle_seed=None):
    """tf.data.Dataset of fixed-shape (model inputs..., targets, weights)."""
    raise NotImplementedError
