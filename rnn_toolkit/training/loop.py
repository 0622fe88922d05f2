"""The training loop: trax's Loop with atomic checkpoints, exact resume and a
guard against non-finite steps."""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import collections
import math
import sys
import time
from typing import Any, Iterator, Optional, Sequence

import jax
from jax import numpy as jnp
import numpy as np
from tqdm import tqdm
from trax import fastmath
from trax import layers as tl
from trax.supervised import history as trax_history
from trax.supervised import training

from models import carried_state
from rnn_toolkit.evaluation import streaming
from rnn_toolkit.runtime import devices
from rnn_toolkit.storage import checkpoints
from rnn_toolkit.storage import run_dir
from rnn_toolkit.training.stopping import STARTED, Interrupted

NONFINITE_POLICIES = ('stop', 'skip_step', 'raise')
# Under on_nonfinite = 'skip_step', this many non-finite steps in a row
# mean the weights themselves have gone bad; skipping more would only spin.
MAX_SKIPPED_IN_A_ROW = 20


class Diverged(Exception):
  """A step gave a non-finite loss, weight or slot, under on_nonfinite='stop'."""


def cycle(batches: Sequence[Any]) -> Iterator[Any]:
  while True:
    yield from batches


class Counted:
  """Iterates `iterator`, counting the items drawn (from `position` on)."""

  def __init__(self, iterator: Iterator[Any], position: int):
    self._iterator, self.position = iterator, position

  def __iter__(self) -> 'Counted':
    return self

  def __next__(self) -> Any:
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
  - A language model that carries its state is also scored on the eval
    split's streams (`stream_batches`), the metrics trax computes on
    windows being its windowed_loss and windowed_accuracy.
  - It feeds a tqdm bar, writes metrics.jsonl and stops on a signal.
  """

  def __init__(self, *args: Any, saver: Optional[checkpoints.Checkpoints],
               restored: Optional[checkpoints.TrainingState], config: str,
               base_rng: jax.Array, train_batches: Counted, on_nonfinite: str,
               parallel: devices.DataParallel,
               stream_batches: Sequence[Any] = (), **kwargs: Any):
    self._saver, self._restored, self._config = saver, restored, config
    self._stream_batches, self._stream_scorer = stream_batches, None
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
    self.progress_bar: Optional[tqdm] = None
    self.stop_signals: Sequence[int] = ()
    super().__init__(*args, checkpoint_low_metric=None, **kwargs)
    self._replicate_over_devices()

  def _replicate_over_devices(self):
    """Puts a copy of the weights, state and slots on every device; carried
    recurrent states are split over them with the batch rows they belong to."""
    replicate = self._parallel.replicate
    weights, state = replicate((self._model.weights, self._model.state))
    state = carried_state.map_carried(self._model, state,
                                      self._parallel.split_rows)
    self.update_weights_and_state(weights, state)
    self._eval_model.state = replicate(self._eval_model.state)
    for trainer in self._trainer_per_task:
      trainer.slots = replicate(trainer.slots)

  def new_rng(self) -> jax.Array:
    if self._rng_step != self.step:
      self._rng_step, self._rng_draws = self.step, 0
    self._rng_draws += 1
    return jax.random.fold_in(jax.random.fold_in(self._base_rng, self.step),
                              self._rng_draws)

  def load_checkpoint(self, directory: Optional[str] = None,
                      filename: Optional[str] = None) -> None:
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
      tqdm.write(f'First step done {time.time() - STARTED:.1f} s after train.py '
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

  def eval_metrics_at_this_step(self) -> Optional[dict[str, float]]:
    """{metric: value} of an evaluation run at this step, or None."""
    metrics = {}
    for metric in self.history.metrics_for_mode('eval'):
      step, value = self.history.get('eval', metric)[-1]
      if step == self.step:
        metrics[metric.split('/', 1)[-1]] = float(value)
    return metrics or None

  def run_evals(self, summary_writers: Optional[Sequence[Any]] = None) -> None:
    super().run_evals(summary_writers)
    if self._stream_batches:
      self._run_stream_eval(summary_writers[0] if summary_writers else None)
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

  def _run_stream_eval(self, summary_writer):
    """Scores the eval streams with the weights trax's evaluation just used."""
    if self._stream_scorer is None:
      self._stream_scorer = streaming.stream_scorer(self._eval_model)
    totals = streaming.score_streams(
        self._eval_model, self._eval_model.weights, self._eval_model.state,
        self._stream_batches, self._stream_scorer)
    self.log_summary(streaming.stream_metrics(totals), summary_writer,
                     'metrics/', 'eval')

  def save_checkpoint(self, basename: str) -> None:
    """trax's save hook: saves now, or after this step's evaluation."""
    del basename  # One series of checkpoints; the Checkpoints policy prunes it.
    if self._eval_at(self.step):
      self._save_after_eval = True
    else:
      self.save_now()

  def save_now(self, metrics: Optional[dict[str, float]] = None) -> None:
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
    # A carried recurrent state is split over the processes with the batch
    # rows; the rest is replicated, and gathering it is copying it.
    gather = self._parallel.gather
    return checkpoints.TrainingState(
        step=self.step, weights=_on_host(weights),
        slots=_on_host(checkpoints.flat_slots(trainer.slots)),
        state=[gather(a) for a in state],
        eval_state=[gather(a) for a in eval_state], rng=np.asarray(self._base_rng),
        train_loss=np.asarray(self._train_loss, np.float32),
        optimizer_metrics={name: np.asarray(values, np.float32)
                           for name, values in
                           self._optimizer_metrics.items()},
        input_position=self._train_batches.position,
        history=self._history.to_dict(), config=self._config)
