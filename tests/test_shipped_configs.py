"""Every shipped config (configs/*.gin) trains a step on data of its dataset.

Each config trains in this process, one after the other (gin's config is
replaced at each train_py.main), with its model and batches shrunk by gin
bindings, for one step: the step, the evaluation and the checkpoint run the
config's real pipeline, model and optimizer. Datasets that need a download
are replaced by random examples of their real feature spec
(tests/mock_data_run.py); the generated ones by their `small` configs.
"""

import glob
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys
from unittest import mock

import gin
import jax
import numpy as np
import pytest
import trax
from trax import layers as tl
from trax import shapes

from rnn_toolkit import configurables
from rnn_toolkit import Run
from rnn_toolkit.training import trainer
import mock_data_run
from conftest import REPO_ROOT, committed_steps
from data import generated
import models
from models import elman_kernel
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


@pytest.fixture(scope='module')
def trained(dataset_bindings, tmp_path_factory):
  """(config, *bindings) -> the run directory of `config` trained one
  step, shrunk, with gin `bindings` added.

  Each trains once in the module (make test runs a file's tests in one
  worker), when a test first asks for it.
  """
  runs = {}

  def run_of(config, *bindings):
    if (config, *bindings) not in runs:
      inputs, dataset, model = _what_it_trains(config)
      output_dir = str(tmp_path_factory.mktemp('run') / 'run')
      params = [*dataset_bindings(inputs.name, dataset),
                *_shrunk(model, SMALL_MODEL), *_shrunk(inputs, SMALL_INPUTS),
                'train_and_evaluate.n_eval_batches = 1', *bindings]
      train_py.main(['--gin_file', config, '--output_dir', output_dir,
                     '--steps', '1',
                     *[a for p in params for a in ('--gin_param', p)]])
      runs[(config, *bindings)] = output_dir
    return runs[(config, *bindings)]
  return run_of


@pytest.mark.parametrize('config', CONFIGS,
                         ids=[os.path.basename(c) for c in CONFIGS])
def test_shipped_config_trains_a_step(config, trained):
  inputs, _, model = _what_it_trains(config)
  output_dir = trained(config)
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


# Custom calls that mean CPU-only code: the toolkit's kernels, and LAPACK
# and the like as XLA:CPU's JAX lowerings call them.
CPU_CUSTOM_CALL = re.compile(r'custom_call @(toolkit_\w+|lapack_\w+|\w*cpu\w*)')


def _steps_of(run):
  """name -> (jitted step, its arguments, the model): the training step (the loss and
  its gradients), the evaluation step and, for a generating model, the
  predict-mode step (one token in, its state carried), of the run's model
  as its config builds it."""
  batch = tuple(next(iter(run.inputs.eval_batches(run.vocab))))
  model_input = batch[0] if len(batch) == 3 else batch[:-2]
  signature = shapes.signature(model_input)
  rng = jax.random.PRNGKey(0)
  losses = {}
  for mode in ('train', 'eval'):
    model = run.model(mode, signature)
    model = tl.Serial(model, trainer.loss_and_accuracy(model)[0]())
    def loss(weights, state, batch, model=model):
      return model.pure_fn(batch, weights, state, rng)[0]
    losses[mode] = loss, model
  optimizer = _optimizer_of_the_run()
  train_model, eval_model = losses['train'][1], losses['eval'][1]
  slots, opt_params = optimizer.tree_init(train_model.weights)

  def train(weights, slots, state, batch):
    value, gradients = jax.value_and_grad(losses['train'][0])(
        weights, state, batch)
    weights, slots, _ = optimizer.tree_update(0, gradients, weights, slots,
                                              opt_params)
    return value, weights, slots
  steps = {
      'train': (jax.jit(train), (train_model.weights, slots,
                                 train_model.state, batch), train_model),
      'eval': (jax.jit(losses['eval'][0]),
               (eval_model.weights, eval_model.state, batch), eval_model)}
  if run.task.name == 'language_model':
    model = run.model('predict', shapes.ShapeDtype((2, 1), np.int32),
                      dimensions={'vocab_size': run.vocab.size})
    step_input = np.zeros((2, 1), np.int32)
  elif run.task.generates:
    model = run.generator(2)._model  # what decoding runs, at two rows
    context = run.inputs.context_signature()
    step_input = (np.zeros((2, *context.shape[1:]), context.dtype),
                  np.zeros((2, 1), np.int32))
  else:
    return steps
  def predict(weights, state, tokens, model=model):
    return model.pure_fn(tokens, weights, state, rng)
  steps['predict'] = (jax.jit(predict),
                      (model.weights, model.state, step_input), model)
  return steps


@pytest.mark.parametrize('config', CONFIGS,
                         ids=[os.path.basename(c) for c in CONFIGS])
def test_shipped_config_lowers_for_gpu_and_tpu(config, trained):
  """Traced on this CPU machine, with the CPU kernels chosen wherever they
  may run, each step of the config's model lowers for CUDA and TPU, and
  holds no CPU-only custom call there: what a GPU or TPU would compile."""
  run = Run.load(trained(config))
  with mock.patch.dict(os.environ, TOOLKIT_RNN_KERNEL='kernel'):
    for name, (step, args, model) in _steps_of(run).items():
      exported = jax.export.export(step, platforms=('cuda', 'tpu'))(*args)
      assert exported.platforms == ('cuda', 'tpu')
      cpu_only = CPU_CUSTOM_CALL.findall(exported.mlir_module())
      assert not cpu_only, (name, cpu_only)
      if name == 'train':
        # Compiled here, the same trace holds the kernels wherever the
        # model has an Elman layer: the check above saw the steps that run
        # them on a CPU.
        compiled = step.lower(*args).compile().as_text()
        assert ('toolkit_elman' in compiled) == (
            _has_elman_layer(model) and elman_kernel.available()), name


def _optimizer_of_the_run():
  """The optimizer the run's config (gin's now) trains with."""
  try:
    return gin.query_parameter(
        'train_and_evaluate.optimizer').scoped_configurable_fn()
  except ValueError:  # not bound: train_and_evaluate's default
    return trax.optimizers.Adam()


def _has_elman_layer(layer):
  """Whether `layer` is, or holds at any depth, an ElmanRNN."""
  return isinstance(layer, models.ElmanRNN) or any(
      _has_elman_layer(sublayer) for sublayer in layer.sublayers)


# What the served example may not import: it runs on jax and numpy alone.
NOT_FOR_SERVING = ('trax', 'tensorflow', 'tensorflow_datasets', 'gin',
                   'rnn_toolkit', 'models', 'data')
SERVE_EXAMPLE = os.path.join(REPO_ROOT, 'docs', 'serve_exported.py')


def _serve(artifact, *flags, cwd):
  """The lines docs/serve_exported.py prints for `flags`, run where none of
  NOT_FOR_SERVING can be imported."""
  code = '\n'.join([
      'import runpy, sys',
      f'for name in {NOT_FOR_SERVING!r}: sys.modules[name] = None',
      f'sys.argv = {[SERVE_EXAMPLE, artifact, *flags]!r}',
      f'runpy.run_path({SERVE_EXAMPLE!r}, run_name="__main__")'])
  done = subprocess.run([sys.executable, '-c', code], cwd=cwd, text=True,
                        capture_output=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def _serve_example():
  """docs/serve_exported.py as a module."""
  spec = importlib.util.spec_from_file_location('serve_exported',
                                                SERVE_EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _items_to_predict(run):
  """Inputs for the run's --predict or --translate: words of its
  vocabulary, unknown words, capitals and punctuation; or a vector
  classifier's numbers."""
  if run.task.name == 'vector_classification':
    n = run.inputs.n_features
    return [' '.join(str(0.5 * i - k) for i in range(n)) for k in range(3)]
  known = next(getattr(run.vocab, key) for key in ('words', 'tokens')
               if hasattr(run.vocab, key))
  separator = '' if getattr(run.vocab, 'level', 'word') == 'char' else ' '
  words = known[:6]
  return [separator.join(words), f'{words[0].upper()}, never-seen!',
          separator.join(reversed(words[:4]))]


def _images(run, directory):
  """(PNG files of two random images, the same images as evaluate.py
  reads them, saved with numpy.save)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = run.inputs.image_size
  pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3),
                                             np.uint8)
  pngs, arrays = [], []
  for i, image in enumerate(pixels):
    png, array = directory / f'image{i}.png', directory / f'image{i}.npy'
    png.write_bytes(tf.io.encode_png(image).numpy())
    np.save(array, run.inputs.load_image(str(png)))
    pngs.append(str(png))
    arrays.append(str(array))
  return pngs, arrays


# Besides the shipped configs: a bfloat16 language model, whose state
# arrays are bfloat16 (a dtype numpy alone can't name).
EXPORTED = [(c,) for c in CONFIGS] + [
    ('configs/char_rnn_tiny.gin', "RNNLanguageModel.cell = 'gru'",
     "RNNLanguageModel.compute_dtype = 'bfloat16'")]


@pytest.mark.parametrize('config', EXPORTED,
                         ids=[' '.join([os.path.basename(c[0]), *c[1:]])
                              for c in EXPORTED])
def test_shipped_config_exports_and_serves_without_the_toolkit(
    config, trained, tmp_path):
  """The exported artifact of each config's model, loaded with jax and
  numpy alone by the example in docs/, prints what evaluate.py prints
  (translators and captioners: with --beam_width 1, the example's greedy
  decoding)."""
  run = Run.load(trained(*config))
  artifact = str(tmp_path / 'model.jax')
  description = run.export(artifact)
  assert description['platforms'] == ['cpu', 'cuda', 'tpu']
  if any('bfloat16' in binding for binding in config[1:]):
    assert 'bfloat16' in {s['dtype'] for s in description['state']}
  if run.task.name in ('classification', 'tagging'):
    # The example's ids are the pipeline's, characters included: capitals,
    # a character no training word has, a word longer than any limit.
    texts = [*_items_to_predict(run),
             'Ünknown ☃-Supercalifragilisticexpialidocious-Flight word']
    served_ids = _serve_example().ids_of(texts, description)
    np.testing.assert_array_equal(served_ids, run.inputs.encode(
        run.vocab, texts)[:, :served_ids.shape[1]])
  if run.task.name == 'language_model':
    expected = ''.join(f'--- sample {i + 1} ---\n{text}\n\n'
                       for i, text in enumerate(run.generate(
                           'ab', n_samples=2, length=12, temperature=0.8,
                           seed=4)))
    served = _serve(artifact, '--generate', '2', '--prompt', 'ab',
                    '--length', '12', '--temperature', '0.8', '--seed', '4',
                    cwd=tmp_path)
  elif run.task.name == 'captioning':
    pngs, arrays = _images(run, tmp_path)
    expected = ''.join(f'{array}\t{caption}\n' for array, caption in
                       zip(arrays, run.caption(pngs, beam_width=1)))
    served = _serve(artifact, *[a for path in arrays
                                for a in ('--caption', path)], cwd=tmp_path)
  else:
    items = _items_to_predict(run)
    options = {'beam_width': 1} if run.task.generates else {}
    flag = '--translate' if run.task.generates else '--predict'
    expected = ''.join(f'{run.task.show(item, result)}\n' for item, result
                       in zip(items, run.apply(items, **options)))
    served = _serve(artifact, *[a for item in items for a in (flag, item)],
                    cwd=tmp_path)
  assert served == expected
