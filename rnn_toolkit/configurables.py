"""Registers the toolkit's building blocks with gin, all in this one module.

Model and data code stays free of gin; config files refer to the names
registered here (`RNNLanguageModel.d_model = 512`). trax registers its own
optimizers and learning-rate schedules (`@trax.optimizers.Adam`,
`@multifactor`), which configs use directly.
"""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import contextlib
import difflib
import inspect
import os
import re
from typing import Iterator, Sequence

import gin
import gin.config_parser

import data
import models
from models import decoding
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation import dynamic
from rnn_toolkit.storage import checkpoints

# The checkout (configs/ is beside rnn_toolkit/): `include` lines and
# --gin_file paths are also looked up there.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

gin.external_configurable(models.RNNLanguageModel, module='models')
gin.external_configurable(models.StackedElmanRNN, module='models')
gin.external_configurable(models.RNNClassifier, module='models')
gin.external_configurable(models.RNNTagger, module='models')
gin.external_configurable(models.VectorClassifier, module='models')
gin.external_configurable(models.RNNSeq2Seq, module='models')
gin.external_configurable(models.RNNCaptioner, module='models')
gin.external_configurable(data.CharLMInputs, module='data')
gin.external_configurable(data.TextClassificationInputs, module='data')
gin.external_configurable(data.TaggingInputs, module='data')
gin.external_configurable(data.FeatureVectorInputs, module='data')
gin.external_configurable(data.TranslationInputs, module='data')
gin.external_configurable(data.CaptioningInputs, module='data')
# train.py and evaluate.py open checkpoints through this, so that
# `Checkpoints.keep_last = 5` reaches both.
Checkpoints = gin.external_configurable(
    checkpoints.Checkpoints, module='checkpoints',
    denylist=['output_dir', 'read_only'])

# evaluate.py decodes with these settings; train.py records them in the
# run's config.gin.
DecodingSettings = gin.external_configurable(decoding.DecodingSettings,
                                             module='decoding')
# Language models: what evaluate.py --dynamic_eval does, unless its flags say.
DynamicEvaluation = gin.external_configurable(dynamic.dynamic_evaluation,
                                              module='evaluation')

# Models build their recurrent layers through models.rnn.CELLS; routing the
# 'elman' entry through the gin-wrapped class makes bindings such as
# `ElmanRNN.activation = 'relu'` reach the layers inside the models.
_configurable_elman = gin.external_configurable(models.ElmanRNN,
                                                module='models')
models.rnn.CELLS['elman'] = (
    lambda n_units, mode, use_mask=False, **options: _configurable_elman(
        n_units, use_mask=use_mask, mode=mode, **options))


def parse(gin_files: Sequence[str], gin_params: Sequence[str] = ()) -> None:
  """Parses config files and bindings, reporting mistakes as UsageError.

  `include` lines and `--gin_file` paths are looked up in the current
  directory first and then in the repository root, so
  `include 'configs/x.gin'` works from anywhere.
  """
  _register_the_trainer()
  gin.clear_config()  # The config is these files and bindings, nothing before.
  gin.add_config_file_search_path(REPO_ROOT)
  for path in gin_files:
    if not (os.path.exists(path) or
            os.path.exists(os.path.join(REPO_ROOT, path))):
      raise UsageError(f'Config file {path!r} does not exist. Pass the path of '
                       f'a .gin file, e.g. --gin_file '
                       f'configs/char_rnn_shakespeare.gin.')
  with _parse_errors_as_usage_errors():
    gin.parse_config_files_and_bindings(
        [p if os.path.exists(p) else os.path.join(REPO_ROOT, p)
         for p in gin_files], list(gin_params))


def parse_run_config(path: str, gin_params: Sequence[str] = ()) -> str:
  """Parses a run directory's config.gin as data: bindings only.

  A run directory may come from someone else. gin would run a config's
  `import` lines and read the files its `include` lines name, so those are
  refused before gin sees the text; train.py writes neither (its config.gin
  is the operative config, every value spelled out).

  Returns:
    The file's text, as parsed.

  Raises:
    UsageError: the file holds import or include lines, or doesn't parse.
  """
  with open(path, encoding='utf-8') as f:
    text = f.read()
  executable = _import_and_include_lines(text)
  if executable:
    shown = '; '.join(f'line {line}: `{statement}`'
                      for line, statement in executable[:3])
    raise UsageError(
        f'{path} holds lines that would run code or read other files '
        f'({shown}). A run directory is read as data, so nothing of it was '
        f'run. train.py never writes such lines: the file was changed by '
        f'hand or comes from elsewhere. Remove them if you trust the rest, '
        f'or use the run\'s original config.gin.')
  _register_the_trainer()
  gin.clear_config()
  with _parse_errors_as_usage_errors():
    gin.parse_config(text)
    gin.parse_config(list(gin_params))
  return text


def _register_the_trainer() -> None:
  """Registers `experiment` and `train_and_evaluate`, which every config binds.

  They are defined with the training code, which imports this module; so
  they are registered on the first parse rather than at import.
  """
  from rnn_toolkit.training import trainer  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


class _AnyReference(gin.config_parser.ParserDelegate):
  """Accepts every @reference and %macro: only the statements' kinds matter."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return scoped_configurable_name

  def macro(self, macro_name):
    return macro_name


def _import_and_include_lines(text):
  """[(line number, statement)] of the import and include lines of `text`."""
  found = []
  with _parse_errors_as_usage_errors():
    for statement in gin.config_parser.ConfigParser(text, _AnyReference()):
      if isinstance(statement, gin.config_parser.ImportStatement):
        found.append((statement.location.line_num, f'import {statement.module}'))
      elif isinstance(statement, gin.config_parser.IncludeStatement):
        found.append((statement.location.line_num,
                      f'include {statement.filename!r}'))
  return found


@contextlib.contextmanager
def _parse_errors_as_usage_errors():
  try:
    yield
  except (ValueError, KeyError, IOError, SyntaxError) as e:
    raise UsageError(
        f'The gin config could not be parsed: {_first_line(e)}.'
        f'{_closest_names(str(e))} Check the spelling of configurable and '
        f'parameter names in your --gin_file and --gin_param values (for '
        f'example --gin_param "RNNLanguageModel.d_model = 256").') from None


def _closest_names(message):
  """' Did you mean ...?' for gin's unknown-configurable or -parameter error."""
  # gin has no public listing of what is registered; its registry it is.
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  unknown = re.search(r"No configurable matching '([^']+)'", message)
  param = re.search(r"Configurable '([^']+)' doesn't have a parameter named "
                    r"'([^']+)'", message)
  if unknown:
    name, known = unknown.group(1), {c.name for _, c in registry.items()}
  elif param:
    configurable = registry.get_match(param.group(1))
    name = param.group(2)
    known = set(inspect.signature(configurable.wrapped).parameters) - set(
        configurable.denylist or ())
  else:
    return ''
  close = difflib.get_close_matches(name.split('.')[-1], sorted(known), n=3)
  return f' Did you mean {" or ".join(map(repr, close))}?' if close else ''


def config_text() -> str:
  """The parsed config, as checkpoints record it to detect a changed config.

  It is every binding given, known before anything runs (the operative
  config is known only once training has started). The number of steps is
  left out: it says when to stop, not how to train, so extending a run
  with --steps is not a change.
  """
  return '\n'.join(line for line in gin.config_str().splitlines()
                   if not re.match(r'train_and_evaluate\.n_steps\s*=', line))


@contextlib.contextmanager
def required_bindings_as_usage_errors() -> Iterator[None]:
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
