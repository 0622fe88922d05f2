"""Trains a model described by gin config files, with trax's training Loop.

    python train.py --gin_file configs/char_rnn_shakespeare.gin \
        --output_dir runs/char_rnn [--gin_param 'RNNLanguageModel.cell = "gru"']

Re-running with the same --output_dir resumes exactly where the newest
intact checkpoint left off. SIGTERM or SIGINT (Ctrl-C) stops training after
the current step, writes a checkpoint and exits with status 75; rerun the
same command to go on. The run directory receives checkpoints/ (see
checkpoints.py), config.gin (the operative config), vocab.json,
metrics.jsonl (one JSON record per evaluation) and TensorBoard summaries
(train/, eval/).

Exit status: 0 trained, 2 bad config or input (nothing was changed),
3 training diverged (non-finite loss; the checkpoints are kept),
75 interrupted by a signal (resume by rerunning).
"""

# Before anything else loads: a program under tcmalloc must start under it.
import allocator  # pylint: disable=g-bad-import-order
if __name__ == '__main__':
  allocator.relaunch_with_fast_allocator()

import signal  # pylint: disable=g-bad-import-order
import time
LOADED = time.time()  # the time to the first step counts imports too

# SIGTERM and SIGINT received so far. From here on, through the slow imports
# below and all start-up work, a signal is a request to stop at the next
# safe point (`_stop_requests`), not a kill.
STOP_SIGNALS = []


def _record_stop_request(signum, unused_frame):
  STOP_SIGNALS.append(signum)


if __name__ == '__main__':
  for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, _record_stop_request)

import argparse
import collections
import contextlib
import errno
import math
import os
import sys

import gin
import jax
from jax import numpy as jnp
import numpy as np
from tqdm import tqdm

import checkpoints
import configurables
import devices
import run_dir
from errors import UsageError, exit_with, without_gin_trace
from trax import fastmath
from trax import layers as tl
from trax import optimizers
from trax.supervised import history as trax_history
from trax.supervised import lr_schedules
from trax.supervised import training

EXIT_DIVERGED = 3
# Stopped cleanly by a signal, with a checkpoint: worth rerunning
# (EX_TEMPFAIL in sysexits.h).
EXIT_INTERRUPTED = 75
NONFINITE_POLICIES = ('stop', 'skip_step', 'raise')
# Under on_nonfinite = 'skip_step', this many non-finite steps in a row
# mean the weights themselves have gone bad; skipping more would only spin.
MAX_SKIPPED_IN_A_ROW = 20
# Write errors that mean a full or read-only disk: the user's to fix.
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS,
                      errno.EACCES, errno.EPERM)

# Tasks whose models write text, decoded by evaluate.py (models/decoding.py).
GENERATING_TASKS = ('translation', 'captioning')

Experiment = collections.namedtuple('Experiment', ['inputs', 'model'])

# What a run needs, built and checked against output_dir before it is touched.
Plan = collections.namedtuple('Plan', [
    'inputs', 'vocab', 'vocab_is_new', 'train_model', 'eval_model',
    'optimizer', 'restored', 'damaged', 'eval_batches', 'config', 'parallel'])


@gin.configurable
def experiment(inputs=gin.REQUIRED, model=gin.REQUIRED):
  """What a run trains, shared by train.py and evaluate.py.

  Args:
    inputs: a data pipeline object (`data.CharLMInputs`,
      `data.TextClassificationInputs`, `data.TaggingInputs`,
      `data.FeatureVectorInputs`, `data.TranslationInputs` or
      `data.CaptioningInputs`).
    model: model factory taking `mode` and the sizes given by
      `inputs.model_dimensions(vocab)` (e.g. `vocab_size`, `n_classes`).
  """
  return Experiment(inputs, model)


@gin.configurable(denylist=['output_dir', 'allow_config_change',
                            'from_scratch', 'stop_signals'])
def train_and_evaluate(output_dir, *, n_steps=gin.REQUIRED,
                       optimizer=optimizers.Adam,
                       lr_schedule=lr_schedules.constant(1e-3),
                       eval_every=500, checkpoint_every=None,
                       n_eval_batches=None, seed=0, on_nonfinite='stop',
                       allow_config_change=False, from_scratch=False,
                       stop_signals=()):
  """Trains the `experiment` for `n_steps` steps in total, evaluating as it goes.

  Args:
    output_dir: the run directory; its newest intact checkpoint is resumed.
    n_steps: total training steps (a resumed run trains only the rest).
    optimizer: trax optimizer class.
    lr_schedule: function step -> learning rate.
    eval_every: steps between evaluations (and the final step).
    checkpoint_every: steps between checkpoints; default `eval_every`.
    n_eval_batches: batches per evaluation; default, the whole eval split.
    seed: seed of weight initialisation, dropout and data order.
    on_nonfinite: what a step with a non-finite loss, weight or optimizer
      slot does: 'stop' (raise Diverged; nothing after it is saved),
      'skip_step' (drop that update and go on) or 'raise' (FloatingPointError).
    allow_config_change: resume even if the config differs from the one the
      checkpoint was trained with.
    from_scratch: start at step 0 when every checkpoint is damaged.
    stop_signals: a list that the caller's signal handlers append to; once
      it is non-empty, training stops after the step in progress has been
      evaluated and checkpointed as it would have been (`_stop_requests`).

  Returns:
    The trax `training.Loop` after training, or None if there was nothing
    left to train.
  """
  _check_settings(n_steps=n_steps, eval_every=eval_every, seed=seed,
                  checkpoint_every=checkpoint_every,
                  n_eval_batches=n_eval_batches, lr_schedule=lr_schedule,
                  on_nonfinite=on_nonfinite)
  run_dir.check_writable(output_dir)
  # Taken before the slow start-up work, so that a second train.py on this
  # directory is refused at once.
  with _held_by_the_writer(output_dir):
    plan = _plan(output_dir, optimizer, n_eval_batches, allow_config_change,
                 from_scratch)
    if plan.parallel.any_process(stop_signals):
      raise Interrupted()  # asked to stop before anything was written
    return _train(output_dir, plan, stop_signals, n_steps=n_steps,
                  lr_schedule=lr_schedule, eval_every=eval_every,
                  checkpoint_every=checkpoint_every or eval_every, seed=seed,
                  on_nonfinite=on_nonfinite)


@contextlib.contextmanager
def _held_by_the_writer(output_dir):
  """The run directory's lock, held by the process that writes it.

  Every process learns whether process 0 got it, so that none goes on to
  wait for the others in a collective that process 0 never reaches.
  """
  parallel = devices.DataParallel.over_all_devices()
  with contextlib.ExitStack() as held:
    refusal = None
    if parallel.is_writer:
      try:
        held.enter_context(run_dir.training_lock(output_dir))
      except UsageError as e:
        refusal = e
    if parallel.any_process(refusal is not None):
      raise refusal or UsageError(
          f'Process 0 could not lock {output_dir}: another train.py is '
          f'training in it (process 0 says which). Nothing was changed.')
    yield


def _train(output_dir, plan, stop_signals, *, n_steps, lr_schedule,
           eval_every, checkpoint_every, seed, on_nonfinite):
  """Trains `plan` from its restored step to n_steps; see train_and_evaluate."""
  start = plan.restored.step if plan.restored else 0
  writer = plan.parallel.is_writer
  if start >= n_steps:
    print(f'{output_dir} is already trained to step {start} '
          f'(n_steps = {n_steps}); nothing to do.')
    return None
  # Every check has passed: only now may the run directory change.
  RUN_DIR_WRITTEN.append(True)
  saver = _prepare_run_dir(output_dir, plan, start) if writer else None
  loop = _make_loop(output_dir, plan, saver, lr_schedule, n_steps, eval_every,
                    checkpoint_every, seed, on_nonfinite)
  if writer:
    run_dir.save_operative_config(output_dir, start)
  print(plan.parallel.describe())
  print(allocator.describe())
  if plan.parallel.process_count > 1:
    print(_describe_reading(plan.inputs, plan.parallel.process_count))
  if start:
    print(f'Resuming {output_dir} from its checkpoint at step {start}.')
  with tqdm(total=n_steps, initial=start, unit='step', dynamic_ncols=True,
            mininterval=1.0, disable=not writer) as bar:
    loop.progress_bar, loop.stop_signals = bar, stop_signals
    try:
      loop.run(n_steps - start)
    except Interrupted:
      loop.save_now(loop.eval_metrics_at_this_step())  # signals only recorded
      raise
    finally:
      if saver:  # nothing of the run's is written after train.py returns
        saver.close()
  if plan.parallel.any_process(stop_signals):
    raise Interrupted(finished=True)  # the last step's evaluation is done too
  return loop


def _check_settings(**settings):
  """Raises one UsageError naming every bad train_and_evaluate value."""
  minimum = {'n_steps': 1, 'eval_every': 1, 'checkpoint_every': 1,
             'n_eval_batches': 1, 'seed': 0}
  problems = [f'{name} must be an integer >= {low} (got {settings[name]!r})'
              for name, low in minimum.items()
              if not (settings[name] is None and name in
                      ('checkpoint_every', 'n_eval_batches'))
              and not (_is_int(settings[name]) and settings[name] >= low)]
  if settings['on_nonfinite'] not in NONFINITE_POLICIES:
    problems.append(f'on_nonfinite must be one of {NONFINITE_POLICIES} (got '
                    f'{settings["on_nonfinite"]!r})')
  if not callable(settings['lr_schedule']):
    problems.append('lr_schedule must be a function of the step, e.g. '
                    '@multifactor()')
  if problems:
    raise UsageError(f'Bad train_and_evaluate settings: {"; ".join(problems)}. '
                     f'Fix these bindings in your gin config.')


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _plan(output_dir, optimizer, n_eval_batches, allow_config_change,
          from_scratch):
  """Builds what the run needs and checks it against output_dir, writing nothing."""
  inputs, model = experiment()
  if inputs.task in GENERATING_TASKS:  # recorded in config.gin for evaluate.py
    configurables.DecodingSettings()
  parallel = devices.DataParallel.over_all_devices()
  parallel.check_batch_size(inputs.batch_size,
                            f'{type(inputs).__name__}.batch_size')
  inputs.train_shards(parallel.process_count)  # raises if they can't divide
  config = configurables.config_text()
  restored, damaged = _newest_intact_checkpoint(output_dir, from_scratch,
                                                parallel)
  if restored:
    run_dir.check_config(output_dir, restored, config, allow_config_change)
  saved_vocab = run_dir.load_vocab(output_dir, inputs.dataset)
  vocab = saved_vocab or inputs.build_vocab()
  train_model, eval_model = _build_models(
      model, inputs.model_dimensions(vocab), _signature(inputs))
  opt = _build_optimizer(optimizer)
  if restored:
    run_dir.check_vocab_size(output_dir, restored, model,
                             inputs.model_dimensions(vocab), _signature(inputs))
    run_dir.check_shapes(output_dir, restored, train_model, opt,
                         _signature(inputs))
  eval_batches = _eval_batches(inputs, vocab, n_eval_batches, parallel)
  return Plan(inputs, vocab, saved_vocab is None, train_model, eval_model, opt,
              restored, damaged, eval_batches, config, parallel)


def _newest_intact_checkpoint(output_dir, from_scratch, parallel):
  """(TrainingState or None, [(step, reason)] of the damaged newer ones).

  Every process resumes from the same step: the newest that all of them
  read intact.
  """
  run_dir.check_not_legacy(output_dir)
  saved = configurables.Checkpoints(output_dir, read_only=True)
  saved.check_ranking()
  failure = None
  try:
    restored, damaged = saved.restore_newest_good()
  except checkpoints.ReadFailed as e:
    failure, restored, damaged = e, None, []
  if parallel.any_process(failure is not None):
    raise failure or checkpoints.ReadFailed(
        f'Another process could not read the checkpoints in {output_dir} '
        f'(its error says why); nothing was moved or changed.')
  _check_processes_agree(output_dir, restored, parallel)
  listing = '; '.join(f'step {step}: {reason}' for step, reason in damaged)
  if restored is None and damaged and not from_scratch:
    raise UsageError(
        f'No checkpoint in {output_dir} can be loaded ({listing}). Nothing '
        f'was changed. Restore the directory from a backup, or pass '
        f'--from_scratch to train from step 0 (the damaged checkpoints are '
        f'moved to {checkpoints.DAMAGED_SUBDIR}/).')
  if restored is not None and from_scratch:
    raise UsageError(
        f'--from_scratch is for a run directory whose checkpoints are all '
        f'damaged, but {output_dir} has an intact one at step '
        f'{restored.step}. Drop --from_scratch to resume it, or pass a new '
        f'--output_dir to train from step 0.')
  return restored, damaged


def _check_processes_agree(output_dir, restored, parallel):
  """Raises UsageError unless every process found the same newest intact step.

  They read the same directory, so a difference means a shared file system
  that does not yet show every process the same files, or damage that only
  some of them see; neither is damage this process can verify, so nothing
  is moved and the run does not start.
  """
  found = parallel.each_process(restored.step if restored else -1)
  if len(set(found)) > 1:
    steps = ', '.join(f'process {i}: {f"step {step}" if step >= 0 else "none"}'
                      for i, step in enumerate(found))
    raise checkpoints.ReadFailed(
        f'The processes found different newest intact checkpoints in '
        f'{output_dir} ({steps}). Nothing was moved or changed. Make sure '
        f'every host sees the same, fully written directory (a shared file '
        f'system that is in sync), then rerun.')


def _prepare_run_dir(output_dir, plan, start):
  """Readies output_dir for training; returns its writable Checkpoints."""
  os.makedirs(output_dir, exist_ok=True)
  if plan.vocab_is_new:
    plan.vocab.save(os.path.join(output_dir, run_dir.VOCAB_FILE))
  saver = configurables.Checkpoints(output_dir)  # also removes temporaries
  for step, reason in plan.damaged:
    moved_to = saver.set_aside(step)
    print(f'Checkpoint {step} in {output_dir} is damaged: {reason}. Moved it '
          f'to {moved_to}; resuming from step {start}.', file=sys.stderr)
  run_dir.truncate_metrics(output_dir, start)
  return saver


class Interrupted(Exception):
  """Training stopped by SIGTERM or SIGINT after a step; rerun to resume.

  Attributes:
    finished: the signal came in the last step, which completed training.
  """

  def __init__(self, finished=False):
    super().__init__()
    self.finished = finished


class Diverged(Exception):
  """A step gave a non-finite loss, weight or slot, under on_nonfinite='stop'."""


@contextlib.contextmanager
def _stop_requests():
  """Turns SIGTERM and SIGINT into a stop request, honoured at a safe point.

  Yields the list of signals received (STOP_SIGNALS, which also holds any
  received while train.py was loading); training stops once it is
  non-empty, after the step in progress has been evaluated and
  checkpointed, or before anything is written if training has not begun.
  Further signals while stopping are only recorded, so they cannot
  interrupt the checkpoint being written.
  """
  if STOP_SIGNALS:
    print(f'{signal.Signals(STOP_SIGNALS[0]).name} received while starting: '
          f'stopping before training.', file=sys.stderr)
  previous = {s: signal.getsignal(s) for s in _STOP_SIGNAL_KINDS}
  _listen_for_stop_requests()
  try:
    yield STOP_SIGNALS
  finally:
    for s, handler in previous.items():
      if handler is _record_stop_request:  # set while loading: not wanted now
        handler = _DEFAULT_HANDLERS[s]
      signal.signal(s, handler)
    STOP_SIGNALS.clear()  # a later in-process call starts afresh
    RUN_DIR_WRITTEN.clear()


_STOP_SIGNAL_KINDS = (signal.SIGTERM, signal.SIGINT)
_DEFAULT_HANDLERS = {signal.SIGTERM: signal.SIG_DFL,
                     signal.SIGINT: signal.default_int_handler}
# Non-empty once this train.py has begun to write the run directory; until
# then a second signal stops it at once (`_request_stop`).
RUN_DIR_WRITTEN = []


def _listen_for_stop_requests():
  """Makes `_request_stop` the handler of SIGTERM and SIGINT (again)."""
  for s in _STOP_SIGNAL_KINDS:
    signal.signal(s, _request_stop)


def _request_stop(signum, unused_frame):
  """Records a stop request; a repeated one before anything was written
  stops start-up at once (waiting to join, reading a large dataset)."""
  if not STOP_SIGNALS:
    print(f'\n{signal.Signals(signum).name} received: finishing this step '
          f'and saving a checkpoint.', file=sys.stderr)
  STOP_SIGNALS.append(signum)
  if len(STOP_SIGNALS) > 1 and not RUN_DIR_WRITTEN:
    raise Interrupted()


def _build_models(model, dimensions, input_signature):
  """The (train, eval) models; bad model bindings become a UsageError."""
  try:
    models = (model(**dimensions, mode='train'),
              model(**dimensions, mode='eval'))
    # trax builds layers lazily: shape the weights (no compute) to find out.
    models[0].weights_and_state_signature(input_signature)
    return models
  except (ValueError, TypeError, tl.LayerError) as e:
    problem = without_gin_trace(str(e)).strip()
    if isinstance(e, tl.LayerError):  # a trace; its last line is the problem
      problem = problem.splitlines()[-1].strip()
    raise UsageError(f'The model could not be built: {problem} Fix the model '
                     f'bindings in your gin config.') from None


def _build_optimizer(optimizer):
  try:
    return optimizer()
  except (ValueError, TypeError) as e:
    raise UsageError(f'The optimizer could not be built: {e}. Bind '
                     f'train_and_evaluate.optimizer to a trax optimizer class, '
                     f'e.g. @trax.optimizers.Adam.') from None


def _eval_batches(inputs, vocab, n_eval_batches, parallel):
  """The batches every evaluation runs on, placed on the devices once."""
  batches = list(inputs.eval_batches(
      vocab, rows=parallel.process_rows(inputs.batch_size)))
  if not batches:
    raise UsageError(f'The eval split {inputs.eval_split!r} of '
                     f'{inputs.dataset} holds no text. Bind '
                     f'{type(inputs).__name__}.eval_split to a split with '
                     f'examples.')
  return [parallel.place_batch(b) for b in batches[:n_eval_batches or
                                                   len(batches)]]


def _signature(inputs):
  """The trax input signature of one training batch's model input(s)."""
  return inputs.input_signature()


def _make_loop(output_dir, plan, saver, lr_schedule, n_steps, eval_every,
               checkpoint_every, seed, on_nonfinite):
  """Builds the Loop: one train task, one eval task, state from plan.restored."""
  restored, inputs, parallel = plan.restored, plan.inputs, plan.parallel
  position = restored.input_position if restored else 0
  # The same seeded stream every time, fast-forwarded past what was trained.
  batches = _Counted(inputs.train_batches(
      plan.vocab, seed=seed, start=position,
      process_index=parallel.process_index,
      process_count=parallel.process_count), position)
  train_task = training.TrainTask(
      labeled_data=map(parallel.place_batch, batches),
      sample_batch=plan.eval_batches[0],
      loss_layer=tl.WeightedCategoryCrossEntropy(),
      optimizer=plan.optimizer, lr_schedule=lr_schedule,
      n_steps_per_checkpoint=checkpoint_every, loss_name='loss')
  eval_task = training.EvalTask(
      labeled_data=_cycle(plan.eval_batches), sample_batch=plan.eval_batches[0],
      metrics=[tl.WeightedCategoryCrossEntropy(), tl.WeightedCategoryAccuracy()],
      metric_names=['loss', 'accuracy'], n_eval_batches=len(plan.eval_batches))
  base_rng = (jnp.asarray(restored.rng) if restored
              else jax.random.PRNGKey(seed))
  return TrainingLoop(
      plan.train_model, [train_task], eval_model=plan.eval_model,
      eval_tasks=[eval_task], output_dir=output_dir, random_seed=seed,
      n_devices=1,
      checkpoint_at=lambda s: s % checkpoint_every == 0 or s == n_steps,
      eval_at=lambda s: s % eval_every == 0 or s == n_steps,
      saver=saver, restored=restored, config=plan.config, base_rng=base_rng,
      train_batches=batches, on_nonfinite=on_nonfinite, parallel=parallel)


def _describe_reading(inputs, process_count):
  """A line for the log: how the processes divide the training split."""
  shards = inputs.train_shards(process_count)
  if shards == 1 and process_count > 1:
    return (f'The train split has fewer examples than processes: each of '
            f'the {process_count} processes reads all of it and keeps its '
            f'rows of every batch.')
  return (f'The train split is read in {shards} part{"s" * (shards > 1)}, '
          f'{shards // process_count} per process.')


def _cycle(batches):
  while True:
    yield from batches


class _Counted:
  """Iterates `iterator`, counting the items drawn (from `position` on)."""

  def __init__(self, iterator, position):
    self._iterator, self.position = iterator, position

  def __iter__(self):
    return self

  def __next__(self):
    item = next(self._iterator)
    self.position += 1
    return item


@jax.jit
def _all_finite(tree):
  """bool[]: whether every number in a pytree of arrays is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree_util.tree_leaves(tree)]))


def _on_host(arrays):
  return [np.asarray(a) for a in arrays]


class TrainingLoop(training.Loop):
  """trax's Loop with atomic checkpoints, exact resume and a non-finite guard.

  trax still drives training and evaluation; this subclass changes where
  the state goes and where the randomness comes from:
  - save and load go through `checkpoints.Checkpoints`. A save trax makes
    just before an evaluation waits for that evaluation, so the checkpoint
    carries its metrics and can be ranked among the best.
  - The k-th random key drawn at step s is fold_in(fold_in(key, s), k), and
    the training batches come from a seeded pipeline fast-forwarded to the
    checkpoint's input position, so a resumed run repeats what an
    uninterrupted one would have done.
  - After each step the loss, weights and slots are checked; a non-finite
    update is handled as `on_nonfinite` says, and never checkpointed.
  - Weights, state and slots are replicated over `parallel`'s mesh; the
    batches come split over it. Only the writing process (saver not None)
    saves checkpoints and metrics.
  - It feeds a tqdm bar, writes metrics.jsonl and stops on a signal.
  """

  def __init__(self, *args, saver, restored, config, base_rng, train_batches,
               on_nonfinite, parallel, **kwargs):
    self._saver, self._restored, self._config = saver, restored, config
    self._parallel = parallel
    self._base_rng, self._rng_step, self._rng_draws = base_rng, None, 0
    self._train_batches, self._on_nonfinite = train_batches, on_nonfinite
    self._train_loss = list(restored.train_loss) if restored else []
    # Per step, like the loss, so that the averages logged at an evaluation
    # cover the same steps whether or not the run was resumed in between.
    self._optimizer_metrics = collections.defaultdict(list, {
        name: list(values) for name, values in
        (restored.optimizer_metrics if restored else {}).items()})
    self._steps_this_run = 0
    self._saved_step = restored.step if restored else None
    self._save_after_eval, self._skipped_in_a_row = False, 0
    self.progress_bar, self.stop_signals = None, ()
    super().__init__(*args, checkpoint_low_metric=None, **kwargs)
    self._replicate_over_devices()

  def _replicate_over_devices(self):
    """Puts a copy of the weights, state and slots on every device."""
    replicate = self._parallel.replicate
    self.update_weights_and_state(*replicate((self._model.weights,
                                              self._model.state)))
    self._eval_model.state = replicate(self._eval_model.state)
    for trainer in self._trainer_per_task:
      trainer.slots = replicate(trainer.slots)

  def new_rng(self):
    if self._rng_step != self.step:
      self._rng_step, self._rng_draws = self.step, 0
    self._rng_draws += 1
    return jax.random.fold_in(jax.random.fold_in(self._base_rng, self.step),
                              self._rng_draws)

  def load_checkpoint(self, directory=None, filename=None):
    """Puts the state restored before the loop was built into the loop."""
    del directory, filename  # The checkpoint was chosen and checked already.
    state = self._restored
    if state is None:
      return
    signature = self._model.weights_and_state_signature(
        self._batch_signature[:self._model.n_in])
    weights, model_state = tl.unflatten_weights_and_state(
        state.weights, state.state, signature)
    _, eval_state = tl.unflatten_weights_and_state(
        state.weights, state.eval_state, signature)
    self.update_weights_and_state(weights, model_state)
    self._eval_model.weights, self._eval_model.state = weights, eval_state
    for trainer in self._trainer_per_task:
      trainer.slots, _ = fastmath.tree_unflatten(
          state.slots, trainer.slots, copy_from_tree=[None, ()])
    self._step = state.step
    self._history = trax_history.History.from_dict(state.history)

  def _run_one_step(self, task_index, task_changed):
    # A stop is honoured here, before the next step, rather than at the end
    # of the previous one: trax runs a step's evaluation and checkpoint
    # after this method returns, and they must not be skipped. Every process
    # asks at the same step, or the others would wait for it in the next
    # step's collectives.
    if (self._steps_this_run and
        self._parallel.any_process(self.stop_signals)):
      self._step -= 1  # trax counted the step that is not taken
      raise Interrupted()
    trainer = self._trainer_per_task[task_index]
    before = (self._model.weights, self._model.state, trainer.slots)
    loss, stats = super()._run_one_step(task_index, task_changed)
    if bool(_all_finite((loss, self._model.weights, trainer.slots))):
      loss, self._skipped_in_a_row = float(loss), 0
    else:
      loss = self._nonfinite_step(float(loss), before, trainer)
    self._train_loss.append(loss)
    for name, value in stats.items():
      values = self._optimizer_metrics[name]
      # Steps resumed from a checkpoint that did not record them (format 1).
      values.extend([math.nan] * (len(self._train_loss) - 1 - len(values)))
      values.append(float(value))
    self._steps_this_run += 1
    if self._steps_this_run == 1 and self._parallel.is_writer:
      tqdm.write(f'First step done {time.time() - LOADED:.1f} s after train.py '
                 'was loaded (imports, input pipeline and compilation '
                 'included).')
    if self.progress_bar is not None:
      self.progress_bar.update(1)
      if self.step % 10 == 0:
        self.progress_bar.set_postfix(loss=f'{loss:.4f}', refresh=False)
    return loss, stats

  def _nonfinite_step(self, loss, before, trainer):
    """Handles a non-finite step; returns the loss to record for it."""
    what = (f'step {self.step}: the loss was {loss}' if not math.isfinite(loss)
            else f'step {self.step}: the update made weights or optimizer '
                 f'slots non-finite (loss {loss:.4f})')
    if self._on_nonfinite == 'raise':
      raise FloatingPointError(f'Non-finite values at {what}.')
    if (self._on_nonfinite == 'skip_step'
        and self._skipped_in_a_row < MAX_SKIPPED_IN_A_ROW):
      weights, state, slots = before
      self.update_weights_and_state(weights, state)
      trainer.slots = slots
      self._skipped_in_a_row += 1
      tqdm.write(f'Non-finite values at {what}; update skipped.',
                 file=sys.stderr)
      return math.nan
    if self._skipped_in_a_row:
      what += f', the {self._skipped_in_a_row + 1}th non-finite step in a row'
    raise Diverged(what)

  def _log_training_progress(self, task, total_loss, n_steps, elapsed_time,
                             optimizer_metrics, summary_writer):
    # The averages run over every step since the previous evaluation, also
    # across a restart, and skip NaN (skipped) steps.
    del total_loss, n_steps, optimizer_metrics  # this process's steps only
    evals = self.history.get('eval', 'metrics/loss')
    since = evals[-1][0] if evals else 0
    recent = np.asarray(self._train_loss[since:])
    applied = np.isfinite(recent)
    count = max(int(applied.sum()), 1)
    # trax divides each total by the count it is given.
    totals = {name: float(np.nansum(np.asarray(values[since:])[applied]))
              for name, values in self._optimizer_metrics.items()}
    total = float(recent[applied].sum()) if applied.any() else math.nan
    super()._log_training_progress(task, total, count, elapsed_time, totals,
                                   summary_writer)

  def eval_metrics_at_this_step(self):
    """{metric: value} of an evaluation run at this step, or None."""
    metrics = {}
    for metric in self.history.metrics_for_mode('eval'):
      step, value = self.history.get('eval', metric)[-1]
      if step == self.step:
        metrics[metric.split('/', 1)[-1]] = float(value)
    return metrics or None

  def run_evals(self, summary_writers=None):
    super().run_evals(summary_writers)
    record = {'step': self.step, 'time': time.time()}
    for mode in self.history.modes:
      for metric in self.history.metrics_for_mode(mode):
        step, value = self.history.get(mode, metric)[-1]
        if step == self.step:
          record[f'{mode}/{metric.split("/", 1)[-1]}'] = float(value)
    if self._saver is not None:
      run_dir.append_metrics(self.output_dir, record)
    if self._save_after_eval:
      self._save_after_eval = False
      self.save_now({k[len('eval/'):]: v for k, v in record.items()
                     if k.startswith('eval/')})

  def save_checkpoint(self, basename):
    """trax's save hook: saves now, or after this step's evaluation."""
    del basename  # One series of checkpoints; the Checkpoints policy prunes it.
    if self._eval_at(self.step):
      self._save_after_eval = True
    else:
      self.save_now()

  def save_now(self, metrics=None):
    """Commits a checkpoint of the current step, unless there is one already.

    Raises:
      FloatingPointError: the weights or slots are not finite (never saved).
    """
    if self._saved_step == self.step:
      return
    state = self._training_state()
    if not bool(_all_finite((state.weights, state.slots))):
      raise FloatingPointError(f'Step {self.step} has non-finite weights or '
                               f'optimizer slots; it is not checkpointed.')
    if self._saver is not None:
      self._saver.save(state, metrics)
    self._saved_step = self.step

  def _training_state(self):
    trainer, = self._trainer_per_task
    weights, state = tl.flatten_weights_and_state(self._model.weights,
                                                  self._model.state)
    _, eval_state = tl.flatten_weights_and_state(self._model.weights,
                                                 self._eval_model.state)
    return checkpoints.TrainingState(
        step=self.step, weights=_on_host(weights),
        slots=_on_host(checkpoints.flat_slots(trainer.slots)), state=_on_host(state),
        eval_state=_on_host(eval_state), rng=np.asarray(self._base_rng),
        train_loss=np.asarray(self._train_loss, np.float32),
        optimizer_metrics={name: np.asarray(values, np.float32)
                           for name, values in
                           self._optimizer_metrics.items()},
        input_position=self._train_batches.position,
        history=self._history.to_dict(), config=self._config)


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
  parser.add_argument('--allow_config_change', action='store_true',
                      help='resume even though the config differs from the '
                           'one the checkpoint was trained with.')
  parser.add_argument('--from_scratch', action='store_true',
                      help='start at step 0 when every checkpoint in '
                           '--output_dir is damaged (they are moved aside).')
  devices.add_arguments(parser)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  params = list(args.gin_param)
  if args.steps is not None:
    params.append(f'train_and_evaluate.n_steps = {args.steps}')
  # Before any start-up work: a signal while joining, reading data or
  # compiling is then a stop request too, not a kill mid-way.
  with _stop_requests() as stop_signals:
    _train_reporting_exits(args, params, stop_signals)


def _train_reporting_exits(args, params, stop_signals):
  """Trains as `args` say; turns each way of stopping into its exit status."""
  try:
    devices.set_up(args)
    # Joining other processes starts JAX's preemption notifier, which takes
    # SIGTERM over; a stop request it must remain.
    _listen_for_stop_requests()
    configurables.parse(args.gin_file, params)
    with configurables.required_bindings_as_usage_errors(), \
        devices.log_in_process_0_only():
      train_and_evaluate(args.output_dir,
                         allow_config_change=args.allow_config_change,
                         from_scratch=args.from_scratch,
                         stop_signals=stop_signals)
  except UsageError as e:
    exit_with(e, 'train.py')
  except OSError as e:
    if e.errno not in _FULL_OR_READ_ONLY:
      raise
    exit_with(UsageError(
        f'Writing to {args.output_dir} failed ({e}). The checkpoints '
        f'committed before are intact; free space or fix the directory, then '
        f'rerun the same command to resume.'), 'train.py')
  except Interrupted as stop:
    if jax.process_index() != 0:  # process 0 says where the checkpoint is
      sys.exit(EXIT_INTERRUPTED)
    step = _newest_step(args.output_dir)
    if stop.finished:
      print(f'Stopped at step {step}, the last: training is complete, and its '
            f'checkpoint is in {args.output_dir}.', file=sys.stderr)
    else:
      where = (f'Stopped at step {step}; its checkpoint is in '
               f'{args.output_dir}' if step else
               'Stopped before the first checkpoint')
      print(f'{where}. Run the same command again to resume.',
            file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
  except Diverged as e:
    if jax.process_index() != 0:
      sys.exit(EXIT_DIVERGED)
    step = _newest_step(args.output_dir)
    kept = (f'the newest checkpoint, step {step} in {args.output_dir}, is kept'
            if step else 'no checkpoint had been written yet')
    print(f'train.py: training diverged: non-finite values at '
          f'{without_gin_trace(str(e))}. '
          f'Nothing after it was saved; {kept}. Lower the learning rate or '
          f'clip gradients (e.g. Adam.clip_grad_norm), or bind '
          f"train_and_evaluate.on_nonfinite = 'skip_step', then rerun.",
          file=sys.stderr)
    sys.exit(EXIT_DIVERGED)


def _newest_step(output_dir):
  if not os.path.isdir(os.path.join(output_dir, checkpoints.SUBDIR)):
    return 0
  steps = configurables.Checkpoints(output_dir, read_only=True).steps()
  return steps[-1] if steps else 0


if __name__ == '__main__':
  main(sys.argv[1:])
