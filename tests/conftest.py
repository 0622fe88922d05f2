"""Shared fixtures: tiny TFDS datasets, the prepared one, and a clean gin state."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent JAX compilation cache for the whole session, set before JAX
# is imported: the tiny trainings and evaluations here, in this process and
# in the programs the tests start (they inherit the environment), compile
# the same train and eval steps again and again. pytest-xdist's workers
# inherit the directory their controller made. A size limit turns on the
# cache's file lock, so no process reads an entry while another writes it.
# Processes a test kills or limits get READ_ONLY_JAX_CACHE: a write cut off
# would leave a truncated entry for the others to trip over.
_OWN_JAX_CACHE = None
try:
  import filelock  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
except ImportError:  # JAX's cache then has no lock: no cache
  filelock = None
if filelock and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_JAX_CACHE = tempfile.mkdtemp(prefix='rnn_toolkit_tests_jax_cache_')
  os.environ.update({
      'JAX_COMPILATION_CACHE_DIR': _OWN_JAX_CACHE,
      'JAX_COMPILATION_CACHE_MAX_SIZE': str(8 << 30),
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.3'})
READ_ONLY_JAX_CACHE = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '1e9'}


# The files that take longest, in that order, run before the others (each
# file keeps its own order): under make test's two workers (pytest-xdist,
# --dist loadfile) neither is then left with a long file at the end while
# the other has finished.
_LONGEST_FIRST = (
    'test_reliability.py', 'test_applications.py', 'test_devices.py',
    'test_text_tasks.py', 'test_interruptions.py', 'test_end_to_end.py',
    'test_shipped_configs.py', 'test_decoding.py', 'test_saved_runs.py',
    'test_notebook.py', 'test_recurrence.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
  del config
  if _OWN_JAX_CACHE:
    shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


# The programs (train.py, ...) are scripts at the root, not installed: tests
# call their main() in-process as well as running them.
sys.path[:0] = [REPO_ROOT, os.path.join(REPO_ROOT, 'tests')]

from rnn_toolkit.runtime import trax_compat  # noqa: F401,E402  (before trax)
import gin  # noqa: E402  pylint: disable=g-import-not-at-top

from rnn_toolkit import configurables  # noqa: E402  pylint: disable=g-import-not-at-top
import tiny_text_dataset  # noqa: E402  pylint: disable=g-import-not-at-top

SHARED_TFDS = os.environ.get(
    'TFDS_DATA_DIR', os.path.join(REPO_ROOT, '..', 'shared', 'tensorflow_datasets'))


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding the prepared `tiny_text` dataset."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tiny_text_dataset.prepare(data_dir)
  return data_dir


@pytest.fixture(scope='session')
def fault_reference(tiny_data_dir, tmp_path_factory):
  """The uninterrupted run the fault-injection experiments compare with.

  One for the session: fault_injection.train_reference() with the signal
  tests' settings (an evaluation every 2 steps), shared by the SIGKILL and
  the signal experiments.
  """
  import fault_injection  # pylint: disable=g-import-not-at-top
  return fault_injection.train_reference(
      tiny_data_dir, str(tmp_path_factory.mktemp('reference')),
      settings=fault_injection.SIGNAL_SETTINGS)


@pytest.fixture(scope='session')
def faulty_data_dir(tmp_path_factory):
  """A TFDS data_dir with tiny datasets whose examples a pipeline must refuse.

  See tiny_labelled_datasets.prepare_faulty.
  """
  import tiny_labelled_datasets  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('faulty_tfds'))
  tiny_labelled_datasets.prepare_faulty(data_dir)
  return data_dir


@pytest.fixture(scope='session')
def generated_dir(tmp_path_factory):
  """A TFDS data_dir for the toolkit's generated datasets, prepared as used."""
  return str(tmp_path_factory.mktemp('generated_tfds'))


def raw_examples(name, split, data_dir):
  """The examples of `split` of TFDS dataset `name`, as NumPy dicts."""
  import data  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = data.get_builder(name, data_dir)
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


@pytest.fixture(scope='session')
def mock_dataset(tmp_path_factory):
  """dataset -> (name, data_dir) of its mock copy, made once for the session.

  tests/mock_data_run.py's prepare_copy: random examples with the dataset's
  real features, written out as a prepared dataset. Tests only read it.
  """
  import mock_data_run  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('mock_tfds'))
  made = {}

  def copy_of(dataset):
    if dataset not in made:
      made[dataset] = mock_data_run.prepare_copy(dataset, data_dir)
    return made[dataset], data_dir
  return copy_of


def metrics_of_a_mock_data_run(mock_dataset, tmp_path, config, dataset, inputs,
                               model):
  """evaluate's metrics after a shipped config trains on mock `dataset`.

  The config (tests/mock_data_run.py's `run`, in this process) trains on the
  `mock_dataset` copy; its model is shrunk and trained for 4 steps.
  """
  import mock_data_run  # pylint: disable=g-import-not-at-top
  return mock_data_run.run(
      config, *mock_dataset(dataset), inputs, str(tmp_path),
      f'{model}.d_model = 8', f'{model}.n_units = 8', 'BATCH_SIZE = 4',
      'train_and_evaluate.eval_every = 2', 'multifactor.warmup_steps = 1')


@pytest.fixture
def shakespeare_data_dir():
  """The data_dir with the prepared tiny_shakespeare; skips the test without it."""
  if not os.path.isdir(os.path.join(SHARED_TFDS, 'tiny_shakespeare')):
    pytest.skip(f'tiny_shakespeare is not prepared in {SHARED_TFDS} '
                f'(set TFDS_DATA_DIR to a directory that holds it)')
  return SHARED_TFDS


@pytest.fixture(autouse=True)
def clean_gin():
  """Each test starts and ends with no gin bindings."""
  gin.clear_config()
  yield
  gin.clear_config()


def run_script(script, *args, env=None, timeout=600):
  """Runs a repository script in a fresh Python process, as a user would."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, script),
                         *args], cwd=REPO_ROOT, env=full_env, text=True,
                        capture_output=True, timeout=timeout)


def run_on_devices(code, n_devices, timeout=600):
  """Runs Python `code` in a fresh process that sees `n_devices` CPU devices.

  A fresh process, since JAX fixes its devices when it starts.
  """
  env = dict(os.environ, JAX_PLATFORMS='cpu',  # the flag adds CPU devices
             XLA_FLAGS=f'--xla_force_host_platform_device_count={n_devices}')
  return subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=env,
                        text=True, capture_output=True, timeout=timeout)


def tiny_data_params(data_dir):
  """train.py arguments that read the `tiny_text` dataset from `data_dir`."""
  return [arg for binding in tiny_text_dataset.gin_bindings(data_dir)
          for arg in ('--gin_param', binding)]


def committed_steps(output_dir):
  """The steps of the run's committed checkpoints, oldest first."""
  return configurables.Checkpoints(output_dir, read_only=True).steps()


def fails_with(capsys, main, argv, *words):
  """Runs a CLI `main` in-process; asserts exit 2 with `words` in one message."""
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  err = ' '.join(capsys.readouterr().err.split())
  assert 'Traceback' not in err
  for word in words:
    assert word in err, err
  return err


def snapshot(directory):
  """{path: bytes} of every file below `directory`, hidden ones (a
  temporary file left behind) included."""
  found = {}
  for root, _, names in os.walk(directory):
    for name in sorted(names):
      path = os.path.join(root, name)
      if os.path.isfile(path):
        with open(path, 'rb') as f:
          found[path] = f.read()
  return found
