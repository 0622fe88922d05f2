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


def _wait_for(path, process, timeout=300):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline, f'{path} never appeared'
    time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize('signals', [[signal.SIGTERM],
                                     [signal.SIGINT, signal.SIGINT]])
def test_signal_stops_after_a_step_with_a_checkpoint(tiny_data_dir, tmp_path,
                                                     signals):
  output_dir = str(tmp_path / 'run')
  process = _start_training(tiny_data_dir, output_dir, steps=1_000_000)
  _wait_for(os.path.join(output_dir, run_dir.METRICS_FILE), process)
  for signum in signals:  # a second signal arrives while stopping
    process.send_signal(signum)
  _, err = process.communicate(timeout=120)
  assert process.returncode == trainer.EXIT_INTERRUPTED, err
  assert signal.Signals(signals[0]).name in err and 'Traceback' not in err
  step = _steps(output_dir)[-1]
  assert f'Stopped at step {step};' in err
  assert step >= 10

  resumed = run_script('train.py', '--gin_file', 'configs/char_rnn_tiny.gin',
                       '--output_dir', output_dir, '--steps', str(step + 3),
                       *tiny_data_params(tiny_data_dir))
  assert resumed.returncode == 0, resumed.stderr
  assert f'from its checkpoint at step {step}' in resumed.stdout
  expected = allocator.find()[0] if allocator.environment() else 'glibc'
  assert f'memory allocator: {expected}' in resumed.stdout, resumed.stdout
  assert _steps(output_dir)[-1] == step + 3


@pytest.mark.slow
def test_signals_at_random_moments_lose_no_evaluation(tmp_path):
  summary = fault_injection.run_signals(stops=4, work_dir=str(tmp_path))
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
