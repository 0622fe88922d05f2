"""Speed of a char language model's training step: before and after the
input product was taken per vocabulary row and dropout drawn bytewise.

    python benchmarks/lm_step.py [--cells elman gru lstm] [--rounds 3] [--json out.json]

`before` is the model as it was built until 2026-12-07: ShiftRight,
Embedding, trax's Dropout, the recurrent layer (which multiplies every
step's embedding by W_xh), trax's Dropout, Dense, LogSoftmax. `now` is
`models.RNNLanguageModel` (models/embedded_recurrence.py and
models/dropout.py). Both at the main config's sizes (65 characters, 512
units, batch 64 × 128, dropout 0.1), one jitted value-and-gradient of the
loss, so the optimiser's update is left out; under tcmalloc when it is
installed, as train.py runs. `dropout` times one dropout
mask on the batch's [64, 128, 512] activations alone: trax's and
models/dropout.py's. Rounds interleave the contenders; medians in ms.
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

# Under tcmalloc when installed, as train.py runs.
from rnn_toolkit.runtime import allocator  # noqa: E402  pylint: disable=g-import-not-at-top
if __name__ == '__main__':
  allocator.relaunch_with_fast_allocator()

from rnn_toolkit.runtime import trax_compat  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import

import jax  # noqa: E402  pylint: disable=g-import-not-at-top
from jax import numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top
from trax import layers as tl  # noqa: E402  pylint: disable=g-import-not-at-top
from trax import shapes  # noqa: E402  pylint: disable=g-import-not-at-top

import models  # noqa: E402  pylint: disable=g-import-not-at-top
from models import dropout  # noqa: E402  pylint: disable=g-import-not-at-top
from models import rnn  # noqa: E402  pylint: disable=g-import-not-at-top

VOCAB, UNITS, BATCH, SEQ_LEN, RATE = 65, 512, 64, 128, 0.1
CALLS_PER_TIMING = 10


def before(cell: str) -> tl.Layer:
  return tl.Serial(tl.ShiftRight(mode='train'), tl.Embedding(VOCAB, UNITS),
                   tl.Dropout(RATE, mode='train'),
                   rnn.RecurrentLayer(cell, UNITS, mode='train'),
                   tl.Dropout(RATE, mode='train'), tl.Dense(VOCAB),
                   tl.LogSoftmax())


def now(cell: str) -> tl.Layer:
  return models.RNNLanguageModel(VOCAB, UNITS, cell=cell, dropout=RATE,
                                 mode='train')


def training_step(model: tl.Layer, tokens: np.ndarray):
  """A no-argument call of the jitted loss gradient, waited for."""
  model.init(shapes.signature(tokens), rng=jax.random.PRNGKey(0))

  def loss(weights, state, rng):
    log_probs, _ = model.pure_fn(tokens, weights, state, rng)
    return -jnp.mean(jnp.take_along_axis(log_probs, tokens[..., None], -1))

  step = jax.jit(jax.value_and_grad(loss))
  args = (model.weights, model.state, jax.random.PRNGKey(1))
  return lambda: jax.block_until_ready(step(*args))


def dropout_masks():
  x = jnp.ones((BATCH, SEQ_LEN, UNITS))
  trax_drop = tl.Dropout(RATE, mode='train')
  trax_drop.init(shapes.signature(x))
  trax_fn = jax.jit(lambda rng: trax_drop.pure_fn(x, (), (), rng)[0])
  byte_fn = jax.jit(lambda rng: dropout.drop(rng, x, RATE))
  key = jax.random.PRNGKey(0)
  return {('dropout', 'trax'): lambda: jax.block_until_ready(trax_fn(key)),
          ('dropout', 'bytes'): lambda: jax.block_until_ready(byte_fn(key))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cells', nargs='+', default=['elman', 'gru', 'lstm'],
                      choices=sorted(rnn.CELLS))
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--json', help='write the medians to this file')
  args = parser.parse_args()
  tokens = np.random.default_rng(0).integers(
      0, VOCAB, (BATCH, SEQ_LEN)).astype(np.int32)
  contenders = dropout_masks()
  for cell in args.cells:
    contenders[(cell, 'before')] = training_step(before(cell), tokens)
    contenders[(cell, 'now')] = training_step(now(cell), tokens)
  for run in contenders.values():  # compile
    run()
  times = {key: [] for key in contenders}
  for _ in range(args.rounds):
    for key, run in contenders.items():
      start = time.perf_counter()
      for _ in range(CALLS_PER_TIMING):
        run()
      times[key].append(1000 * (time.perf_counter() - start)
                        / CALLS_PER_TIMING)
  medians = {key: statistics.median(t) for key, t in times.items()}
  print(allocator.describe())
  print(f'{"":8} {"before":>9} {"now":>9} {"now/before":>11}')
  for name in ['dropout', *args.cells]:
    old, new = (medians[(name, 'trax' if name == 'dropout' else 'before')],
                medians[(name, 'bytes' if name == 'dropout' else 'now')])
    print(f'{name:8} {old:9.1f} {new:9.1f} {new / old:11.2f}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({' '.join(key): {'median_ms': medians[key],
                                 'rounds_ms': times[key]}
                 for key in contenders}, f, indent=1)


if __name__ == '__main__':
  main()
