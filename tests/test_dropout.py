"""Tests of models/dropout.py: the rate drawn, the scaling, the modes."""

import jax
import numpy as np
import pytest

from models import dropout


@pytest.mark.parametrize('rate', [0.1, 0.5, 0.9])
def test_elements_are_dropped_at_the_rounded_rate_and_the_rest_scaled(rate):
  x = np.arange(1, 1 + 3 * 5 * 4001, dtype=np.float32).reshape(3, 5, 4001)
  got = np.asarray(dropout.drop(jax.random.PRNGKey(0), x, rate))
  kept_levels = round(256 * (1 - rate))
  keep = got != 0
  np.testing.assert_allclose(got[keep], x[keep] * 256 / kept_levels,
                             rtol=1e-6)
  # The share kept is a binomial count's: within 5 standard deviations.
  p = kept_levels / 256
  sd = np.sqrt(p * (1 - p) / x.size)
  assert abs(keep.mean() - p) < 5 * sd


def test_sizes_that_are_not_a_multiple_of_four_bytes_are_masked_whole():
  x = np.ones((7, 3), np.float32)  # 21 elements: 6 words, 3 bytes unused
  masks = [np.asarray(dropout.drop(jax.random.PRNGKey(seed), x, 0.5)) != 0
           for seed in range(200)]
  assert np.mean(masks, axis=0).min() > 0.3  # every element drawn, fairly
  assert np.mean(masks, axis=0).max() < 0.7


def test_different_keys_draw_different_masks_and_one_key_the_same():
  x = np.ones((64,), np.float32)
  first = dropout.drop(jax.random.PRNGKey(0), x, 0.5)
  np.testing.assert_array_equal(first, dropout.drop(jax.random.PRNGKey(0), x,
                                                    0.5))
  assert not np.array_equal(first, dropout.drop(jax.random.PRNGKey(1), x, 0.5))


def test_the_layer_drops_in_training_only():
  x = np.ones((4, 100), np.float32)
  train = dropout.ByteDropout(0.5, mode='train')
  evaluate = dropout.ByteDropout(0.5, mode='eval')
  assert (np.asarray(train(x, rng=jax.random.PRNGKey(0))) == 0).any()
  np.testing.assert_array_equal(evaluate(x), x)
  np.testing.assert_array_equal(dropout.ByteDropout(0.0)(x), x)


@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_a_rate_outside_zero_to_one_is_refused(rate):
  with pytest.raises(ValueError, match='dropout rate'):
    dropout.ByteDropout(rate)
