"""Opens TFDS splits, turning every way that can fail into a UsageError."""

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from errors import UsageError

# JAX owns the accelerators; TensorFlow only runs the input pipeline on the
# host, and must not reserve GPU memory for itself.
tf.config.set_visible_devices([], 'GPU')


def resolve_data_dir(data_dir=None):
  """The TFDS data directory: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(
      data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


def _fix_hint(data_dir):
  return (f'To fix it, put the prepared dataset under {data_dir} (for '
          f'example by running tfds.load once on a machine with network and '
          f'copying the folder), or point TFDS_DATA_DIR or the gin binding '
          f'`data_dir` at a directory that holds it.')


def get_builder(name, data_dir=None, download=True):
  """Returns the prepared TFDS builder of dataset `name`.

  Args:
    name: TFDS name, with an optional config and version ('glue/sst2').
    data_dir: where prepared datasets live; see `resolve_data_dir`.
    download: whether to download and prepare the dataset when absent.

  Raises:
    UsageError: the dataset is unknown, or absent and cannot be prepared.
  """
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


def check_split_and_feature(builder, split, feature):
  """Raises UsageError unless `builder` has `split` and a feature `feature`."""
  name = builder.info.full_name
  splits = sorted(builder.info.splits.keys())
  for part in split.split('+'):  # e.g. 'train+validation[:50%]'
    if part.split('[')[0].strip() not in splits:
      raise UsageError(f'Dataset {name} has no split {part!r}; its splits '
                       f'are {splits}. Fix the split name in your gin config '
                       f'or on the command line.')
  features = sorted(builder.info.features.keys())
  if feature not in features:
    raise UsageError(f'Dataset {name} has no feature {feature!r}; its '
                     f'features are {features}. Set the text feature name '
                     f'in your gin config.')
