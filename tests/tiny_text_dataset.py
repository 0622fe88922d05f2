"""A tiny TFDS text dataset that tests prepare in a temporary data_dir.

Its texts are fixed strings, so tests can compare what the pipeline yields
with the text itself; `TEXTS` is the source of truth for them.
"""

import tensorflow_datasets as tfds

_LINES = [
    'ROMEO:\nBut soft, what light through yonder window breaks?\n',
    'JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n',
    'MERCUTIO:\nA plague o\' both your houses!\n',
    'NURSE:\nFaith, I can tell how to look sad. \u00e9t\u00e9\n',
]

TEXTS = {
    'train': [(_LINES[0] + _LINES[1]) * 6, _LINES[2] * 3, 'ab'],
    'validation': [_LINES[3] * 2, 'short'],
    'test': [_LINES[1] + 'Zebra~'],
}


class TinyText(tfds.core.GeneratorBasedBuilder):
  """Fixed texts in three splits, one feature 'text'."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(texts)
            for split, texts in TEXTS.items()}

  def _generate_examples(self, texts):
    for i, text in enumerate(texts):
      yield i, {'text': text}


def prepare(data_dir):
  """Writes the dataset under `data_dir`; returns its TFDS name."""
  TinyText(data_dir=data_dir).download_and_prepare()
  return 'tiny_text'


def gin_bindings(data_dir):
  """The gin bindings that make a run read this dataset from `data_dir`."""
  return ["CharLMInputs.dataset = 'tiny_text'",
          f"CharLMInputs.data_dir = '{data_dir}'",
          'CharLMInputs.download = False']
