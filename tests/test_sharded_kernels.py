"""The Elman layer's gradient with the batch split over simulated devices.

Training splits the batch over a 1-D mesh (axis 'data') and replicates the
weights, and XLA partitions the jitted step from those shardings. Each
device must run the recurrence on its own rows: no activations gathered
across devices, the CPU kernels (where they are used) called on per-device
shapes, and only the weight gradients (and the loss) added across devices.
"""

import json
import os
import re
import shutil

import pytest

from conftest import run_on_devices

FEATURES, TIME, UNITS = 24, 16, 256

# Run in a fresh process with N CPU devices: prints one JSON line per case
# with what the compiled HLO of the sharded gradient holds, and how far its
# results are from the same function's on one device.
_MEASURE = '''
import json, os, re, sys
import numpy as np
from rnn_toolkit.runtime import trax_compat  # noqa: F401  (before trax)
import jax
from jax import numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from trax import shapes
from models import elman_kernel, kernel_choice, rnn

FEATURES, TIME, UNITS = {features}, {time}, {units}
KERNELS = ('toolkit_elman_forward', 'toolkit_elman_backward',
           'toolkit_transposed_product')
COLLECTIVES = ('all-gather', 'all-to-all', 'collective-permute',
               'reduce-scatter', 'all-reduce')


def inputs(rows):
  rng = np.random.default_rng(rows)
  x = rng.normal(size=(rows, TIME, FEATURES)).astype(np.float32)
  lengths = np.resize([TIME, TIME // 2, 3], rows)[:, None]
  mask = (np.arange(TIME) < lengths).astype(np.float32)
  readout = rng.normal(size=(rows, TIME, UNITS)).astype(np.float32)
  return x, mask, readout


def hlo_facts(text):
  """Collectives (op, operand shapes) and kernel calls (name, operand
  shapes) of compiled HLO text."""
  collectives, kernels = [], []
  for line in text.splitlines():
    op = re.search(r'= (.*?) (' + '|'.join(COLLECTIVES) + r')(-start)?\\(',
                   line)
    if op:
      collectives.append((op.group(2), re.findall(r'\\w+\\[[\\d,]*\\]',
                                                  op.group(1))))
    call = re.search(r'custom_call_target="(toolkit_\\w+)_(?:native|avx2|'
                     r'avx512)"', line)
    if call:
      operands = re.search(r'operand_layout_constraints=\\{{(.*?)\\}}, ', line)
      kernels.append((call.group(1),
                      re.findall(r'\\w+\\[[\\d,]*\\]', operands.group(1))))
  return collectives, kernels


for (rows, units), kernel in {held}:
  kernel_choice.hold(rows, units, kernel)


def measure(rows, implementation):
  os.environ['TOOLKIT_RNN_KERNEL'] = implementation
  layer = rnn.ElmanRNN(UNITS, use_mask=True)
  x, mask, readout = inputs(rows)
  layer.init((shapes.signature(x), shapes.signature(mask)))

  def loss(weights, x, mask, readout):
    outputs, _ = layer.pure_fn((x, mask), weights, layer.state, layer.rng)
    return jnp.sum(outputs * readout)
  step = jax.jit(jax.value_and_grad(loss))
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  split = NamedSharding(mesh, PartitionSpec('data'))
  whole = NamedSharding(mesh, PartitionSpec())
  sharded = (jax.device_put(layer.weights, whole),
             *(jax.device_put(a, split) for a in (x, mask, readout)))
  collectives, kernels = hlo_facts(step.lower(*sharded).compile().as_text())
  one = jax.device_put((layer.weights, x, mask, readout), jax.devices()[0])
  got = jax.tree_util.tree_leaves(step(*sharded))
  want = jax.tree_util.tree_leaves(step(*one))
  errors = [float(np.abs(np.asarray(g) - np.asarray(w)).max()
                  / max(1e-30, np.abs(np.asarray(w)).max()))
            for g, w in zip(got, want)]
  print(json.dumps({{
      'rows': rows, 'implementation': implementation,
      'devices': len(jax.devices()), 'collectives': collectives,
      'kernels': kernels, 'relative_errors': errors,
      'kernels_built': elman_kernel.available() if implementation != 'xla'
                       else None,
      'weight_shapes': [list(w.shape) for w in layer.weights]}}))


for rows, implementation in {cases}:
  measure(rows, implementation)
'''


def _measure(n_devices, cases, held=()):
  """Records of the (rows, implementation) cases, with the decisions `held`
  ((rows, units), kernels or not) in place of timed ones."""
  code = _MEASURE.format(features=FEATURES, time=TIME, units=UNITS,
                         cases=cases, held=list(held))
  result = run_on_devices(code, n_devices, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()
             if line.startswith('{')]
  assert [r['devices'] for r in records] == [n_devices] * len(cases)
  return {(r['rows'], r['implementation']): r for r in records}


def _shape(text):
  """'f32[32,16,256]' -> [32, 16, 256]."""
  return [int(n) for n in re.findall(r'\d+', text.split('[')[1])]


def _assert_rows_stay_on_their_device(record):
  """No activation moves between devices: the only collectives add up
  gradients of weights (or their transposes) and the scalar loss."""
  weights = {tuple(s) for s in record['weight_shapes']}
  weights |= {w[::-1] for w in weights} | {()}
  for op, operands in record['collectives']:
    assert op == 'all-reduce', (op, operands)
    for operand in operands:
      assert tuple(_shape(operand)) in weights, (op, operand)
  reduced = [tuple(_shape(o)) for _, operands in record['collectives']
             for o in operands]
  assert (UNITS, UNITS) in reduced  # dW_hh, summed over the devices


def _assert_same_as_one_device(record):
  # The devices sum their rows' parts in another order than one device
  # does, and with few rows each, XLA's tanh replaces the kernels': float32
  # rounding, about 1e-6 of each gradient's largest entry. The loss sums
  # rows × steps × units terms of either sign, which cancel to a sum
  # smaller than its terms: 1e-4 of itself.
  loss_error, *gradient_errors = record['relative_errors']
  assert loss_error < 1e-4, record['relative_errors']
  assert max(gradient_errors) < 1e-5, record['relative_errors']


def _assert_kernels_on_rows(record, rows_per_device):
  """All three kernels run, each on this device's rows only."""
  assert record['kernels_built']
  calls = {}
  for name, operands in record['kernels']:
    calls.setdefault(name, []).append(_shape(operands[0]))
  assert calls == {
      'toolkit_elman_forward': [[rows_per_device, TIME, UNITS]],
      'toolkit_elman_backward': [[rows_per_device, TIME, UNITS]],
      # dW_hh's and dW_xh's products read the batch-major states and
      # inputs flattened: rows × steps.
      'toolkit_transposed_product': calls['toolkit_transposed_product']}
  assert sorted(calls['toolkit_transposed_product']) == sorted(
      [[rows_per_device * TIME, UNITS], [rows_per_device * TIME, FEATURES]])


def _needs_kernels():
  if shutil.which(os.environ.get('CXX', 'c++')) is None:
    pytest.skip('no C++ compiler here: the layer runs XLA\'s scan')


def test_two_devices_run_the_kernels_on_their_own_rows():
  _needs_kernels()
  records = _measure(2, [(64, 'kernel'), (64, 'xla')])
  kernels = records[64, 'kernel']
  _assert_kernels_on_rows(kernels, 32)
  _assert_rows_stay_on_their_device(kernels)
  _assert_same_as_one_device(kernels)
  # XLA's scan (GPUs, TPUs, or TOOLKIT_RNN_KERNEL=xla) keeps rows local too.
  xla = records[64, 'xla']
  assert not xla['kernels']
  _assert_rows_stay_on_their_device(xla)
  _assert_same_as_one_device(xla)


def test_eight_devices_choose_by_the_rows_each_has():
  _needs_kernels()
  # As if timing had found the kernels faster for 16 rows or more, and
  # XLA's scan for 8: every share of 256 and 64 rows over 2, 4 or 8
  # devices, so that nothing is timed.
  held = [((rows, UNITS), rows >= 16) for rows in (256, 128, 64, 32, 16, 8)]
  records = _measure(8, [(256, 'auto'), (64, 'auto')], held)
  _assert_kernels_on_rows(records[256, 'auto'], 32)
  # Each device runs XLA's scan on its 8 rows, although the kernels were
  # chosen for 64 rows in all. (dW_xh's long sum is still the kernel.)
  assert {name for name, _ in records[64, 'auto']['kernels']} == {
      'toolkit_transposed_product'}
  for record in records.values():
    _assert_rows_stay_on_their_device(record)
    _assert_same_as_one_device(record)
