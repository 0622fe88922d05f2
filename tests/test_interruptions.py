"""SIGTERM and SIGINT stop train.py cleanly, with a checkpoint to resume from."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rnn_toolkit.runtime import allocator
import fault_injection
from rnn_toolkit.storage import run_dir
from conftest import REPO_ROOT, committed_steps as _steps, run_script
from conftest import tiny_data_params
from rnn_toolkit.training import stopping
from rnn_toolkit.training import trainer


def _start_training(tiny_data_dir, output_dir, steps):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO_ROOT, 'train.py'),
       '--gin_file', 'configs/char_rnn_tiny.gin', '--output_dir', output_dir,
       '--steps', str(steps), *tiny_data_params(tiny_data_dir)],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(path):
  return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def _wait_for_a_record(path, process, timeout=300):
  """Waits until `process` adds an evaluation record to metrics.jsonl."""
  before, deadline = _records(path), time.time() + timeout
  while _records(path) <= before:
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline, f'no new record in {path}'
    time.sleep(0.2)


_SIGNALS = [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]]


@pytest.fixture(scope='module')
def stops(tiny_data_dir, tmp_path_factory):
  """One run stopped once by each of _SIGNALS, then resumed to 3 steps more.

  A process trains until it has written an evaluation record, and gets the
  signals (a second one arrives while it stops); the next process resumes
  the run, and so on. Returns (output_dir, [(returncode, stdout, stderr,
  newest committed step) of each stopped process], the last resume's
  CompletedProcess).
  """
  output_dir = str(tmp_path_factory.mktemp('stopped') / 'run')
  stopped = []
  for signals in _SIGNALS:
    process = _start_training(tiny_data_dir, output_dir, steps=1_000_000)
    _wait_for_a_record(os.path.join(output_dir, run_dir.METRICS_FILE), process)
    for signum in signals:
      process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    stopped.append((process.returncode, out, err, _steps(output_dir)[-1]))
  resumed = run_script('train.py', '--gin_file', 'configs/char_rnn_tiny.gin',
                       '--output_dir', output_dir, '--steps',
                       str(stopped[-1][3] + 3), *tiny_data_params(tiny_data_dir))
  return output_dir, stopped, resumed


@pytest.mark.slow
@pytest.mark.parametrize('index', range(len(_SIGNALS)),
                         ids=[f'signals{i}' for i in range(len(_SIGNALS))])
def test_signal_stops_after_a_step_with_a_checkpoint(stops, index):
  output_dir, stopped, last_resume = stops
  signals = _SIGNALS[index]
  returncode, _, err, step = stopped[index]
  assert returncode == trainer.EXIT_INTERRUPTED, err
  assert signal.Signals(signals[0]).name in err and 'Traceback' not in err
  assert f'Stopped at step {step};' in err
  assert step >= 10

  # The process that resumed: the next one stopped, or the last resume.
  if index + 1 < len(stopped):
    resumed_out, resumed_step = stopped[index + 1][1], stopped[index + 1][3]
    assert resumed_step > step
  else:
    assert last_resume.returncode == 0, last_resume.stderr
    resumed_out = last_resume.stdout
    assert _steps(output_dir)[-1] == step + 3
  assert f'from its checkpoint at step {step}' in resumed_out
  expected = allocator.find()[0] if allocator.environment() else 'glibc'
  assert f'memory allocator: {expected}' in resumed_out, resumed_out


@pytest.mark.slow
def test_signals_at_random_moments_lose_no_evaluation(tmp_path, tiny_data_dir,
                                                      fault_reference):
  summary = fault_injection.run_signals(
      stops=4, work_dir=str(tmp_path), data_dir=tiny_data_dir,
      reference=fault_reference)
  assert summary['at_evaluation']  # a stop did land where one was due


def test_a_signal_while_starting_stops_before_anything_is_written(
    tiny_data_dir, tmp_path):
  output_dir = str(tmp_path / 'run')
  process = _start_training(tiny_data_dir, output_dir, steps=20)
  time.sleep(2)  # importing trax and JAX takes longer than this
  assert process.poll() is None
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == trainer.EXIT_INTERRUPTED, err
  assert 'Stopped before the first checkpoint' in err, err
  assert not os.path.exists(output_dir)


def test_a_second_signal_before_anything_is_written_stops_at_once():
  with stopping.stop_requests():  # pylint: disable=protected-access
    stopping._request_stop(signal.SIGTERM, None)  # pylint: disable=protected-access
    with pytest.raises(stopping.Interrupted):
      stopping._request_stop(signal.SIGTERM, None)  # pylint: disable=protected-access
  with stopping.stop_requests():  # pylint: disable=protected-access
    stopping.RUN_DIR_WRITTEN.append(True)  # training: a checkpoint is due first
    for _ in range(3):
      stopping._request_stop(signal.SIGINT, None)  # pylint: disable=protected-access
    assert len(stopping.STOP_SIGNALS) == 3
