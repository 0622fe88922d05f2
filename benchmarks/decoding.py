"""Speed of generation: the context read once per batch, against once per token.

    python benchmarks/decoding.py [--rounds 5] [--json out.json]

`SequenceGenerator` (models/decoding.py) runs a model's context part (the
translator's encoder, the captioner's conv stack) once per batch and then
only its decoder per generated token. `per_token` is greedy decoding that
calls the whole predict-mode model on (context, previous token) at every
step, re-reading the context each time, as the generator did before; both
give the same tokens (checked). Models have random weights at the sizes of
configs/date_normalisation.gin and configs/shape_captions.gin (256 units,
64 rows, 12 tokens; EOS never ends a row early, so every token is made).
Source lengths of 32 (a date) and 128 (a long sentence) show how the gap
grows with the context. Rounds interleave the contenders; medians in ms.
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from rnn_toolkit.runtime import trax_compat  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import

import jax  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top
from trax import shapes  # noqa: E402  pylint: disable=g-import-not-at-top

import models  # noqa: E402  pylint: disable=g-import-not-at-top
from rnn_toolkit.token_ids import EOS_ID, PAD_ID  # noqa: E402  pylint: disable=g-import-not-at-top
from models import decoding  # noqa: E402  pylint: disable=g-import-not-at-top

ROWS, UNITS, VOCAB, TOKENS = 64, 256, 60, 12
CASES = (('translator', 32), ('translator', 128), ('captioner', 32))


def build(kind, mode):
  if kind == 'translator':
    return models.RNNSeq2Seq(VOCAB, d_model=64, n_units=UNITS, dropout=0.0,
                             mode=mode)
  return models.RNNCaptioner(VOCAB, d_model=64, n_units=UNITS, dropout=0.0,
                             mode=mode)


def context_of(kind, size, rng):
  """A batch of source tokens int32[rows, size] or images f32[rows, size, size, 3]."""
  if kind == 'translator':
    return rng.integers(EOS_ID + 1, VOCAB, (ROWS, size)).astype(np.int32)
  return rng.random((ROWS, size, size, 3)).astype(np.float32)


def without_eos(weights):
  """The weights with EOS's output bias lowered, so every row runs TOKENS steps."""
  *rest, decoder = weights
  *layers, dense, log_softmax = decoder
  kernel, bias = dense
  return (*rest, (*layers, (kernel, bias.at[EOS_ID].set(-1e4)), log_softmax))


class PerToken:
  """Greedy decoding through the whole predict-mode model at every step."""

  def __init__(self, model, weights, context):
    self._model, self._weights = model, weights
    self._step = jax.jit(self._apply)
    _, self._initial_state = model.init(
        (shapes.signature(context),
         shapes.ShapeDtype((context.shape[0], 1), np.int32)))

  def _apply(self, weights, state, context, tokens):
    log_probs, state = self._model.pure_fn((context, tokens), weights, state,
                                           jax.random.PRNGKey(0))
    return log_probs[:, -1], state

  def greedy(self, context, max_length):
    state = self._initial_state
    tokens = np.full((context.shape[0], 1), PAD_ID, np.int32)
    output = []
    for _ in range(max_length):
      log_probs, state = self._step(self._weights, state, context, tokens)
      tokens = np.argmax(np.asarray(log_probs), axis=-1)[:, None].astype(np.int32)
      output.append(tokens[:, 0])
    return np.stack(output, axis=1)


def contenders(kind, size):
  """{name: fn() -> tokens} for one case, all warmed up (compiled)."""
  context = context_of(kind, size, np.random.default_rng(0))
  full = build(kind, 'eval')
  full.init((shapes.signature(context), shapes.ShapeDtype((ROWS, 4), np.int32)))
  weights = without_eos(full.weights)
  generator = decoding.SequenceGenerator(build(kind, 'predict'), weights)
  per_token = PerToken(build(kind, 'predict'), weights, context)
  fns = {'per_token greedy': lambda: per_token.greedy(context, TOKENS),
         'generator greedy': lambda: generator.greedy(context, TOKENS),
         'generator beam 4': lambda: generator.beam_search(context, TOKENS, 4)}
  outputs = {name: fn() for name, fn in fns.items()}
  if not np.array_equal(outputs['per_token greedy'],
                        outputs['generator greedy']):
    raise AssertionError(f'{kind}: the two greedy decodings differ.')
  return fns


def timed(fn):
  start = time.perf_counter()
  fn()
  return (time.perf_counter() - start) * 1000


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--json', help='also write the medians here')
  args = parser.parse_args()
  results = []
  for kind, size in CASES:
    fns = contenders(kind, size)
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
      for name, fn in fns.items():
        times[name].append(timed(fn))
    medians = {name: statistics.median(t) for name, t in times.items()}
    speedup = medians['per_token greedy'] / medians['generator greedy']
    print(f'{kind} {size}: ' + ', '.join(
        f'{name} {ms:.0f} ms' for name, ms in medians.items())
          + f'; greedy {speedup:.1f}x faster')
    results.append({'kind': kind, 'size': size, 'ms': medians,
                    'greedy_speedup': speedup})
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
