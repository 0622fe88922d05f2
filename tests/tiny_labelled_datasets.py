"""Small generated TFDS datasets for the classifier and the tagger.

`tiny_sentiment`: sentences of filler words with one opinion word somewhere
in them; the label is the opinion word's polarity, so a model must find one
word anywhere in a text of varying length (a bag-of-words or recurrent model
learns it; a constant guess scores 50%). As in GLUE, the test split is
unlabelled (label -1).

`tiny_ner`: sentences of filler words with person and place names inside,
tagged in the IOB2 scheme of conll2003 (B-PER, I-PER, B-LOC, O...); most tags
are O, so always guessing O scores well on tokens and 0 on entities.
"""

import random

import tensorflow_datasets as tfds

FILLER = ('the a movie film story it was is and of to this that with for as '
          'on at by plot actors scene ending ' 'music').split()
POSITIVE = 'good great wonderful superb moving delightful'.split()
NEGATIVE = 'bad awful boring dull terrible tedious'.split()
SENTIMENT_CLASSES = ['negative', 'positive']
SPLIT_SIZES = {'train': 600, 'validation': 200, 'test': 100}
# tiny_ner's split names are conll2003's.
NER_SPLIT_SIZES = {'train': 600, 'dev': 200, 'test': 100}

FIRST_NAMES = 'John Mary Peter Anna Luis Mei'.split()
LAST_NAMES = 'Smith Garcia Chen Novak'.split()
PLACES = 'Paris Lima Oslo Cairo Tokyo'.split()
NER_TAGS = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']


def sentiment_example(rng):
  """(text, label): 2 to 30 filler words with one opinion word among them."""
  words = [rng.choice(FILLER) for _ in range(rng.randint(2, 30))]
  label = rng.randint(0, 1)
  words.insert(rng.randint(0, len(words)),
               rng.choice(POSITIVE if label else NEGATIVE))
  return ' '.join(words), label


def ner_example(rng):
  """(tokens, tags): filler words with 1 to 3 names; people have 1-2 words."""
  tokens, tags = [], []
  for _ in range(rng.randint(1, 3)):
    tokens += [rng.choice(FILLER) for _ in range(rng.randint(1, 6))]
    tags += ['O'] * (len(tokens) - len(tags))
    if rng.random() < 0.5:
      name = [rng.choice(FIRST_NAMES)] + [rng.choice(LAST_NAMES)] * rng.randint(0, 1)
      tokens += name
      tags += ['B-PER'] + ['I-PER'] * (len(name) - 1)
    else:
      tokens.append(rng.choice(PLACES))
      tags.append('B-LOC')
  return tokens, tags


class _Generated(tfds.core.GeneratorBasedBuilder):
  """A dataset of `split_sizes` examples per split, made by `_example`."""

  VERSION = tfds.core.Version('1.0.0')
  split_sizes = SPLIT_SIZES

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in self.split_sizes.items()}

  def _generate_examples(self, split, n):
    rng = random.Random(split)
    for i in range(n):
      yield i, self._example(rng, split)


class TinySentiment(_Generated):
  """Generated opinion sentences, features 'sentence' and 'label'."""

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'sentence': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=SENTIMENT_CLASSES)}))

  def _example(self, rng, split):
    text, label = sentiment_example(rng)
    return {'sentence': text, 'label': -1 if split == 'test' else label}


class TinyNer(_Generated):
  """Generated sentences with names, features as conll2003's 'tokens', 'ner'."""

  split_sizes = NER_SPLIT_SIZES

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'tokens': tfds.features.Sequence(tfds.features.Text()),
        'ner': tfds.features.Sequence(tfds.features.ClassLabel(names=NER_TAGS))}))

  def _example(self, rng, split):
    tokens, tags = ner_example(rng)
    return {'tokens': tokens, 'ner': tags}


def prepare(data_dir):
  """Writes both datasets under `data_dir`."""
  TinySentiment(data_dir=data_dir).download_and_prepare()
  TinyNer(data_dir=data_dir).download_and_prepare()


def sentiment_bindings(data_dir):
  return ["TextClassificationInputs.dataset = 'tiny_sentiment'",
          f"TextClassificationInputs.data_dir = '{data_dir}'",
          'TextClassificationInputs.download = False']


def ner_bindings(data_dir):
  return ["TaggingInputs.dataset = 'tiny_ner'",
          f"TaggingInputs.data_dir = '{data_dir}'",
          'TaggingInputs.download = False']
