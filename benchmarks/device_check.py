"""The toolkit on an NVIDIA GPU, checked and timed in one command.

    python benchmarks/device_check.py            # on a machine with a GPU
    TFDS_DATA_DIR=... python benchmarks/device_check.py --platform cpu \
        --steps 40 --rounds 1                    # the same steps on the CPU

Run from a checkout whose .venv `make install` made, with the package
index reachable. It:
1. installs JAX's CUDA 12 build at the version constraints.txt pins, and
   PyTorch's PyPI build (CUDA) at its pin, into the running Python;
2. runs the tests that don't depend on the device (DEVICE_TESTS) with JAX
   on the GPU, at float32 matrix precision (TF32 would miss the tests'
   tolerances);
3. trains the main config (configs/char_rnn_shakespeare.gin) for --steps
   steps on the GPU: tokens/s after the first evaluation, and the time
   from the start of train.py to the end of its first step;
4. times benchmarks/rnn_layer.py's reference shape on the GPU, forward and
   forward plus backward, unmasked and masked: the toolkit's Elman layer,
   PyTorch's nn.RNN (cuDNN), Flax and a plain lax.scan;
and prints one table of all of it. Nothing here writes outside a
temporary directory but the installed packages.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks import train_throughput  # noqa: E402  pylint: disable=g-import-not-at-top

# Tests of models, training, decoding and export: what they check holds on
# any device. (The CPU kernels' tests skip themselves off the CPU; the
# multi-device ones simulate CPU devices.)
DEVICE_TESTS = (
    'test_rnn.py', 'test_recurrence.py', 'test_gated_rnn.py',
    'test_embedded_recurrence.py', 'test_dropout.py', 'test_classifier.py',
    'test_language_model.py', 'test_carried_state.py', 'test_seq2seq.py',
    'test_decoding.py', 'test_export.py', 'test_shipped_configs.py')
LAYER_IMPLS = ('project', 'torch', 'flax', 'lax_scan')
JAX_PLATFORM = {'gpu': 'cuda', 'cpu': 'cpu'}


def pinned(package):
  """The version constraints.txt pins `package` to."""
  with open(os.path.join(REPO_ROOT, 'constraints.txt'), encoding='utf-8') as f:
    for line in f:
      if line.startswith(f'{package}=='):
        return line.strip().split('==', 1)[1]
  raise SystemExit(f'constraints.txt pins no {package}')


def install():
  """JAX's CUDA 12 build and PyTorch's CUDA build, at the pinned versions,
  in one pip call, so that one set of NVIDIA libraries serves both."""
  requirements = [f'jax[cuda12]=={pinned("jax")}', f'torch=={pinned("torch")}']
  print(f'installing {" ".join(requirements)}', file=sys.stderr, flush=True)
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q',
                  '-c', os.path.join(REPO_ROOT, 'constraints.txt'),
                  *requirements], check=True)


def device_name(platform):
  """JAX's name of its first device on `platform`; stops if it has none."""
  done = subprocess.run(
      [sys.executable, '-c', 'import jax; d = jax.devices()[0]; '
       'print(d.platform, d.device_kind)'],
      env=dict(os.environ, JAX_PLATFORMS=JAX_PLATFORM[platform]),
      capture_output=True, text=True, check=False)
  if done.returncode:
    raise SystemExit(f'JAX finds no {platform} device:\n{done.stderr[-2000:]}')
  return done.stdout.strip()


def run_tests(platform):
  """(passed, failed, skipped, seconds) of DEVICE_TESTS on `platform`."""
  env = dict(os.environ, JAX_PLATFORMS=JAX_PLATFORM[platform],
             JAX_DEFAULT_MATMUL_PRECISION='highest')
  done = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       *[os.path.join('tests', name) for name in DEVICE_TESTS]],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
  summary = done.stdout.strip().splitlines()[-1] if done.stdout else ''
  counts = {word: int(n) for n, word in
            re.findall(r'(\d+) (passed|failed|skipped|errors?)', summary)}
  seconds = re.search(r'in ([\d.]+)s', summary)
  if counts.get('failed') or counts.get('error') or counts.get('errors'):
    print(done.stdout[-5000:], file=sys.stderr)
  return (counts.get('passed', 0),
          counts.get('failed', 0) + counts.get('error', 0)
          + counts.get('errors', 0),
          counts.get('skipped', 0), float(seconds[1]) if seconds else None)


def train(platform, steps):
  """train_throughput's record of the main config (the GRU) on `platform`:
  tokens/s, time to first step, peak MiB."""
  warmup = 20
  return train_throughput.toolkit(
      warmup, steps - warmup, 'gru',
      env={'JAX_PLATFORMS': JAX_PLATFORM[platform]})


def time_layers(platform, rounds, masked):
  """rnn_layer.py's records at the reference shape: {(impl, pass): ms}."""
  with tempfile.TemporaryDirectory() as scratch:
    out = os.path.join(scratch, 'layers.json')
    subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'rnn_layer.py'),
         '--quick', '--rounds', str(rounds), '--allocators', 'system',
         '--device', platform, '--impls', *LAYER_IMPLS, '--json', out,
         *(['--masked'] if masked else [])],
        env=dict(os.environ, JAX_PLATFORMS=JAX_PLATFORM[platform]),
        check=True, stdout=subprocess.DEVNULL)
    with open(out, encoding='utf-8') as f:
      records = json.load(f)['records']
  return {(r['impl'], r['pass']): r['ms'] for r in records}


def print_table(platform, device, tests, training, layers):
  print(f'\ndevice: {device}')
  passed, failed, skipped, seconds = tests
  print(f'tests ({len(DEVICE_TESTS)} files): {passed} passed, {failed} '
        f'failed, {skipped} skipped'
        + (f', {seconds:.0f} s' if seconds is not None else ''))
  print(f'main config (GRU), {training["steps"]} steps: '
        f'{training["tokens_per_s"]:,.0f} tokens/s, first step after '
        f'{training["first_step_s"]:.1f} s, peak {training["peak_mib"]:,.0f} '
        f'MiB of host memory')
  print('\nElman layer, batch 64, 128 steps, 128 inputs, 256 units; ms, '
        'medians')
  columns = [(masked, pass_) for masked in (False, True)
             for pass_ in ('fwd', 'fwd_bwd')]
  print(f'{"":12}' + ''.join(
      f'{("masked " if m else "") + p:>16}' for m, p in columns))
  names = {'project': 'toolkit',
           'torch': 'torch cuDNN' if platform == 'gpu' else 'torch'}
  for impl in LAYER_IMPLS:
    print(f'{names.get(impl, impl):12}' + ''.join(
        f'{layers[m].get((impl, p), float("nan")):16.2f}' for m, p in columns))


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--platform', choices=('gpu', 'cpu'), default='gpu',
                      help='cpu: the same steps on the CPU, installing '
                      'nothing (to try this script without a GPU)')
  parser.add_argument('--no_install', action='store_true',
                      help='use the JAX and PyTorch builds installed')
  parser.add_argument('--steps', type=int, default=300,
                      help='training steps of the main config (> 20)')
  parser.add_argument('--rounds', type=int, default=3,
                      help='rounds of the layer timing')
  args = parser.parse_args(argv)
  if args.steps <= 20:
    parser.error('--steps must exceed 20, the steps before timing starts')
  if args.platform == 'gpu' and not args.no_install:
    install()
  device = device_name(args.platform)
  print(f'on {device}', file=sys.stderr, flush=True)
  tests = run_tests(args.platform)
  training = dict(train(args.platform, args.steps), steps=args.steps)
  layers = {masked: time_layers(args.platform, args.rounds, masked)
            for masked in (False, True)}
  print_table(args.platform, device, tests, training, layers)


if __name__ == '__main__':
  main(sys.argv[1:])
