"""Small generated TFDS datasets for the classifier and the tagger.

Both need memory: what decides a label comes words before the word that is
labelled, or before a distractor that points the other way, so a model
that reads each word alone (a recurrent layer whose state is lost from
step to step) scores near chance on them.

`tiny_sentiment`: sentences of filler words with two opinion words of
opposite polarity; the label is the polarity of the FIRST one ("good ...
but ... dull" is positive). Every text holds one word of each polarity, so
a bag of words tells nothing; a model must remember the early opinion past
the later one. As in GLUE, the test split is unlabelled (label -1).

`tiny_ner`: sentences of filler words with 1 to 3 names, each a few words
after a cue verb; the names are ambiguous (Jordan, Paris...: a person's or
a place's) and the cue alone says which ("met ... Jordan" is a person,
"visited ... Jordan" a place). Tags are in the IOB2 scheme of conll2003
(B-PER, I-PER, B-LOC, O...); most tags are O, so always guessing O scores
well on tokens and 0 on entities, and guessing each name's tag without
its cue finds half the entities.

`prepare_faulty` writes two more, whose faults pipelines must name:
`tiny_ner_misaligned` (examples whose words and tags differ in number) and
`tiny_feature_labels` (feature vectors, some of them unlabelled).
"""

import random

import numpy as np
import tensorflow_datasets as tfds

FILLER = ('the a movie film story it was is and of to this that with for as '
          'on at by plot actors scene ending ' 'music').split()
POSITIVE = 'good great wonderful superb moving delightful'.split()
NEGATIVE = 'bad awful boring dull terrible tedious'.split()
SENTIMENT_CLASSES = ['negative', 'positive']
SPLIT_SIZES = {'train': 600, 'validation': 200, 'test': 100}
# tiny_ner's split names are conll2003's.
NER_SPLIT_SIZES = {'train': 600, 'dev': 200, 'test': 100}

# tiny_ner: a name's tag is said by the cue verb a few words before it.
PERSON_CUES = 'met thanked interviewed'.split()
PLACE_CUES = 'visited reached toured'.split()
NAMES = 'Jordan Paris Florence Sydney Georgia Victoria'.split()  # either kind
LAST_NAMES = 'Smith Garcia Chen Novak'.split()
NER_TAGS = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']


def _fillers(rng, low, high):
  return [rng.choice(FILLER) for _ in range(rng.randint(low, high))]


def sentiment_example(rng):
  """(text, label): fillers, an opinion word, 1 to 8 fillers, an opinion
  word of the other polarity, fillers; the label is the first one's."""
  label = rng.randint(0, 1)
  first, then = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
  words = (_fillers(rng, 0, 6) + [rng.choice(first)] + _fillers(rng, 1, 8)
           + [rng.choice(then)] + _fillers(rng, 0, 6))
  return ' '.join(words), label


def ner_example(rng):
  """(tokens, tags): 1 to 3 times, fillers, a cue verb, 1 to 5 fillers and a
  name: a person's (1-2 words) after a person cue, else a place's."""
  tokens, tags = [], []
  for _ in range(rng.randint(1, 3)):
    person = rng.random() < 0.5
    words = (_fillers(rng, 0, 3)
             + [rng.choice(PERSON_CUES if person else PLACE_CUES)]
             + _fillers(rng, 1, 5) + [rng.choice(NAMES)])
    tokens += words
    tags += ['O'] * (len(words) - 1) + ['B-PER' if person else 'B-LOC']
    if person and rng.random() < 0.5:
      tokens.append(rng.choice(LAST_NAMES))
      tags.append('I-PER')
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


class TinyNerMisaligned(TinyNer):
  """tiny_ner's features, where some examples lack their last tag.

  In 'dev' and 'test' (not 'train'), one example in `MISALIGNED` lacks it.
  """

  split_sizes = {'train': 20, 'dev': 10, 'test': 10}
  MISALIGNED = 7

  def _generate_examples(self, split, n):
    for key, example in super()._generate_examples(split, n):
      if split != 'train' and key % self.MISALIGNED == 0:
        example['ner'] = example['ner'][:-1]
      yield key, example


FEATURE_CLASSES = ['low', 'middle', 'high']


class TinyFeatureLabels(_Generated):
  """4 numbers -> the class of their sum; in 'test', some are unlabelled.

  Features 'scores' and 'winner', as match_results' (one in `UNLABELLED`
  test examples has label -1, as TFDS marks an unlabelled example).
  """

  split_sizes = {'train': 20, 'validation': 10, 'test': 10}
  UNLABELLED = 4

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'scores': tfds.features.Tensor(shape=(4,), dtype=np.float32),
        'winner': tfds.features.ClassLabel(names=FEATURE_CLASSES)}))

  def _generate_examples(self, split, n):
    rng = random.Random(split)
    for key in range(n):
      scores = [rng.randint(0, 3) for _ in range(4)]
      label = min(sum(scores) // 5, 2)
      if split == 'test' and key % self.UNLABELLED == 1:
        label = -1
      yield key, {'scores': np.array(scores, np.float32), 'winner': label}


def prepare(data_dir):
  """Writes tiny_sentiment and tiny_ner under `data_dir`."""
  TinySentiment(data_dir=data_dir).download_and_prepare()
  TinyNer(data_dir=data_dir).download_and_prepare()


def prepare_faulty(data_dir):
  """Writes tiny_ner_misaligned and tiny_feature_labels under `data_dir`."""
  TinyNerMisaligned(data_dir=data_dir).download_and_prepare()
  TinyFeatureLabels(data_dir=data_dir).download_and_prepare()


def sentiment_bindings(data_dir):
  return ["TextClassificationInputs.dataset = 'tiny_sentiment'",
          f"TextClassificationInputs.data_dir = '{data_dir}'",
          'TextClassificationInputs.download = False']


def ner_bindings(data_dir):
  return ["TaggingInputs.dataset = 'tiny_ner'",
          f"TaggingInputs.data_dir = '{data_dir}'",
          'TaggingInputs.download = False']
