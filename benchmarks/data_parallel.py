"""Training throughput of the main char-LM config over 1, 2, 4 and 8 devices.

    TFDS_DATA_DIR=../shared/tensorflow_datasets \
        python benchmarks/data_parallel.py [--devices 1 2 4 8] [--repeats 3]

Each measurement is a fresh `train.py` run of configs/char_rnn_shakespeare.gin
with the Elman layer (JAX fixes its devices when a process starts). On a CPU,
XLA_FLAGS=--xla_force_host_platform_device_count=N splits the host into N
devices that share its cores, so the figures show what splitting the batch
costs rather than a speed-up. Each device runs the Elman layer on its own
batch / N rows: in the C++ kernels or in XLA's scan, whichever was timed
faster for that many rows on this machine (models/kernel_choice.py). With --platform gpu the real GPUs are used
(CUDA_VISIBLE_DEVICES picks the first N).

Throughput is trax's steps/s over the steps after the first evaluation
(compilation and warm-up excluded) times the tokens in a batch. Runs are
interleaved across device counts, and the medians are printed, with the
ratio to one device.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/char_rnn_shakespeare.gin'


def tokens_per_second(n_devices, platform, warmup, steps, batch, seq_len):
  """One train.py run on `n_devices`; its tokens/s after warm-up."""
  env = dict(os.environ)
  if platform == 'cpu':
    env['XLA_FLAGS'] = (f'{env.get("XLA_FLAGS", "")} '
                        f'--xla_force_host_platform_device_count={n_devices}')
  else:  # real GPUs: show this run only the first n_devices
    env['CUDA_VISIBLE_DEVICES'] = ','.join(map(str, range(n_devices)))
  with tempfile.TemporaryDirectory() as output_dir:
    command = [
        sys.executable, os.path.join(REPO_ROOT, 'train.py'), '--gin_file',
        CONFIG, '--output_dir', output_dir, '--platform', platform,
        '--gin_param', "RNNLanguageModel.cell = 'elman'",
        '--gin_param', f'train_and_evaluate.n_steps = {warmup + steps}',
        '--gin_param', f'train_and_evaluate.eval_every = {warmup}',
        '--gin_param', 'train_and_evaluate.n_eval_batches = 1',
        '--gin_param', f'CharLMInputs.batch_size = {batch}',
        '--gin_param', f'CharLMInputs.seq_len = {seq_len}']
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, text=True,
                            capture_output=True)
    if result.returncode:
      raise RuntimeError(f'{n_devices} devices: train.py failed:\n'
                         f'{result.stderr[-2000:]}')
    with open(os.path.join(output_dir, 'metrics.jsonl')) as f:
      last = [json.loads(line) for line in f][-1]
  return last['train/steps per second'] * batch * seq_len


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', type=int, nargs='+', default=[1, 2, 4, 8])
  parser.add_argument('--platform', default='cpu', choices=('cpu', 'gpu'))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=10,
                      help='steps before timing starts (compilation).')
  parser.add_argument('--steps', type=int, default=40, help='steps timed.')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--json', action='store_true',
                      help='print one JSON record per device count.')
  args = parser.parse_args()
  measured = {n: [] for n in args.devices}
  for _ in range(args.repeats):
    for n in args.devices:  # interleaved, so drifts hit every count alike
      measured[n].append(tokens_per_second(n, args.platform, args.warmup,
                                           args.steps, args.batch,
                                           args.seq_len))
  base = statistics.median(measured[args.devices[0]])
  records = [{'platform': args.platform, 'devices': n, 'batch': args.batch,
              'seq_len': args.seq_len,
              'tokens_per_s': statistics.median(measured[n]),
              'runs': measured[n]} for n in args.devices]
  if args.json:
    for record in records:
      print(json.dumps(record))
    return
  print(f'{"devices":>7}  {"tokens/s (median)":>17}  {"vs first":>8}  runs')
  for r in records:
    runs = ', '.join(f'{t:,.0f}' for t in r['runs'])
    print(f'{r["devices"]:>7}  {r["tokens_per_s"]:>17,.0f}  '
          f'{r["tokens_per_s"] / base:>8.2f}  {runs}')


if __name__ == '__main__':
  main()
