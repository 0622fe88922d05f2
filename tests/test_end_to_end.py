"""train.py and evaluate.py run as a user runs them, on a tiny TFDS dataset."""

import glob
import json
import math
import os
import shutil

import numpy as np
import pytest

import evaluate
import run_dir
import tiny_text_dataset
import train
from conftest import run_script

TINY = 'configs/char_rnn_tiny.gin'


def _data_params(data_dir):
  return ['--gin_param', "CharLMInputs.dataset = 'tiny_text'",
          '--gin_param', f"CharLMInputs.data_dir = '{data_dir}'",
          '--gin_param', 'CharLMInputs.download = False']


def _metrics(output_dir):
  with open(os.path.join(output_dir, run_dir.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def trained_run(tiny_data_dir, tmp_path_factory):
  """A run directory trained for 10 steps, then resumed to 20."""
  output_dir = str(tmp_path_factory.mktemp('run'))
  args = ['--gin_file', TINY, '--output_dir', output_dir,
          *_data_params(tiny_data_dir)]
  first = run_script('train.py', *args, '--steps', '10')
  assert first.returncode == 0, first.stderr
  assert run_dir.read_checkpoint(os.path.join(output_dir, 'model.pkl.gz'))[
      'step'] == 10
  second = run_script('train.py', *args, '--steps', '20')
  assert second.returncode == 0, second.stderr
  return output_dir


def test_training_writes_the_run_directory(trained_run):
  for name in ('model.pkl.gz', 'model.weights.npy.gz', 'lowest_loss.pkl.gz',
               'config.gin', 'vocab.json', 'metrics.jsonl'):
    assert os.path.exists(os.path.join(trained_run, name)), name
  assert glob.glob(os.path.join(trained_run, 'train', 'events.out.tfevents.*'))
  assert glob.glob(os.path.join(trained_run, 'eval', 'events.out.tfevents.*'))
  with open(os.path.join(trained_run, 'config.gin')) as f:
    config = f.read()
  assert "CharLMInputs.dataset = 'tiny_text'" in config
  assert 'RNNLanguageModel.d_model = 32' in config


def test_rerun_resumed_from_the_checkpoint(trained_run):
  records = _metrics(trained_run)
  assert [r['step'] for r in records] == [10, 20]
  assert all(math.isfinite(r['eval/loss']) and 'train/loss' in r
             for r in records)
  assert run_dir.read_checkpoint(
      os.path.join(trained_run, 'model.pkl.gz'))['step'] == 20


def test_rerun_after_the_last_step_trains_nothing(trained_run, tiny_data_dir):
  train.main(['--gin_file', TINY, '--output_dir', trained_run, '--steps', '20',
              *_data_params(tiny_data_dir)])
  assert [r['step'] for r in _metrics(trained_run)] == [10, 20]


def test_evaluate_cli_writes_metrics_of_the_whole_split(trained_run):
  result = run_script('evaluate.py', '--output_dir', trained_run,
                      '--split', 'test')
  assert result.returncode == 0, result.stderr
  with open(os.path.join(trained_run, 'eval_test.json')) as f:
    metrics = json.load(f)
  assert metrics['n_chars'] == sum(len(t) for t in tiny_text_dataset.TEXTS['test'])
  assert metrics['perplexity'] == pytest.approx(math.exp(metrics['loss']))
  assert metrics['bits_per_char'] == pytest.approx(metrics['loss'] / math.log(2))
  assert 0 <= metrics['accuracy'] <= 1
  assert metrics['checkpoint'].endswith('lowest_loss.pkl.gz')


def test_evaluate_matches_a_direct_computation(trained_run):
  metrics = evaluate.evaluate(trained_run, 'validation')
  (inputs, model_fn), vocab = evaluate.load_run(trained_run)
  model = model_fn(vocab_size=vocab.size, mode='eval')
  model.init_from_file(metrics['checkpoint'], weights_only=True)
  nll = correct = count = 0.0
  for x, y, w in inputs.eval_batches(vocab, 'validation'):
    log_probs = np.asarray(model(x), np.float64)
    for b, t in zip(*np.nonzero(w)):
      nll -= log_probs[b, t, y[b, t]]
      correct += np.argmax(log_probs[b, t]) == y[b, t]
      count += 1
  assert metrics['n_chars'] == count
  assert metrics['loss'] == pytest.approx(nll / count, rel=1e-5)
  assert metrics['accuracy'] == pytest.approx(correct / count)


def test_greedy_generation_follows_the_model(trained_run):
  (_, model_fn), vocab = evaluate.load_run(trained_run)
  samples = evaluate.generate(trained_run, n_samples=2, prompt='RO',
                              length=8, temperature=0)
  assert samples[0] == samples[1] and samples[0].startswith('RO')
  model = model_fn(vocab_size=vocab.size, mode='eval')
  model.init_from_file(run_dir.find_checkpoint(trained_run), weights_only=True)
  ids = vocab.encode('RO')
  for _ in range(8):
    # The eval model predicts position t from positions < t; one more
    # (dummy) position gives the prediction after the last real one.
    log_probs = np.asarray(model(np.array([ids + [0]], np.int32)))
    ids.append(int(np.argmax(log_probs[0, -1])))
  assert samples[0] == 'RO' + vocab.decode(ids[2:])


def test_generate_cli_prints_samples(trained_run):
  result = run_script('evaluate.py', '--output_dir', trained_run,
                      '--generate', '2', '--prompt', 'ROMEO:', '--length', '30')
  assert result.returncode == 0, result.stderr
  assert result.stdout.count('ROMEO:') == 2
  assert '--- sample 2 ---' in result.stdout


def _fails_with(capsys, main, argv, *words):
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  err = ' '.join(capsys.readouterr().err.split())
  assert 'Traceback' not in err
  for word in words:
    assert word in err, err
  return err


def test_unknown_binding_and_configurable(capsys, tmp_path):
  _fails_with(capsys, train.main, ['--gin_file', TINY, '--output_dir',
                                   str(tmp_path), '--gin_param',
                                   'RNNLanguageModel.d_modle = 3'],
              'd_modle', '--gin_param')
  _fails_with(capsys, train.main, ['--gin_file', TINY, '--output_dir',
                                   str(tmp_path), '--gin_param',
                                   'RNNLanguageMode.d_model = 3'],
              'RNNLanguageMode')


def test_missing_config_file(capsys, tmp_path):
  _fails_with(capsys, train.main, ['--gin_file', 'configs/nope.gin',
                                   '--output_dir', str(tmp_path)],
              'configs/nope.gin', 'does not exist')


def test_unknown_dataset(capsys, tmp_path):
  _fails_with(capsys, train.main, [
      '--gin_file', TINY, '--output_dir', str(tmp_path / 'run'),
      '--gin_param', "CharLMInputs.dataset = 'tiny_shakespear'",
      '--gin_param', f"CharLMInputs.data_dir = '{tmp_path}'"],
              'tiny_shakespear', 'spelling')


def test_missing_data_offline(capsys, tmp_path):
  _fails_with(capsys, train.main, [
      '--gin_file', TINY, '--output_dir', str(tmp_path / 'run'),
      '--gin_param', f"CharLMInputs.data_dir = '{tmp_path}'",
      '--gin_param', 'CharLMInputs.download = False'],
              'tiny_shakespeare', str(tmp_path), 'TFDS_DATA_DIR')


def _snapshot(directory):
  snapshot = {}
  for path in sorted(glob.glob(os.path.join(directory, '**'), recursive=True)):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        snapshot[path] = f.read()
  return snapshot


def test_other_models_checkpoint_is_left_untouched(capsys, trained_run,
                                                   tiny_data_dir, tmp_path):
  run = str(tmp_path / 'run')
  shutil.copytree(trained_run, run)
  before = _snapshot(run)
  _fails_with(capsys, train.main, [
      '--gin_file', TINY, '--output_dir', run, '--steps', '30',
      '--gin_param', 'RNNLanguageModel.d_model = 48',
      *_data_params(tiny_data_dir)], 'different model', run)
  assert _snapshot(run) == before


def test_evaluate_without_checkpoint(capsys, trained_run, tmp_path):
  run = str(tmp_path / 'run')
  shutil.copytree(trained_run, run)
  for path in glob.glob(os.path.join(run, '*.pkl.gz')):
    os.remove(path)
  _fails_with(capsys, evaluate.main, ['--output_dir', run],
              'no checkpoint', run)
  _fails_with(capsys, evaluate.main, ['--output_dir', str(tmp_path / 'none')],
              'not a run directory')


def test_evaluate_unknown_split(capsys, trained_run):
  _fails_with(capsys, evaluate.main, ['--output_dir', trained_run,
                                      '--split', 'dev'], "'dev'", 'validation')
