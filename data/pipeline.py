"""What the fixed-shape pipelines share: one example, one fixed-shape row.

A subclass says how one raw example becomes a tuple of fixed-shape arrays,
the model's inputs first, then its targets and their loss weights
(`_examples`); this class batches those, in the fixed order shuffle ->
repeat -> batch for training, in order for evaluation.
"""

import abc

import tensorflow as tf

from data.inputs import Inputs
from data.vocab import Vocab


class FixedShapeInputs(Inputs):
  """Base of `FeatureVectorInputs`, `TranslationInputs` and `CaptioningInputs`.

  Its constructor is `Inputs`'s.
  """

  def _train_stream(self, vocab: Vocab, examples: tf.data.Dataset, seed: int,
                    rows: int, fixed_shape: bool) -> tf.data.Dataset:
    del fixed_shape  # every batch has the one shape
    return (self._examples(vocab, examples, training=True)
            .shuffle(self.shuffle_buffer, seed=seed)
            .repeat()
            .batch(rows, drop_remainder=True))

  def _eval_stream(self, vocab: Vocab,
                   examples: tf.data.Dataset) -> tf.data.Dataset:
    return self._examples(vocab, examples, training=False).batch(
        self.batch_size)

  @abc.abstractmethod
  def _examples(self, vocab: Vocab, examples: tf.data.Dataset,
                training: bool) -> tf.data.Dataset:
    """tf.data.Dataset of fixed-shape (model inputs..., targets, weights)."""
