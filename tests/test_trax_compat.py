"""Each fix in trax_compat, shown to be needed and shown to work."""

import importlib
import warnings
import subprocess
import sys

import numpy as np
import pytest
from jax import numpy as jnp
from trax import fastmath
from trax import layers as tl
from trax import optimizers
from trax import shapes
from trax.supervised import training

from rnn_toolkit.runtime import trax_compat
from conftest import REPO_ROOT, run_on_devices


def _unpatched_tree_unflatten():
  """trax's own tree_unflatten, loaded afresh from its source file."""
  spec = importlib.util.find_spec('trax.fastmath.numpy')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.tree_unflatten


def test_trax_tree_unflatten_fails_on_current_jax_without_the_fix():
  weights_tree = (jnp.zeros(2), (), (jnp.ones(3), None))
  with pytest.raises(TypeError):
    _unpatched_tree_unflatten()([1, 2], weights_tree, copy_from_tree=[None, ()])


def test_patched_tree_unflatten_keeps_markers_and_fills_arrays():
  weights_tree = (jnp.zeros(2), (), (jnp.ones(3), None), [jnp.ones(1)])
  tree, rest = fastmath.tree_unflatten(['a', 'b', 'c', 'd'], weights_tree,
                                       copy_from_tree=[None, ()])
  assert tree == ('a', (), ('b', None), ['c'])
  assert rest == ['d']
  assert fastmath.tree_unflatten is trax_compat._tree_unflatten


def _batches():
  rng = np.random.default_rng(0)
  while True:
    x = rng.integers(1, 5, size=(2, 4)).astype(np.int32)
    yield x, x, np.ones_like(x, np.float32)


def _loop(output_dir):
  model = tl.Serial(tl.Embedding(5, 3), tl.Dense(5), tl.LogSoftmax())
  task = training.TrainTask(_batches(), tl.WeightedCategoryCrossEntropy(),
                            optimizers.Adam(0.01))
  return training.Loop(model, [task], output_dir=output_dir, n_devices=1,
                       checkpoint_at=lambda step: step % 3 == 0)


def test_loop_checkpoint_resumes_with_its_weights(tmp_path):
  first = _loop(str(tmp_path))
  first.run(3)
  resumed = _loop(str(tmp_path))
  assert resumed.step == 3
  for a, b in zip(fastmath.tree_flatten(first.model.weights),
                  fastmath.tree_flatten(resumed.model.weights)):
    np.testing.assert_array_equal(a, b)


def test_init_from_file_loads_checkpoint_weights(tmp_path):
  loop = _loop(str(tmp_path))
  loop.run(3)
  model = tl.Serial(tl.Embedding(5, 3), tl.Dense(5), tl.LogSoftmax())
  model.init_from_file(str(tmp_path / 'model.pkl.gz'), weights_only=True,
                       input_signature=shapes.ShapeDtype((2, 4), np.int32))
  x = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.int32)
  np.testing.assert_allclose(model(x), loop.model(x), atol=1e-6)


def _stderr_of(code):
  return subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, text=True,
                        capture_output=True, timeout=300).stderr


@pytest.mark.slow
def test_gym_notice_is_silenced():
  assert 'Gym has been unmaintained' in _stderr_of('import gym')
  assert 'Gym has been unmaintained' not in _stderr_of(
      'from rnn_toolkit.runtime import trax_compat\nimport trax')


def test_tensorflow_datasets_imports_with_its_undeclared_dependency():
  import importlib_resources  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  assert tfds.builder('tiny_shakespeare', data_dir='/nonexistent').name == (
      'tiny_shakespeare')


def test_trax_host_queries_go_through_current_jax_names():
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.host_count is jax.process_count
  assert jax.host_id is jax.process_index
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    is_chief, n_hosts, n_devices, _ = training.init_host_and_devices(
        n_devices=1, random_seed=0)
  assert (is_chief, n_hosts, n_devices) == (True, 1, 1)


def _gzip_warnings(loop, quiet):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    if quiet:
      trax_compat._quiet_gzip_mode_warning()
    loop.run(3)
  return [w for w in caught if 'GzipFile' in str(w.message)]


def test_checkpoint_writes_raise_no_gzip_mode_warning(tmp_path):
  loop = _loop(str(tmp_path))
  assert _gzip_warnings(loop, quiet=False)
  assert not _gzip_warnings(loop, quiet=True)


_ON_EIGHT_DEVICES = '''
import inspect, sys
import jax, numpy as np
# trax unpatched, but imported as fast as trax_compat imports it (a frames-only
# inspect.stack; its own test is test_importing_trax_looks_up_no_frame_sources)
def frames_only(context=1):
  frame, frames = sys._getframe(1), []
  while frame is not None:
    code = frame.f_code
    frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno,
                                    code.co_name, None, None))
    frame = frame.f_back
  return frames
original_stack, inspect.stack = inspect.stack, frames_only
from trax.supervised import training
inspect.stack = original_stack
try:
  training.init_host_and_devices(n_devices=1)
  print('unpatched: accepted')
except ValueError as e:
  print('unpatched: refused:', e)
from rnn_toolkit.runtime import trax_compat
from trax import layers as tl
from trax import fastmath
_, _, n_devices, _ = training.init_host_and_devices(n_devices=1)
x = jax.device_put(np.ones(3), jax.devices()[5])
print('patched:', jax.local_device_count(), fastmath.local_device_count(),
      n_devices, tl.on_cpu(x) is x)
'''


def test_trax_sees_one_device_so_sharded_batches_drive_the_devices():
  # Without the fix trax refuses a Loop on fewer devices than JAX shows, and
  # tl.on_cpu pins arrays to CPU device 0; with it, both leave JAX alone.
  result = run_on_devices(_ON_EIGHT_DEVICES, 8, timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'unpatched: refused: JAX cannot work yet with n_devices != all' \
      in result.stdout
  assert 'patched: 8 1 1 True' in result.stdout


def test_trax_shape_checks_still_name_where_they_were_declared():
  # trax imported with the cheap inspect.stack: the recorded caller must
  # still be the line of the decorator above trax's Dense.
  import inspect  # pylint: disable=g-import-not-at-top
  source = inspect.getsourcefile(tl.Dense)
  with open(source, encoding='utf-8') as f:
    lines = f.read().splitlines()
  decorator = lines.index('class Dense(base.Layer):')  # 1-based: line above
  assert lines[decorator - 1].startswith('@assert_shape(')
  message = tl.Dense(3)._before_assert_fun._message  # pylint: disable=protected-access
  assert message.startswith(f'Defined at {source}:{decorator} ')
  assert inspect.stack.__module__ == 'inspect'  # restored after the import


def test_importing_trax_looks_up_no_frame_sources():
  # Without the fix, importing trax calls inspect.getmodule about 8,000
  # times (each scanning sys.modules); count them in a fresh process.
  program = ('import inspect\ncalls = [0]\noriginal = inspect.getmodule\n'
             'def counted(*a, **k):\n  calls[0] += 1\n  return original(*a, **k)\n'
             'inspect.getmodule = counted\nfrom rnn_toolkit.runtime import trax_compat\n'
             'from trax import layers\nprint(calls[0])\n')
  done = subprocess.run([sys.executable, '-c', program], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  assert int(done.stdout.split()[-1]) < 100
