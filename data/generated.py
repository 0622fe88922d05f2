"""The toolkit's generated TFDS datasets: real tasks that need no download.

- `match_results` (one-to-one): the 12 scores of a 4-team round-robin
  championship -> the champion.
- `date_normalisation` (many-to-many): a date in one of many surface forms
  ("Wed 25 Nov 2026", "25/11/2026", ...) -> its ISO form "2026-11-25".
- `shape_captions` (one-to-many): a 32x32 image of two coloured shapes ->
  a caption such as "a red square above a blue circle".

Each has a full config (the default) and a `small` one for quick runs and
tests. Examples are drawn from fixed seeds, so every machine prepares the
same data. They are prepared on first use (a few seconds) under
`generated_data_dir()`, not under $TFDS_DATA_DIR, which may be read-only.
"""

from collections.abc import Sequence
import datetime
import os
import random

import numpy as np
import tensorflow_datasets as tfds

NAMES = ('match_results', 'date_normalisation', 'shape_captions')


def generated_data_dir() -> str:
  """Where generated datasets are prepared: $TOOLKIT_CACHE_DIR/tensorflow_datasets."""
  cache = os.environ.get('TOOLKIT_CACHE_DIR', '~/.cache/trax_rnn_toolkit')
  return os.path.join(os.path.expanduser(cache), 'tensorflow_datasets')


def is_generated(name: str) -> bool:
  """Whether TFDS name `name` ('date_normalisation/small:1.0.0') is one of these."""
  return name.split('/')[0].split(':')[0] in NAMES


class _SizedConfig(tfds.core.BuilderConfig):
  """A config that differs only in how many examples each split has."""

  def __init__(self, *, split_sizes, **kwargs):
    super().__init__(version=tfds.core.Version('1.0.0'), **kwargs)
    self.split_sizes = split_sizes


def _configs(full, small):
  return [_SizedConfig(name='full', description='The full dataset.',
                       split_sizes=full),
          _SizedConfig(name='small', description='A small version for quick '
                       'runs and tests.', split_sizes=small)]


class _MadeHere(tfds.core.GeneratorBasedBuilder):
  """Examples made by `_examples(rng, split, n)`, from a seed per split."""

  VERSION = tfds.core.Version('1.0.0')

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.split_sizes.items()}

  def _generate_examples(self, split, n):
    rng = random.Random(f'{self.name}/{split}')
    for i, example in enumerate(self._examples(rng, split, n)):
      yield i, example


# ---- match_results --------------------------------------------------------

N_TEAMS = 4
# Every pair of teams meets once; the features are the goals of each match
# in this order, home team's first.
FIXTURES = tuple((home, away) for home in range(N_TEAMS)
                 for away in range(home + 1, N_TEAMS))
TEAMS = [f'team_{i + 1}' for i in range(N_TEAMS)]


def champion(goals: Sequence[int] | np.ndarray) -> int:
  """The winner of a round robin whose match scores are `goals`.

  Args:
    goals: int[2 * len(FIXTURES)], each match's home and away goals.

  Returns:
    The index of the team with the most points (3 a win, 1 a draw); ties
    go to goal difference, then goals scored, then the lower index.
  """
  points, difference, scored = (np.zeros(N_TEAMS, int) for _ in range(3))
  for (home, away), (h, a) in zip(FIXTURES, np.reshape(goals, (-1, 2))):
    points[home] += 3 * (h > a) + (h == a)
    points[away] += 3 * (a > h) + (h == a)
    difference[home] += h - a
    difference[away] += a - h
    scored[home] += h
    scored[away] += a
  ranking = sorted(range(N_TEAMS),
                   key=lambda t: (-points[t], -difference[t], -scored[t], t))
  return ranking[0]


class MatchResults(_MadeHere):
  """Round-robin championships of 4 teams: 'scores' -> 'winner'."""

  BUILDER_CONFIGS = _configs(
      full={'train': 20_000, 'validation': 2_000, 'test': 2_000},
      small={'train': 2_000, 'validation': 500, 'test': 500})

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='Goals of the 6 matches of a 4-team round robin '
                    '(home, away for each) and the champion.',
        features=tfds.features.FeaturesDict({
            'scores': tfds.features.Tensor(shape=(2 * len(FIXTURES),),
                                           dtype=np.float32),
            'winner': tfds.features.ClassLabel(names=TEAMS)}))

  def _examples(self, rng, split, n):
    del split
    np_rng = np.random.default_rng(rng.getrandbits(32))
    for _ in range(n):
      goals = np.minimum(np_rng.poisson(1.4, 2 * len(FIXTURES)), 9)
      yield {'scores': goals.astype(np.float32), 'winner': champion(goals)}


# ---- date_normalisation ---------------------------------------------------

MONTHS = ('January February March April May June July August September '
          'October November December').split()
WEEKDAYS = 'Monday Tuesday Wednesday Thursday Friday Saturday Sunday'.split()
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)


def _ordinal(n):
  suffix = 'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(
      n % 10, 'th')
  return f'{n}{suffix}'


# Surface forms; numeric ones are day first (European), never month first,
# so that every source has one reading.
DATE_FORMATS = (
    lambda d: f'{d.day} {MONTHS[d.month - 1]} {d.year}',
    lambda d: f'{MONTHS[d.month - 1]} {d.day}, {d.year}',
    lambda d: f'{MONTHS[d.month - 1][:3]} {d.day}, {d.year}',
    lambda d: f'{d.day} {MONTHS[d.month - 1][:3]} {d.year}',
    lambda d: f'{d.day:02d}/{d.month:02d}/{d.year}',
    lambda d: f'{d.day}.{d.month}.{d.year}',
    lambda d: f'{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}',
    lambda d: f'{WEEKDAYS[d.weekday()][:3]} {d.day} {MONTHS[d.month - 1][:3]} {d.year}',
    lambda d: f'the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}',
    lambda d: f'{MONTHS[d.month - 1].lower()} {_ordinal(d.day)} {d.year}',
    lambda d: f'{d.day} {MONTHS[d.month - 1].upper()} {d.year}',
    lambda d: f'{d.year} {MONTHS[d.month - 1]} {d.day}',
)

# Dates go to splits by their day number, so no date of the validation or
# test split is seen in training, in any form.
_DATE_SPLIT_OF_REMAINDER = {0: 'test', 1: 'validation'}


def date_split(date: datetime.date) -> str:
  """The split ('train', 'validation' or 'test') `date` belongs to."""
  return _DATE_SPLIT_OF_REMAINDER.get(date.toordinal() % 10, 'train')


def date_example(rng: random.Random, split: str) -> tuple[str, str]:
  """(source, target) strings for a random date of `split`."""
  span = (LAST_DAY - FIRST_DAY).days
  while True:
    date = FIRST_DAY + datetime.timedelta(days=rng.randint(0, span))
    if date_split(date) == split:
      return rng.choice(DATE_FORMATS)(date), date.isoformat()


class DateNormalisation(_MadeHere):
  """Dates in 12 surface forms ('source') -> ISO 8601 ('target')."""

  BUILDER_CONFIGS = _configs(
      full={'train': 30_000, 'validation': 1_000, 'test': 1_000},
      small={'train': 3_000, 'validation': 300, 'test': 300})

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='Dates from 1900 to 2099 written in 12 forms, and their '
                    'ISO 8601 form; the splits hold disjoint dates.',
        features=tfds.features.FeaturesDict({
            'source': tfds.features.Text(), 'target': tfds.features.Text()}))

  def _examples(self, rng, split, n):
    for _ in range(n):
      source, target = date_example(rng, split)
      yield {'source': source, 'target': target}


# ---- shape_captions -------------------------------------------------------

IMAGE_SIZE = 32
COLOURS = {'red': (220, 40, 40), 'green': (40, 180, 60),
           'blue': (50, 80, 230), 'yellow': (235, 210, 40)}
SHAPES = ('square', 'circle', 'triangle')


def draw_shape(image: np.ndarray, shape: str, colour: str,
               centre: tuple[int, int], size: int) -> None:
  """Paints `shape` of side/diameter `size` at (row, col) `centre` in place."""
  rows, cols = np.mgrid[:image.shape[0], :image.shape[1]]
  dy, dx = rows - centre[0] + 0.5, cols - centre[1] + 0.5
  half = size / 2
  if shape == 'square':
    inside = (abs(dy) <= half) & (abs(dx) <= half)
  elif shape == 'circle':
    inside = dy ** 2 + dx ** 2 <= half ** 2
  else:  # a triangle pointing up
    inside = (abs(dy) <= half) & (abs(dx) <= (dy + half) / 2)
  image[inside] = COLOURS[colour]


def shape_scene(rng: random.Random) -> tuple[np.ndarray, str]:
  """(uint8[32, 32, 3] image, caption) of two shapes, one above or left of the other.

  The caption names the top (or left) shape first, so it is unique.
  """
  image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, np.uint8)
  things = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(2)]
  vertical = rng.random() < 0.5
  phrases = []
  for i, (colour, shape) in enumerate(things):
    size = rng.randint(11, 14)
    along = 8 + 16 * i + rng.randint(-1, 1)  # first in the first half
    across = rng.randint(8, IMAGE_SIZE - 8)
    centre = (along, across) if vertical else (across, along)
    draw_shape(image, shape, colour, centre, size)
    phrases.append(f'a {colour} {shape}')
  relation = 'above' if vertical else 'to the left of'
  return image, f'{phrases[0]} {relation} {phrases[1]}'


class ShapeCaptions(_MadeHere):
  """32x32 images of two coloured shapes ('image') and their 'captions'."""

  BUILDER_CONFIGS = _configs(
      full={'train': 12_000, 'validation': 500, 'test': 500},
      small={'train': 2_000, 'validation': 200, 'test': 200})

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='Two shapes (square, circle or triangle) in one of four '
                    'colours, one above or to the left of the other, with a '
                    'caption saying so; features as coco_captions\'.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            'captions': tfds.features.Sequence(
                {'text': tfds.features.Text()})}))

  def _examples(self, rng, split, n):
    del split
    for _ in range(n):
      image, caption = shape_scene(rng)
      yield {'image': image, 'captions': {'text': [caption]}}
