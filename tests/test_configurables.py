"""Tests of gin registration and config parsing."""

import glob
import os

import gin
import numpy as np
import pytest
from trax import shapes

from rnn_toolkit import configurables
import models
from rnn_toolkit.errors import UsageError


def _elman_layers(layer):
  found = [layer] if isinstance(layer, models.ElmanRNN) else []
  for sublayer in layer.sublayers:
    found += _elman_layers(sublayer)
  return found


def test_elman_bindings_reach_the_layers_inside_the_language_model():
  configurables.parse([], ["ElmanRNN.activation = 'identity'",
                           'RNNLanguageModel.d_model = 4',
                           'RNNLanguageModel.n_layers = 2'])
  model = gin.get_configurable('RNNLanguageModel')(vocab_size=7)
  layers = _elman_layers(model)
  assert len(layers) == 2
  x = np.random.default_rng(0).normal(size=(1, 3, 4)).astype(np.float32)
  layers[0].init(shapes.signature(x))
  w_xh, w_hh, b = [np.asarray(w) for w in layers[0].weights]
  h1 = x[0, 0] @ w_xh + b          # identity activation, h0 = 0
  np.testing.assert_allclose(np.asarray(layers[0](x))[0, 0], h1, atol=1e-5)


def test_every_config_in_the_repository_parses():
  """A quick check; tests/test_shipped_configs.py trains each for a step."""
  paths = sorted(glob.glob(os.path.join(configurables.REPO_ROOT, 'configs',
                                        '*.gin')))
  assert len(paths) >= 10
  for path in paths:
    configurables.parse([path])
    for binding in ('experiment.inputs', 'experiment.model'):
      assert isinstance(gin.query_parameter(binding),
                        gin.config.ConfigurableReference), (path, binding)


def test_tiny_config_overrides_the_main_one():
  configurables.parse(['configs/char_rnn_tiny.gin'])
  assert gin.query_parameter('RNNLanguageModel.d_model') == 32
  assert gin.query_parameter('CharLMInputs.dataset') == 'tiny_shakespeare'


@pytest.mark.parametrize('binding, word', [
    ('RNNLanguageModel.d_modle = 3', 'd_modle'),
    ('NoSuchThing.x = 3', 'NoSuchThing'),
    ('RNNLanguageModel.d_model = = 3', 'Unable to parse'),
])
def test_bad_bindings_raise_usage_error(binding, word):
  with pytest.raises(UsageError, match=word):
    configurables.parse([], [binding])
