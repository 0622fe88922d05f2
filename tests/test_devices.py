"""Data parallelism over several devices and processes, and platform choice.

XLA_FLAGS makes JAX show 8 CPU devices, like one TPU v2-8 or v3-8 host.
Each such run is a fresh process, since JAX fixes its devices when it
starts; the 1-device references run in the test process itself.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rnn_toolkit import configurables
from conftest import REPO_ROOT, committed_steps, fails_with, run_script
from conftest import tiny_data_params
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.training import trainer
import train as train_py

EIGHT_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
STEPS = 30
# Splitting a batch over devices only changes the order of float32 sums.
RTOL = 1e-4
# The runs here train on streams, as the tiny config does: every process
# lays out the same global batches and keeps its rows. Were they windowed,
# this would have each of two processes read only its own part of the split,
# with the data order of runs on one process.
TWO_PARTS = 'CharLMInputs.data_shards = 2'
# The Elman layer, whose CPU kernels are split over the devices (the main
# config, and so the tiny one, trains the GRU, which runs XLA's scan).
ELMAN = "RNNLanguageModel.cell = 'elman'"


def _train_argv(output_dir, data_dir, steps=STEPS, *params):
  return ['--gin_file', 'configs/char_rnn_tiny.gin', '--output_dir',
          output_dir, '--steps', str(steps), *tiny_data_params(data_dir),
          *[arg for p in (TWO_PARTS, ELMAN, *params)
            for arg in ('--gin_param', p)]]


def _saved(output_dir, step=None):
  saved = configurables.Checkpoints(output_dir, read_only=True)
  return saved.restore(step or saved.steps()[-1])


def _assert_same_training(run, reference):
  """Losses, weights and the streams' carried states (the tiny config, as
  the main one, trains on streams)."""
  np.testing.assert_allclose(run.train_loss, reference.train_loss, rtol=RTOL)
  for name in ('weights', 'state'):
    for got, want in zip(getattr(run, name), getattr(reference, name),
                         strict=True):
      np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)


@pytest.fixture(scope='module')
def one_device_run(tiny_data_dir, tmp_path_factory):
  """The tiny config trained on this process's single CPU device."""
  output_dir = str(tmp_path_factory.mktemp('one_device'))
  train_py.main(_train_argv(output_dir, tiny_data_dir))
  return output_dir


@pytest.fixture(scope='module')
def eight_device_run(tiny_data_dir, tmp_path_factory):
  """The same config and seed trained on 8 devices by train.py."""
  output_dir = str(tmp_path_factory.mktemp('eight_devices'))
  result = run_script('train.py', '--platform', 'cpu',
                      *_train_argv(output_dir, tiny_data_dir),
                      env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stderr
  assert 'Data parallel over 8 cpu devices in 1 process' in result.stdout
  return output_dir


@pytest.mark.slow
def test_eight_devices_train_like_one(one_device_run, eight_device_run):
  _assert_same_training(_saved(eight_device_run), _saved(one_device_run))
  np.testing.assert_allclose(_eval_losses(eight_device_run),
                             _eval_losses(one_device_run), rtol=RTOL)


def _eval_losses(output_dir):
  with open(os.path.join(output_dir, 'metrics.jsonl')) as f:
    return [json.loads(line)['eval/loss'] for line in f]


@pytest.mark.slow
def test_checkpoints_move_between_device_counts(one_device_run,
                                                eight_device_run):
  # Written on 8, evaluated on 1 (here) ...
  on_one = Run.load(eight_device_run, 'latest').evaluate()
  reference = Run.load(one_device_run, 'latest').evaluate()
  assert on_one['loss'] == pytest.approx(reference['loss'], rel=RTOL)
  # ... and written on 1, evaluated and sampled from on 8.
  result = run_script('evaluate.py', '--output_dir', one_device_run,
                      '--checkpoint', 'latest', env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stderr
  on_eight = json.loads(result.stdout)
  assert on_eight['loss'] == pytest.approx(reference['loss'], rel=RTOL)
  assert on_eight['n_chars'] == reference['n_chars']
  greedy = ['--generate', '2', '--prompt', 'the ', '--length', '40',
            '--temperature', '0', '--checkpoint', 'latest']
  result = run_script('evaluate.py', '--output_dir', one_device_run, *greedy,
                      env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stderr
  samples = Run.load(one_device_run, 'latest').generate('the ', 2, 40, 0.0)
  for sample in samples:
    assert f'\n{sample}\n' in result.stdout


_INSPECT = textwrap.dedent('''
    import json, sys
    import jax
    from rnn_toolkit import configurables
    from rnn_toolkit.training import trainer
    configurables.parse(['configs/char_rnn_tiny.gin'], sys.argv[2:])
    loop = trainer.train_and_evaluate(sys.argv[1])
    step_trainer, = loop._trainer_per_task
    arrays = jax.tree_util.tree_leaves((loop.model.weights, step_trainer.slots))
    batch = loop._eval_tasks[0].sample_batch
    print(json.dumps({
        'replicated': all(a.sharding.is_fully_replicated for a in arrays),
        'devices': sorted({len(a.sharding.device_set) for a in arrays}),
        'batch_devices': len(batch[0].sharding.device_set),
        'rows_per_device': sorted({s.data.shape[0]
                                   for s in batch[0].addressable_shards}),
    }))
''')


@pytest.mark.slow
def test_weights_are_replicated_and_batches_split(tiny_data_dir, tmp_path):
  bindings = [*tiny_data_params(tiny_data_dir)[1::2],  # the values only
              'train_and_evaluate.n_steps = 2']
  result = subprocess.run(
      [sys.executable, '-c', _INSPECT, str(tmp_path / 'run'), *bindings],
      cwd=REPO_ROOT, env=dict(os.environ, **EIGHT_DEVICES), text=True,
      capture_output=True, timeout=600)
  assert result.returncode == 0, result.stderr
  layout = json.loads(result.stdout.strip().splitlines()[-1])
  assert layout == {'replicated': True, 'devices': [8], 'batch_devices': 8,
                    'rows_per_device': [1]}  # batch 8 over 8 devices


def test_batch_size_must_divide_over_the_devices(tiny_data_dir, tmp_path):
  output_dir = str(tmp_path / 'run')
  result = run_script('train.py', *_train_argv(
      output_dir, tiny_data_dir, 2, 'CharLMInputs.batch_size = 12'),
                      env=EIGHT_DEVICES)
  assert result.returncode == 2
  err = ' '.join(result.stderr.split())
  assert 'CharLMInputs.batch_size = 12 does not divide evenly over the 8' in err
  assert 'multiple of 8, e.g. 16' in err and 'Traceback' not in err
  assert not os.path.exists(output_dir)


def test_absent_platform_is_a_clear_error(tiny_data_dir, tmp_path):
  output_dir = str(tmp_path / 'run')
  result = run_script('train.py', '--platform', 'tpu',
                      *_train_argv(output_dir, tiny_data_dir, 2))
  assert result.returncode == 2
  err = ' '.join(result.stderr.split())
  assert '--platform tpu was asked for, but JAX finds no tpu device' in err
  assert 'Traceback' not in err and not os.path.exists(output_dir)


def test_incomplete_multihost_flags_are_a_clear_error(capsys, tmp_path):
  fails_with(capsys, train_py.main,
             ['--gin_file', 'configs/char_rnn_tiny.gin', '--output_dir',
              str(tmp_path / 'run'), '--coordinator_address', 'localhost:1',
              '--num_processes', '2', '--process_id', '5'],
             'Joining the multi-process run failed', '--process_id I')
  assert not os.path.exists(tmp_path / 'run')


def test_coordinator_address_in_the_environment_joins_processes(tmp_path):
  # Without a cluster to ask, the process count is missing: joining fails,
  # which shows the variable alone made train.py try.
  result = run_script('train.py', '--gin_file', 'configs/char_rnn_tiny.gin',
                      '--output_dir', str(tmp_path / 'run'),
                      env={'JAX_COORDINATOR_ADDRESS': 'localhost:1'})
  assert result.returncode == 2
  err = ' '.join(result.stderr.split())
  assert 'Joining the multi-process run failed' in err, err
  assert 'Number of processes must be defined' in err
  assert not os.path.exists(tmp_path / 'run')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start_processes(output_dir, data_dir, steps):
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, os.path.join(REPO_ROOT, 'train.py'),
       *_train_argv(output_dir, data_dir, steps), '--platform', 'cpu',
       '--coordinator_address', f'localhost:{port}', '--num_processes', '2',
       '--process_id', str(i)],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]


def _has_checkpoint(output_dir):
  return os.path.isdir(output_dir) and bool(committed_steps(output_dir))


def _finish(processes, timeout=600):
  outputs = [p.communicate(timeout=timeout) for p in processes]
  return [p.returncode for p in processes], outputs


@pytest.mark.slow
def test_two_processes_train_like_one_and_stop_together(
    one_device_run, tiny_data_dir, tmp_path):
  output_dir = str(tmp_path / 'run')
  processes = _start_processes(output_dir, tiny_data_dir, 10_000)
  deadline = time.time() + 300
  while not _has_checkpoint(output_dir):
    assert all(p.poll() is None for p in processes), _finish(processes)
    assert time.time() < deadline, 'no checkpoint within 300 s'
    time.sleep(0.2)
  processes[1].send_signal(signal.SIGTERM)  # only the one that doesn't write
  codes, outputs = _finish(processes)
  assert codes == [trainer.EXIT_INTERRUPTED] * 2, outputs
  stopped = committed_steps(output_dir)[-1]
  assert f'Stopped at step {stopped};' in outputs[0][1]
  assert stopped < STEPS, 'the run went past the steps this test compares'

  codes, outputs = _finish(_start_processes(output_dir, tiny_data_dir, STEPS))
  assert codes == [0, 0], outputs
  assert f'from its checkpoint at step {stopped}' in outputs[0][0]
  assert 'Step' not in outputs[1][0]  # only process 0 logs
  assert 'Data parallel over 2 cpu devices in 2 processes' in outputs[0][0]
  assert 'same 8 streams of the train split and feeds 4' in outputs[0][0]
  _assert_same_training(_saved(output_dir, STEPS), _saved(one_device_run))


def _smoothed(losses, width=5):
  return np.convolve(losses, np.ones(width) / width, mode='valid')


@pytest.mark.slow
def test_bfloat16_run_trains_close_to_float32(one_device_run, tiny_data_dir,
                                              tmp_path):
  output_dir = str(tmp_path / 'bf16')
  train_py.main(_train_argv(output_dir, tiny_data_dir, STEPS,
                         "RNNLanguageModel.compute_dtype = 'bfloat16'"))
  mixed, full = _saved(output_dir), _saved(one_device_run)
  assert all(w.dtype == np.float32 for w in mixed.weights)
  assert mixed.train_loss[-5:].mean() < mixed.train_loss[:5].mean() - 0.25
  # The bf16 model's cast layers change how init splits its random keys, so
  # it starts from other weights: compare the curves smoothed over 5 steps.
  np.testing.assert_allclose(_smoothed(mixed.train_loss),
                             _smoothed(full.train_loss), rtol=0.03)
  np.testing.assert_allclose(_eval_losses(output_dir),
                             _eval_losses(one_device_run), rtol=0.03)


@pytest.fixture(scope='module')
def moved_run(tiny_data_dir, tmp_path_factory):
  """Trained on 8 devices to half the steps, then resumed on 1."""
  output_dir = str(tmp_path_factory.mktemp('moved'))
  result = run_script('train.py', '--platform', 'cpu', *_train_argv(
      output_dir, tiny_data_dir, STEPS // 2), env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stderr
  train_py.main(_train_argv(output_dir, tiny_data_dir))
  return output_dir


@pytest.mark.slow
def test_streams_resumed_on_another_device_count_train_like_on_one(
    one_device_run, moved_run):
  _assert_same_training(_saved(moved_run), _saved(one_device_run))
  # The resumed run also evaluated at the step it first stopped at.
  losses = _eval_losses_by_step(moved_run)
  for step, loss in _eval_losses_by_step(one_device_run).items():
    assert losses[step] == pytest.approx(loss, rel=RTOL)


def _eval_losses_by_step(output_dir):
  with open(os.path.join(output_dir, 'metrics.jsonl')) as f:
    return {record['step']: record['eval/loss']
            for record in map(json.loads, f)}


_INSPECT_STATE = textwrap.dedent('''
    import json, sys
    import jax
    from rnn_toolkit import configurables
    from rnn_toolkit.training import trainer
    configurables.parse(['configs/char_rnn_tiny.gin'], sys.argv[2:])
    loop = trainer.train_and_evaluate(sys.argv[1])
    carried = [a for a in jax.tree_util.tree_leaves(loop.model.state)
               if a.ndim == 2]
    print(json.dumps({
        'shapes': [list(a.shape) for a in carried],
        'devices': sorted({len(a.sharding.device_set) for a in carried}),
        'rows_per_device': sorted({s.data.shape[0] for a in carried
                                   for s in a.addressable_shards}),
    }))
''')


@pytest.mark.slow
def test_carried_states_are_split_over_the_devices_with_their_rows(
    tiny_data_dir, tmp_path):
  bindings = [*tiny_data_params(tiny_data_dir)[1::2],
              'train_and_evaluate.n_steps = 2']
  result = subprocess.run(
      [sys.executable, '-c', _INSPECT_STATE, str(tmp_path / 'run'),
       *bindings], cwd=REPO_ROOT, env=dict(os.environ, **EIGHT_DEVICES),
      text=True, capture_output=True, timeout=600)
  assert result.returncode == 0, result.stderr
  layout = json.loads(result.stdout.strip().splitlines()[-1])
  assert layout == {'shapes': [[8, 32]], 'devices': [8],
                    'rows_per_device': [1]}
