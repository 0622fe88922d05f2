"""Damaged checkpoints, non-finite steps, full disks, SIGKILL, and readers
racing a writer: what train.py and evaluate.py do about each."""

import errno
import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import gin
import numpy as np
import pytest

from rnn_toolkit.storage import atomic_files
from rnn_toolkit.storage import checkpoints
from rnn_toolkit import configurables
from rnn_toolkit.runtime import devices
import fault_injection
from rnn_toolkit.storage import run_dir
from conftest import READ_ONLY_JAX_CACHE, REPO_ROOT, fails_with, snapshot
from conftest import tiny_data_params
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.training import trainer
import evaluate as evaluate_py
import train as train_py

TINY = 'configs/char_rnn_tiny.gin'


def _argv(output_dir, data_dir, steps, *params):
  return ['--gin_file', TINY, '--output_dir', output_dir, '--steps',
          str(steps), *tiny_data_params(data_dir),
          *[arg for p in params for arg in ('--gin_param', p)]]


def _saved(output_dir):
  return configurables.Checkpoints(output_dir, read_only=True)


@pytest.fixture(scope='module')
def run_20(tiny_data_dir, tmp_path_factory):
  """A run trained to step 20, with checkpoints at steps 10 and 20."""
  output_dir = str(tmp_path_factory.mktemp('run20'))
  train_py.main(_argv(output_dir, tiny_data_dir, 20))
  assert _saved(output_dir).steps() == [10, 20]
  return output_dir


@pytest.fixture
def run_copy(run_20, tmp_path):
  run = str(tmp_path / 'run')
  shutil.copytree(run_20, run)
  return run


def _damage(checkpoint_dir, how):
  """Truncates, or flips one bit in the middle of, its largest file."""
  files = [os.path.join(d, f) for d, _, names in os.walk(checkpoint_dir)
           for f in names]
  path = max(files, key=os.path.getsize)
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    if how == 'truncate':
      f.truncate(len(data) // 2)
    else:
      data[len(data) // 2] ^= 0x10
      f.seek(0)
      f.write(data)


@pytest.mark.parametrize('how', ['truncate', 'flip'])
def test_damaged_newest_checkpoint_is_reported_and_the_previous_used(
    capsys, run_copy, tiny_data_dir, how):
  original = _saved(run_copy).restore(20)
  _damage(os.path.join(run_copy, checkpoints.SUBDIR, '20'), how)
  with pytest.raises(checkpoints.DamagedCheckpoint):
    _saved(run_copy).restore(20)
  train_py.main(_argv(run_copy, tiny_data_dir, 20))
  out, err = capsys.readouterr()
  assert 'Checkpoint 20' in err and 'is damaged' in err, err
  assert 'from its checkpoint at step 10' in out
  assert len(glob.glob(os.path.join(run_copy, checkpoints.DAMAGED_SUBDIR,
                                    '20-*'))) == 1
  retrained = _saved(run_copy).restore(20)  # the same steps, exactly
  np.testing.assert_array_equal(retrained.train_loss, original.train_loss)


def test_no_intact_checkpoint_refuses_to_start_over_unless_told(
    capsys, run_copy, tiny_data_dir):
  for step in ('10', '20'):
    _damage(os.path.join(run_copy, checkpoints.SUBDIR, step), 'truncate')
  before = snapshot(run_copy)
  fails_with(capsys, train_py.main, _argv(run_copy, tiny_data_dir, 20),
             'No checkpoint in', 'step 10:', 'step 20:', '--from_scratch',
             'Nothing was changed')
  assert snapshot(run_copy) == before
  train_py.main(_argv(run_copy, tiny_data_dir, 20) + ['--from_scratch'])
  assert _saved(run_copy).steps() == [10, 20]
  assert len(os.listdir(os.path.join(run_copy, checkpoints.DAMAGED_SUBDIR))) == 2


def test_from_scratch_never_discards_an_intact_checkpoint(capsys, run_copy,
                                                          tiny_data_dir):
  before = snapshot(run_copy)
  fails_with(capsys, train_py.main,
             _argv(run_copy, tiny_data_dir, 30) + ['--from_scratch'],
             'intact one at step 20')
  assert snapshot(run_copy) == before


def test_extending_the_run_is_not_a_config_change(capsys, run_copy,
                                                  tiny_data_dir):
  train_py.main(_argv(run_copy, tiny_data_dir, 23))
  assert _saved(run_copy).steps()[-1] == 23


def test_stale_temporaries_are_removed_at_start(run_copy, tiny_data_dir):
  stale = os.path.join(run_copy, checkpoints.SUBDIR, '30.orbax-checkpoint-tmp')
  os.makedirs(os.path.join(stale, 'arrays'))
  train_py.main(_argv(run_copy, tiny_data_dir, 22))
  assert not os.path.exists(stale)
  assert _saved(run_copy).steps()[-1] == 22


@gin.configurable
def infinite_at_step_5(step):
  """A learning rate that makes step 5's update infinite, and only it."""
  return math.inf if step == 5 else 1e-3


def _spiky_argv(output_dir, data_dir, policy):
  return _argv(output_dir, data_dir, 8,
               'train_and_evaluate.lr_schedule = @infinite_at_step_5',
               f"train_and_evaluate.on_nonfinite = '{policy}'",
               'train_and_evaluate.checkpoint_every = 1',
               'Checkpoints.keep_last = 10')


def test_nonfinite_step_stops_and_keeps_the_last_good_checkpoint(
    capsys, tiny_data_dir, tmp_path):
  run = str(tmp_path / 'run')
  with pytest.raises(SystemExit) as exit_info:
    train_py.main(_spiky_argv(run, tiny_data_dir, 'stop'))
  assert exit_info.value.code == trainer.EXIT_DIVERGED
  err = ' '.join(capsys.readouterr().err.split())
  assert 'diverged' in err and 'step 5' in err and 'step 4' in err, err
  assert _saved(run).steps() == [1, 2, 3, 4]
  assert all(np.isfinite(w).all() for w in _saved(run).restore(4).weights)


def test_nonfinite_step_is_skipped_with_weights_and_slots_unchanged(
    capsys, tiny_data_dir, tmp_path):
  run = str(tmp_path / 'run')
  train_py.main(_spiky_argv(run, tiny_data_dir, 'skip_step'))
  assert 'update skipped' in capsys.readouterr().err
  saved = _saved(run)
  assert saved.steps() == list(range(1, 9))
  before, skipped, last = saved.restore(4), saved.restore(5), saved.restore(8)
  for a, b in zip(before.weights + before.slots, skipped.weights + skipped.slots,
                  strict=True):
    np.testing.assert_array_equal(a, b)
  assert np.isnan(last.train_loss[4])
  assert np.isfinite(np.delete(last.train_loss, 4)).all()
  assert all(np.isfinite(w).all() for w in last.weights)


def test_nonfinite_step_can_raise(tiny_data_dir, tmp_path):
  run = str(tmp_path / 'run')
  with pytest.raises(FloatingPointError, match='step 5'):
    train_py.main(_spiky_argv(run, tiny_data_dir, 'raise'))
  assert _saved(run).steps() == [1, 2, 3, 4]


def test_full_disk_fails_cleanly_and_the_run_resumes(run_copy, tiny_data_dir):
  argv = _argv(run_copy, tiny_data_dir, 30)  # the commit at step 30 fails
  # Files over 20 kB can't be written, as on a full disk. (Python ignores
  # SIGXFSZ, so the write fails with EFBIG instead of killing the process.)
  # JAX's compilation cache is only read there: its writes would fail too.
  full = subprocess.run(['prlimit', '--fsize=20000', '--', sys.executable,
                         os.path.join(REPO_ROOT, 'train.py'), *argv],
                        cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ, **READ_ONLY_JAX_CACHE))
  assert full.returncode == 2, full.stderr
  assert 'Traceback' not in full.stderr, full.stderr
  err = ' '.join(full.stderr.split('train.py: error:')[-1].split())
  assert 'failed (File too large)' in err and 'step 20, is intact' in err, err
  for step in _saved(run_copy).steps():  # every committed one still loads
    _saved(run_copy).restore(step)
  train_py.main(argv)  # resumes, in this process
  assert _saved(run_copy).steps()[-1] == 30


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path, tiny_data_dir,
                                                fault_reference):
  summary = fault_injection.run(
      kills=4, work_dir=str(tmp_path), data_dir=tiny_data_dir,
      reference=fault_reference, settings=fault_injection.SIGNAL_SETTINGS)
  assert summary['mid_commit'] >= 1  # the kills did land inside commits


@pytest.mark.slow
def test_evaluation_reads_only_committed_checkpoints(tiny_data_dir, tmp_path):
  run = str(tmp_path / 'run')
  command = [sys.executable, os.path.join(REPO_ROOT, 'train.py'),
             *_argv(run, tiny_data_dir, 30,
                    'train_and_evaluate.checkpoint_every = 2')]
  env = dict(os.environ, **{checkpoints.COMMIT_DELAY_ENV: '0.2'})
  training = subprocess.Popen(command, cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
  loads = during_commit = 0
  while training.poll() is None:
    if _saved(run).steps():
      committing = fault_injection._commit_in_progress(run)  # pylint: disable=protected-access
      state = Run.load(run, 'latest').state  # never partial
      assert np.isfinite(state.train_loss).all()
      loads, during_commit = loads + 1, during_commit + committing
    time.sleep(0.05)
  assert training.returncode == 0, training.stderr.read()
  assert loads >= 5 and during_commit >= 1, (loads, during_commit)


def _listing_that_fails(error, times):
  """A step listing that raises `error` on its first `times` calls."""
  calls = []

  def list_steps():
    calls.append(1)
    if len(calls) <= times:
      raise error('checkpoints/14')
    return [16]
  return list_steps, calls


@pytest.mark.parametrize('error', [FileNotFoundError, NotADirectoryError])
def test_listing_is_retried_while_a_step_is_pruned(error):
  # The two ways orbax reports a step directory that vanished mid-listing
  # (the second was seen in CI, between its exists() and is_dir() calls).
  list_steps, calls = _listing_that_fails(error, times=2)
  assert checkpoints._while_pruned(list_steps) == [16]  # pylint: disable=protected-access
  assert len(calls) == 3
  lasting, _ = _listing_that_fails(error, times=100)
  with pytest.raises(error):  # a lasting fault is not hidden
    checkpoints._while_pruned(lasting)  # pylint: disable=protected-access


def test_a_second_trainer_is_refused_naming_the_one_training(
    capsys, run_copy, tiny_data_dir):
  with run_dir.training_lock(run_copy):  # this process trains there
    before = snapshot(run_copy)
    fails_with(capsys, train_py.main, _argv(run_copy, tiny_data_dir, 30),
               'is being trained in by', f'process {os.getpid()} on host '
               f'{socket.gethostname()}', 'Nothing was changed')
    assert snapshot(run_copy) == before
    Run.load(run_copy, 'latest')  # readers are welcome
  assert not os.path.exists(os.path.join(run_copy, run_dir.LOCK_FILE))


def test_a_lock_left_by_a_killed_trainer_is_taken_over(capsys, run_copy,
                                                       tiny_data_dir):
  killed = subprocess.run(
      [sys.executable, '-c', 'import os, signal\nfrom rnn_toolkit.storage import run_dir\n'
       f'with run_dir.training_lock({run_copy!r}):\n'
       '  os.kill(os.getpid(), signal.SIGKILL)'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  with open(os.path.join(run_copy, run_dir.LOCK_FILE)) as f:
    pid = f.read().split()[0]
  train_py.main(_argv(run_copy, tiny_data_dir, 22))
  assert f'locked by process {pid}' in capsys.readouterr().err
  assert _saved(run_copy).steps()[-1] == 22
  assert not os.path.exists(os.path.join(run_copy, run_dir.LOCK_FILE))


def test_a_refused_start_in_a_new_directory_leaves_nothing(capsys, tmp_path,
                                                           tiny_data_dir):
  run = str(tmp_path / 'new')
  fails_with(capsys, train_py.main,
             _argv(run, tiny_data_dir, 5, "Checkpoints.best_metric = 'acuracy'"),
             "best_metric = 'acuracy'", "Did you mean 'accuracy'")
  assert not os.path.exists(run)
  fails_with(capsys, train_py.main,
             _argv(run, tiny_data_dir, 5, "Checkpoints.best_metric = 'accuracy'",
                   "Checkpoints.best_mode = 'min'"),
             "best_mode = 'min'", "Checkpoints.best_mode = 'max'")
  assert not os.path.exists(run)


@pytest.mark.parametrize('error', [
    PermissionError(errno.EACCES, 'Permission denied'), MemoryError(),
    ValueError('PERMISSION_DENIED: Error opening file')])
def test_a_failure_that_is_not_damage_moves_nothing(capsys, run_copy,
                                                    tiny_data_dir, monkeypatch,
                                                    error):
  def fails(self, step):
    raise error
  monkeypatch.setattr(checkpoints.Checkpoints, '_read_items', fails)
  before = snapshot(run_copy)
  fails_with(capsys, train_py.main, _argv(run_copy, tiny_data_dir, 30),
             'Reading checkpoint 20', 'not damage', 'nothing was moved')
  assert snapshot(run_copy) == before


def test_running_out_of_file_descriptors_is_not_damage(run_20):
  # A real failure of the system, not of the checkpoint: the process may
  # open no more files when it reads one.
  code = ('import os, resource\nfrom rnn_toolkit.storage import checkpoints\n'
          f'saved = checkpoints.Checkpoints({run_20!r}, read_only=True)\n'
          'steps = saved.steps()\n'
          'limit = len(os.listdir("/proc/self/fd"))\n'
          'resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))\n'
          'try:\n'
          '  saved.restore(steps[-1])\n'
          'except checkpoints.ReadFailed as e:\n'
          '  print("read failed:", e)\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
  assert 'read failed: Reading checkpoint 20' in result.stdout, result.stderr
  assert 'Too many open files' in result.stdout


def _remove_largest_data_file(checkpoint_dir):
  files = glob.glob(os.path.join(checkpoint_dir, 'arrays', '**', 'd', '*'),
                    recursive=True)
  os.remove(max(files, key=os.path.getsize))


def _garble_meta(checkpoint_dir):
  with open(os.path.join(checkpoint_dir, 'meta', 'metadata'), 'w') as f:
    f.write('{"format": 2, "step": ')


def _alter_history(checkpoint_dir):
  """A valid JSON edit: one evaluation's loss made better than it was."""
  path = os.path.join(checkpoint_dir, 'meta', 'metadata')
  with open(path) as f:
    meta = json.load(f)
  values = meta['history']['_values']['eval']['metrics/loss']
  values[-1][1] = values[-1][1] / 2
  with open(path, 'w') as f:
    json.dump(meta, f)


def _alter_input_position(checkpoint_dir):
  path = os.path.join(checkpoint_dir, 'meta', 'metadata')
  with open(path) as f:
    meta = json.load(f)
  meta['input_position'] += 1
  with open(path, 'w') as f:
    json.dump(meta, f)


@pytest.mark.parametrize('damage', [
    _remove_largest_data_file, _garble_meta, _alter_history,
    _alter_input_position,
    lambda d: shutil.rmtree(os.path.join(d, 'arrays'))])
def test_every_kind_of_damage_is_recognised(run_copy, damage):
  damage(os.path.join(run_copy, checkpoints.SUBDIR, '20'))
  with pytest.raises(checkpoints.DamagedCheckpoint):
    _saved(run_copy).restore(20)
  _saved(run_copy).restore(10)  # the others are untouched


def _state(step):
  rng = np.random.default_rng(step)
  return checkpoints.TrainingState(
      step=step, weights=[rng.normal(size=(3, 4)).astype(np.float32)],
      slots=[np.zeros(4, np.float32)], state=[], eval_state=[],
      rng=np.zeros(2, np.uint32), train_loss=np.ones(step, np.float32),
      input_position=step, history={}, config='', optimizer_metrics={
          'gradients_l2': np.arange(step, dtype=np.float32)})


def test_old_checkpoints_are_pruned_only_after_the_new_one_is_on_disk(
    tmp_path, monkeypatch):
  saver = checkpoints.Checkpoints(str(tmp_path), keep_last=1, keep_best=0)
  on_disk_while_syncing = []
  fsync_tree = checkpoints._fsync_tree  # pylint: disable=protected-access

  def recording(directory):
    on_disk_while_syncing.append(sorted(os.listdir(saver.directory)))
    fsync_tree(directory)
  monkeypatch.setattr(checkpoints, '_fsync_tree', recording)
  for step in (1, 2, 3):
    saver.save(_state(step))
  saver.close()
  # While step 2 was being made durable, step 1 was still there.
  assert on_disk_while_syncing == [['1'], ['1', '2'], ['2', '3']]
  assert _saved(str(tmp_path)).steps() == [3]
  restored = _saved(str(tmp_path)).restore(3)
  np.testing.assert_array_equal(restored.weights[0], _state(3).weights[0])
  np.testing.assert_array_equal(restored.optimizer_metrics['gradients_l2'],
                                np.arange(3))


def test_best_checkpoints_are_kept_beside_the_last(tmp_path):
  saver = checkpoints.Checkpoints(str(tmp_path), keep_last=1, keep_best=1)
  for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)]:
    saver.save(_state(step), {'loss': loss})
  assert _saved(str(tmp_path)).steps() == [2, 4]
  assert _saved(str(tmp_path)).best_step() == 2
  saver.save(_state(5), {'loss': 1.0})  # a tie: the newer one is kept
  assert _saved(str(tmp_path)).steps() == [5]
  saver.save(_state(6), {'loss': math.nan})  # never ranked best
  saver.close()
  assert _saved(str(tmp_path)).steps() == [5, 6]


def test_the_operative_config_is_written_atomically_and_durably(
    tmp_path, monkeypatch):
  synced = []
  fsync = os.fsync
  monkeypatch.setattr(os, 'fsync', lambda fd: (
      synced.append(os.readlink(f'/proc/self/fd/{fd}')), fsync(fd)))
  gin.parse_config('train_and_evaluate.seed = 3')
  run_dir.save_operative_config(str(tmp_path), 0)
  path = str(tmp_path / run_dir.CONFIG_FILE)
  # The temporary file's contents, then the rename, are made durable.
  temporary, directory = synced
  assert os.path.dirname(temporary) == directory == str(tmp_path)
  assert os.path.basename(temporary).startswith(f'.{run_dir.CONFIG_FILE}.')
  assert os.listdir(tmp_path) == [run_dir.CONFIG_FILE]
  # A link planted where a temporary file used to go is not followed.
  victim = tmp_path / 'victim'
  victim.write_text('keep')
  os.symlink(victim, path + '.tmp')
  atomic_files.write_text_atomically(path, 'new')
  assert victim.read_text() == 'keep'
  with open(path) as f:
    assert f.read() == 'new'


def test_a_run_config_that_would_run_code_is_refused(capsys, run_copy,
                                                     tmp_path, monkeypatch):
  (tmp_path / 'prints_on_import.py').write_text('print("IMPORTED")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  config = os.path.join(run_copy, run_dir.CONFIG_FILE)
  with open(config) as f:
    original = f.read()
  for line in ('import prints_on_import', "include 'configs/char_rnn_tiny.gin'"):
    with open(config, 'w') as f:
      f.write(f'{line}\n{original}')
    before = snapshot(run_copy)
    err = fails_with(capsys, evaluate_py.main, ['--output_dir', run_copy],
                     'line 1:', line.split()[0], 'nothing of it was run')
    assert 'IMPORTED' not in err and 'prints_on_import' not in sys.modules
    assert snapshot(run_copy) == before


class _OtherProcessFound:
  """A DataParallel stand-in: another process found `step` the newest
  intact checkpoint (-1: none)."""

  def __init__(self, step):
    self.step = step

  def each_process(self, value):
    return [value, self.step]


def test_processes_that_see_different_checkpoints_refuse_and_move_nothing(
    capsys, run_copy, tiny_data_dir, monkeypatch):
  restored, _ = _saved(run_copy).restore_newest_good()
  trainer._check_processes_agree(  # pylint: disable=protected-access
      run_copy, restored, _OtherProcessFound(20))
  for other in (10, -1):
    with pytest.raises(checkpoints.ReadFailed, match='process 1: step 10'
                       if other == 10 else 'process 1: none'):
      trainer._check_processes_agree(  # pylint: disable=protected-access
          run_copy, restored, _OtherProcessFound(other))
  # Through train.py: nothing is set aside, nothing changes.
  monkeypatch.setattr(devices.DataParallel, 'each_process',
                      lambda self, value: [value, 10])
  before = snapshot(run_copy)
  fails_with(capsys, train_py.main, _argv(run_copy, tiny_data_dir, 30),
             'different newest intact checkpoints', 'process 0: step 20',
             'Nothing was moved')
  assert snapshot(run_copy) == before
