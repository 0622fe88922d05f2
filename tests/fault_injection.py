"""Kills or stops train.py at random moments and checks nothing is lost.

A reference run trains straight through. A second run directory is then
trained by processes killed with `kill -9`, each at a random moment: half
the kills wait for a checkpoint commit to be in progress (a test-only
delay, checkpoints.COMMIT_DELAY_ENV, holds each commit open), the others
land anywhere in start-up or training. After every kill each committed checkpoint
must load with matching checksums. Finally one process runs to the end,
and its per-step losses, weights, optimizer slots and evaluation history
must equal the reference run's exactly, and so must its carried
recurrent state: the runs train on streams (CharLMInputs.streaming).

`run_signals` does the same with SIGTERM and SIGINT, with an evaluation
every 2 steps: some signals land in start-up (compilation included), the
others while training, and at least one at a step where an evaluation is
due. Each stopped process must exit with 75; the finished run must also
have written the same evaluation records to metrics.jsonl as the reference.

The suite runs a few of each (tests/test_interruptions.py); for more:

    python tests/fault_injection.py --kills 30 --steps 150
    python tests/fault_injection.py --signals 30 --steps 150
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO_ROOT, os.path.join(REPO_ROOT, 'tests')]

from rnn_toolkit.storage import checkpoints  # noqa: E402  pylint: disable=g-import-not-at-top
from rnn_toolkit import configurables  # noqa: E402
from rnn_toolkit.storage import run_dir  # noqa: E402
import tiny_text_dataset  # noqa: E402
from rnn_toolkit.training import trainer

N_STEPS = 40
# Many small checkpoints and evaluations, so kills meet them often. The
# runs train on streams with carried state (truncated BPTT): the resumed
# run must also pick up each stream's recurrent state and its place in the
# text.
STREAMING = 'CharLMInputs.streaming = True'
SETTINGS = [STREAMING, 'train_and_evaluate.checkpoint_every = 3',
            'train_and_evaluate.eval_every = 8',
            'Checkpoints.keep_last = 2', 'Checkpoints.keep_best = 1']
# An evaluation every other step, so that stops often land on one; not
# every evaluation step is a checkpoint step.
SIGNAL_SETTINGS = [STREAMING, 'train_and_evaluate.checkpoint_every = 3',
                   'train_and_evaluate.eval_every = 2',
                   'Checkpoints.keep_last = 2', 'Checkpoints.keep_best = 1']
# Record fields that measure time, not training.
_TIMING = ('time', 'train/steps per second')
# For the processes killed or stopped: JAX may read its compilation cache
# (tests/conftest.py sets one) but not write it, as a write cut off by the
# kill would leave a truncated entry.
_READ_ONLY_CACHE = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '1e9'}


def train_command(data_dir, output_dir, steps=N_STEPS, settings=SETTINGS):
  params = [*tiny_text_dataset.gin_bindings(data_dir), *settings]
  return [sys.executable, os.path.join(REPO_ROOT, 'train.py'),
          '--gin_file', 'configs/char_rnn_tiny.gin', '--output_dir',
          output_dir, '--steps', str(steps),
          *[arg for p in params for arg in ('--gin_param', p)]]


def _run(command, env=None):
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=900)
  if result.returncode != 0:
    raise AssertionError(f'{command} failed:\n{result.stderr[-3000:]}')


def _commit_in_progress(output_dir):
  directory = os.path.join(output_dir, checkpoints.SUBDIR)
  return os.path.isdir(directory) and any(
      'tmp' in name for name in os.listdir(directory))


def _kill_once(command, output_dir, rng, env, wait_for_commit, run_seconds):
  """Starts training, kills it with SIGKILL; True if it died mid-commit.

  A commit kill lets 0 to 3 commits pass and kills inside the next one; any
  other kill comes at a random time up to about one uninterrupted run's
  length (`run_seconds`), so kills spread over start-up and training.
  """
  process = subprocess.Popen(command, cwd=REPO_ROOT,
                             env=dict(env, **_READ_ONLY_CACHE),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + (
      600 if wait_for_commit else rng.uniform(0.2, 1.2) * run_seconds)
  commits_to_pass, was_committing = rng.randint(0, 3), False
  while time.time() < deadline and process.poll() is None:
    committing = _commit_in_progress(output_dir)
    if wait_for_commit and committing and not was_committing:
      if not commits_to_pass:
        time.sleep(rng.uniform(0, 0.3))  # somewhere inside the commit
        break
      commits_to_pass -= 1
    was_committing = committing
    time.sleep(0.02)
  mid_commit = _commit_in_progress(output_dir)
  process.send_signal(signal.SIGKILL)
  process.wait()
  return mid_commit and process.returncode == -signal.SIGKILL


def check_committed(output_dir):
  """Restores every committed checkpoint; returns their steps."""
  saved = configurables.Checkpoints(output_dir, read_only=True)
  steps = saved.steps()
  for step in steps:
    saved.restore(step)  # raises DamagedCheckpoint on any mismatch
  return steps


def final_state(output_dir):
  """The newest checkpoint's TrainingState."""
  saved = configurables.Checkpoints(output_dir, read_only=True)
  return saved.restore(saved.steps()[-1])


def assert_same_training(got, want, steps):
  assert got.step == want.step == steps, (got.step, want.step)
  np.testing.assert_array_equal(got.train_loss, want.train_loss)
  for name in ('weights', 'slots', 'state'):
    for a, b in zip(getattr(got, name), getattr(want, name), strict=True):
      np.testing.assert_array_equal(a, b)
  # Evaluations and average training losses; timings differ, of course.
  for mode, metric in (('eval', 'metrics/loss'), ('eval', 'metrics/accuracy'),
                       ('train', 'metrics/loss')):
    got_values, want_values = (s.history['_values'][mode][metric]
                               for s in (got, want))
    assert got_values == want_values, (mode, metric, got_values, want_values)


def prepare(work_dir, data_dir=None):
  """`data_dir`, or a new one in `work_dir` with tiny_text prepared."""
  if data_dir is None:
    data_dir = os.path.join(work_dir, 'tfds')
    tiny_text_dataset.prepare(data_dir)
  return data_dir


def train_reference(data_dir, output_dir, steps=N_STEPS, settings=SETTINGS):
  """Trains the uninterrupted run; returns (output_dir, seconds it took)."""
  start = time.time()
  _run(train_command(data_dir, output_dir, steps, settings))
  return output_dir, time.time() - start


def run(kills, work_dir, steps=N_STEPS, seed=0, commit_delay=0.5, log=print,
        data_dir=None, reference=None, settings=SETTINGS):
  """The whole experiment; returns a summary dict. Raises AssertionError.

  Kills stop early once the killed run has committed its last step (any
  further kill would only hit a finished run). `reference`: a
  train_reference() result of the same `steps` and `settings` on
  `data_dir`, else one is trained in `work_dir`.
  """
  rng = random.Random(seed)
  data_dir = prepare(work_dir, data_dir)
  killed = os.path.join(work_dir, 'killed')
  reference, run_seconds = reference or train_reference(
      data_dir, os.path.join(work_dir, 'reference'), steps, settings)
  env = dict(os.environ, **{checkpoints.COMMIT_DELAY_ENV: str(commit_delay)})
  command = train_command(data_dir, killed, steps, settings)
  mid_commit = done = 0
  committed = check_committed(killed)
  while done < kills and steps not in committed:
    mid_commit += _kill_once(command, killed, rng, env,
                             wait_for_commit=done % 2 == 0,
                             run_seconds=run_seconds)
    done += 1
    committed = check_committed(killed)
    log(f'kill {done}/{kills}: committed steps {committed}')
  _run(command)  # the commit delay only aimed the kills
  assert_same_training(final_state(killed), final_state(reference), steps)
  return {'kills': done, 'mid_commit': mid_commit}


def evaluation_records(output_dir):
  """metrics.jsonl's records without their timings."""
  with open(os.path.join(output_dir, run_dir.METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in _TIMING} for r in records]


def _stop_once(command, output_dir, rng, signum, in_training, run_seconds):
  """Starts training and sends it `signum`; returns its exit status.

  In training: once a new evaluation record appears (training is under
  way), after a random pause of up to a few steps. Otherwise at a random
  moment up to about one uninterrupted run's length, or at once when a new
  evaluation record appears, if sooner: a run that goes faster than the
  reference did (a less loaded machine) is still stopped, not finished.
  """
  records = os.path.join(output_dir, run_dir.METRICS_FILE)
  lines = lambda: (sum(1 for _ in open(records)) if os.path.exists(records)
                   else 0)
  before = lines()
  process = subprocess.Popen(command, cwd=REPO_ROOT,
                             env=dict(os.environ, **_READ_ONLY_CACHE),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + (600 if in_training
                            else rng.uniform(0.05, 0.6) * run_seconds)
  while time.time() < deadline and process.poll() is None:
    if lines() > before:
      if in_training:
        time.sleep(rng.uniform(0, 0.05))
      break
    time.sleep(0.01)
  process.send_signal(signum)
  return process.wait()


def run_signals(stops, work_dir, steps=N_STEPS, seed=0, log=print,
                data_dir=None, reference=None):
  """Stops train.py with signals; returns a summary dict. Raises AssertionError.

  Goes on past `stops` until one stop has landed on an evaluation step
  (at most 3 * stops signals, and while the run has steps left).
  `reference`: a train_reference() result of the same `steps` on
  `data_dir` with SIGNAL_SETTINGS, else one is trained in `work_dir`.
  """
  rng = random.Random(seed)
  data_dir = prepare(work_dir, data_dir)
  stopped = os.path.join(work_dir, 'stopped')
  reference, run_seconds = reference or train_reference(
      data_dir, os.path.join(work_dir, 'reference'), steps, SIGNAL_SETTINGS)
  command = train_command(data_dir, stopped, steps, SIGNAL_SETTINGS)
  done, at_evaluation, committed = 0, [], []
  while ((done < stops or not at_evaluation) and done < 3 * stops
         and steps not in committed):
    signum = (signal.SIGTERM, signal.SIGINT)[done % 2]
    status = _stop_once(command, stopped, rng, signum,
                        in_training=done % 2 == 1, run_seconds=run_seconds)
    done += 1
    committed = check_committed(stopped)
    assert status in (trainer.EXIT_INTERRUPTED, 0), status
    if status == trainer.EXIT_INTERRUPTED and committed and committed[-1] % 2 == 0:
      at_evaluation.append(committed[-1])
    log(f'signal {done}: exit {status}, committed steps {committed}')
  assert at_evaluation, f'no stop landed on an evaluation step in {done}'
  _run(command)
  assert_same_training(final_state(stopped), final_state(reference), steps)
  got, want = evaluation_records(stopped), evaluation_records(reference)
  assert got == want, (got, want)
  return {'stops': done, 'at_evaluation': at_evaluation}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kills', type=int, default=30)
  parser.add_argument('--signals', type=int, default=0,
                      help='send this many SIGTERM/SIGINT instead of kills.')
  parser.add_argument('--steps', type=int, default=150,
                      help='training steps of each run (enough to outlast '
                           'the kills)')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  start = time.time()
  with tempfile.TemporaryDirectory() as work_dir:
    if args.signals:
      summary = run_signals(args.signals, work_dir, args.steps, args.seed)
      what = (f'{summary["stops"]} signals, {len(summary["at_evaluation"])} '
              f'of them at an evaluation step (steps '
              f'{summary["at_evaluation"]})')
    else:
      summary = run(args.kills, work_dir, args.steps, args.seed)
      what = (f'{summary["kills"]} kills ({summary["mid_commit"]} during a '
              f'checkpoint commit): every committed checkpoint loaded with '
              f'matching checksums after each kill')
  print(f'{what} over {args.steps} steps; the resumed run ended with the '
        f'uninterrupted run\'s per-step losses, weights, slots and '
        f'evaluation metrics, bit for bit. {time.time() - start:.0f} s.')


if __name__ == '__main__':
  main()
