"""Every shipped config (configs/*.gin) trains a step on data of its dataset.

Each config trains in this process, one after the other (gin's config is
replaced at each train_py.main), with its model and batches shrunk by gin
bindings, for one step: the step, the evaluation and the checkpoint run the
config's real pipeline, model and optimizer. Datasets that need a download
are replaced by random examples of their real feature spec
(tests/mock_data_run.py); the generated ones by their `small` configs.
"""

import glob
import inspect
import json
import math
import os

import gin
import pytest

from rnn_toolkit import configurables
import mock_data_run
from conftest import REPO_ROOT, committed_steps
from data import generated
import train as train_py

CONFIGS = sorted(os.path.relpath(path, REPO_ROOT) for path in
                 glob.glob(os.path.join(REPO_ROOT, 'configs', '*.gin')))

# What a config's model and inputs are shrunk to, where they take it.
SMALL_MODEL = {'d_model': 8, 'n_units': 8, 'conv_channels': (4,)}
SMALL_INPUTS = {'batch_size': 4, 'seq_len': 16, 'max_len': 32,
                'shuffle_buffer': 16}


def test_every_config_is_found():
  # ten when written; a config added later is trained below as well
  assert len(CONFIGS) >= 10, CONFIGS


def _what_it_trains(config):
  """(inputs configurable, its dataset, model configurable) of `config`."""
  configurables.parse([config])
  inputs = gin.query_parameter('experiment.inputs').configurable
  model = gin.query_parameter('experiment.model').configurable
  return inputs, gin.query_parameter(f'{inputs.name}.dataset'), model


def _shrunk(configurable, sizes):
  """Bindings of `sizes` for the parameters `configurable` has of them."""
  params = inspect.signature(configurable.wrapped).parameters
  return [f'{configurable.name}.{name} = {value!r}'
          for name, value in sizes.items() if name in params]


@pytest.fixture(scope='module')
def dataset_bindings(mock_dataset, generated_dir):
  """dataset name -> bindings that make inputs `key` read data of its features.

  Each dataset's data is made once in the session, when first read.
  """
  def bindings(key, dataset):
    if generated.is_generated(dataset):
      name, where = f'{dataset.split("/")[0]}/small', generated_dir
    else:
      assert dataset in mock_data_run.SPLITS, (
          f'add the split names of {dataset} to SPLITS in '
          f'tests/mock_data_run.py')
      name, where = mock_dataset(dataset)
    return [f"{key}.dataset = '{name}'", f"{key}.data_dir = '{where}'"]
  return bindings


@pytest.mark.parametrize('config', CONFIGS,
                         ids=[os.path.basename(c) for c in CONFIGS])
def test_shipped_config_trains_a_step(config, dataset_bindings, tmp_path):
  inputs, dataset, model = _what_it_trains(config)
  output_dir = str(tmp_path / 'run')
  params = [*dataset_bindings(inputs.name, dataset),
            *_shrunk(model, SMALL_MODEL), *_shrunk(inputs, SMALL_INPUTS),
            'train_and_evaluate.n_eval_batches = 1']
  train_py.main(['--gin_file', config, '--output_dir', output_dir,
              '--steps', '1', *[a for p in params for a in ('--gin_param', p)]])
  assert committed_steps(output_dir) == [1]
  with open(os.path.join(output_dir, 'metrics.jsonl')) as f:
    [record] = [json.loads(line) for line in f]
  assert record['step'] == 1
  assert math.isfinite(record['train/loss'])
  assert math.isfinite(record['eval/loss'])
  # The run used the config's own model and pipeline, shrunk.
  with open(os.path.join(output_dir, 'config.gin')) as f:
    saved = f.read()
  assert f'experiment.model = @{model.name}' in saved
  assert f'experiment.inputs = @{inputs.name}()' in saved
