"""Which path runs the recurrence: timed once per bucket of shapes, kept in
a cache beside the kernels, read back as it was decided."""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
from jax import numpy as jnp
import numpy as np
import pytest

from models import elman_kernel, kernel_choice
from models.recurrence import elman_scan, elman_scan_time_major
from test_recurrence import loop_elman

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=protected-access


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """An empty decision cache beside a copy of the built kernels (so they
  are not built again), with the decisions in memory dropped, before and
  after."""
  if shutil.which(os.environ.get('CXX', 'c++')) is None:
    pytest.skip('no C++ compiler here: there is no choice to make')
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'auto')
  assert elman_kernel.available()
  library = elman_kernel.cache_dir() / f'elman_cpu-{elman_kernel.cache_key()}.so'
  directory = tmp_path / 'cache'
  directory.mkdir(mode=0o700)
  if library.exists():
    for path in (library, library.with_name(library.name + '.sha256')):
      shutil.copy(path, directory / path.name)
  monkeypatch.setenv('TOOLKIT_CACHE_DIR', str(directory))
  kernel_choice.forget_in_memory()
  yield directory
  kernel_choice.forget_in_memory()


def _timings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.getMessage().startswith('Elman recurrence, ')]


def test_a_decision_read_from_the_cache_equals_the_one_made(cache, caplog):
  caplog.set_level(logging.INFO)
  made = kernel_choice.decision(64, 256)
  assert made['kernel'] == (made['kernel_ms'] < made['xla_ms'])
  assert made['forward_kernel'] == (
      made['forward_kernel_ms'] < made['forward_xla_ms'])
  path = lambda kernel: 'kernels' if kernel else "XLA's scan"
  assert _timings(caplog) == [
      f"Elman recurrence, 64x256 rows x units, 64 rows and {made['steps']} "
      f"steps timed: training on {path(made['kernel'])} (kernels "
      f"{made['kernel_ms']:.2f} ms, XLA {made['xla_ms']:.2f} ms), inference "
      f"on {path(made['forward_kernel'])} ({made['forward_kernel_ms']:.2f} "
      f"ms, {made['forward_xla_ms']:.2f} ms)"]
  recorded = json.loads(kernel_choice._cache_file().read_text())
  assert recorded['decisions'] == {'64x256': made}
  kernel_choice.forget_in_memory()  # as a new process would start
  caplog.clear()
  assert kernel_choice.decision(64, 256) == made
  assert kernel_choice.decision(33, 129) == made  # the same bucket
  assert not _timings(caplog)  # read, not timed again


_DECIDE = """
import json, logging
logging.basicConfig(level=logging.INFO)
from models import kernel_choice
print(json.dumps(kernel_choice.decision(8, 16)))
"""


def test_a_new_process_reads_the_decision_another_made(cache):
  # As a resumed training reads what the run it resumes decided: the same
  # record, with nothing timed again.
  def decide():
    done = subprocess.run([sys.executable, '-c', _DECIDE], env=dict(
        os.environ, TOOLKIT_CACHE_DIR=str(cache)), capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT, check=True)
    return json.loads(done.stdout.splitlines()[-1]), done.stderr
  made, log = decide()
  assert 'Elman recurrence, 8x16 rows x units' in log
  read, log = decide()
  assert read == made and 'Elman recurrence' not in log


def test_another_cpu_decides_afresh(cache, monkeypatch, caplog):
  caplog.set_level(logging.INFO)
  kernel_choice.decision(8, 16)
  monkeypatch.setattr(kernel_choice, '_cpu_model', lambda: 'Another CPU')
  kernel_choice.decision(8, 16)
  assert len(_timings(caplog)) == 2
  assert len(list(cache.glob('kernel_choice-*.json'))) == 2


def test_a_held_decision_is_not_timed_nor_written(cache, caplog):
  caplog.set_level(logging.INFO)
  kernel_choice.hold(8, 16, False)
  assert kernel_choice.decision(8, 16) == {
      'kernel': False, 'forward_kernel': False, 'held': True}
  assert not _timings(caplog)
  kernel_choice.decision(16, 16)  # timed, and written
  assert list(json.loads(kernel_choice._cache_file().read_text())[
      'decisions']) == ['16x16']


def test_a_damaged_cache_file_is_timed_again_and_rewritten(cache, caplog):
  caplog.set_level(logging.INFO)
  path = kernel_choice._cache_file()
  path.write_text('{"decisions": {"8x16": {"kernel": "yes", '
                  '"forward_kernel": true}}}')
  made = kernel_choice.decision(8, 16)
  assert 'not in the expected form' in caplog.text
  assert len(_timings(caplog)) == 1
  assert json.loads(path.read_text())['decisions'] == {'8x16': made}


def test_a_cache_others_can_write_is_neither_read_nor_written(cache, caplog):
  caplog.set_level(logging.INFO)
  path = kernel_choice._cache_file()
  path.write_text(json.dumps({'decisions': {'8x16': {
      'kernel': True, 'forward_kernel': True}}}))
  before = path.read_text()
  cache.chmod(0o777)
  try:
    kernel_choice.decision(8, 16)
  finally:
    cache.chmod(0o700)
  assert len(_timings(caplog)) == 1  # the file's decision was not taken
  assert path.read_text() == before


def test_an_unwritable_cache_keeps_the_decision_in_memory(cache, caplog):
  cache.chmod(0o500)  # private, but read-only
  try:
    made = kernel_choice.decision(8, 16)
    assert kernel_choice.decision(8, 16) == made
  finally:
    cache.chmod(0o700)
  if os.geteuid() != 0:  # root writes anyway
    assert 'could not be written' in caplog.text
    assert not list(cache.glob('*.json')) and not list(cache.glob('.*tmp'))


def test_forced_modes_and_an_unknown_one(cache, monkeypatch):
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'kernel')
  assert kernel_choice.use_kernels(1, 8)
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'xla')
  assert not kernel_choice.use_kernels(64, 256)
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'fastest')
  with pytest.raises(ValueError, match="'fastest'.*'auto'.*'kernel'.*'xla'"):
    kernel_choice.use_kernels(64, 256)
  assert not list(cache.glob('kernel_choice-*.json'))  # nothing was timed


@pytest.mark.parametrize('kernel,forward_kernel',
                         [(True, False), (False, True)])
@pytest.mark.parametrize('time_major', [False, True])
def test_training_and_inference_follow_their_decisions(
    cache, kernel, forward_kernel, time_major):
  # The forward pass alone (inference: no VJP) has a decision of its own.
  rows, units = 24, 40
  kernel_choice.hold(rows, units, kernel, forward_kernel)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(rows, 5, units)).astype(np.float32)
  h0 = np.zeros((rows, units), np.float32)
  w = (rng.normal(size=(units, units)) / units).astype(np.float32)
  if time_major:
    scan = lambda w: elman_scan_time_major(x.swapaxes(0, 1), None, h0, w)
  else:
    scan = lambda w: elman_scan(x, None, h0, w)
  loss = lambda w: scan(w)[0].sum()
  training = jax.jit(jax.grad(loss)).lower(w).as_text()
  assert ('toolkit_elman_backward' in training) == kernel
  assert ('toolkit_elman_forward' in training) == kernel
  inference = jax.jit(loss).lower(w).as_text()
  assert ('toolkit_elman_forward' in inference) == forward_kernel
  want = loop_elman(x, None, h0, w, jnp.tanh)[0].sum()
  np.testing.assert_allclose(jax.jit(loss)(w), want, rtol=1e-5)


def test_decided_while_tracing(cache, caplog):
  # The first use of a shape is usually inside jit: the timing runs its own
  # computations outside that trace.
  caplog.set_level(logging.INFO)
  rows, units = 8, 16
  x = np.ones((rows, 3, units), np.float32)
  w = np.eye(units, dtype=np.float32)

  @jax.jit
  def last_state(w):
    return elman_scan(x, None, jnp.zeros((rows, units)), w)[1]
  np.testing.assert_allclose(last_state(w),
                             elman_scan(x, None, np.zeros((rows, units)),
                                        w)[1], rtol=1e-6)
  assert len(_timings(caplog)) == 1
  assert kernel_choice.bucket(rows, units) in json.loads(
      kernel_choice._cache_file().read_text())['decisions']
