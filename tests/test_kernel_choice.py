"""Which path runs the recurrence: timed once per bucket of shapes, kept in
a cache beside the kernels, read back as it was decided."""

import json
import logging
import os
import shutil

import jax
from jax import numpy as jnp
import numpy as np
import pytest

from models import elman_kernel, kernel_choice
from models.recurrence import elman_scan

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
  assert _timings(caplog) == [
      f"Elman recurrence, 64x256 rows x units: "
      f"{'kernels' if made['kernel'] else 'XLA' + chr(39) + 's scan'} "
      f"(kernels {made['kernel_ms']:.2f} ms, XLA's scan "
      f"{made['xla_ms']:.2f} ms, {made['steps']} steps forward and back)"]
  recorded = json.loads(kernel_choice._cache_file().read_text())
  assert recorded['decisions'] == {'64x256': made}
  kernel_choice.forget_in_memory()  # as a new process would start
  caplog.clear()
  assert kernel_choice.decision(64, 256) == made
  assert kernel_choice.decision(33, 129) == made  # the same bucket
  assert not _timings(caplog)  # read, not timed again


def test_the_cached_decision_is_what_timing_again_finds(cache):
  # At the reference width, 64 rows, the kernels win by a wide margin
  # (about 1.5x, docs/performance.md): timing again must agree with the
  # decision read back, which a mixed-up key or record would not.
  kernel_choice.decision(64, 256)
  kernel_choice.forget_in_memory()
  cached = kernel_choice.decision(64, 256)
  again = kernel_choice.measure(64, 256)
  assert again['kernel'] == cached['kernel'] == True  # noqa: E712


def test_another_cpu_decides_afresh(cache, monkeypatch, caplog):
  caplog.set_level(logging.INFO)
  kernel_choice.hold(8, 16, False)
  kernel_choice.decision(8, 16)  # held, not timed
  assert not _timings(caplog)
  monkeypatch.setattr(kernel_choice, '_cpu_model', lambda: 'Another CPU')
  kernel_choice.decision(8, 16)
  assert len(_timings(caplog)) == 1
  assert len(list(cache.glob('kernel_choice-*.json'))) == 1  # held: unwritten


def test_a_damaged_cache_file_is_timed_again_and_rewritten(cache, caplog):
  caplog.set_level(logging.INFO)
  path = kernel_choice._cache_file()
  path.write_text('{"decisions": {"8x16": {"kernel": "yes"}}}')
  made = kernel_choice.decision(8, 16)
  assert 'not in the expected form' in caplog.text
  assert len(_timings(caplog)) == 1
  assert json.loads(path.read_text())['decisions'] == {'8x16': made}


def test_a_cache_others_can_write_is_neither_read_nor_written(cache, caplog):
  caplog.set_level(logging.INFO)
  path = kernel_choice._cache_file()
  path.write_text(json.dumps({'decisions': {'8x16': {'kernel': True}}}))
  before = path.read_text()
  cache.chmod(0o777)
  try:
    kernel_choice.decision(8, 16)
  finally:
    cache.chmod(0o700)
  assert len(_timings(caplog)) == 1  # the file's decision was not taken
  assert path.read_text() == before


def test_forced_modes_and_an_unknown_one(cache, monkeypatch):
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'kernel')
  assert kernel_choice.use_kernels(1, 8)
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'xla')
  assert not kernel_choice.use_kernels(64, 256)
  monkeypatch.setenv('TOOLKIT_RNN_KERNEL', 'fastest')
  with pytest.raises(ValueError, match="'fastest'.*'auto'.*'kernel'.*'xla'"):
    kernel_choice.use_kernels(64, 256)
  assert not list(cache.glob('kernel_choice-*.json'))  # nothing was timed


@pytest.mark.parametrize('kernel', [True, False])
def test_a_jitted_gradient_follows_the_decision(cache, kernel):
  rows, units = 24, 40
  kernel_choice.hold(rows, units, kernel)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(rows, 5, units)).astype(np.float32)
  h0 = np.zeros((rows, units), np.float32)
  w = (rng.normal(size=(units, units)) / units).astype(np.float32)
  loss = lambda w: elman_scan(x, None, h0, w)[0].sum()
  text = jax.jit(jax.grad(loss)).lower(w).as_text()
  assert ('toolkit_elman_backward' in text) == kernel


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
