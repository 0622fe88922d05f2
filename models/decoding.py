"""Generating target sequences with an encoder-decoder model in predict mode.

The model (models/seq2seq.py, built with mode='predict') is split at its
decoder: the context part reads each context once, and the decoder is then
called with what it computed and one previous token per row, PAD_ID first,
carrying its state between calls. Greedy decoding feeds back the likeliest token;
beam search keeps the `width` likeliest partial sequences of each context,
reordering the decoder state rows to follow them. Both stop a sequence at
EOS_ID.
"""

import collections
from typing import Any

import jax
from jax import numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
from trax import layers as tl
from trax import shapes

from rnn_toolkit.token_ids import EOS_ID, PAD_ID
from rnn_toolkit.errors import check_positive
from models import seq2seq

Decoding = collections.namedtuple('Decoding', ['beam_width', 'max_length'])


def DecodingSettings(beam_width: int = 1,  # pylint: disable=invalid-name
                     max_length: int | None = None) -> Decoding:
  """How evaluate.py generates; gin-configurable, --beam_width overrides.

  Args:
    beam_width: partial sequences kept per context; 1 is greedy decoding.
    max_length: most tokens generated, EOS included; None: the target
      length the run was trained with.
  """
  check_positive('DecodingSettings', beam_width=beam_width,
                 **({} if max_length is None else {'max_length': max_length}))
  return Decoding(beam_width, max_length)


class SequenceGenerator:
  """Greedy and beam-search decoding with one predict-mode model.

  The model's context part runs once per batch of contexts; only its
  decoder runs once per generated token (see `seq2seq.split_at_decoder`).

  Args:
    model: an RNNSeq2Seq or RNNCaptioner built with mode='predict', taking
      (context, previous token int32[rows, 1]) to log-probabilities
      f32[rows, 1, vocab].
    weights: its trained weights.
    mesh: a one-axis `jax.sharding.Mesh` of this process's devices, or
      None (JAX's default device): contexts whose rows divide evenly over
      its devices are split over them, each device decoding its rows; the
      others are decoded whole on every device.
  """

  def generate(self, context: np.ndarray, settings: Decoding,
               default_length: int) -> np.ndarray:
    """int32[rows, length]: `settings`' decoding (a `Decoding`) of each row."""
    length = settings.max_length or default_length
    return self.beam_search(context, length, settings.beam_width)

  def __init__(self, model: tl.Serial, weights: Any,
               mesh: jax.sharding.Mesh | None = None):
    self._model = model
    self._context_part, self._decoder = seq2seq.split_at_decoder(model)
    self._rows = None
    if mesh is not None:
      self._rows = NamedSharding(mesh, PartitionSpec(*mesh.axis_names))
      weights = jax.device_put(weights, NamedSharding(mesh, PartitionSpec()))
    self._context_weights = tuple(weights[:-1])
    self._decoder_weights = weights[-1]
    self._remember = jax.jit(self._apply_context_part, static_argnums=3)
    self._step = jax.jit(self._apply_decoder)
    self._initial_states = {}

  def _apply_context_part(self, weights, state, context, copies):
    """(h0, ...): what the decoder reads of `context`, rows repeated `copies` times."""
    no_tokens = jnp.zeros((context.shape[0], 1), jnp.int32)
    stack, _ = self._context_part.pure_fn((context, no_tokens), weights, state,
                                          jax.random.PRNGKey(0))
    return tuple(jnp.repeat(m, copies, axis=0) for m in stack[1:])

  def _apply_decoder(self, weights, state, memory, tokens, parents=None):
    """Continues the decoder state rows `parents` (all, when None) by `tokens`.

    Reordering the state here, under jit, keeps it laid out over the
    devices as the memory is (an eager gather would gather it whole).
    """
    if parents is not None:
      state = jax.tree_util.tree_map(
          lambda a: (jnp.take(a, parents, axis=0)
                     if a.ndim and a.shape[0] == parents.shape[0] else a),
          state)
    log_probs, state = self._decoder.pure_fn((tokens, *memory), weights, state,
                                             jax.random.PRNGKey(0))
    return log_probs[:, -1], state

  def remember(self, context: np.ndarray, copies: int = 1) -> tuple:
    """What the decoder reads of each context, computed once for all tokens.

    Args:
      context: int32[rows, source_len] source tokens or f32[rows, size,
        size, 3] images.
      copies: how many times each row is repeated (one per beam).

    Returns:
      The context part's outputs, (h0 f32[rows * copies, n_units], ...),
      split over the devices when `rows` divides evenly over them.
    """
    state = self._initial_state(context.shape[0], context)
    if (self._rows is not None
        and context.shape[0] % self._rows.mesh.devices.size == 0):
      context = jax.device_put(context, self._rows)
    return self._remember(self._context_weights, state[:-1], context, copies)

  def context_outputs(self, context: jax.Array, state: Any) -> tuple:
    """`remember`'s outputs, unjitted: a pure function of `context` and the
    model's predict-mode `state` for its rows (`initial_state`), for a
    caller that traces it (rnn_toolkit/evaluation/export.py)."""
    return self._apply_context_part(self._context_weights, state[:-1],
                                    context, 1)

  def next_log_probs(self, memory: tuple, state: Any,
                     tokens: jax.Array) -> tuple[jax.Array, Any]:
    """(f32[rows, vocab] log-probabilities of the next token, new decoder
    state) after `tokens` int32[rows, length], unjitted; `state` is the
    decoder's part (the last) of the model's state."""
    return self._apply_decoder(self._decoder_weights, state, memory, tokens)

  def initial_state(self, context: np.ndarray) -> Any:
    """The model's predict-mode state for contexts like `context`'s rows."""
    return self._initial_state(context.shape[0], context)

  def _initial_state(self, rows, context):
    """The model's predict-mode state for `rows` contexts like `context`'s."""
    key = (rows, context.shape[1:], str(context.dtype))
    if key not in self._initial_states:
      signature = (shapes.ShapeDtype((rows, *context.shape[1:]), context.dtype),
                   shapes.ShapeDtype((rows, 1), np.int32))
      _, self._initial_states[key] = self._model.init(signature)
    return self._initial_states[key]

  def greedy(self, context: np.ndarray, max_length: int) -> np.ndarray:
    """int32[rows, max_length]: the likeliest token at each step, PAD_ID after EOS."""
    rows = context.shape[0]
    memory = self.remember(context)
    state = self._initial_state(rows, context)[-1]
    tokens = np.full((rows, 1), PAD_ID, np.int32)
    done = np.zeros(rows, bool)
    output = np.full((rows, max_length), PAD_ID, np.int32)
    for t in range(max_length):
      log_probs, state = self._step(self._decoder_weights, state, memory,
                                    tokens)
      best = np.where(done, PAD_ID, np.argmax(np.asarray(log_probs), axis=-1))
      output[:, t] = best
      done |= best == EOS_ID
      if done.all():
        break
      tokens = best[:, None].astype(np.int32)
    return output

  def beam_search(self, context: np.ndarray, max_length: int,
                  width: int) -> np.ndarray:
    """int32[rows, max_length]: the likeliest sequence found for each context row.

    A sequence's score is the sum of its tokens' log-probabilities. A
    context is done when its best finished sequence (ended by EOS) scores at
    least as well as its best unfinished one: scores only fall as
    sequences grow. Width 1 gives what `greedy` gives.
    """
    if width == 1:
      return self.greedy(context, max_length)
    beams = _Beams(context.shape[0], width)
    memory = self.remember(context, copies=width)  # the same for every beam
    state = self._initial_state(context.shape[0] * width, context)[-1]
    tokens = np.full((context.shape[0] * width, 1), PAD_ID, np.int32)
    parents = np.arange(context.shape[0] * width, dtype=np.int32)
    for _ in range(max_length):
      log_probs, state = self._step(self._decoder_weights, state, memory,
                                    tokens, parents)
      parents = beams.extend(np.asarray(log_probs, np.float64)).astype(np.int32)
      tokens = beams.last_tokens()[:, None]
      if beams.all_done():
        break
    return beams.best(max_length)


class _Beams:
  """The partial and finished sequences of beam search, on the host."""

  def __init__(self, n_contexts, width):
    self.width = width
    self.scores = np.full((n_contexts, width), -np.inf)
    self.scores[:, 0] = 0.0  # the first step expands one (empty) sequence
    self.sequences = np.zeros((n_contexts, width, 0), np.int32)
    self.finished = [None] * n_contexts  # (score, sequence) of the best

  def extend(self, log_probs):
    """Grows each sequence by a token; returns the state row each new one continues."""
    n, k = self.scores.shape
    vocab = log_probs.shape[-1]
    candidates = (self.scores[:, :, None]
                  + log_probs.reshape(n, k, vocab)).reshape(n, k * vocab)
    ranked = np.argsort(-candidates, axis=1, kind='stable')[:, :2 * k]
    scores = np.full((n, k), -np.inf)
    parents, tokens = np.zeros((n, k), np.int64), np.zeros((n, k), np.int32)
    for c in range(n):
      kept = 0
      for index in ranked[c]:
        score = candidates[c, index]
        parent, token = divmod(int(index), vocab)
        if score == -np.inf or kept == k:
          break
        if token == EOS_ID:
          if self.finished[c] is None or score > self.finished[c][0]:
            self.finished[c] = (score, [*self.sequences[c, parent], EOS_ID])
          continue
        scores[c, kept], parents[c, kept], tokens[c, kept] = score, parent, token
        kept += 1
    self.scores = scores
    self.sequences = np.concatenate(
        [np.take_along_axis(self.sequences, parents[:, :, None], axis=1),
         tokens[:, :, None]], axis=2)
    return (np.arange(n)[:, None] * k + parents).reshape(-1)

  def last_tokens(self):
    return self.sequences[:, :, -1].reshape(-1)

  def all_done(self):
    return all(f is not None and f[0] >= best
               for f, best in zip(self.finished, self.scores.max(axis=1)))

  def best(self, max_length):
    output = np.full((len(self.finished), max_length), PAD_ID, np.int32)
    for c, finished in enumerate(self.finished):
      sequence = (finished[1] if finished is not None
                  else self.sequences[c, np.argmax(self.scores[c])])
      output[c, :len(sequence)] = sequence[:max_length]
    return output
