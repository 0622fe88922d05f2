"""Registers the toolkit's building blocks with gin, all in this one module.

Model and data code stays free of gin; config files refer to the names
registered here (`RNNLanguageModel.d_model = 512`). trax registers its own
optimizers and learning-rate schedules (`@trax.optimizers.Adam`,
`@multifactor`), which configs use directly.
"""

import contextlib
import os

import gin

import trax_compat  # noqa: F401  (must precede the first trax import)
import data
import models
from errors import UsageError

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))

gin.external_configurable(models.RNNLanguageModel, module='models')
gin.external_configurable(models.StackedElmanRNN, module='models')
gin.external_configurable(data.CharLMInputs, module='data')

# Models build their recurrent layers through models.rnn.CELLS; routing the
# 'elman' entry through the gin-wrapped class makes bindings such as
# `ElmanRNN.activation = 'relu'` reach the layers inside the models.
_configurable_elman = gin.external_configurable(models.ElmanRNN,
                                                module='models')
models.rnn.CELLS['elman'] = (
    lambda n_units, mode: _configurable_elman(n_units, mode=mode))


def parse(gin_files, gin_params=()):
  """Parses config files and bindings, reporting mistakes as UsageError.

  `include` lines and `--gin_file` paths are looked up in the current
  directory first and then in the repository root, so
  `include 'configs/x.gin'` works from anywhere.
  """
  gin.add_config_file_search_path(REPO_ROOT)
  for path in gin_files:
    if not (os.path.exists(path) or
            os.path.exists(os.path.join(REPO_ROOT, path))):
      raise UsageError(f'Config file {path!r} does not exist. Pass the path of '
                       f'a .gin file, e.g. --gin_file '
                       f'configs/char_rnn_shakespeare.gin.')
  try:
    gin.parse_config_files_and_bindings(
        [p if os.path.exists(p) else os.path.join(REPO_ROOT, p)
         for p in gin_files], list(gin_params))
  except (ValueError, KeyError, IOError, SyntaxError) as e:
    raise UsageError(
        f'The gin config could not be parsed: {_first_line(e)}. Check the '
        f'spelling of configurable and parameter names in your --gin_file '
        f'and --gin_param values (for example '
        f'--gin_param "RNNLanguageModel.d_model = 256").') from None


@contextlib.contextmanager
def required_bindings_as_usage_errors():
  """Turns gin's error for a missing `gin.REQUIRED` value into a UsageError."""
  try:
    yield
  except RuntimeError as e:
    if 'Required bindings' not in str(e):
      raise
    raise UsageError(f'{_first_line(e)}. Add the missing bindings to your '
                     f'gin config (see configs/char_rnn_shakespeare.gin).'
                     ) from None


def _first_line(error):
  return ' '.join(str(error).strip().splitlines()[0].split()).rstrip('.')
