"""A trained run as one jax.export artifact, for serving without the toolkit.

    python export.py --output_dir runs/sst2_rnn --out sst2.jax
    Run.load('runs/sst2_rnn').export('sst2.jax')

writes two files: OUT, the serialized `jax.export.Exported` of the model's
inference function with the checkpoint's weights inside it, and OUT.json,
what a server needs beside it: the vocabulary, the class names, how text
becomes ids, and the function's inputs and outputs. Loading needs only jax
and numpy (docs/serve_exported.py).

- Classifiers and taggers: `probabilities(ids)`, token ids (or a vector
  classifier's numbers) of any batch and length in, probabilities out; a
  CRF tagger's `tags(ids)`, its likeliest tag sequences (Viterbi).
- Language models: `step(state, ids)`, the state and a chunk of ids in
  (one token, or a prompt), the new state and the log-probabilities of the
  next token out, so that a server carries each stream's state.
- Translators and captioners: `step(state, ids, context)`, the decoder's
  step, the same way; at a sequence's first token it reads the context
  (the source ids, or the image) into the state.

The function is traced under `kernel_choice.portable()`: XLA's scan on
every platform, since the CPU kernels carry no compatibility guarantee.
"""

import json
import os
from typing import Any, Callable, Sequence

import jax
from jax import numpy as jnp
import numpy as np
from trax import shapes

from models import crf
from models import kernel_choice
from models import word_features
from rnn_toolkit.errors import UsageError
from rnn_toolkit.storage import run_dir
from rnn_toolkit.storage.atomic_files import write_bytes_atomically
from rnn_toolkit.storage.atomic_files import write_text_atomically
from rnn_toolkit.token_ids import EOS_ID, FIRST_CHAR_ID, PAD_ID, UNK_ID

PLATFORMS = ('cpu', 'cuda', 'tpu')
FORMAT = 'trax-rnn-toolkit export 1'
# Predict-mode models are built for two numbers of rows: an axis whose size
# differs between the two is a batch axis, made symbolic in the export.
_BUILD_ROWS = (7, 5)


def export(run: Any, out: str, platforms: Sequence[str] = PLATFORMS,
           overwrite: bool = False) -> dict:
  """Writes `run`'s inference function to `out` and its description to
  `out`.json; returns the description.

  Raises:
    UsageError: an unknown platform, or `out` or `out`.json existing
      without `overwrite`; found before anything is written.
  """
  platforms = check_platforms(platforms)
  check_out(out, overwrite)
  make = _EXPORTERS[run.task.name]
  with kernel_choice.portable():
    exported, description = make(run, platforms)
  description = {
      'format': FORMAT, 'task': run.task.name, 'platforms': list(platforms),
      'run': os.path.abspath(run.output_dir), 'step': run.step,
      **description, 'tokens': _tokens(run),
      'first_id': getattr(run.vocab, 'FIRST_ID', FIRST_CHAR_ID),
      'vocabulary': _vocabulary_record(run)}
  write_bytes_atomically(out, exported.serialize())
  try:
    write_text_atomically(description_path(out),
                          json.dumps(description, indent=1) + '\n')
  except BaseException:
    os.remove(out)  # an artifact without its description is of no use
    raise
  return description


def description_path(out: str) -> str:
  """Where the description of the artifact `out` goes: beside it."""
  return f'{out}.json'


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  """`platforms` as a tuple; UsageError if one is not a JAX export platform."""
  platforms = tuple(platforms)
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms or len(set(platforms)) < len(platforms):
    raise UsageError(
        f'--platforms {",".join(platforms)!r} is not a list of distinct '
        f'platforms JAX exports for'
        f'{" (unknown: " + ", ".join(map(repr, unknown)) + ")" if unknown else ""}'
        f'. Choose among {", ".join(PLATFORMS)}, each once, comma-separated '
        f'(the default is all three).')
  return platforms


def check_out(out: str, overwrite: bool) -> None:
  """Raises UsageError unless `out` (and its description) may be written."""
  for path in (out, description_path(out)):
    if os.path.isdir(path):
      raise UsageError(f'--out {out} would write {path}, which is a '
                       f'directory. Give the path of a file.')
    if os.path.exists(path) and not overwrite:
      raise UsageError(f'{path} exists, and export.py does not replace it '
                       f'unless told to. Pass --overwrite to replace it, or '
                       f'choose another --out.')
  directory = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(directory):
    raise UsageError(f'--out {out}: the directory {directory} does not '
                     f'exist. Create it first, or choose another --out.')


def _probabilities(run, platforms):
  """The eval-mode model as probabilities(ids) for any batch and length;
  a CRF tagger's as tags(ids), its Viterbi tags."""
  example = _example_input(run)
  model = run.model('eval', shapes.signature(example))
  weights, state = model.weights, model.state
  is_crf = crf.find(model) is not None

  def probabilities(ids):
    log_probs = model.pure_fn(ids, weights, state, jax.random.PRNGKey(0))[0]
    return jnp.exp(log_probs)

  def tags(ids):
    output = model.pure_fn(ids, weights, state, jax.random.PRNGKey(0))[0]
    return crf.predictions(output, word_features.word_ids(ids) != PAD_ID)

  if run.task.name == 'vector_classification':
    dims = (*jax.export.symbolic_shape('batch'), *example.shape[1:])
  else:
    dims = (*jax.export.symbolic_shape('batch, length'), *example.shape[2:])
  spec = jax.ShapeDtypeStruct(dims, example.dtype)
  exported = jax.export.export(jax.jit(tags if is_crf else probabilities),
                               platforms=platforms)(spec)
  n = len(run.vocab.labels)
  if is_crf:
    outputs = ('int32[batch, length]: each word\'s tag, of the likeliest tag '
               'sequence (Viterbi; 0 at padding)')
  elif run.task.name == 'tagging':
    outputs = f'f32[batch, length, {n}]: each word\'s tag probabilities'
  else:
    outputs = f'f32[batch, {n}]: the class probabilities'
  return exported, {
      'function': 'tags' if is_crf else 'probabilities',
      'inputs': _input_text(run), 'outputs': outputs,
      'class_names': list(run.vocab.labels)}


def _streaming_step(run, platforms):
  """The predict-mode language model as step(state, ids) -> (state,
  log-probabilities of the next token)."""
  model, other = (run.model('predict', shapes.ShapeDtype((rows, 1), np.int32),
                            dimensions={'vocab_size': run.vocab.size})
                  for rows in _BUILD_ROWS)
  weights = model.weights
  leaves, tree = jax.tree.flatten(model.state)
  batch, length = jax.export.symbolic_shape('batch, length')
  state_specs = _batch_specs(leaves, jax.tree.leaves(other.state), batch)

  def step(state, ids):
    log_probs, new_state = model.pure_fn(
        ids, weights, jax.tree.unflatten(tree, state), jax.random.PRNGKey(0))
    return jax.tree.leaves(new_state), log_probs[:, -1]

  ids = jax.ShapeDtypeStruct((batch, length), np.int32)
  exported = jax.export.export(jax.jit(step), platforms=platforms)(
      state_specs, ids)
  return exported, {
      'function': 'step',
      'inputs': ('(state, ids): the state, a list of arrays (each filled '
                 'with its "fill" before a stream\'s first token; see '
                 '"state"), and ids '
                 f'int32[batch, length], the tokens to feed, {PAD_ID} '
                 'before the first character'),
      'outputs': (f'(new state, f32[batch, {run.vocab.size}]): the state '
                  'after the ids, and the log-probabilities of the next '
                  'token'),
      'state': _state_description(state_specs, batch, leaves)}


def _decoding_step(run, platforms):
  """A translator's or captioner's decoder as step(state, ids, context) ->
  (state, log-probabilities of the next token); at a sequence's first call
  (its state as filled) the step reads the context first."""
  generator = run.generator(_BUILD_ROWS[0])
  signature = run.inputs.context_signature()
  examples = [np.zeros((rows, *signature.shape[1:]), signature.dtype)
              for rows in _BUILD_ROWS]
  initial, other = (generator.initial_state(e) for e in examples)
  memory = generator.context_outputs(examples[0], initial)
  other_memory = jax.eval_shape(generator.context_outputs, examples[1],
                                other)
  decoder_leaves, decoder_tree = jax.tree.flatten(initial[-1])
  batch = jax.export.symbolic_shape('batch')[0]
  memory_specs = _batch_specs(memory, other_memory, batch)
  state_specs = [jax.ShapeDtypeStruct((), np.bool_), *memory_specs,
                 *_batch_specs(decoder_leaves, jax.tree.leaves(other[-1]),
                               batch)]
  leaves, tree = jax.tree.flatten(initial)
  batch_free = _batch_specs(leaves, jax.tree.leaves(other), None)

  def initial_for(rows):
    """The model's starting state for `rows` rows (symbolic)."""
    return jax.tree.unflatten(tree, [
        jnp.full(tuple(rows if n is None else n for n in spec.shape),
                 _fill(leaf), spec.dtype)
        for leaf, spec in zip(leaves, batch_free)])

  def step(state, ids, context):
    started, *rest = state
    memory, decoder = rest[:len(memory_specs)], rest[len(memory_specs):]
    memory = jax.lax.cond(
        started, lambda: tuple(memory),
        lambda: generator.context_outputs(context,
                                          initial_for(context.shape[0])))
    log_probs, decoder = generator.next_log_probs(
        memory, jax.tree.unflatten(decoder_tree, decoder), ids)
    return [jnp.array(True), *memory, *jax.tree.leaves(decoder)], log_probs

  ids = jax.ShapeDtypeStruct((batch, 1), np.int32)
  context = jax.ShapeDtypeStruct((batch, *signature.shape[1:]),
                                 signature.dtype)
  exported = jax.export.export(jax.jit(step), platforms=platforms)(
      state_specs, ids, context)
  initial_leaves = [False, *[0] * len(memory), *decoder_leaves]
  return exported, _decoder_description(run, signature, state_specs, batch,
                                        initial_leaves)


def _decoder_description(run, signature, state_specs, batch, initial):
  """What the description says of a decoder's step."""
  what = ('int32[batch, source length] source token ids, padded with '
          f'{PAD_ID}' if run.task.name == 'translation' else
          'f32[batch, size, size, 3] images, RGB in [0, 1]')
  return {
      'function': 'step',
      'inputs': ('(state, ids, context): the state, a list of arrays (each '
                 'filled with its "fill" before a sequence\'s first token; '
                 'see "state"), '
                 'ids int32[batch, 1], the previous token '
                 f'({PAD_ID} before the first), and the context: {what}; '
                 'at the first token the step reads the context, after it '
                 'only the state'),
      'outputs': (f'(new state, f32[batch, {run.vocab.size}]): the state '
                  'after the ids, and the log-probabilities of the next '
                  f'token; {EOS_ID} ends the sequence'),
      'context_shape': [None, *map(int, signature.shape[1:])],
      'max_length': (run.decoding.max_length or run.inputs.max_target_len),
      # The memory is read from the context at the first token: any fill.
      'state': _state_description(state_specs, batch, initial)}


def _state_description(specs, batch, initial):
  """Each state array's shape (None for the batch axis), dtype, and the
  value all its entries start at (`initial`, the model's own)."""
  return [{'shape': [None if d is batch else int(d) for d in spec.shape],
           'dtype': np.dtype(spec.dtype).name, 'fill': _fill(value)}
          for spec, value in zip(specs, initial, strict=True)]


def _fill(value):
  """The one value every entry of `value` holds, as JSON."""
  value = np.asarray(value)
  if value.size and not (value == value.flat[0]).all():
    raise ValueError('A predict-mode state array starts with different '
                     'values in its entries; the description cannot give '
                     'it as one value.')
  return value.flat[0].item() if value.size else 0


def _batch_specs(leaves, other_leaves, batch):
  """ShapeDtypeStructs of `leaves` (arrays built for _BUILD_ROWS[0] rows),
  each axis whose size differs in `other_leaves` (the same arrays for
  _BUILD_ROWS[1] rows) being `batch`."""
  shape = lambda a: tuple(getattr(a, 'shape', ()))  # arrays and specs
  return [jax.ShapeDtypeStruct(
      tuple(batch if n != m else n
            for n, m in zip(shape(a), shape(b), strict=True)),
      jnp.result_type(a)) for a, b in zip(leaves, other_leaves, strict=True)]


def _example_input(run):
  """A small batch of the model's input: ids, or a vector classifier's
  numbers."""
  signature = run.inputs.input_signature()
  if run.task.name == 'vector_classification':
    return np.zeros((2, *signature.shape[1:]), np.float32)
  return np.full((2, 3, *signature.shape[2:]), FIRST_CHAR_ID, np.int32)


def _input_text(run):
  if run.task.name == 'vector_classification':
    return (f'f32[batch, {run.inputs.n_features}]: each example\'s numbers, '
            f'as in the dataset\'s feature')
  per_word = run.inputs.input_signature().shape[2:]
  if per_word:
    return (f'int32[batch, length, {per_word[0]}]: each word\'s id, then '
            f'the ids of its first {per_word[0] - 1} characters '
            f'("vocabulary" "chars", from {FIRST_CHAR_ID}); {PAD_ID} pads '
            f'shorter words and rows, {UNK_ID} is unknown; see "tokens"')
  return (f'int32[batch, length]: token ids, {PAD_ID} padding at the end of '
          f'shorter rows, {UNK_ID} unknown words; see "tokens"')


def _tokens(run):
  """How the run's inputs turn text into ids, for a server to repeat."""
  inputs, task = run.inputs, run.task.name
  if task == 'language_model':
    return {'split': 'characters', 'lowercase': False}
  if task == 'vector_classification':
    return {'split': 'numbers', 'n_features': inputs.n_features,
            'scale': inputs.scale}
  if run.task.generates:
    # A translator's source is never cut: a longer one is refused
    # (context_shape gives the length).
    return {'split': 'characters' if run.vocab.level == 'char' else 'words',
            'lowercase': run.vocab.level != 'char'}
  # A tagger's characters keep their case; a classifier's words (and so
  # their characters) are lower-cased as they are split.
  chars = ({'max_word_chars': inputs.max_word_chars,
            'chars_lowercase': task != 'tagging'}
           if inputs.max_word_chars else {})
  if task == 'tagging':
    return {'split': 'whitespace', 'lowercase': bool(inputs.lowercase),
            'max_len': inputs.max_len, **chars}
  return {'split': 'words', 'lowercase': True, 'max_len': inputs.max_len,
          **chars}


def _vocabulary_record(run):
  """The run's vocab.json, as train.py saved it."""
  with open(os.path.join(run.output_dir, run_dir.VOCAB_FILE),
            encoding='utf-8') as f:
    return json.load(f)


_EXPORTERS: dict[str, Callable] = {
    'classification': _probabilities,
    'vector_classification': _probabilities,
    'tagging': _probabilities,
    'language_model': _streaming_step,
    'translation': _decoding_step,
    'captioning': _decoding_step,
}
