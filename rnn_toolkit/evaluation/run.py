"""`Run`: a trained run directory, loaded once, as a Python object.

    run = Run.load('runs/sst2_rnn')
    run.evaluate()                            # the run's eval split
    run.evaluate('reviews.tsv')               # or a file of the user's
    run.predict(['a gorgeous, witty film'])   # [('positive', 0.97)]

A Run reads the run's operative config and vocabulary and restores one
committed checkpoint (checksums checked), each once; it builds the model
in whichever mode a method needs. Results are plain Python and NumPy.
"""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import os
from typing import Any, Optional, Sequence, Union

import gin
import jax
from jax import numpy as jnp
import numpy as np
from tqdm import tqdm
from trax import layers as tl
from trax import shapes

from data.tokenize import words_as_typed
from data.vocab import load_vocab, size_mismatch
from models import crf
from models import decoding
from models import word_features
from rnn_toolkit import configurables
from rnn_toolkit import tasks
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation import streaming
from rnn_toolkit.evaluation.dynamic import DynamicEvaluation
from rnn_toolkit.runtime import devices
from rnn_toolkit.storage import checkpoints
from rnn_toolkit.storage import run_dir
from rnn_toolkit.token_ids import FIRST_CHAR_ID, PAD_ID

Checkpoint = Union[str, int]  # 'best', 'latest' or a committed step

_predictions = jax.jit(crf.predictions)


class Run:
  """A run directory written by train.py, with one of its checkpoints.

  Attributes:
    output_dir: the run directory.
    task: the `tasks.Task` of the run's pipeline.
    vocab: the run's vocabulary (vocab.json).
    state: the checkpoint loaded (`checkpoints.TrainingState`: its step,
      weights and optimizer slots as NumPy arrays, its losses, ...).
    step: the step of the checkpoint loaded.
    decoding: the run's `decoding.DecodingSettings` (translators and
      captioners).
  """

  def __init__(self, output_dir: str, config: str, vocab: Any,
               state: checkpoints.TrainingState):
    """Use `Run.load`."""
    self.output_dir, self.vocab, self.state = output_dir, vocab, state
    self._config = config  # parsed by `load`: gin's config now
    self._inputs_reference = gin.query_parameter('experiment.inputs')
    self.task = tasks.TASKS[self._inputs_reference.configurable.wrapped.task]
    # What `experiment` would be given: `@Model` (not called) is the
    # configurable itself. Reading the bindings spares opening the dataset,
    # which calling `experiment()` would, to make its inputs.
    self._model_fn = gin.query_parameter(
        'experiment.model').scoped_configurable_fn
    self.decoding = (configurables.DecodingSettings() if self.task.generates
                     else None)
    self.dynamic = (configurables.DynamicEvaluation()
                    if self.task.name == 'language_model' else None)
    self._inputs = None
    self._eval_fn = None  # see _eval_outputs

  @classmethod
  def load(cls, output_dir: str, checkpoint: Checkpoint = 'best') -> 'Run':
    """Loads the run in `output_dir` with checkpoint `checkpoint`.

    Args:
      output_dir: a directory train.py has trained in.
      checkpoint: 'best' (the best evaluated one, else the newest),
        'latest', or a committed step.

    Raises:
      UsageError: `output_dir` is not a run directory, holds no committed
        checkpoint or not that one, or one of its files is damaged.
    """
    config, vocab = (os.path.join(output_dir, name)
                     for name in (run_dir.CONFIG_FILE, run_dir.VOCAB_FILE))
    for path in (config, vocab):
      if not os.path.exists(path):
        raise UsageError(f'{path} does not exist, so {output_dir} is not a '
                         f'run directory written by train.py. Point '
                         f'--output_dir at the directory you passed to '
                         f'train.py.')
    text = configurables.parse_run_config(config)  # refuses code, if any
    return cls(output_dir, text, load_vocab(vocab),
               _restore(output_dir, checkpoint))

  @property
  def step(self) -> int:
    return self.state.step

  @property
  def inputs(self) -> Any:
    """The run's data pipeline; the dataset is opened on first use."""
    if self._inputs is None:
      self._activate()
      self._inputs = self._inputs_reference.scoped_configurable_fn()
      self._inputs.check_vocab(self.vocab)  # before a pipeline reads with it
    return self._inputs

  def model(self, mode: str, input_signature: Any,
            dimensions: Optional[dict] = None) -> tl.Layer:
    """The run's model in `mode` ('eval' or 'predict'), with the checkpoint's weights.

    `dimensions` are the model's sizes; by default the inputs' for the
    run's vocabulary (`inputs.model_dimensions(vocab)`, which opens the
    dataset).
    """
    dimensions = dimensions or self.inputs.model_dimensions(self.vocab)
    model = self._build(dimensions, mode)
    model.init(input_signature)
    signature = model.weights_and_state_signature(input_signature)
    self._check_fits(signature, dimensions, mode, input_signature)
    model.weights, _ = tl.unflatten_weights_and_state(
        [jnp.asarray(w) for w in self.state.weights], (), signature,
        weights_only=True)
    return model

  def evaluate(self, source: Optional[str] = None,
               beam_width: Optional[int] = None,
               dynamic: Optional[DynamicEvaluation] = None) -> dict:
    """Metrics of one full pass over a split or a file; writes them to the run.

    Args:
      source: a split of the run's dataset (default: its eval split), or
        the path of a file in the task's format (see evaluation/files.py).
        It is a file when it names an existing path, holds a path
        separator or ends in a file extension (.tsv, .jsonl, .txt,
        .conll...); a missing file is an error, not a split.
      beam_width: translators and captioners: overrides the run's
        DecodingSettings.beam_width.
      dynamic: language models: also score the text with dynamic
        evaluation, these settings (`dynamic_settings`) adapting the
        weights (evaluation/dynamic.py); the checkpoint is not changed.

    Returns:
      The metrics, as saved in OUTPUT_DIR/eval_SPLIT.json (of a file,
      eval_file_STEM.json, STEM its name without the extension; its
      'file' says which file, where a split's 'split' says which split).

    Raises:
      UsageError: no such split or file; a malformed line of the file
        (named with its number), before anything is computed or written.
    """
    from rnn_toolkit.evaluation import scoring  # pylint: disable=g-import-not-at-top
    return scoring.evaluate(self, source, beam_width, dynamic)

  def predict(self, texts: Sequence[str]) -> list:
    """A classifier's (class name, probability) for each of `texts`."""
    self.check_use('predict')
    return [(self.vocab.labels[int(p.argmax())], float(p.max()))
            for chunk in _chunks(texts, self.inputs.batch_size)
            for p in np.exp(self._eval_outputs(
                self.inputs.encode(self.vocab, chunk)))]

  def tag(self, sentences: Sequence[str]) -> list:
    """A tagger's [(word, tag)] for each of `sentences` (a CRF tagger's
    best sequence, by Viterbi).

    The words are shown as typed (not as the vocabulary knows them, unknown
    or lower-cased), split exactly as the model's input was.
    """
    self.check_use('tag')
    max_len = self.inputs.max_len
    tagged = []
    for chunk in _chunks(sentences, self.inputs.batch_size):
      tokens = self.inputs.encode(self.vocab, chunk)
      real = word_features.word_ids(tokens) != PAD_ID
      tags = np.asarray(_predictions(self._eval_outputs(tokens), real))
      tagged += [list(zip(words_as_typed(text)[:max_len],
                          (self.vocab.labels[int(i)] for i in row[mask])))
                 for text, row, mask in zip(chunk, tags, real)]
    return tagged

  def translate(self, texts: Sequence[str],
                beam_width: Optional[int] = None) -> list[str]:
    """A translator's output for each of `texts` (greedy or beam search)."""
    self.check_use('translate')
    return self._decode([self.inputs.encode(self.vocab, [text])[0]
                         for text in texts], beam_width)

  def caption(self, image_paths: Sequence[str],
              beam_width: Optional[int] = None) -> list[str]:
    """A captioner's caption of each image file in `image_paths`."""
    self.check_use('caption')
    return self._decode([self.inputs.load_image(path)
                         for path in image_paths], beam_width)

  def generate(self, prompt: str = '', n_samples: int = 1, length: int = 200,
               temperature: float = 1.0, seed: int = 0) -> list[str]:
    """A language model's `n_samples` continuations of `prompt`.

    The model runs in predict mode: the prompt is fed once, then each
    sampled character is fed back while the recurrent layers carry their
    state. `temperature` 0 picks the likeliest character at every step.
    The dataset is not needed.

    Returns:
      `n_samples` strings, each the prompt and its continuation.
    """
    self.check_use('generate')
    if n_samples < 1 or length < 0:
      raise UsageError('Generation takes the number of samples (1 or more) '
                       'and the length in characters to add (0 or more).')
    model = self.model('predict', shapes.ShapeDtype((n_samples, 1), np.int32),
                       dimensions={'vocab_size': self.vocab.size})
    step = jax.jit(lambda tokens, weights, state: model.pure_fn(
        tokens, weights, state, jax.random.PRNGKey(0)))
    # In predict mode the model does not shift its input: it is fed the
    # previous character, which before the first one is PAD_ID.
    context = np.array([[PAD_ID] + self.vocab.encode(prompt)] * n_samples,
                       np.int32)
    log_probs, state = step(context, model.weights, model.state)
    rng = jax.random.PRNGKey(seed)
    sampled = []
    for _ in tqdm(range(length), desc='generating', unit='char', leave=False):
      rng, key = jax.random.split(rng)
      token = _sample(log_probs[:, -1], temperature, key)
      sampled.append(np.asarray(token))
      log_probs, state = step(token[:, None], model.weights, state)
    columns = (np.stack(sampled, axis=1) if sampled
               else np.zeros((n_samples, 0), np.int32))
    return [prompt + self.vocab.decode(row) for row in columns]

  def generator(self, rows: int) -> decoding.SequenceGenerator:
    """The model in predict mode, as a SequenceGenerator for `rows` contexts.

    Each process generates on its own devices, `rows` split over them when
    they divide evenly (evaluation pads its batches so that they do).
    """
    context = self.inputs.context_signature()
    signature = (shapes.ShapeDtype((rows, *context.shape[1:]), context.dtype),
                 shapes.ShapeDtype((rows, 1), np.int32))
    model = self.model('predict', signature)
    return decoding.SequenceGenerator(model, model.weights,
                                      devices.local_mesh())

  def dynamic_settings(self, learning_rate: Optional[float] = None,
                       decay: Optional[float] = None) -> DynamicEvaluation:
    """A language model's dynamic evaluation settings: the run's
    (`dynamic_evaluation` in its config), with the values given instead."""
    if self.dynamic is None:
      raise UsageError(
          f'Dynamic evaluation adapts a language model to the text it '
          f'scores, but {self.output_dir} holds a {self.task.model_noun}. '
          f'Leave out --dynamic_eval, or point --output_dir at a run of a '
          f'language model.')
    given = {'learning_rate': learning_rate, 'decay': decay}
    return self.dynamic._replace(
        **{k: v for k, v in given.items() if v is not None}).checked()

  def decoding_settings(
      self, beam_width: Optional[int] = None) -> decoding.Decoding:
    """The run's DecodingSettings, `beam_width` overriding its width."""
    if beam_width is None:
      return self.decoding
    if beam_width < 1:
      raise UsageError(f'--beam_width must be 1 or more (got {beam_width}).')
    return self.decoding._replace(beam_width=beam_width)

  def _decode(self, contexts, beam_width):
    """The decoded output of each context, `batch_size` contexts at a time."""
    settings = self.decoding_settings(beam_width)
    if not contexts:
      return []
    rows = devices.round_up(min(len(contexts), self.inputs.batch_size),
                            jax.local_device_count())
    generator = self.generator(rows)
    outputs = []
    for chunk in _chunks(contexts, rows):
      ids = generator.generate(padded_with_copies(np.stack(chunk), rows),
                               settings, self.inputs.max_target_len)
      outputs += [self.vocab.decode(row) for row in ids[:len(chunk)]]
    return outputs

  def _eval_outputs(self, batch: np.ndarray) -> np.ndarray:
    """The eval-mode model's output for `batch` (a classifier's or tagger's).

    The model is built once, for the first batch's shape; its weights fit
    batches of any number of rows and length, and each shape is compiled
    once.
    """
    if self._eval_fn is None:
      model = self.model('eval', shapes.signature(batch))
      weights, state = model.weights, model.state
      apply = jax.jit(lambda x: model.pure_fn(x, weights, state,
                                              jax.random.PRNGKey(0))[0])
      self._eval_fn = lambda x: np.asarray(apply(x))
    return self._eval_fn(batch)

  def export(self, out: str, platforms: Optional[Sequence[str]] = None,
             overwrite: bool = False) -> dict:
    """Writes the model's inference function as a jax.export artifact to
    `out`, for `platforms` (default cpu, cuda and tpu), and what a server
    needs beside it to `out`.json; returns that description
    (evaluation/export.py)."""
    from rnn_toolkit.evaluation import export  # pylint: disable=g-import-not-at-top
    return export.export(self, out, platforms or export.PLATFORMS, overwrite)

  def apply(self, items: Sequence[str],
            beam_width: Optional[int] = None) -> list:
    """The task's use of the model (`task.use`: predict, tag, ...) on `items`."""
    options = {'beam_width': beam_width} if self.task.generates else {}
    return getattr(self, self.task.use)(items, **options)

  def check_use(self, use: str) -> None:
    """Raises UsageError unless `use` is what a model of the run's task does."""
    if self.task.use == use:
      return
    flag = next(t.flag for t in tasks.TASKS.values() if t.use == use)
    *others, last = sorted({t.model_noun for t in tasks.TASKS.values()
                            if t.flag == flag})
    nouns = f'{", ".join(others)} or {last}' if others else last
    raise UsageError(
        f'{flag} (Run.{use}) needs a {nouns}, but '
        f'{self.output_dir} holds a {self.task.model_noun}. Use '
        f'{self.task.flag} (Run.{self.task.use}) with it, or point '
        f'--output_dir at a run of a {nouns}.')

  @property
  def can_stream(self) -> bool:
    """Whether the run's model can be built to carry its state (a
    recurrent language model's can, however it was trained)."""
    return streaming.can_stream(self._model_fn)

  def _build(self, dimensions, mode):
    self._activate()  # the model's bindings are this run's
    return self._model_fn(**dimensions, mode=mode)

  def _activate(self):
    """Makes the run's config gin's: models read their bindings when built.

    The text was checked when the run was loaded, so it is parsed as is.
    """
    gin.clear_config()
    gin.parse_config(self._config)

  def _check_fits(self, signature, dimensions, mode, input_signature):
    """Raises UsageError unless the checkpoint fits the model of `signature`.

    The model's sizes come from vocab.json, its layers from config.gin;
    trax would load weights of other shapes without a word and fail (or
    mispredict) later. Only on a mismatch are models of other sizes built,
    to say which size differs.
    """
    def shapes_of(weights_and_state):
      flat, _ = tl.flatten_weights_and_state(*weights_and_state)
      return [tuple(w.shape) for w in flat]

    def shapes_for(sizes):
      return shapes_of(self._build(sizes, mode).weights_and_state_signature(
          input_signature))

    saved = [tuple(np.shape(w)) for w in self.state.weights]
    wanted = shapes_of(signature)
    if saved == wanted:
      return
    raise size_mismatch(dimensions, saved, shapes_for, self.step) or UsageError(
        f'The checkpoint at step {self.step} does not fit the model that the '
        f'run\'s config.gin and vocab.json describe: its {len(saved)} weight '
        f'arrays (e.g. {saved[:3]}) differ from the model\'s {len(wanted)} '
        f'(e.g. {wanted[:3]}), so one of those files was changed after '
        f'training. Restore the run\'s own config.gin and vocab.json, or '
        f'train a new run in another --output_dir.')


def _restore(output_dir, which):
  """The committed checkpoint `which` of the run, its checksums checked."""
  run_dir.check_not_legacy(output_dir)
  saved = configurables.Checkpoints(output_dir, read_only=True)
  steps = saved.steps()
  if not steps:
    raise UsageError(f'{output_dir} holds no committed checkpoint yet. Point '
                     f'--output_dir at a directory train.py has trained in '
                     f'(its first checkpoint comes after checkpoint_every '
                     f'steps).')
  step = _resolve_step(which, steps, saved)
  try:
    return saved.restore(step)
  except checkpoints.DamagedCheckpoint as e:
    if step not in saved.steps():  # pruned by a training run meanwhile
      return _restore(output_dir, which)
    raise UsageError(f'Checkpoint {step} in {output_dir} is damaged: {e}. '
                     f'Choose another with --checkpoint (committed: '
                     f'{", ".join(map(str, steps))}).') from None


def _resolve_step(which, steps, saved):
  if which == 'best':
    best = saved.best_step()
    return steps[-1] if best is None else best
  if which == 'latest':
    return steps[-1]
  if str(which).isdigit() and int(which) in steps:
    return int(which)
  raise UsageError(f'--checkpoint {which!r} is not one of best, latest or a '
                   f'committed step ({", ".join(map(str, steps))}).')


def padded_with_copies(context: np.ndarray, rows: int) -> np.ndarray:
  """`context` with copies of its first row added, up to `rows` rows.

  Copies of a real row end when it does, where a row of padding might
  never generate EOS and keep its whole batch decoding to the length limit.
  """
  copies = np.repeat(context[:1], rows - len(context), axis=0)
  return np.concatenate([context, copies])


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
  """`items` in consecutive lists of `size` (the last may be shorter)."""
  items = list(items)
  return [items[i:i + size] for i in range(0, len(items), size)]


def _sample(log_probs, temperature, key):
  """int32[batch]: a draw from softmax(log_probs / temperature), argmax at 0.

  Padding and the unknown-character id are never drawn: neither is text.
  """
  log_probs = log_probs.at[:, :FIRST_CHAR_ID].set(-jnp.inf)
  if temperature <= 0:
    return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, log_probs / temperature).astype(jnp.int32)

