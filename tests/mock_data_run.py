"""Trains and evaluates a shipped config on mock examples of its real dataset.

    python tests/mock_data_run.py CONFIG DATASET KEY_PREFIX WORK_DIR [GIN_PARAM ...]

(The tests call prepare_copy once per dataset and `run` in-process.)

`tfds.testing.mock_data` makes random examples of DATASET's real feature
spec (any dataset of `SPLITS`). They are written out as a prepared TFDS
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

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from rnn_toolkit.evaluation.run import Run
import train as train_py


# Each dataset's real split names (its TFDS builder's _split_generators),
# so a config naming a split the real dataset lacks fails here too.
SPLITS = {'conll2003': ('train', 'dev', 'test'),
          'imdb_reviews': ('train', 'test', 'unsupervised'),
          'ted_hrlr_translate/pt_to_en': ('train', 'validation', 'test'),
          'coco_captions': ('train', 'val', 'test', 'restval'),
          'glue/sst2': ('train', 'validation', 'test'),
          'tiny_shakespeare': ('train', 'validation', 'test')}


def mock_examples(dataset, n=16):
  """{split: [example dicts]} of random examples with `dataset`'s features."""
  with tfds.testing.mock_data(num_examples=n):
    builder = tfds.builder(dataset)
    features = builder.info.features
    return features, {
        split: [_consistent(ex, features) for ex in
                tfds.as_numpy(builder.as_dataset(split=split))]
        for split in SPLITS[dataset]}


def _consistent(example, features):
  """`example` made valid for TFDS to encode again.

  mock_data draws every field of a sequence of dicts with its own length
  (coco_captions: 5 caption texts, 43 caption ids), and bounding boxes
  with min > max; the fields are cut to the shortest, the corners sorted.
  It also draws each of a tagging dataset's sequences of one value per
  word (conll2003's tokens, pos, chunks and ner) with a length of its own;
  they are cut to the shortest, as a real dataset has one tag per word.
  """
  per_word = [key for key, feature in features.items()
              if isinstance(feature, tfds.features.Sequence)
              and not isinstance(feature.feature, tfds.features.FeaturesDict)]
  n = min((len(example[key]) for key in per_word), default=0)
  for key in per_word:
    example[key] = example[key][:n]
  for key, feature in features.items():
    if isinstance(feature, tfds.features.Sequence) and isinstance(
        feature.feature, tfds.features.FeaturesDict):
      fields = example[key]
      n = min(len(v) for v in fields.values())
      example[key] = {k: v[:n] for k, v in fields.items()}
      for name, inner in feature.feature.items():
        if isinstance(inner, tfds.features.BBoxFeature):
          boxes = example[key][name].reshape(-1, 2, 2)  # (y, x) min, max
          example[key][name] = np.sort(boxes, axis=1).reshape(-1, 4)
  return example


def prepare_copy(dataset, data_dir):
  """Writes mock examples of `dataset` as the prepared dataset mock_DATASET."""
  features, examples = mock_examples(dataset)

  # Not registered by name: tests prepare such copies in several data_dirs.
  class Copy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')
    name = f'mock_{dataset.replace("/", "_")}'

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in examples}

    def _generate_examples(self, split):
      yield from enumerate(examples[split])

  Copy(data_dir=data_dir).download_and_prepare()
  return Copy.name


def run(config, name, data_dir, key_prefix, work_dir, *params):
  """Trains `config` for 4 steps on the prepared `name` in `data_dir`.

  Returns evaluate's metrics of the run (made in WORK_DIR/run).
  """
  output_dir = os.path.join(work_dir, 'run')
  bindings = [f"{key_prefix}.dataset = '{name}'",
              f"{key_prefix}.data_dir = '{data_dir}'", *params]
  train_py.main(['--gin_file', config, '--output_dir', output_dir, '--steps',
              '4', *[a for p in bindings for a in ('--gin_param', p)]])
  return Run.load(output_dir).evaluate()


def main(config, dataset, key_prefix, work_dir, *params):
  data_dir = os.path.join(work_dir, 'tfds')
  name = prepare_copy(dataset, data_dir)
  print(json.dumps(run(config, name, data_dir, key_prefix, work_dir, *params)))


if __name__ == '__main__':
  main(*sys.argv[1:])
