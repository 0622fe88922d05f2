"""Speed of the toolkit's Elman RNN layer against the RNNs a user could pick.

    python benchmarks/rnn_layer.py                 # reference shape + sweep
    python benchmarks/rnn_layer.py --quick         # reference shape only
    python benchmarks/rnn_layer.py --json out.json # also one record per cell

Contenders (impl): `project` (models.ElmanRNN, hand-written VJP; its CPU
kernels built for this CPU), `project_avx2` (the same, its kernels built
for AVX2, as an AVX2 CPU would run them: on an AVX-512 machine, the code
with half the vector width and registers), `keras`
(Keras 3 SimpleRNN in a tf.function), `torch` (nn.RNN), `flax`
(nn.RNN(nn.SimpleCell)), `trax_gru` (trax's GRU after a Dense to its width,
for scale: three gates, so three times the work), `project_gru` (the
toolkit's GRU, models.GatedRNN: trax's GRU arithmetic with the input
products hoisted and a hand-written VJP, after the same Dense) and `lax_scan` (the
recurrence as a plain `jax.lax.scan`, differentiated by JAX). All are tanh
RNNs over float32 [batch, steps, inputs] -> [batch, steps, units]; `fwd`
times the outputs, `fwd_bwd` the loss sum(outputs) and its gradients with
respect to the weights (not the inputs).

Each round starts one fresh process per contender, in a shuffled order, and
each process times every shape after two warm-up calls (compilation). The
figure is the median over all rounds' timed calls. GFLOP/s counts the
matrix products of a tanh RNN (three times that for the GRU); the
arithmetic floor is that count at the speed of one large float32 matrix
product on this machine (measured in the `project` worker). Needs the `bench` extra: pip install -e '.[bench]'.

`--isa avx2` runs every contender as on an AVX2 CPU, to measure that kind
of machine on an AVX-512 one: the toolkit's kernels built for AVX2, and
each library's own dispatch capped at AVX2 (AVX2_ENVIRONMENT: XLA, so JAX
and Flax; PyTorch; oneDNN and MKL under TensorFlow and PyTorch). What it
cannot change is the cache and memory of this CPU.

`--masked` gives the rows ragged lengths (the longest all the steps, the
shortest a quarter of them), each contender masking the padding its own
way: a mask input, `seq_lengths` (Flax), packed sequences (PyTorch). Each
loss is the sum of the real steps' outputs (padding's are zeroed). The
GRUs are left out.
`--device gpu` runs the JAX contenders on the GPU JAX finds and PyTorch on
CUDA (cuDNN); Keras and the AVX2 build are CPU-only
(benchmarks/device_check.py runs it so on a GPU machine).

The allocator matters on CPU (see docs/performance.md): by default every
contender runs under both glibc malloc (`system`) and tcmalloc, if
libtcmalloc_minimal (or jemalloc) is installed, and ratios are taken under
the same one.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from rnn_toolkit.runtime import allocator  # noqa: E402  pylint: disable=g-import-not-at-top

IMPLS = ('project', 'project_avx2', 'keras', 'torch', 'flax', 'trax_gru',
         'project_gru', 'lax_scan')
REFERENCE = (64, 128, 128, 256)  # batch, steps, inputs, units
# The worker's --device and --masked, for the contenders.
OPTIONS = {'device': 'cpu', 'masked': False}
PASSES = ('fwd', 'fwd_bwd')
# Each library's switch to stop at AVX2 (and FMA) on a CPU with AVX-512.
AVX2_ENVIRONMENT = {
    'TOOLKIT_RNN_ISA': 'avx2',
    'XLA_FLAGS': '--xla_cpu_max_isa=AVX2',
    'ATEN_CPU_CAPABILITY': 'avx2',
    'ONEDNN_MAX_CPU_ISA': 'AVX2',
    'DNNL_MAX_CPU_ISA': 'AVX2',
    'MKL_ENABLE_INSTRUCTIONS': 'AVX2',
}


def sweep_shapes():
  """The reference shape, then units, steps and batch varied one at a time."""
  batch, steps, inputs, units = REFERENCE
  shapes = [REFERENCE]
  shapes += [(batch, steps, inputs, u) for u in (128, 512, 1024)]
  shapes += [(batch, s, inputs, units) for s in (32, 512)]
  shapes += [(b, steps, inputs, units) for b in (1, 8, 256)]
  return shapes


def matmul_flops(shape, pass_):
  """Multiply-adds × 2 of a tanh RNN's matrix products at `shape`."""
  batch, steps, inputs, units = shape
  forward = 2 * batch * steps * (inputs * units + units * units)
  # Backward: dL/dh through W_hh, then dW_hh and dW_xh (no dL/dx).
  backward = 2 * batch * steps * (2 * units * units + inputs * units)
  return forward + (backward if pass_ == 'fwd_bwd' else 0)


# ---- Contenders: each returns {pass: zero-argument callable that blocks}.

def _jax_calls(apply, params, x):
  """Jitted forward and gradient calls of `apply(params, x)`."""
  import jax  # pylint: disable=g-import-not-at-top
  x = jax.device_put(x)  # as torch and Keras, no copy from the host per call
  forward = jax.jit(apply)
  grad = jax.jit(jax.grad(lambda p, x: apply(p, x).sum()))
  return {'fwd': lambda: jax.block_until_ready(forward(params, x)),
          'fwd_bwd': lambda: jax.block_until_ready(grad(params, x))}


def _random_input(shape):
  """f32[batch, steps, inputs] drawn from N(0, 1)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  batch, steps, inputs, _ = shape
  return np.random.default_rng(0).normal(
      size=(batch, steps, inputs)).astype(np.float32)


def _lengths(shape):
  """int32[batch]: each row's real steps under --masked (else all): from
  all of them down to a quarter, spread over the rows."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  batch, steps, _, _ = shape
  if not OPTIONS['masked']:
    return np.full(batch, steps, np.int32)
  return np.linspace(steps, max(1, steps // 4), batch).round().astype(np.int32)


def _mask(shape):
  """f32[batch, steps]: 1 at each row's real steps."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return (np.arange(shape[1])[None] < _lengths(shape)[:, None]).astype(
      np.float32)


def _trax_layer_calls(layer, shape):
  """Calls of a trax layer initialised for `shape`, its weights the params;
  given the mask as its second input under --masked."""
  from trax import shapes as trax_shapes  # pylint: disable=g-import-not-at-top
  x = _random_input(shape)
  extra = (_mask(shape),) if OPTIONS['masked'] else ()
  layer.init(trax_shapes.signature((x, *extra) if extra else x))
  state, rng = layer.state, layer.rng

  def apply(weights, x):
    return layer.pure_fn((x, *extra) if extra else x, weights, state, rng)[0]
  return _jax_calls(apply, layer.weights, x)


def project(shape):
  """The toolkit's ElmanRNN."""
  import models  # pylint: disable=g-import-not-at-top
  return _trax_layer_calls(
      models.ElmanRNN(shape[3], use_mask=OPTIONS['masked']), shape)


def project_avx2(shape):
  """The toolkit's ElmanRNN, its kernels built for AVX2 (TOOLKIT_RNN_ISA)."""
  os.environ['TOOLKIT_RNN_ISA'] = 'avx2'
  return project(shape)


def trax_gru(shape):
  """trax's GRU, after a Dense layer to its width."""
  from trax import layers as tl  # pylint: disable=g-import-not-at-top
  from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  units = shape[3]
  return _trax_layer_calls(tl.Serial(tl.Dense(units), tl.GRU(units)), shape)


def project_gru(shape):
  """The toolkit's GRU (models.GatedRNN), after a Dense layer to its width."""
  from trax import layers as tl  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  units = shape[3]
  return _trax_layer_calls(
      tl.Serial(tl.Dense(units), models.GatedRNN('gru', units)), shape)


def lax_scan(shape):
  """The recurrence as a plain lax.scan, differentiated by JAX."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax import numpy as jnp  # pylint: disable=g-import-not-at-top
  _, _, inputs, units = shape
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  params = (jax.random.normal(keys[0], (inputs, units)) / inputs**0.5,
            jax.random.normal(keys[1], (units, units)) / units**0.5,
            jnp.zeros(units))

  mask = (jnp.swapaxes(jnp.asarray(_mask(shape)), 0, 1)[..., None]
          if OPTIONS['masked'] else None)

  def apply(params, x):
    w_xh, w_hh, b = params
    def step(h, inputs):
      a_t, m_t = inputs
      y = jnp.tanh(a_t + h @ w_hh)
      if m_t is None:
        return y, y
      return m_t * y + (1 - m_t) * h, m_t * y
    x_proj = jnp.swapaxes(x @ w_xh + b, 0, 1)
    h0 = jnp.zeros((x.shape[0], units), x.dtype)
    return jnp.swapaxes(jax.lax.scan(step, h0, (x_proj, mask))[1], 0, 1)
  return _jax_calls(apply, params, _random_input(shape))


def flax(shape):
  """Flax linen's nn.RNN over nn.SimpleCell."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  x = _random_input(shape)
  model = nn.RNN(nn.SimpleCell(features=shape[3]))
  params = model.init(jax.random.PRNGKey(0), x)
  if not OPTIONS['masked']:
    return _jax_calls(model.apply, params, x)
  lengths = jax.numpy.asarray(_lengths(shape))
  mask = jax.numpy.asarray(_mask(shape))[..., None]
  # Flax computes outputs past a row's length too: zeroed, as the others'.
  return _jax_calls(
      lambda p, x: model.apply(p, x, seq_lengths=lengths) * mask, params, x)


def keras(shape):
  """Keras 3 SimpleRNN on TensorFlow, in tf.functions."""
  os.environ['KERAS_BACKEND'] = 'tensorflow'  # the backend it is timed on
  import keras as keras_lib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.constant(_random_input(shape))
  mask = tf.constant(_mask(shape) > 0) if OPTIONS['masked'] else None
  layer = keras_lib.layers.SimpleRNN(shape[3], return_sequences=True)

  def outputs(x):
    if mask is None:
      return layer(x)
    # Keras repeats a row's last output at its padding: zeroed, as the
    # others' are.
    return layer(x, mask=mask) * tf.cast(mask, x.dtype)[..., None]
  outputs(x)

  @tf.function
  def forward(x):
    return outputs(x)

  @tf.function
  def grad(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(outputs(x))
    return tape.gradient(loss, layer.trainable_weights)
  return {'fwd': lambda: forward(x).numpy(),
          'fwd_bwd': lambda: [g.numpy() for g in grad(x)]}


def torch(shape):
  """PyTorch's nn.RNN (tanh), batch first."""
  import torch as torch_lib  # pylint: disable=g-import-not-at-top
  from torch.nn.utils import rnn as rnn_utils  # pylint: disable=g-import-not-at-top
  device = 'cuda' if OPTIONS['device'] == 'gpu' else 'cpu'
  x = torch_lib.from_numpy(_random_input(shape)).to(device)
  rnn = torch_lib.nn.RNN(shape[2], shape[3], batch_first=True).to(device)
  lengths = torch_lib.from_numpy(_lengths(shape))

  def outputs():
    if not OPTIONS['masked']:
      return rnn(x)[0]
    packed = rnn_utils.pack_padded_sequence(x, lengths, batch_first=True,
                                            enforce_sorted=False)
    return rnn(packed)[0].data  # the real steps' outputs

  def done():  # CUDA runs asynchronously
    if device == 'cuda':
      torch_lib.cuda.synchronize()

  def forward():
    with torch_lib.no_grad():
      outputs()
    done()

  def fwd_bwd():
    rnn.zero_grad(set_to_none=True)
    outputs().sum().backward()
    done()
  return {'fwd': forward, 'fwd_bwd': fwd_bwd}


# ---- Timing, in a worker process per contender.

def time_calls(call, min_calls=5, min_seconds=0.5):
  """Milliseconds of each of at least `min_calls` calls, after 2 warm-ups."""
  for _ in range(2):
    call()
  times = []
  started = time.perf_counter()
  while len(times) < min_calls or time.perf_counter() - started < min_seconds:
    begin = time.perf_counter()
    call()
    times.append((time.perf_counter() - begin) * 1e3)
  return times


def peak_gflops():
  """GFLOP/s of one large float32 matrix product (JAX, all cores)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax import numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jnp.ones((4096, 2048), jnp.float32)
  b = jnp.ones((2048, 2048), jnp.float32)
  product = jax.jit(jnp.matmul)
  ms = statistics.median(
      time_calls(lambda: product(a, b).block_until_ready(), 10))
  return 2 * 4096 * 2048 * 2048 / ms / 1e6


def worker(impl, shapes):
  """Prints one JSON line: {shape: {pass: [ms, ...]}} for `impl`."""
  contender = globals()[impl]
  result = {}
  for shape in shapes:
    calls = contender(tuple(shape))
    result[str(list(shape))] = {p: time_calls(calls[p]) for p in PASSES}
  if impl == 'project':
    result['peak_gflops'] = peak_gflops()
  print(json.dumps(result))


def run_worker(impl, shapes, allocator_name, isa):
  """Times `impl` at `shapes` in a fresh process under `allocator_name`,
  as on an AVX2 CPU if `isa` is 'avx2', with OPTIONS."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
             **(AVX2_ENVIRONMENT if isa == 'avx2' else {}))
  env.pop('LD_PRELOAD', None)
  if allocator_name != 'system':
    _, path, extra = allocator.find()
    env.update(extra, LD_PRELOAD=path)
  done = subprocess.run(
      [sys.executable, __file__, '--worker', impl, '--shapes',
       json.dumps(shapes), '--device', OPTIONS['device'],
       *(['--masked'] if OPTIONS['masked'] else [])], env=env,
      capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f'{impl} worker failed:\n{done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def measure(impls, shapes, allocators, rounds, isa):
  """{(allocator, impl, shape, pass): [ms, ...]} and the peak GFLOP/s."""
  times, peaks = {}, []
  for round_ in range(rounds):
    for allocator_name in allocators:
      order = random.sample(impls, len(impls))
      for impl in order:
        print(f'round {round_ + 1}/{rounds} [{allocator_name}] {impl}',
              file=sys.stderr, flush=True)
        result = run_worker(impl, shapes, allocator_name, isa)
        peaks += [result.pop('peak_gflops')] if 'peak_gflops' in result else []
        for shape, by_pass in result.items():
          for pass_, ms in by_pass.items():
            key = (allocator_name, impl, tuple(json.loads(shape)), pass_)
            times.setdefault(key, []).extend(ms)
  return times, (statistics.median(peaks) if peaks else None)


def records(times):
  """One JSON-able record per (allocator, impl, shape, pass): median ms."""
  out = []
  for (allocator_name, impl, shape, pass_), ms in sorted(times.items()):
    batch, steps, inputs, units = shape
    out.append(dict(impl=impl, batch=batch, steps=steps, inputs=inputs,
                    units=units, allocator=allocator_name, ms=statistics.median(ms),
                    calls=len(ms), **{'pass': pass_}))
  return out


def print_table(rows, peak):
  """One block per (allocator, shape, pass), contenders fastest first."""
  keras_ms = {(r['allocator'], r['batch'], r['steps'], r['inputs'], r['units'],
               r['pass']): r['ms'] for r in rows if r['impl'] == 'keras'}
  print(f'CPU: {cpu_description()}')
  if peak:
    print(f'large float32 matmul: {peak:.0f} GFLOP/s (arithmetic floor)')
  header = (f'{"allocator":9} {"batch":>5} {"steps":>5} {"in":>4} {"units":>5}'
            f' {"pass":7} {"impl":8} {"ms":>9} {"tokens/s":>11}'
            f' {"GFLOP/s":>7} {"vs keras":>8}')
  print(header)
  key = lambda r: (r['allocator'], r['units'], r['steps'], r['batch'],
                   r['pass'], r['ms'])
  for r in sorted(rows, key=key):
    cell = (r['allocator'], r['batch'], r['steps'], r['inputs'], r['units'],
            r['pass'])
    shape = cell[1:5]
    flops = matmul_flops(shape, r['pass']) * (
        3 if r['impl'] in ('trax_gru', 'project_gru') else 1)
    ratio = r['ms'] / keras_ms[cell] if cell in keras_ms else float('nan')
    print(f'{r["allocator"]:9} {r["batch"]:5} {r["steps"]:5} {r["inputs"]:4} '
          f'{r["units"]:5} {r["pass"]:7} {r["impl"]:8} {r["ms"]:9.2f} '
          f'{r["batch"] * r["steps"] / r["ms"] * 1e3:11,.0f} '
          f'{flops / r["ms"] / 1e6:7.1f} {ratio:8.2f}')
  if peak:
    floor = matmul_flops(REFERENCE, 'fwd_bwd') / peak / 1e6
    print(f'arithmetic floor at the reference shape, fwd_bwd: {floor:.1f} ms')
  print_ratios(rows, peak)


PEERS = ('keras', 'torch', 'flax', 'lax_scan')


def print_ratios(rows, peak):
  """For each cell, the layer's time over Keras's, over the fastest peer's
  and over the arithmetic floor: the figures the goals are stated in."""
  cells = {}
  for r in rows:
    cell = (r['allocator'], r['batch'], r['steps'], r['inputs'], r['units'],
            r['pass'])
    cells.setdefault(cell, {})[r['impl']] = r['ms']
  print(f'\n{"allocator":9} {"batch":>5} {"steps":>5} {"units":>5} '
        f'{"pass":7} {"impl":12} {"/ keras":>7} {"/ fastest peer":>20} '
        f'{"/ floor":>7}')
  for cell, ms in sorted(cells.items(),
                         key=lambda c: (c[0][0], c[0][4], c[0][2], c[0][1],
                                        c[0][5])):
    peers = {impl: ms[impl] for impl in PEERS if impl in ms}
    fastest = min(peers, key=peers.get) if peers else None
    for impl in ('project', 'project_avx2'):
      if impl not in ms:
        continue
      keras_ratio = ms[impl] / ms['keras'] if 'keras' in ms else float('nan')
      peer = (f'{ms[impl] / peers[fastest]:.2f} ({fastest})' if fastest
              else 'n/a')
      floor = (f'{ms[impl] / (matmul_flops(cell[1:5], cell[5]) / peak / 1e6):7.2f}'
               if peak else '    n/a')
      print(f'{cell[0]:9} {cell[1]:5} {cell[2]:5} {cell[4]:5} {cell[5]:7} '
            f'{impl:12} {keras_ratio:7.2f} {peer:>20} {floor}')


def cpu_description():
  """The CPU's model, widest vector instructions and L2 cache (Linux)."""
  model, flags = 'unknown CPU', set()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
        elif line.startswith('flags'):
          flags = set(line.split(':', 1)[1].split())
  except OSError:
    pass
  vectors = ('AVX-512' if 'avx512f' in flags else
             'AVX2' if 'avx2' in flags else 'no AVX2')
  try:
    with open('/sys/devices/system/cpu/cpu0/cache/index2/size',
              encoding='utf-8') as f:
      l2 = f.read().strip()
  except OSError:
    l2 = '?'
  return f'{model}, {os.cpu_count()} cores, {vectors}, L2 {l2} per core'


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='only the reference shape (batch 64, 128 steps, '
                      '128 inputs, 256 units)')
  parser.add_argument('--impls', nargs='+', choices=IMPLS, default=IMPLS)
  parser.add_argument('--allocators', nargs='+',
                      choices=('system', 'tcmalloc', 'jemalloc'), default=None,
                      help='default: glibc and the one installed')
  parser.add_argument('--isa', choices=('native', 'avx2'), default='native',
                      help='avx2: every contender as on an AVX2 CPU')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--masked', action='store_true',
                      help='ragged rows, the padding masked')
  parser.add_argument('--device', choices=('cpu', 'gpu'), default='cpu',
                      help='gpu: JAX on its GPU, PyTorch on CUDA')
  parser.add_argument('--json', help='write the records to this file')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--shapes', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  OPTIONS.update(device=args.device, masked=args.masked)
  if args.worker:
    return worker(args.worker, json.loads(args.shapes))
  if args.masked and {'trax_gru', 'project_gru'} & set(args.impls):
    parser.error('--masked times the Elman RNNs; leave out trax_gru and '
                 'project_gru.')
  if args.device == 'gpu' and {'keras', 'project_avx2'} & set(args.impls):
    parser.error('--device gpu times the JAX contenders and PyTorch; leave '
                 'out keras and project_avx2 (CPU-only here).')
  fast = allocator.find()[0] if allocator.find() else None
  allocators = args.allocators or ['system'] + ([fast] if fast else [])
  if any(a not in ('system', fast) for a in allocators):
    parser.error(f'{allocators[-1]} is not the allocator installed here '
                 f'({fast}); Debian/Ubuntu: apt-get install '
                 'libtcmalloc-minimal4')
  shapes = [list(REFERENCE)] if args.quick else [list(s) for s in sweep_shapes()]
  times, peak = measure(list(args.impls), shapes, allocators, args.rounds,
                        args.isa)
  rows = records(times)
  print(f'instruction set: {args.isa}; device: {args.device}; '
        f'{"masked (ragged rows)" if args.masked else "unmasked"}')
  print_table(rows, peak)
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'peak_gflops': peak, 'records': rows}, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1:])
