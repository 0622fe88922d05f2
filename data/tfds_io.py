"""Opens TFDS splits, turning every way that can fail into a UsageError."""

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import generated
from rnn_toolkit.errors import UsageError

if TYPE_CHECKING:
  from data.inputs import Inputs

# JAX owns the accelerators; TensorFlow only runs the input pipeline on the
# host, and must not reserve GPU memory for itself.
tf.config.set_visible_devices([], 'GPU')


def resolve_data_dir(data_dir: str | None = None) -> str:
  """The TFDS data directory: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(
      data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


def _fix_hint(data_dir):
  return (f'To fix it, put the prepared dataset under {data_dir} (for '
          f'example by running tfds.load once on a machine with network and '
          f'copying the folder), or point TFDS_DATA_DIR or the gin binding '
          f'`data_dir` at a directory that holds it.')


def get_builder(name: str, data_dir: str | None = None,
                download: bool = True) -> tfds.core.DatasetBuilder:
  """Returns the prepared TFDS builder of dataset `name`.

  Args:
    name: TFDS name, with an optional config and version ('glue/sst2').
    data_dir: where prepared datasets live; see `resolve_data_dir`. The
      toolkit's own datasets (data/generated.py) are prepared under
      `generated.generated_data_dir()` unless it is given.
    download: whether to download and prepare the dataset when absent.

  Raises:
    UsageError: the dataset is unknown, or absent and cannot be prepared.
  """
  if generated.is_generated(name):
    # Made here, not downloaded: prepared where the toolkit may write.
    data_dir, download = data_dir or generated.generated_data_dir(), True
  data_dir = resolve_data_dir(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UsageError(
        f'Dataset {name!r} is not a TFDS dataset and is not prepared in '
        f'{data_dir}. Check the spelling of the dataset name in your gin '
        f'config (see https://www.tensorflow.org/datasets/catalog).') from None
  if builder.is_prepared():
    return builder
  if not download:
    raise UsageError(f'Dataset {name!r} is not prepared in {data_dir} and '
                     f'downloading is switched off. ' + _fix_hint(data_dir))
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    reason = ' '.join(str(e).split())[:300]
    raise UsageError(
        f'Dataset {name!r} is not prepared in {data_dir} and could not be '
        f'downloaded ({type(e).__name__}: {reason}). '
        + _fix_hint(data_dir)) from None
  return builder


def check_split(builder: tfds.core.DatasetBuilder, split: str) -> None:
  """Raises UsageError unless `builder` has `split` ('train[:5%]+validation')."""
  name = builder.info.full_name
  splits = sorted(builder.info.splits.keys())
  # No split metadata (as under tfds.testing.mock_data): nothing to check.
  for part in split.split('+') if splits else ():
    if part.split('[')[0].strip() not in splits:
      raise UsageError(f'Dataset {name} has no split {part!r}; its splits '
                       f'are {splits}. Fix the split name in your gin config '
                       f'or on the command line.')


def check_feature(builder: tfds.core.DatasetBuilder, feature: str,
                  role: str) -> None:
  """Raises UsageError unless `builder` has a feature `feature`.

  `role` is what the pipeline reads it as ('text', 'label', 'image'...),
  named in the message with the binding to fix.
  """
  features = sorted(builder.info.features.keys())
  if feature not in features:
    raise UsageError(f'Dataset {builder.info.full_name} has no feature '
                     f'{feature!r}; its features are {features}. Set the '
                     f'{role} feature name in your gin config.')


def class_names(builder: tfds.core.DatasetBuilder, feature: str,
                per_word: bool = False) -> list[str]:
  """The class names of ClassLabel `feature`, or of a Sequence of them if `per_word`."""
  check_feature(builder, feature, 'label')
  spec = builder.info.features[feature]
  check_feature_kind(builder, feature, per_word)
  if per_word:
    spec = spec.feature
  if not isinstance(spec, tfds.features.ClassLabel):
    raise UsageError(f'Feature {feature!r} of {builder.info.full_name} is a '
                     f'{type(spec).__name__}, not a ClassLabel: it has no '
                     f'class names to predict. Name a class-label feature '
                     f'in your gin config.')
  return list(spec.names)


def check_feature_kind(builder: tfds.core.DatasetBuilder, feature: str,
                       per_word: bool) -> None:
  """Raises UsageError unless `feature` is a sequence exactly if `per_word`."""
  is_sequence = isinstance(builder.info.features[feature],
                           tfds.features.Sequence)
  if is_sequence != per_word:
    name = builder.info.full_name
    raise UsageError(
        f'Feature {feature!r} of {name} holds '
        f'{"one value per word" if is_sequence else "one value per example"}'
        f', but this pipeline needs '
        f'{"one per word" if per_word else "one per example"}: '
        f'{"TaggingInputs" if is_sequence else "TextClassificationInputs"} '
        f'reads such datasets. Change experiment.inputs in your gin config.')


def read_split(builder: tfds.core.DatasetBuilder, split: str,
               shuffle_seed: int | None = None) -> tf.data.Dataset:
  """The examples of `split` as a tf.data.Dataset; files shuffled if seeded."""
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed)
  try:
    return builder.as_dataset(split=split, read_config=read_config,
                              shuffle_files=shuffle_seed is not None)
  except ValueError as e:
    if 'corresponds to no data' not in str(e):
      raise
    raise UsageError(f'Split {split!r} of {builder.info.full_name} holds no '
                     f'text (no examples). Choose a split with examples in '
                     f'your gin config.') from None


def first_example_where(examples: tf.data.Dataset,
                        condition: Callable[[dict], tf.Tensor],
                        shown: Callable[[dict], Any]
                        ) -> tuple[int, Any] | None:
  """The first example of `examples` that meets `condition`, or None.

  Args:
    examples: raw examples (a split, read in order, or examples given).
    condition: example dict -> bool tensor.
    shown: example dict -> what the caller's message shows of it.

  Returns:
    (its index in `examples`, `shown` of it as NumPy), or None. The scan
    runs inside tf.data, so a clean split costs one quick pass.
  """
  found = (examples.enumerate()
           .filter(lambda _, ex: condition(ex))
           .map(lambda i, ex: (i, shown(ex)))
           .take(1))
  for index, values in tfds.as_numpy(found):
    return int(index), values
  return None


def first_words(words: Sequence[bytes], count: int = 8) -> str:
  """The first `count` byte-string `words`, quoted: how a message names an
  example."""
  text = ' '.join(w.decode('utf-8', 'replace') for w in words[:count])
  return f'"{text}{" ..." if len(words) > count else ""}"'


def train_parts(inputs: 'Inputs', process_count: int) -> int:
  """How many parts `inputs`' training split is read in, by `process_count` processes.

  `inputs.data_shards` parts (default, one per process), each feeding an
  equal share of the rows of every batch; each process reads only the parts
  whose rows it feeds. A split with fewer examples than processes (a
  one-document corpus) can't be divided: unless `data_shards` is set, it is
  read in 1 part, whole by every process, which keeps only its rows.
  """
  shards = inputs.data_shards or process_count
  name = type(inputs).__name__
  n_examples = _n_examples(inputs.builder, inputs.train_split)
  if shards > n_examples:
    if inputs.data_shards:
      raise UsageError(
          f'{name}.data_shards = {shards}, but the train split '
          f'{inputs.train_split!r} of {inputs.dataset} has only {n_examples} '
          f'examples to divide. Bind data_shards to at most {n_examples}, '
          f'or leave it unset.')
    return 1
  if shards % process_count or inputs.batch_size % shards:
    raise UsageError(
        f'The training split is read in {shards} parts (data_shards) by '
        f'{process_count} processes with {inputs.batch_size} rows a batch, '
        f'but the parts must divide evenly among the processes and the '
        f'rows evenly among the parts. Bind {name}.data_shards to a '
        f'multiple of {process_count} that divides {inputs.batch_size}.')
  return shards


def read_in_parts(split: str, shards: int, seed: int, batch_size: int,
                  process_index: int, process_count: int,
                  stream: Callable[[str, int, int], tf.data.Dataset]
                  ) -> tf.data.Dataset:
  """This process's rows of every batch, from its parts of `split`.

  Args:
    split: the split to read.
    shards: how many parts it is read in (see `train_parts`).
    seed: the data seed; part k is read with `part_seed(seed, k)`.
    batch_size: rows of a global batch.
    process_index, process_count: this process, and how many there are.
    stream: (split, seed, rows) -> tf.data.Dataset of batches (tuples of
      tensors) with `rows` rows.

  Returns:
    A tf.data.Dataset of this process's batch_size // process_count rows of
    every global batch; global batches are the parts' batches side by side.
  """
  if shards == 1:  # every process reads it all and keeps its rows
    share = batch_size // process_count
    return stream(split, seed, batch_size).map(
        lambda *batch: tuple(a[process_index * share:][:share] for a in batch))
  per_process = shards // process_count
  parts = tfds.even_splits(split, n=shards)
  mine = range(process_index * per_process, (process_index + 1) * per_process)
  return tf.data.Dataset.zip(tuple(
      stream(parts[k], part_seed(seed, k), batch_size // shards)
      for k in mine)).map(_side_by_side)


def _side_by_side(*batches):
  return tuple(tf.concat(arrays, axis=0) for arrays in zip(*batches))


def part_seed(seed: int, part: int) -> int:
  """The data seed of part `part`; part 0 keeps `seed`, as a 1-part stream."""
  if part == 0:
    return seed
  return int(np.random.SeedSequence([seed, part]).generate_state(1)[0] >> 1)


def _n_examples(builder, split):
  """Examples in `split`; unknown (infinite) when TFDS has no split metadata,
  as under `tfds.testing.mock_data`."""
  if not builder.info.splits:
    return float('inf')
  return builder.info.splits[split].num_examples
