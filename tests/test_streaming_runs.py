"""train.py and evaluate.py on streams (CharLMInputs.streaming), as a user
runs them on a tiny TFDS dataset."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from trax import shapes

from conftest import fails_with
from conftest import run_script
from conftest import snapshot
from conftest import tiny_data_params
from rnn_toolkit.evaluation import dynamic
from rnn_toolkit.evaluation import streaming
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.storage import run_dir
from rnn_toolkit.token_ids import FIRST_CHAR_ID
import evaluate as evaluate_py
import train as train_py

TINY = 'configs/char_rnn_tiny.gin'
STREAMING = ('--gin_param', 'CharLMInputs.streaming = True')


def _args(output_dir, data_dir, *params):
  return ['--gin_file', TINY, '--output_dir', output_dir,
          *tiny_data_params(data_dir), *STREAMING, *params]


def _metrics(output_dir):
  with open(os.path.join(output_dir, run_dir.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def streaming_run(tiny_data_dir, tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('streaming'))
  result = run_script('train.py', *_args(output_dir, tiny_data_dir))
  assert result.returncode == 0, result.stderr
  return output_dir


def test_evaluation_during_training_reports_streaming_and_windowed(
    streaming_run):
  last = _metrics(streaming_run)[-1]
  assert last['step'] == 20
  loss = last['eval/loss']
  assert last['eval/bits_per_char'] == pytest.approx(loss / math.log(2))
  assert last['eval/perplexity'] == pytest.approx(math.exp(loss))
  assert 0 < last['eval/windowed_loss'] < 10
  assert loss != last['eval/windowed_loss']


def test_evaluate_gives_the_training_figures(streaming_run):
  evaluate_py.main(['--output_dir', streaming_run])
  with open(os.path.join(streaming_run, 'eval_validation.json')) as f:
    result = json.load(f)
  last = _metrics(streaming_run)[-1]
  for name in ('loss', 'windowed_loss', 'bits_per_char', 'perplexity'):
    assert result[name] == pytest.approx(last[f'eval/{name}'], rel=1e-5), name


def test_the_checkpoint_holds_each_streams_carried_state(streaming_run):
  run = Run.load(streaming_run, 'latest')
  carried = [a for a in run.state.state if np.ndim(a) == 2]
  assert [a.shape for a in carried] == [(8, 32)]  # batch rows, units
  assert np.all(np.abs(carried[0]).max(axis=1) > 0)  # every row is warm


@pytest.mark.parametrize('binding, words', [
    ('SEQ_LEN = 5000', ('stream window', 'longer than', 'Nothing was written')),
    ('BATCH_SIZE = 4096', ('4096 streams', 'more than the', 'characters')),
    ('BATCH_SIZE = 64', ('fewer than the 64 streams',)),
])
def test_streams_the_split_cannot_fill_are_refused(capsys, tmp_path,
                                                   tiny_data_dir, binding,
                                                   words):
  output_dir = str(tmp_path / 'run')
  fails_with(capsys, train_py.main,
             _args(output_dir, tiny_data_dir, '--gin_param', binding), *words)
  assert not os.path.exists(output_dir)


def test_a_model_that_cannot_carry_state_is_refused(capsys, tmp_path,
                                                   tiny_data_dir):
  output_dir = str(tmp_path / 'run')
  fails_with(capsys, train_py.main,
             _args(output_dir, tiny_data_dir, '--gin_param',
                   'experiment.model = @models.RNNClassifier',
                   '--gin_param', 'RNNClassifier.bidirectional = True'),
             'RNNClassifier', 'bidirectional', 'stateful')
  assert not os.path.exists(output_dir)


def test_greedy_generation_continues_the_prompts_stream(streaming_run):
  """The generating model (predict mode, fed one character at a time)
  picks what the stateful model, reading prompt and sample as one stream,
  finds likeliest at each step."""
  run = Run.load(streaming_run)
  prompt = 'ROMEO:\nBut'
  sample = run.generate(prompt, length=12, temperature=0.0)[0]
  ids = np.array([run.vocab.encode(sample)], np.int32)
  previous = np.concatenate([np.zeros((1, 1), np.int32), ids[:, :-1]], 1)
  model = run.model('eval', (shapes.ShapeDtype(ids.shape, np.int32),
                             shapes.ShapeDtype((1,), np.float32)))
  log_probs, _ = model.pure_fn((previous, np.ones(1, np.float32)),
                               model.weights, model.state,
                               jax.random.PRNGKey(0))
  # Padding and the unknown-character id are not text: never generated.
  text_ids = np.asarray(log_probs)[..., FIRST_CHAR_ID:]
  greedy = FIRST_CHAR_ID + text_ids.argmax(-1)[0, len(prompt):]
  np.testing.assert_array_equal(greedy, ids[0, len(prompt):])


def _stream_of_one(run, split='validation'):
  model = run.model('eval', (shapes.ShapeDtype((1, run.inputs.seq_len),
                                               np.int32),
                             shapes.ShapeDtype((1,), np.float32)))
  return model, run.inputs.stream_batches(run.vocab, split, n_streams=1)


def test_dynamic_evaluation_without_steps_is_static_evaluation(streaming_run):
  run = Run.load(streaming_run)
  model, batches = _stream_of_one(run)
  still = dynamic.DynamicEvaluation('sgd', learning_rate=0.0, decay=0.0)
  np.testing.assert_allclose(
      dynamic.score_adapting(model, model.state, batches, still),
      streaming.score_streams(model, model.weights, model.state, batches),
      rtol=1e-6)


def test_dynamic_evaluation_learns_a_repeated_line_and_changes_no_file(
    streaming_run):
  """The validation text says one line twice: adapting to its first copy
  makes the second likelier."""
  before = snapshot(streaming_run)
  evaluate_py.main(['--output_dir', streaming_run, '--dynamic_eval',
                    '--dynamic_lr', '3e-3', '--dynamic_decay', '0'])
  after = snapshot(streaming_run)
  changed = {os.path.basename(p) for p in set(before) | set(after)
             if before.get(p) != after.get(p)}
  assert changed == {'eval_validation.json'}
  with open(os.path.join(streaming_run, 'eval_validation.json')) as f:
    result = json.load(f)
  assert result['dynamic_loss'] < result['loss'] - 0.01
  assert result['dynamic_settings']['learning_rate'] == 3e-3


def test_dynamic_evaluation_settings_are_checked(capsys, streaming_run):
  fails_with(capsys, evaluate_py.main,
             ['--output_dir', streaming_run, '--dynamic_eval',
              '--dynamic_decay', '2'], 'decay must be in [0, 1]')
  fails_with(capsys, evaluate_py.main,
             ['--output_dir', streaming_run, '--dynamic_lr', '0.1'],
             'add --dynamic_eval')


def test_the_report_measures_a_stateful_models_retention(streaming_run,
                                                         tmp_path):
  out = str(tmp_path / 'report')
  result = run_script('report.py', '--output_dir', streaming_run,
                      '--out', out)
  assert result.returncode == 0, result.stderr
  assert os.path.exists(os.path.join(out, 'index.html'))


@pytest.mark.parametrize('binding, words', [
    ('BATCH_SIZE = 16', ('state of 8 streams', 'reads 16 streams')),
    ('CharLMInputs.streaming = False', ('state of 8 streams',
                                        'reads no streams')),
])
def test_resuming_with_other_streams_is_refused(capsys, streaming_run,
                                                tmp_path, tiny_data_dir,
                                                binding, words):
  copy = str(tmp_path / 'run')
  shutil.copytree(streaming_run, copy)
  before = snapshot(copy)
  fails_with(capsys, train_py.main,
             _args(copy, tiny_data_dir, '--gin_param', binding, '--steps',
                   '30', '--allow_config_change'),
             *words, 'Nothing was changed')
  assert snapshot(copy) == before
