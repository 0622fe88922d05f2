"""The generated datasets say what they claim: checked from their raw content."""

import datetime
import random

import numpy as np

import data
from conftest import raw_examples
from data import generated


def test_champion_follows_points_then_goal_difference_then_goals():
  # Matches in FIXTURES order: 1-2, 1-3, 1-4, 2-3, 2-4, 3-4 (home first).
  all_draws = [1, 1] * 6
  assert generated.champion(all_draws) == 0  # every tie: the lowest index
  # Team 4 wins its three matches; the others draw among themselves.
  four_wins = [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 2]
  assert generated.champion(four_wins) == 3
  # 1-2 0:1, 1-3 0:5, 1-4 1:0, 2-3 1:0, 2-4 0:2, 3-4 3:0: points 3, 6, 6,
  # 3; teams 2 and 3 tie, and team 3's goal difference (+7) beats 2's (0).
  tied = [0, 1, 0, 5, 1, 0, 1, 0, 0, 2, 3, 0]
  assert generated.champion(tied) == 2
  # Equal points and difference: the one with more goals scored wins.
  # 1-2 2:2, 3-4 2:2, others 0:0 -> all 3 points, all difference 0;
  # teams 1-4 scored 2, 2, 2, 2 -> lowest index; then 1-2 3:3 -> 3, 3, 2, 2.
  assert generated.champion([3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2]) == 0
  assert generated.champion([2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3]) == 2


def test_one_day_in_every_surface_form():
  wednesday = datetime.date(2026, 11, 25)  # the day before 2026-11-26, a Thursday
  forms = [form(wednesday) for form in generated.DATE_FORMATS]
  assert forms == [
      '25 November 2026', 'November 25, 2026', 'Nov 25, 2026', '25 Nov 2026',
      '25/11/2026', '25.11.2026', 'Wednesday, 25 November 2026',
      'Wed 25 Nov 2026', 'the 25th of November 2026', 'november 25th 2026',
      '25 NOVEMBER 2026', '2026 November 25']
  first, second, third, eleventh, twenty_second = (
      generated.DATE_FORMATS[8](datetime.date(2026, 1, d))
      for d in (1, 2, 3, 11, 22))
  assert (first, second, third, eleventh, twenty_second) == (
      'the 1st of January 2026', 'the 2nd of January 2026',
      'the 3rd of January 2026', 'the 11th of January 2026',
      'the 22nd of January 2026')


def test_date_splits_hold_disjoint_dates(generated_dir):
  targets = {split: {ex['target'] for ex in raw_examples(
      'date_normalisation/small', split, generated_dir)}
             for split in ('train', 'validation', 'test')}
  assert not targets['train'] & targets['validation']
  assert not targets['train'] & targets['test']
  for ex in raw_examples('date_normalisation/small', 'test', generated_dir)[:50]:
    iso = datetime.date.fromisoformat(ex['target'].decode())
    assert str(iso.year) in ex['source'].decode()


def _described_shape(pixels):
  """(colour, shape) of the one shape in uint8[h, w, 3] `pixels`, from pixels alone."""
  painted = np.any(pixels != 255, axis=-1)
  rows, cols = np.nonzero(painted)
  mean = pixels[painted].mean(axis=0)
  colour = min(generated.COLOURS, key=lambda c: np.sum(
      (np.array(generated.COLOURS[c]) - mean) ** 2))
  box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
  fill = painted.sum() / box  # square 1, circle about pi/4, triangle 1/2
  shape = 'square' if fill > 0.9 else 'circle' if fill > 0.65 else 'triangle'
  return colour, shape


def test_shape_captions_describe_the_pixels():
  rng = random.Random(0)
  for _ in range(200):
    image, caption = generated.shape_scene(rng)
    words = caption.split()
    vertical = words[3] == 'above'
    half = generated.IMAGE_SIZE // 2
    first = image[:half] if vertical else image[:, :half]
    second = image[half:] if vertical else image[:, half:]
    assert [f'a {c} {s}' for c, s in map(_described_shape, (first, second))] \
        == [' '.join(words[:3]), ' '.join(words[-3:])]


def test_match_results_labels_are_the_champions(generated_dir):
  examples = raw_examples('match_results/small', 'validation', generated_dir)
  assert len(examples) == 500
  for ex in examples:
    assert ex['winner'] == generated.champion(ex['scores'].astype(int))
  winners = np.bincount([ex['winner'] for ex in examples], minlength=4)
  assert winners.min() > 80  # no team is a near-certain guess


def test_generated_datasets_are_prepared_in_the_toolkit_cache(
    tmp_path, monkeypatch):
  monkeypatch.setenv('TOOLKIT_CACHE_DIR', str(tmp_path))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'read_only_elsewhere'))
  builder = data.get_builder('match_results/small', download=False)
  assert builder.data_dir.startswith(str(tmp_path / 'tensorflow_datasets'))
