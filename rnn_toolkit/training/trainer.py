"""Trains the experiment of the parsed gin config: `train_and_evaluate`.

Re-running on the same run directory resumes exactly where its newest
intact checkpoint left off. The run directory receives checkpoints/ (see
storage/checkpoints.py), config.gin (the operative config), vocab.json,
metrics.jsonl (one JSON record per evaluation) and TensorBoard summaries
(train/, eval/). `train_from_command_line` is train.py's whole work; it
turns each way of stopping into an exit status:
0 trained, 2 bad config or input (nothing was changed), 3 training
diverged (non-finite loss; the checkpoints are kept), 75 interrupted by a
signal (resume by rerunning).
"""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import argparse
import contextlib
import errno
import os
import sys
from typing import Any, Callable, NamedTuple, Optional, Sequence

import gin
import jax
from jax import numpy as jnp
from tqdm import tqdm
from trax import layers as tl
from trax import optimizers
from trax.supervised import lr_schedules
from trax.supervised import training

from models import crf
from rnn_toolkit import configurables
from rnn_toolkit import tag_scheme
from rnn_toolkit import tasks
from rnn_toolkit.errors import UsageError, exit_with, without_gin_trace
from rnn_toolkit.evaluation import streaming
from rnn_toolkit.runtime import allocator
from rnn_toolkit.runtime import devices
from rnn_toolkit.storage import checkpoints
from rnn_toolkit.storage import run_dir
from rnn_toolkit.training import stopping
from rnn_toolkit.training.loop import (NONFINITE_POLICIES, Counted, Diverged,
                                       TrainingLoop, cycle)
from rnn_toolkit.training.stopping import Interrupted

EXIT_DIVERGED = 3
# Stopped cleanly by a signal, with a checkpoint: worth rerunning
# (EX_TEMPFAIL in sysexits.h).
EXIT_INTERRUPTED = 75
# Write errors that mean a full or read-only disk: the user's to fix.
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS,
                      errno.EACCES, errno.EPERM)


class Experiment(NamedTuple):
  """What `experiment` returns: a data pipeline and a model factory."""
  inputs: Any
  model: Callable[..., tl.Layer]


class Plan(NamedTuple):
  """What a run needs, built and checked before output_dir is touched."""
  inputs: Any
  vocab: Any
  vocab_is_new: bool
  train_model: tl.Layer
  eval_model: tl.Layer
  optimizer: optimizers.base.Optimizer
  restored: Optional[checkpoints.TrainingState]
  damaged: list[tuple[int, str]]  # (step, reason) of damaged checkpoints
  eval_batches: list[tuple[jax.Array, ...]]
  # A streaming language model's eval split, as the streams it is scored
  # on (data/streams.py); empty for other runs.
  stream_batches: list[tuple[jax.Array, ...]]
  config: str
  parallel: devices.DataParallel


# Registered under module 'train', the name they had when train.py defined
# them, so that saved configs naming `train.experiment` keep working.
@gin.configurable(module='train')
def experiment(inputs: Any = gin.REQUIRED,
               model: Callable[..., tl.Layer] = gin.REQUIRED) -> Experiment:
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


@gin.configurable(module='train', denylist=['output_dir', 'allow_config_change',
                                            'from_scratch', 'stop_signals'])
def train_and_evaluate(
    output_dir: str, *, n_steps: int = gin.REQUIRED,
    optimizer: Callable[[], optimizers.base.Optimizer] = optimizers.Adam,
    lr_schedule: Callable[[int], float] = lr_schedules.constant(1e-3),
    eval_every: int = 500, checkpoint_every: Optional[int] = None,
    n_eval_batches: Optional[int] = None, seed: int = 0,
    on_nonfinite: str = 'stop', allow_config_change: bool = False,
    from_scratch: bool = False,
    stop_signals: Sequence[int] = ()) -> Optional[TrainingLoop]:
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
      evaluated and checkpointed as it would have been (`stopping.stop_requests`).

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
  stopping.RUN_DIR_WRITTEN.append(True)
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
  # Settings evaluate.py reads, called so that config.gin records them.
  if tasks.of(inputs).generates:
    configurables.DecodingSettings()
  if tasks.of(inputs).name == 'language_model':
    configurables.DynamicEvaluation()
  parallel = devices.DataParallel.over_all_devices()
  parallel.check_batch_size(inputs.batch_size,
                            f'{type(inputs).__name__}.batch_size')
  inputs.train_shards(parallel.process_count)  # raises if they can't divide
  inputs.check_trainable()
  config = configurables.config_text()
  restored, damaged = _newest_intact_checkpoint(output_dir, from_scratch,
                                                parallel)
  if restored:
    run_dir.check_config(output_dir, restored, config, allow_config_change)
  saved_vocab = run_dir.load_vocab(output_dir, inputs.dataset)
  vocab = saved_vocab or inputs.build_vocab()
  _check_model_can_stream(model, inputs.model_dimensions(vocab))
  train_model, eval_model = _build_models(
      model, inputs.model_dimensions(vocab), _signature(inputs))
  _check_tag_scheme(inputs, crf.find(train_model))
  opt = _build_optimizer(optimizer)
  if restored:
    run_dir.check_vocab_size(output_dir, restored, model,
                             inputs.model_dimensions(vocab), _signature(inputs))
    run_dir.check_shapes(output_dir, restored, train_model, opt,
                         _signature(inputs))
    run_dir.check_state_shapes(output_dir, restored, train_model,
                               _signature(inputs))
  eval_batches = _eval_batches(inputs, vocab, n_eval_batches, parallel)
  stream_batches = _stream_batches(inputs, vocab, parallel)
  return Plan(inputs, vocab, saved_vocab is None, train_model, eval_model, opt,
              restored, damaged, eval_batches, stream_batches, config,
              parallel)


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


def _check_model_can_stream(model, dimensions):
  """Raises UsageError if streams are asked of a model that can't carry state.

  Streaming pipelines ask for `stateful=True` among the model's sizes.
  """
  if 'stateful' not in dimensions:
    return
  name = getattr(model, '__name__', repr(model))
  if not streaming.can_stream(model):
    raise UsageError(
        f'CharLMInputs.streaming trains a model that carries its recurrent '
        f'state from window to window, but experiment.model = {name} takes '
        f'no `stateful` argument: only a one-directional recurrent language '
        f'model can (a bidirectional layer reads each window from its end '
        f'as well, and a non-recurrent model has no state to carry). Bind '
        f'experiment.model = @RNNLanguageModel, or CharLMInputs.streaming '
        f'= False. Nothing was written.')


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


def _check_tag_scheme(inputs, crf_layer):
  """Raises UsageError if a CRF that keeps to IOB2 is to learn tags that
  break it: their likelihood would be all but zero, and the loss huge."""
  if crf_layer is None or not crf_layer.constrains_iob:
    return
  for split in dict.fromkeys([inputs.train_split, inputs.eval_split]):
    for index, (words, tags) in enumerate(inputs.tag_sequences(split)):
      at = tag_scheme.first_invalid(tags)
      if at is None:
        continue
      before = tags[at - 1] if at else 'the start'
      raise UsageError(
          f'Example {index} of split {split!r} of {inputs.dataset} breaks '
          f'the IOB2 tag scheme the CRF keeps to: word {at} '
          f'({words[at]!r}) is tagged {tags[at]} after {before}, but I-X '
          f'may only follow B-X or I-X (its words begin '
          f'{" ".join(words[:8])!r}). If the dataset mixes in IOB1\'s tags, '
          f'bind TaggingInputs.to_iob2 = True, which rewrites them (entity '
          f'scores are unchanged); or bind RNNTagger.constrain_iob = False. '
          f'Nothing was written.')


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


def _stream_batches(inputs, vocab, parallel):
  """The eval split as streams, placed on the devices once; [] unless streaming."""
  if not inputs.streaming:
    return []
  return [parallel.place_batch(b) for b in inputs.stream_batches(
      vocab, rows=parallel.process_rows(inputs.batch_size))]


def _signature(inputs):
  """The trax input signature of one training batch's model input(s)."""
  return inputs.input_signature()


def _make_loop(output_dir, plan, saver, lr_schedule, n_steps, eval_every,
               checkpoint_every, seed, on_nonfinite):
  """Builds the Loop: one train task, one eval task, state from plan.restored."""
  restored, inputs, parallel = plan.restored, plan.inputs, plan.parallel
  position = restored.input_position if restored else 0
  # The same seeded stream every time, fast-forwarded past what was trained.
  batches = Counted(inputs.train_batches(
      plan.vocab, seed=seed, start=position,
      process_index=parallel.process_index,
      process_count=parallel.process_count), position)
  loss, accuracy = loss_and_accuracy(plan.train_model)
  train_task = training.TrainTask(
      labeled_data=map(parallel.place_batch, batches),
      sample_batch=plan.eval_batches[0],
      loss_layer=loss(),
      optimizer=plan.optimizer, lr_schedule=lr_schedule,
      n_steps_per_checkpoint=checkpoint_every, loss_name='loss')
  # Scored on streams, a model's loss is the streaming one; the windows,
  # each from a zero state, give its windowed_loss beside it.
  windowed = 'windowed_' if plan.stream_batches else ''
  eval_task = training.EvalTask(
      labeled_data=cycle(plan.eval_batches), sample_batch=plan.eval_batches[0],
      metrics=[loss(), accuracy()],
      metric_names=[f'{windowed}loss', f'{windowed}accuracy'],
      n_eval_batches=len(plan.eval_batches))
  base_rng = (jnp.asarray(restored.rng) if restored
              else jax.random.PRNGKey(seed))
  return TrainingLoop(
      plan.train_model, [train_task], eval_model=plan.eval_model,
      eval_tasks=[eval_task], output_dir=output_dir, random_seed=seed,
      n_devices=1,
      checkpoint_at=lambda s: s % checkpoint_every == 0 or s == n_steps,
      eval_at=lambda s: s % eval_every == 0 or s == n_steps,
      saver=saver, restored=restored, config=plan.config, base_rng=base_rng,
      train_batches=batches, on_nonfinite=on_nonfinite, parallel=parallel,
      stream_batches=plan.stream_batches)


def loss_and_accuracy(model: tl.Layer) -> tuple[Callable[[], tl.Layer],
                                                 Callable[[], tl.Layer]]:
  """The layer factories of the model's loss and accuracy: a CRF tagger's
  sentence likelihood and Viterbi tags, or the per-token softmax's."""
  if crf.find(model) is not None:
    return crf.Loss, crf.Accuracy
  return tl.WeightedCategoryCrossEntropy, tl.WeightedCategoryAccuracy


def _describe_reading(inputs, process_count):
  """A line for the log: how the processes divide the training split."""
  if inputs.streaming:
    return (f'Each of the {process_count} processes lays out the same '
            f'{inputs.batch_size} streams of the train split and feeds '
            f'{inputs.batch_size // process_count} of them.')
  shards = inputs.train_shards(process_count)
  if shards == 1 and process_count > 1:
    return (f'The train split has fewer examples than processes: each of '
            f'the {process_count} processes reads all of it and keeps its '
            f'rows of every batch.')
  return (f'The train split is read in {shards} part{"s" * (shards > 1)}, '
          f'{shards // process_count} per process.')


def train_from_command_line(args: argparse.Namespace) -> None:
  """Trains as train.py's flags say; exits with the status of how it stopped.

  `args` holds gin_file, gin_param, output_dir, steps, allow_config_change,
  from_scratch and the devices flags (`devices.add_arguments`).
  """
  params = list(args.gin_param)
  if args.steps is not None:
    params.append(f'train_and_evaluate.n_steps = {args.steps}')
  # Before any start-up work: a signal while joining, reading data or
  # compiling is then a stop request too, not a kill mid-way.
  with stopping.stop_requests() as stop_signals:
    _train_reporting_exits(args, params, stop_signals)


def _train_reporting_exits(args, params, stop_signals):
  """Trains as `args` say; turns each way of stopping into its exit status."""
  try:
    devices.set_up(args)
    # Joining other processes starts JAX's preemption notifier, which takes
    # SIGTERM over; a stop request it must remain.
    stopping.listen_for_stop_requests()
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
