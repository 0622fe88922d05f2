"""Trains and evaluates a shipped config on mock examples of its real dataset.

    python tests/mock_data_run.py CONFIG DATASET KEY_PREFIX WORK_DIR [GIN_PARAM ...]

`tfds.testing.mock_data` makes random examples of DATASET's real feature
spec (conll2003, imdb_reviews). They are written out as a prepared TFDS
dataset, `mock_DATASET`, with those same features, which the config then
trains on (KEY_PREFIX is the config's pipeline, e.g. TaggingInputs).
Training under the mock itself is not possible: while it is active, TFDS
redirects file access, which orbax's checkpoint writes then meet. Prints
evaluate.py's metrics as JSON.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow_datasets as tfds  # noqa: E402

import evaluate  # noqa: E402
import train  # noqa: E402

# Each dataset's real split names (its TFDS builder's _split_generators),
# so a config naming a split the real dataset lacks fails here too.
SPLITS = {'conll2003': ('train', 'dev', 'test'),
          'imdb_reviews': ('train', 'test', 'unsupervised')}


def mock_examples(dataset, n=16):
  """{split: [example dicts]} of random examples with `dataset`'s features."""
  with tfds.testing.mock_data(num_examples=n):
    builder = tfds.builder(dataset)
    return builder.info.features, {
        split: list(tfds.as_numpy(builder.as_dataset(split=split)))
        for split in SPLITS[dataset]}


def prepare_copy(dataset, data_dir):
  """Writes mock examples of `dataset` as the prepared dataset mock_DATASET."""
  features, examples = mock_examples(dataset)

  class Copy(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')
    name = f'mock_{dataset}'

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in examples}

    def _generate_examples(self, split):
      yield from enumerate(examples[split])

  Copy(data_dir=data_dir).download_and_prepare()
  return Copy.name


def main(config, dataset, key_prefix, work_dir, *params):
  data_dir = os.path.join(work_dir, 'tfds')
  name = prepare_copy(dataset, data_dir)
  output_dir = os.path.join(work_dir, 'run')
  bindings = [f"{key_prefix}.dataset = '{name}'",
              f"{key_prefix}.data_dir = '{data_dir}'", *params]
  train.main(['--gin_file', config, '--output_dir', output_dir, '--steps',
              '4', *[a for p in bindings for a in ('--gin_param', p)]])
  print(json.dumps(evaluate.evaluate(output_dir)))


if __name__ == '__main__':
  main(*sys.argv[1:])
