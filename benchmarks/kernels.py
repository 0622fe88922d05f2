"""The Elman layer's CPU kernels on their own, per instruction set.

    python benchmarks/kernels.py                      # reference shape
    python benchmarks/kernels.py --shape 64 64 512    # batch, steps, units
    TOOLKIT_RNN_ISA=avx2 python benchmarks/kernels.py # the AVX2 build

Times the forward scan, the reverse delta scan and the dW_hh long-sum
product (elman_kernel.forward, .backward, .transposed_product), tanh,
batch-major, in one process, and prints ms (median of the calls of the
last of --repeats passes) and GFLOP/s of each. benchmarks/rnn_layer.py
times the whole layer against its peers; this one shows where a change to
models/elman_cpu.cc lands. The machine is noisy: compare builds in
alternating runs.
"""

import argparse
import json
import os
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from benchmarks.rnn_layer import time_calls  # noqa: E402  pylint: disable=g-import-not-at-top
from models import elman_kernel  # noqa: E402  pylint: disable=g-import-not-at-top


def kernel_calls(batch, steps, units):
  """{name: zero-argument call that blocks} for the three kernels."""
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.normal(size=(batch, steps, units)).astype(np.float32))
  mask = jax.device_put(np.ones((batch, steps), np.float32))
  h0 = jax.device_put(np.zeros((batch, units), np.float32))
  w = jax.device_put((rng.normal(size=(units, units)) / np.sqrt(units))
                     .astype(np.float32))
  forward = jax.jit(lambda x, m, h0, w: elman_kernel.forward(
      x, m, h0, w, 'tanh', True))
  backward = jax.jit(lambda d, d_last, s, m, w: elman_kernel.backward(
      d, d_last, s, m, w, 'tanh', True))
  product = jax.jit(lambda a: elman_kernel.transposed_product(a, a, 1))
  states = forward(x, mask, h0, w)
  flat = states.reshape(-1, units)
  return {
      'forward': lambda: forward(x, mask, h0, w).block_until_ready(),
      'backward': lambda: jax.block_until_ready(
          backward(x, h0, states, mask, w)),
      'dW_hh': lambda: product(flat).block_until_ready()}


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', nargs=3, type=int, default=(64, 128, 256),
                      metavar=('BATCH', 'STEPS', 'UNITS'))
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args(argv)
  if not elman_kernel.available():
    sys.exit('The kernels are not built here (no C++ compiler, or not a '
             'CPU backend): nothing to time.')
  batch, steps, units = args.shape
  calls = kernel_calls(batch, steps, units)
  flops = 2 * batch * steps * units * units
  for _ in range(args.repeats):  # the last pass counts: the machine settles
    ms = {name: statistics.median(time_calls(call, 15, 1.0))
          for name, call in calls.items()}
  print(json.dumps({
      'isa': elman_kernel.isa(), 'lanes': elman_kernel.vector_lanes(),
      'shape': args.shape,
      **{name: {'ms': round(t, 2), 'gflops': round(flops / t / 1e6)}
         for name, t in ms.items()}}))


if __name__ == '__main__':
  main(sys.argv[1:])
