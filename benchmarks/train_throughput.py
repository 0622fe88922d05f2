"""End-to-end training speed of the main char-LM config, against Keras.

    TFDS_DATA_DIR=../shared/tensorflow_datasets \
        python benchmarks/train_throughput.py [--cell gru] [--rounds 3] \
        [--malloc system] [--json out.json]

`toolkit` is `train.py --gin_file configs/char_rnn_shakespeare.gin`, as a
user runs it (our loop, our TFDS pipeline, tcmalloc when installed), with
`--cell` (the main config trains the GRU; default elman, the layer with
CPU kernels): trained on streams with carried state (`toolkit`), and on
shuffled windows that each start from zeros (`windowed`), the same model
and batch otherwise. `toolkit_avx2` is `toolkit` with the Elman layer's
kernels built for AVX2 (TOOLKIT_RNN_ISA=avx2: what an AVX2 CPU runs).
`keras` is the same model in Keras 3 on TensorFlow: Embedding(vocab, 512),
dropout 0.1, SimpleRNN(512) or GRU(512), dropout 0.1, Dense(vocab),
Adam(0.002, global_clipnorm=1), trained with `model.fit` on a `tf.data`
pipeline over the same TFDS split, with the same batch (64 windows of 128
characters) and the same allocator: tcmalloc where installed, or glibc's
malloc for all with `--malloc system`.

For each, a fresh process per round, rounds interleaved, medians:
- tokens/s: the median over intervals of `--warmup` steps after the
  warm-up (compilation and evaluations excluded);
- time to first step: from the start of the process to the end of its
  first training step (imports, dataset, pipeline start, compilation);
- peak resident memory of the process (its own ru_maxrss).
`pipeline` times the toolkit's input pipeline alone (CharLMInputs
.train_batches, as train.py reads it) and prints how many times faster it
delivers tokens than training consumes them.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

STARTED = time.time()
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from rnn_toolkit.runtime import allocator  # noqa: E402  pylint: disable=g-import-not-at-top

CONFIG = 'configs/char_rnn_shakespeare.gin'
CONTENDERS = ('toolkit', 'toolkit_avx2', 'windowed', 'keras', 'pipeline')
BATCH, SEQ_LEN, D_MODEL, DROPOUT, LEARNING_RATE = 64, 128, 512, 0.1, 0.002


def run_child(command, env=None):
  """Runs `command` to the end; returns (stdout, its peak resident MiB)."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                               stdout=out, stderr=err)
    # wait4 gives this child's own ru_maxrss (KiB on Linux), where
    # getrusage(RUSAGE_CHILDREN) would give the largest child so far.
    _, status, usage = os.wait4(process.pid, 0)
    out.seek(0)
    err.seek(0)
    if os.waitstatus_to_exitcode(status):
      raise RuntimeError(f'{" ".join(command[:3])} failed:\n'
                         f'{err.read()[-3000:]}')
    return out.read(), usage.ru_maxrss / 1024


def toolkit(warmup, steps, cell, streaming=True, env=None):
  """One train.py run: tokens/s, time to first step and peak MiB."""
  with tempfile.TemporaryDirectory() as output_dir:
    stdout, peak = run_child([
        sys.executable, 'train.py', '--gin_file', CONFIG,
        '--output_dir', output_dir,
        '--gin_param', f'RNNLanguageModel.cell = {cell!r}',
        '--gin_param', f'CharLMInputs.streaming = {streaming}',
        '--gin_param', f'train_and_evaluate.n_steps = {warmup + steps}',
        '--gin_param', f'train_and_evaluate.eval_every = {warmup}',
        '--gin_param', 'train_and_evaluate.n_eval_batches = 1'],
        dict(os.environ, **(env or {})))
    with open(os.path.join(output_dir, 'metrics.jsonl'), encoding='utf-8') as f:
      rows = [json.loads(line) for line in f]
  # trax's steps/s covers the steps since the previous evaluation (and not
  # the evaluation); the first evaluation closes the warm-up (compilation).
  # The median over the intervals keeps one hiccup of a shared machine out.
  rates = [r['train/steps per second'] for r in rows[1:]]
  first = float(re.search(r'First step done ([\d.]+) s', stdout)[1])
  return {'tokens_per_s': statistics.median(rates) * BATCH * SEQ_LEN,
          'first_step_s': first, 'peak_mib': peak}


def windowed(warmup, steps, cell):
  return toolkit(warmup, steps, cell, streaming=False)


def toolkit_avx2(warmup, steps, cell):
  return toolkit(warmup, steps, cell, env={'TOOLKIT_RNN_ISA': 'avx2'})


def keras(warmup, steps, cell):
  """The same model and batch with Keras model.fit, in a fresh process."""
  # Under the allocator train.py relaunches itself under.
  env = dict(os.environ, KERAS_BACKEND='tensorflow', **allocator.environment())
  stdout, peak = run_child([sys.executable, __file__, '--keras_worker',
                            str(warmup), str(steps), cell], env)
  return dict(json.loads(stdout.strip().splitlines()[-1]), peak_mib=peak)


def keras_worker(warmup, steps, cell):
  """Trains the Keras model; prints tokens/s and time to first step."""
  import keras as keras_lib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  text = next(iter(tfds.as_numpy(tfds.load('tiny_shakespeare', split='train'))))
  chars = sorted(set(text['text'].decode('utf-8')))
  lookup = tf.keras.layers.StringLookup(vocabulary=chars, num_oov_indices=1)
  ids = lookup(tf.strings.unicode_split(text['text'], 'UTF-8'))
  dataset = (tf.data.Dataset.from_tensor_slices(ids)    # characters
             .batch(SEQ_LEN + 1, drop_remainder=True)   # windows
             .shuffle(10_000, seed=0)
             .repeat()
             .batch(BATCH, drop_remainder=True)
             .map(lambda w: (w[:, :-1], w[:, 1:]),
                  num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
  vocab_size = lookup.vocabulary_size()
  model = keras_lib.Sequential([
      keras_lib.Input((SEQ_LEN,), dtype='int64'),
      keras_lib.layers.Embedding(vocab_size, D_MODEL),
      keras_lib.layers.Dropout(DROPOUT),
      {'elman': keras_lib.layers.SimpleRNN,
       'gru': keras_lib.layers.GRU}[cell](D_MODEL, return_sequences=True),
      keras_lib.layers.Dropout(DROPOUT),
      keras_lib.layers.Dense(vocab_size)])
  model.compile(
      optimizer=keras_lib.optimizers.Adam(LEARNING_RATE, global_clipnorm=1.0),
      loss=keras_lib.losses.SparseCategoricalCrossentropy(from_logits=True))
  times = []
  ends = keras_lib.callbacks.LambdaCallback(
      on_train_batch_end=lambda batch, logs: times.append(time.time()))
  model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps,
            callbacks=[ends], verbose=0)
  # Intervals of `warmup` steps after the warm-up, as the toolkit's are.
  ends = times[warmup - 1::warmup]
  rates = [warmup / (b - a) for a, b in zip(ends, ends[1:])]
  print(json.dumps({
      'tokens_per_s': statistics.median(rates) * BATCH * SEQ_LEN,
      'first_step_s': times[0] - STARTED}))


def pipeline_worker(batches):
  """Prints the tokens/s train.py's input pipeline delivers on its own."""
  from rnn_toolkit import configurables  # pylint: disable=g-import-not-at-top
  from rnn_toolkit.training import trainer  # pylint: disable=g-import-not-at-top
  configurables.parse([CONFIG])
  inputs, _ = trainer.experiment()
  stream = inputs.train_batches(inputs.build_vocab(), seed=0)
  next(stream)  # the pipeline's start-up is in the time to first step
  started = time.perf_counter()
  for _ in range(batches):
    next(stream)
  seconds = time.perf_counter() - started
  print(json.dumps({'tokens_per_s': batches * BATCH * SEQ_LEN / seconds}))


def pipeline(batches):
  """The pipeline worker's tokens/s, in a fresh process."""
  stdout, _ = run_child([sys.executable, __file__, '--pipeline_worker',
                         str(batches)], dict(os.environ,
                                             **allocator.environment()))
  return json.loads(stdout.strip().splitlines()[-1])


def main(argv):
  """Runs the three measurements in interleaved rounds and reports."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cell', choices=('elman', 'gru'), default='elman',
                      help="the recurrent layer (the main config's is gru)")
  parser.add_argument('--contenders', nargs='+', default=CONTENDERS,
                      choices=CONTENDERS)
  parser.add_argument('--malloc', choices=('fast', 'system'), default='fast',
                      help="'system': all under glibc's malloc "
                      '(TOOLKIT_MALLOC=system); default: tcmalloc where '
                      'installed')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=20,
                      help='steps before timing starts (compilation)')
  parser.add_argument('--steps', type=int, default=120, help='steps timed')
  parser.add_argument('--pipeline_batches', type=int, default=2000)
  parser.add_argument('--json', help='write the records to this file')
  parser.add_argument('--keras_worker', nargs=3, help=argparse.SUPPRESS)
  parser.add_argument('--pipeline_worker', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps % args.warmup:
    parser.error('--steps must be a multiple of --warmup (the evaluation '
                 'interval)')
  if args.keras_worker:
    warmup, steps, cell = args.keras_worker
    return keras_worker(int(warmup), int(steps), cell)
  if args.pipeline_worker:
    return pipeline_worker(args.pipeline_worker)
  if args.malloc == 'system':
    os.environ['TOOLKIT_MALLOC'] = 'system'  # train.py's, and allocator's
  runs = {name: [] for name in args.contenders}
  for round_ in range(args.rounds):
    for name in runs:
      print(f'round {round_ + 1}/{args.rounds}: {name}', file=sys.stderr,
            flush=True)
      runs[name].append(pipeline(args.pipeline_batches) if name == 'pipeline'
                        else globals()[name](args.warmup, args.steps,
                                             args.cell))
  report(runs, args.cell, args.json)


def report(runs, cell, json_path):
  """Prints medians and the ratios docs/performance.md quotes; writes --json."""
  median = {name: {key: statistics.median(r[key] for r in results)
                   for key in results[0]} for name, results in runs.items()}
  preload = allocator.environment().get('LD_PRELOAD', 'none (glibc malloc)')
  print(f'cell {cell}; allocator preloaded: {preload}; batch {BATCH} x '
        f'{SEQ_LEN} characters')
  print(f'{"":12} {"tokens/s":>9} {"first step s":>12} {"peak MiB":>9} '
        f'{"/ keras":>7}')
  keras_speed = median.get('keras', {}).get('tokens_per_s', float('nan'))
  for name, m in median.items():
    if name != 'pipeline':
      print(f'{name:12} {m["tokens_per_s"]:9,.0f} {m["first_step_s"]:12.1f} '
            f'{m["peak_mib"]:9,.0f} {m["tokens_per_s"] / keras_speed:7.2f}')
  if 'toolkit' in median and 'windowed' in median:
    print(f'stateful / windowed tokens/s: {median["toolkit"]["tokens_per_s"] / median["windowed"]["tokens_per_s"]:.2f}')
  if 'toolkit' in median and 'pipeline' in median:
    speed = median['toolkit']['tokens_per_s']
    print(f'input pipeline alone: {median["pipeline"]["tokens_per_s"]:,.0f} '
          f'tokens/s = {median["pipeline"]["tokens_per_s"] / speed:.0f}x what '
          f'training consumes')
  if json_path:
    with open(json_path, 'w', encoding='utf-8') as f:
      json.dump({'medians': median, 'runs': runs}, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1:])
