"""train.py and evaluate.py run as a user runs them, on a tiny TFDS dataset."""

import glob
import json
import math
import os
import shutil

import numpy as np
import pytest

from rnn_toolkit import configurables
import data
from rnn_toolkit.storage import run_dir
import tiny_text_dataset
from trax import shapes
from rnn_toolkit.token_ids import FIRST_CHAR_ID
from rnn_toolkit.errors import UsageError
from conftest import committed_steps as _steps
from conftest import fails_with as _fails_with
from conftest import run_script
from conftest import snapshot as _snapshot
from conftest import tiny_data_params as _data_params
from rnn_toolkit.evaluation import run as run_module
from rnn_toolkit.evaluation.run import Run
import evaluate as evaluate_py
import report as report_py
import train as train_py

TINY = 'configs/char_rnn_tiny.gin'


def _metrics(output_dir):
  with open(os.path.join(output_dir, run_dir.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def trained_run(tiny_data_dir, tmp_path_factory):
  """A run directory trained for 10 steps by train.py, then resumed to 20
  (by train.py's main, in this process)."""
  output_dir = str(tmp_path_factory.mktemp('run'))
  args = ['--gin_file', TINY, '--output_dir', output_dir,
          *_data_params(tiny_data_dir)]
  first = run_script('train.py', *args, '--steps', '10')
  assert first.returncode == 0, first.stderr
  assert _steps(output_dir) == [10]
  train_py.main([*args, '--steps', '20'])  # returns: no SystemExit
  return output_dir


def test_training_writes_the_run_directory(trained_run):
  for name in ('checkpoints/20', 'config.gin', 'vocab.json', 'metrics.jsonl'):
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
  assert _steps(trained_run) == [10, 20]


def test_best_checkpoint_is_the_lowest_evaluation_loss(trained_run):
  records = _metrics(trained_run)
  best = min(records, key=lambda r: r['eval/loss'])
  saved = configurables.Checkpoints(trained_run, read_only=True)
  assert saved.best_step() == best['step']
  history = saved.restore(20).history['_values']['eval']['metrics/loss']
  assert [step for step, _ in history] == [10, 20]


def test_resume_with_another_config_keeps_the_old_one(trained_run,
                                                      tiny_data_dir, tmp_path):
  run = str(tmp_path / 'run')
  shutil.copytree(trained_run, run)
  with open(os.path.join(run, 'config.gin')) as f:
    old_config = f.read()
  train_py.main(['--gin_file', TINY, '--output_dir', run, '--steps', '21',
              '--gin_param', 'multifactor.constant = 0.0005',
              '--allow_config_change', *_data_params(tiny_data_dir)])
  with open(os.path.join(run, 'config_until_step_20.gin')) as f:
    assert f.read() == old_config
  with open(os.path.join(run, 'config.gin')) as f:
    assert 'multifactor.constant = 0.0005' in f.read()


def test_rerun_after_the_last_step_trains_nothing(trained_run, tiny_data_dir):
  train_py.main(['--gin_file', TINY, '--output_dir', trained_run, '--steps', '20',
              *_data_params(tiny_data_dir)])
  assert [r['step'] for r in _metrics(trained_run)] == [10, 20]


def test_evaluate_cli_writes_metrics_of_the_whole_split(trained_run):
  # evaluate.py's main, in this process (its process: the tests below)
  evaluate_py.main(['--output_dir', trained_run, '--split', 'test'])
  with open(os.path.join(trained_run, 'eval_test.json')) as f:
    metrics = json.load(f)
  assert metrics['n_chars'] == sum(len(t) for t in tiny_text_dataset.TEXTS['test'])
  assert metrics['perplexity'] == pytest.approx(math.exp(metrics['loss']))
  assert metrics['bits_per_char'] == pytest.approx(metrics['loss'] / math.log(2))
  assert 0 <= metrics['accuracy'] <= 1
  assert metrics['step'] == min(_metrics(trained_run),
                                key=lambda r: r['eval/loss'])['step']


def test_evaluate_matches_a_direct_computation(trained_run):
  """Its windowed figures: each window read from a zero state."""
  run = Run.load(trained_run)
  metrics = run.evaluate('validation')
  inputs, vocab = run.inputs, run.vocab
  model = _eval_model(trained_run, metrics['step'])
  nll = correct = count = 0.0
  for *_, y, w in inputs.eval_batches(vocab, 'validation'):
    log_probs = np.asarray(model(y), np.float64)  # it shifts y itself
    for b, t in zip(*np.nonzero(w)):
      nll -= log_probs[b, t, y[b, t]]
      correct += np.argmax(log_probs[b, t]) == y[b, t]
      count += 1
  assert metrics['n_chars'] == count
  assert metrics['windowed_loss'] == pytest.approx(nll / count, rel=1e-5)
  assert metrics['windowed_accuracy'] == pytest.approx(correct / count)


def _eval_model(output_dir, which):
  """The run's eval-mode model, with the weights of checkpoint `which`,
  reading each window from a zero state (the run's trains on streams)."""
  run = Run.load(output_dir, which)
  return run.model('eval', shapes.ShapeDtype((1, 3), np.int32),
                   dimensions={'vocab_size': run.vocab.size})


def test_greedy_generation_follows_the_model(trained_run):
  run = Run.load(trained_run)
  vocab = run.vocab
  samples = run.generate(n_samples=2, prompt='RO',
                              length=8, temperature=0)
  assert samples[0] == samples[1] and samples[0].startswith('RO')
  model = _eval_model(trained_run, 'best')
  ids = vocab.encode('RO')
  for _ in range(8):
    # The eval model predicts position t from positions < t; one more
    # (dummy) position gives the prediction after the last real one.
    log_probs = np.asarray(model(np.array([ids + [0]], np.int32)))
    text_ids = log_probs[0, -1, FIRST_CHAR_ID:]  # generation draws only text
    ids.append(FIRST_CHAR_ID + int(np.argmax(text_ids)))
  assert samples[0] == 'RO' + vocab.decode(ids[2:])


def test_generate_cli_prints_samples(trained_run):
  result = run_script('evaluate.py', '--output_dir', trained_run,
                      '--generate', '2', '--prompt', 'ROMEO:', '--length', '30')
  assert result.returncode == 0, result.stderr
  samples = result.stdout.split('--- sample ')[1:]
  assert [s[:2] for s in samples] == ['1 ', '2 ']
  for sample in samples:
    text = sample.split('---\n', 1)[1].rstrip('\n')
    assert text.startswith('ROMEO:') and len(text) == len('ROMEO:') + 30


def test_generation_needs_no_dataset(trained_run, tiny_data_dir, tmp_path):
  # The run copied where its dataset cannot be found (its config names a
  # data_dir that does not exist, and downloading is off).
  run = str(tmp_path / 'run')
  shutil.copytree(trained_run, run)
  config = os.path.join(run, run_dir.CONFIG_FILE)
  with open(config) as f:
    text = f.read()
  assert tiny_data_dir in text
  with open(config, 'w') as f:
    f.write(text.replace(tiny_data_dir, str(tmp_path / 'no_data_here')))
  with pytest.raises(UsageError, match='tiny_text'):  # the data is gone
    Run.load(run).evaluate()
  args = dict(n_samples=2, prompt='RO', length=12, temperature=0.8, seed=3)
  assert (Run.load(run).generate(**args)
          == Run.load(trained_run).generate(**args))


@pytest.mark.parametrize('binding, words', [
    ('RNNLanguageModel.d_modle = 3', ("'d_modle'", "Did you mean 'd_model'")),
    ('RNNLanguageMode.d_model = 3', ("'RNNLanguageMode'",
                                     "Did you mean 'RNNLanguageModel'")),
    ('train_and_evaluate.eval_evry = 3', ("Did you mean 'eval_every'",)),
    ('Checkpoints.keep_lats = 3', ("Did you mean 'keep_last'",)),
    ('StackedElmanRNN.n_layer = 3', ("Did you mean 'n_layers'",)),
])
def test_misspelt_names_get_the_closest_ones(capsys, tmp_path, binding, words):
  _fails_with(capsys, train_py.main, ['--gin_file', TINY, '--output_dir',
                                   str(tmp_path / 'run'), '--gin_param',
                                   binding], *words, '--gin_param')
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('binding, words', [
    ('CharLMInputs.seq_len = 0', ('seq_len = 0', 'positive whole numbers')),
    ('CharLMInputs.batch_size = -4', ('batch_size = -4',)),
    ("CharLMInputs.seq_len = 'long'", ("seq_len = 'long'",)),
    ('train_and_evaluate.n_steps = 0', ('n_steps must be an integer >= 1',)),
    ("train_and_evaluate.eval_every = '10'", ("eval_every must be an integer",)),
    ("train_and_evaluate.on_nonfinite = 'ignore'", ("'ignore'", 'skip_step')),
    ('Checkpoints.keep_last = 0', ('keep_last >= 1',)),
    ("CharLMInputs.eval_split = 'validation[:0]'", ('holds no text',)),
    ("CharLMInputs.train_split = 'train[:0]'", ('holds no text',)),
    ("RNNLanguageModel.d_model = 'big'", ('model could not be built',)),
])
def test_bad_value_is_reported_before_anything_is_written(
    capsys, tiny_data_dir, tmp_path, binding, words):
  run = str(tmp_path / 'run')
  _fails_with(capsys, train_py.main, ['--gin_file', TINY, '--output_dir', run,
                                   '--gin_param', binding,
                                   *_data_params(tiny_data_dir)], *words)
  assert not os.path.exists(run)


@pytest.mark.parametrize('where, words', [
    ('under_a_file', ('is a file', 'another --output_dir')),
    ('/proc/rnn_toolkit_run', ('Cannot write', 'writable --output_dir')),
])
def test_unwritable_output_dir(capsys, tiny_data_dir, tmp_path, where, words):
  (tmp_path / 'a_file').write_text('not a directory')
  output_dir = (str(tmp_path / 'a_file' / 'run') if where == 'under_a_file'
                else where)
  _fails_with(capsys, train_py.main, ['--gin_file', TINY, '--output_dir',
                                   output_dir, *_data_params(tiny_data_dir)],
              *words)


def test_missing_config_file(capsys, tmp_path):
  _fails_with(capsys, train_py.main, ['--gin_file', 'configs/nope.gin',
                                   '--output_dir', str(tmp_path)],
              'configs/nope.gin', 'does not exist')


def test_unknown_dataset(capsys, tmp_path):
  _fails_with(capsys, train_py.main, [
      '--gin_file', TINY, '--output_dir', str(tmp_path / 'run'),
      '--gin_param', "CharLMInputs.dataset = 'tiny_shakespear'",
      '--gin_param', f"CharLMInputs.data_dir = '{tmp_path}'"],
              'tiny_shakespear', 'spelling')


def test_missing_data_offline(capsys, tmp_path):
  _fails_with(capsys, train_py.main, [
      '--gin_file', TINY, '--output_dir', str(tmp_path / 'run'),
      '--gin_param', f"CharLMInputs.data_dir = '{tmp_path}'",
      '--gin_param', 'CharLMInputs.download = False'],
              'tiny_shakespeare', str(tmp_path), 'TFDS_DATA_DIR')


@pytest.mark.parametrize('bindings, words', [
    (["RNNLanguageModel.cell = 'transformer'"], ('transformer', 'elman')),
    (["RNNLanguageModel.cell = 'elman'", "ElmanRNN.activation = 'swishy'"],
     ('swishy', 'tanh')),
])
def test_bad_model_binding_changes_nothing(capsys, tiny_data_dir, tmp_path,
                                           bindings, words):
  run = str(tmp_path / 'run')
  _fails_with(capsys, train_py.main, [
      '--gin_file', TINY, '--output_dir', run,
      *[arg for binding in bindings for arg in ('--gin_param', binding)],
      *_data_params(tiny_data_dir)], 'model could not be built', *words)
  assert not os.path.exists(run)


def test_missing_required_binding(capsys, tiny_data_dir, tmp_path):
  config = tmp_path / 'partial.gin'
  config.write_text('experiment.inputs = @CharLMInputs()\n'
                    'train_and_evaluate.n_steps = 2\n')
  _fails_with(capsys, train_py.main, ['--gin_file', str(config), '--output_dir',
                                   str(tmp_path / 'run'),
                                   *_data_params(tiny_data_dir)],
              'Required bindings', "['model']", 'Add the missing bindings')
  assert not os.path.exists(tmp_path / 'run')


def test_required_marker_left_unset(capsys, tmp_path):
  config = tmp_path / 'partial.gin'
  config.write_text("include 'configs/char_rnn_tiny.gin'\n"
                    'experiment.model = %gin.REQUIRED\n')
  err = _fails_with(capsys, train_py.main, ['--gin_file', str(config),
                                         '--output_dir', str(tmp_path / 'run')],
                    'experiment.model', 'REQUIRED')
  assert '..' not in err


@pytest.mark.parametrize('params, words', [
    (['--gin_param', 'multifactor.constant = 0.0005'],
     ('config differs', 'checkpoint: `multifactor.constant = 0.002`',
      'yours: `multifactor.constant = 0.0005`', '--allow_config_change')),
    (['--gin_param', 'RNNLanguageModel.d_model = 48', '--allow_config_change'],
     ('different model',)),
    (['--gin_param', 'train_and_evaluate.optimizer = @trax.optimizers.SGD',
      '--allow_config_change'], ('different optimizer',)),
    ([], ("'other_text'", "'tiny_text'", 'new --output_dir')),
])
def test_resume_with_incompatible_config_changes_nothing(
    capsys, trained_run, tiny_data_dir, tmp_path, params, words):
  run = str(tmp_path / 'run')
  shutil.copytree(trained_run, run)
  if not params:  # The run was trained on another dataset.
    vocab = data.CharVocab.load(os.path.join(run, run_dir.VOCAB_FILE))
    data.CharVocab(vocab.chars, 'other_text').save(
        os.path.join(run, run_dir.VOCAB_FILE))
  before = _snapshot(run)
  _fails_with(capsys, train_py.main, [
      '--gin_file', TINY, '--output_dir', run, '--steps', '30',
      *_data_params(tiny_data_dir), *params], run, *words)
  assert _snapshot(run) == before


def _with_chars(text, change):
  """vocab.json text with its list of characters changed by `change`."""
  record = json.loads(text)
  record['chars'] = change(record['chars'])
  return json.dumps(record)


# A run's vocab.json, damaged: (how, the words the error must have).
DAMAGED_VOCABULARIES = {
    'cut short': (lambda text: text[:len(text) // 2],
                  ('not valid JSON', 'line 1')),
    'not an object': (lambda text: json.dumps(json.loads(text)['chars']),
                      ('JSON array',)),
    'a number for a character': (
        lambda text: _with_chars(text, lambda chars: chars[:-1] + [7]),
        ("holds 7", 'not a string')),
    'a character twice': (
        lambda text: _with_chars(text, lambda chars: chars + chars[:1]),
        ('twice', 'two ids')),
    'another kind': (
        lambda text: json.dumps({'type': 'labels', 'labels': ['a', 'b']}),
        ('a labels vocabulary', 'CharLMInputs', 'a char vocabulary')),
}


def _every_program(run, tiny_data_dir, out):
  """(main, argv) of train.py resuming `run`, evaluate.py and report.py."""
  return [(train_py.main, ['--gin_file', TINY, '--output_dir', run, '--steps',
                        '30', *_data_params(tiny_data_dir)]),
          (evaluate_py.main, ['--output_dir', run]),
          (report_py.main, ['--output_dir', run, '--out', out])]


@pytest.mark.parametrize('damage', DAMAGED_VOCABULARIES)
def test_a_damaged_vocabulary_is_refused_by_every_program(
    capsys, trained_run, tiny_data_dir, tmp_path, damage):
  run, out = str(tmp_path / 'run'), str(tmp_path / 'report')
  shutil.copytree(trained_run, run)
  damaged, words = DAMAGED_VOCABULARIES[damage]
  path = os.path.join(run, run_dir.VOCAB_FILE)
  with open(path, encoding='utf-8') as f:
    text = damaged(f.read())
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  before = _snapshot(run)
  for main, argv in _every_program(run, tiny_data_dir, out):
    _fails_with(capsys, main, argv, 'vocab', *words)
    assert _snapshot(run) == before
  assert not os.path.exists(out)


def test_a_vocabulary_of_another_size_is_refused_by_every_program(
    capsys, trained_run, tiny_data_dir, tmp_path):
  run, out = str(tmp_path / 'run'), str(tmp_path / 'report')
  shutil.copytree(trained_run, run)
  path = os.path.join(run, run_dir.VOCAB_FILE)
  vocab = data.CharVocab.load(path)
  data.CharVocab(vocab.chars + ['\u2603'], vocab.dataset).save(path)
  before = _snapshot(run)
  [resume, *evaluations] = _every_program(run, tiny_data_dir, out)
  for main, argv in [resume, *evaluations]:
    _fails_with(capsys, main, argv,
                f'vocab.json gives vocab_size = {vocab.size + 1}',
                f'trained with vocab_size = {vocab.size}')
  assert _snapshot(run) == before
  assert not os.path.exists(out)


def test_evaluate_without_checkpoint(capsys, trained_run, tmp_path):
  run = str(tmp_path / 'run')
  shutil.copytree(trained_run, run)
  shutil.rmtree(os.path.join(run, 'checkpoints'))
  _fails_with(capsys, evaluate_py.main, ['--output_dir', run],
              'no committed checkpoint', run)
  _fails_with(capsys, evaluate_py.main, ['--output_dir', str(tmp_path / 'none')],
              'not a run directory')


def test_evaluate_unknown_split(capsys, trained_run):
  _fails_with(capsys, evaluate_py.main, ['--output_dir', trained_run,
                                      '--split', 'dev'], "'dev'", 'validation')


@pytest.mark.parametrize('temperature', [0.0, 1.0])
def test_sampling_never_draws_padding_or_unknown(temperature):
  import jax  # pylint: disable=g-import-not-at-top
  log_probs = np.log(np.array([[0.90, 0.09, 0.006, 0.004]] * 500, np.float32))
  drawn = np.asarray(run_module._sample(jax.numpy.asarray(log_probs),
                                      temperature, jax.random.PRNGKey(0)))
  assert set(drawn) <= {2, 3}
  if temperature:  # 0.006 : 0.004 between the two characters
    assert 0.5 < np.mean(drawn == 2) < 0.7
