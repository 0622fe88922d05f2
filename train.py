"""Trains a model described by gin config files, with trax's training Loop.

    python train.py --gin_file configs/char_rnn_shakespeare.gin \
        --output_dir runs/char_rnn [--gin_param 'RNNLanguageModel.cell = "gru"']

Re-running with the same --output_dir resumes from its latest checkpoint.
SIGTERM or SIGINT (Ctrl-C) stops training after the current step, writes a
checkpoint and exits with status 75; rerun the same command to go on.
The run directory receives: checkpoints (model.*, and lowest_loss.* for the
best evaluation loss), config.gin (the operative config), vocab.json,
metrics.jsonl (one JSON record per evaluation) and TensorBoard summaries
(train/, eval/).
"""

import argparse
import collections
import contextlib
import os
import signal
import sys
import time

import gin
import numpy as np
from tqdm import tqdm

import configurables
import run_dir
from errors import UsageError, exit_with
from trax import layers as tl
from trax import optimizers
from trax import shapes
from trax.supervised import lr_schedules
from trax.supervised import training


# Exit status after SIGTERM/SIGINT: stopped cleanly with a checkpoint, worth
# rerunning (EX_TEMPFAIL in sysexits.h). Errors in the config exit with 2.
EXIT_INTERRUPTED = 75

Experiment = collections.namedtuple('Experiment', ['inputs', 'model'])


@gin.configurable
def experiment(inputs=gin.REQUIRED, model=gin.REQUIRED):
  """What a run trains, shared by train.py and evaluate.py.

  Args:
    inputs: a data pipeline object (e.g. `data.CharLMInputs`).
    model: model factory taking `vocab_size` and `mode`.
  """
  return Experiment(inputs, model)


@gin.configurable(denylist=['output_dir'])
def train_and_evaluate(output_dir, *, n_steps=gin.REQUIRED,
                       optimizer=optimizers.Adam,
                       lr_schedule=lr_schedules.constant(1e-3),
                       eval_every=500, checkpoint_every=None,
                       n_eval_batches=None, seed=0):
  """Trains the `experiment` for `n_steps` steps in total, evaluating as it goes.

  Args:
    output_dir: the run directory; an existing checkpoint there is resumed.
    n_steps: total training steps (a resumed run trains only the rest).
    optimizer: trax optimizer class.
    lr_schedule: function step -> learning rate.
    eval_every: steps between evaluations (and the final step).
    checkpoint_every: steps between checkpoints; default `eval_every`.
    n_eval_batches: batches per evaluation; default, the whole eval split.
    seed: seed of weight initialisation, dropout and data order.

  Returns:
    The trax `training.Loop`, after training.
  """
  inputs, model = experiment()
  saved_vocab = run_dir.load_vocab(output_dir, inputs.dataset)
  vocab = saved_vocab or inputs.build_vocab()
  train_model, eval_model = _build_models(model, vocab.size)
  opt = optimizer()
  start_step = run_dir.check_resumable(output_dir, train_model, opt,
                                       _signature(inputs))
  eval_batches = _eval_batches(inputs, vocab, n_eval_batches)
  # Every check has passed: only now may the run directory change.
  os.makedirs(output_dir, exist_ok=True)
  if saved_vocab is None:
    vocab.save(os.path.join(output_dir, run_dir.VOCAB_FILE))
  loop = _make_loop(output_dir, inputs, vocab, train_model, eval_model, opt,
                    lr_schedule, n_steps, eval_every,
                    checkpoint_every or eval_every, eval_batches, seed,
                    start_step)
  remaining = n_steps - loop.step
  if remaining <= 0:
    print(f'{output_dir} is already trained to step {loop.step} '
          f'(n_steps = {n_steps}); nothing to do.')
    return loop
  run_dir.save_operative_config(output_dir, loop.step)
  if loop.step:
    print(f'Resuming {output_dir} from its checkpoint at step {loop.step}.')
  with tqdm(total=n_steps, initial=loop.step, unit='step',
            dynamic_ncols=True, mininterval=1.0) as bar, \
       _stop_requests() as signals:
    loop.progress_bar, loop.stop_signals = bar, signals
    try:
      loop.run(remaining)
    except Interrupted:
      loop.save_checkpoint('model')  # A second signal cannot cut this short.
      raise
  return loop


class Interrupted(Exception):
  """Training stopped by SIGTERM or SIGINT after a step; rerun to resume."""


@contextlib.contextmanager
def _stop_requests():
  """Turns SIGTERM and SIGINT into a stop request, honoured after the step.

  Yields the list of signals received; the loop stops once it is non-empty.
  Further signals while stopping are only recorded, so they cannot interrupt
  the checkpoint being written.
  """
  received = []

  def request_stop(signum, unused_frame):
    if not received:
      print(f'\n{signal.Signals(signum).name} received: finishing this step '
            f'and saving a checkpoint.', file=sys.stderr)
    received.append(signum)

  stop_signals = (signal.SIGTERM, signal.SIGINT)
  previous = {s: signal.signal(s, request_stop) for s in stop_signals}
  try:
    yield received
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _build_models(model, vocab_size):
  """The (train, eval) models; bad model bindings become a UsageError."""
  try:
    return (model(vocab_size=vocab_size, mode='train'),
            model(vocab_size=vocab_size, mode='eval'))
  except (ValueError, TypeError) as e:
    raise UsageError(f'The model could not be built: {e} Fix the model '
                     f'bindings in your gin config.') from None


def _eval_batches(inputs, vocab, n_eval_batches):
  """The batches every evaluation runs on: the same ones each time."""
  batches = list(inputs.eval_batches(vocab))
  if not batches:
    raise UsageError(f'The eval split {inputs.eval_split!r} of '
                     f'{inputs.dataset} holds no text. Bind '
                     f'CharLMInputs.eval_split to a split with examples.')
  return batches[:n_eval_batches or len(batches)]


def _signature(inputs):
  """The trax input signature of one training batch's model input."""
  return shapes.ShapeDtype((inputs.batch_size, inputs.seq_len), np.int32)


def _make_loop(output_dir, inputs, vocab, train_model, eval_model, optimizer,
               lr_schedule, n_steps, eval_every, checkpoint_every,
               eval_batches, seed, start_step):
  """Builds the trax Loop: one train task, one eval task, best-loss checkpoints."""
  # Seeding the data order with the start step keeps a resumed run from
  # replaying the batches it has already trained on.
  train_task = training.TrainTask(
      labeled_data=inputs.train_batches(vocab, seed=seed * 1_000_003 + start_step),
      loss_layer=tl.WeightedCategoryCrossEntropy(),
      optimizer=optimizer, lr_schedule=lr_schedule,
      n_steps_per_checkpoint=checkpoint_every, loss_name='loss')
  eval_task = training.EvalTask(
      labeled_data=_cycle(eval_batches), sample_batch=eval_batches[0],
      metrics=[tl.WeightedCategoryCrossEntropy(), tl.WeightedCategoryAccuracy()],
      metric_names=['loss', 'accuracy'], n_eval_batches=len(eval_batches))
  return ReportingLoop(
      train_model, [train_task], eval_model=eval_model, eval_tasks=[eval_task],
      output_dir=output_dir, random_seed=seed, n_devices=1,
      checkpoint_at=lambda s: s % checkpoint_every == 0 or s == n_steps,
      eval_at=lambda s: s % eval_every == 0 or s == n_steps,
      checkpoint_low_metric='loss')


def _cycle(batches):
  while True:
    yield from batches


class ReportingLoop(training.Loop):
  """trax's Loop, also feeding a progress bar and writing metrics.jsonl.

  It also keeps `lowest_loss` right across restarts: trax decides "lowest"
  from the history inside the checkpoint, which misses the evaluation run
  just after each save, so a resumed run would replace the best checkpoint
  with a worse one. Here the best loss is kept beside the checkpoint.
  """

  progress_bar = None
  stop_signals = ()

  def _run_one_step(self, task_index, task_changed):
    loss, stats = super()._run_one_step(task_index, task_changed)
    if self.progress_bar is not None:
      self.progress_bar.update(1)
      if self.step % 10 == 0:
        self.progress_bar.set_postfix(loss=f'{float(loss):.4f}', refresh=False)
    if self.stop_signals:
      raise Interrupted()
    return loss, stats

  def run_evals(self, summary_writers=None):
    super().run_evals(summary_writers)
    record = {'step': self.step, 'time': time.time()}
    for mode in self.history.modes:
      for metric in self.history.metrics_for_mode(mode):
        step, value = self.history.get(mode, metric)[-1]
        if step == self.step:
          record[f'{mode}/{metric.split("/", 1)[-1]}'] = float(value)
    run_dir.append_metrics(self.output_dir, record)

  def _latest_eval_loss(self):
    """The eval loss measured at this step, or None if none was."""
    evals = self.history.get('eval', 'metrics/loss')
    if evals and evals[-1][0] == self.step:
      return float(evals[-1][1])
    return None

  def _at_lowest(self):
    loss = self._latest_eval_loss()
    best = run_dir.read_best(self.output_dir)
    return loss is not None and (best is None or loss <= best['loss'])

  def save_checkpoint(self, basename):
    super().save_checkpoint(basename)
    if basename == 'lowest_loss':
      run_dir.write_best(self.output_dir, self.step, self._latest_eval_loss())


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description='Train a model from gin config files.')
  parser.add_argument('--gin_file', action='append', required=True,
                      help='gin config file; repeat to combine several.')
  parser.add_argument('--gin_param', action='append', default=[],
                      help='one gin binding, e.g. "train_and_evaluate.seed = 1"; '
                           'repeatable, applied after the files.')
  parser.add_argument('--output_dir', required=True,
                      help='run directory (resumed if it holds a checkpoint).')
  parser.add_argument('--steps', type=int,
                      help='shorthand for --gin_param "train_and_evaluate.n_steps = N".')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  params = list(args.gin_param)
  if args.steps is not None:
    params.append(f'train_and_evaluate.n_steps = {args.steps}')
  try:
    configurables.parse(args.gin_file, params)
    with configurables.required_bindings_as_usage_errors():
      train_and_evaluate(args.output_dir)
  except UsageError as e:
    exit_with(e, 'train.py')
  except Interrupted:
    step = run_dir.read_checkpoint(
        os.path.join(args.output_dir, run_dir.LATEST_CHECKPOINT))['step']
    print(f'Stopped at step {step}; the checkpoint in {args.output_dir} holds '
          f'it. Run the same command again to resume.', file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


if __name__ == '__main__':
  main(sys.argv[1:])
