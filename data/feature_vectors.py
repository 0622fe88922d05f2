"""One-to-one input pipeline: a fixed-size vector of numbers -> one label.

Batches are (features f32[batch, n_features], labels int32[batch],
weights f32[batch]), as trax's classification losses expect.
"""

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data import tfds_io
from data.inputs import Source
from data.pipeline import FixedShapeInputs
from data.vocab import LabelVocab, check_kind
from rnn_toolkit.errors import UsageError


class FeatureVectorInputs(FixedShapeInputs):
  """Batches of a dataset's numeric feature vector and its class label.

  Args:
    dataset: TFDS name of a dataset with a fixed-size numeric Tensor
      feature and a ClassLabel feature (the generated `match_results`).
    features_key: name of the numeric feature; it is flattened to a vector.
    label_key: name of the class-label feature.
    scale: the features are multiplied by it (e.g. to bring goals near 1).
    The others are as in `data.inputs.Inputs`.
  """

  task = 'vector_classification'  # rnn_toolkit/tasks.py

  def __init__(self, dataset: str = 'match_results',
               features_key: str = 'scores', label_key: str = 'winner',
               scale: float = 1.0, data_dir: str | None = None,
               train_split: str = 'train', eval_split: str = 'validation',
               batch_size: int = 64, shuffle_buffer: int = 10_000,
               data_shards: int | None = None, download: bool = True):
    self.features_key = features_key
    self.label_key = label_key
    self.scale = scale
    super().__init__(
        dataset=dataset, data_dir=data_dir, train_split=train_split,
        eval_split=eval_split, batch_size=batch_size,
        shuffle_buffer=shuffle_buffer, data_shards=data_shards,
        download=download,
        features={'numeric': features_key, 'label': label_key})
    self.labels = tfds_io.class_names(self.builder, label_key)
    spec = self.builder.info.features[features_key]
    if not (isinstance(spec, tfds.features.Tensor) and spec.shape
            and None not in spec.shape and np.dtype(spec.np_dtype).kind in 'fiu'):
      raise UsageError(
          f'Feature {features_key!r} of {self.builder.info.full_name} is not '
          f'a fixed-size numeric tensor (it is {spec!r}). Bind '
          f'FeatureVectorInputs.features_key to one that is.')
    self.n_features = int(np.prod(spec.shape))

  def build_vocab(self) -> LabelVocab:
    """The class names; the features need no vocabulary.

    The train split's labels are checked here, so a new run finds a bad one
    before it writes anything.
    """
    self._check_split(self.train_split)
    return LabelVocab(self.labels, self.dataset)

  def model_dimensions(self, vocab: LabelVocab) -> dict[str, int]:
    """The sizes the model is built with: its classes."""
    self.check_vocab(vocab)
    return {'n_classes': len(vocab.labels)}

  def check_vocab(self, vocab: Any) -> None:
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, LabelVocab, type(self).__name__)

  def input_signature(self) -> shapes.ShapeDtype:
    """The model input of a training batch: f32[batch_size, n_features]."""
    return shapes.ShapeDtype((self.batch_size, self.n_features), np.float32)

  def encode(self, vocab: LabelVocab, texts: list[str]) -> np.ndarray:
    """f32[len(texts), n_features]: numbers written as text, one row each.

    Raises:
      UsageError: a text does not hold exactly `n_features` numbers.
    """
    del vocab
    rows = []
    for text in texts:
      try:
        row = [float(v) for v in text.replace(',', ' ').split()]
      except ValueError:
        row = None
      if row is None or len(row) != self.n_features:
        raise UsageError(
            f'{text!r} is not {self.n_features} numbers: this model reads '
            f'the {self.n_features} values of feature {self.features_key!r} '
            f'of {self.dataset}, separated by spaces or commas.')
      rows.append(row)
    return np.asarray(rows, np.float32) * self.scale

  def _check_examples(self, examples: tf.data.Dataset,
                      source: Source) -> None:
    """Raises UsageError if an example has no label of a class.

    TFDS marks unlabelled examples with -1; trax's loss would read such a
    label as another class's without a word.
    """
    n = len(self.labels)
    found = tfds_io.first_example_where(
        examples,
        lambda ex: (ex[self.label_key] < 0) | (ex[self.label_key] >= n),
        lambda ex: (ex[self.label_key], ex[self.features_key]))
    if found:
      index, (label, features) = found
      shown = ' '.join(f'{v:g}' for v in np.ravel(features)[:12])
      if features.size > 12:
        shown += ' ...'
      fix = (' (TFDS marks unlabelled examples with -1). Train and evaluate '
             'on splits with labels (FeatureVectorInputs.train_split and '
             'eval_split, or evaluate.py --split).' if source.is_split else
             '. Give every example one of these classes.')
      raise UsageError(
          f'Example {index} of {source.described} (features '
          f'{self.features_key!r}: {shown}) is labelled {int(label)}, outside '
          f'the {n} classes 0 to {n - 1} ({", ".join(self.labels)}) of its '
          f'{self.label_key!r} feature{fix}')

  def _examples(self, vocab: LabelVocab, examples: tf.data.Dataset,
                training: bool) -> tf.data.Dataset:
    del vocab, training

    def example(ex):
      features = tf.reshape(tf.cast(ex[self.features_key], tf.float32), [-1])
      label = tf.cast(ex[self.label_key], tf.int32)
      return features * self.scale, label, tf.ones([], tf.float32)

    return examples.map(example, num_parallel_calls=tf.data.AUTOTUNE)
