"""Greedy and beam-search decoding against re-running the full model."""

import functools
import itertools
import json
import textwrap

import jax
import numpy as np
import pytest
from trax import shapes

import models
from conftest import run_on_devices
from rnn_toolkit.token_ids import EOS_ID, PAD_ID
from models import decoding

VOCAB = 5  # PAD, UNK, EOS and two tokens: few enough to enumerate


def _seq2seq(mode, attention=True):
  return models.RNNSeq2Seq(VOCAB, d_model=8, n_units=16,
                           attention=attention, dropout=0.0, mode=mode)


def _captioner(mode):
  return models.RNNCaptioner(VOCAB, d_model=8, n_units=16,
                             conv_channels=(4,), dropout=0.0, mode=mode)


def _contexts(kind, rows, rng):
  if kind == 'captioner':
    return rng.random((rows, 8, 8, 3)).astype(np.float32)
  source = rng.integers(1, VOCAB, (rows, 6)).astype(np.int32)
  source[0, 4:] = PAD_ID  # a shorter source: attention must skip padding
  return source


def _models(kind, attention=True, rows=3, mesh=None):
  """(eval model, SequenceGenerator with the same weights) of a random model.

  The same every time; made once for each kind and size on JAX's default
  device (tests never change them), so their compiled functions are reused.
  """
  if mesh is None:
    return _models_on_the_default_device(kind, attention, rows)
  return _new_models(kind, attention, rows, mesh)


@functools.cache
def _models_on_the_default_device(kind, attention, rows):
  return _new_models(kind, attention, rows, None)


def _new_models(kind, attention, rows, mesh):
  build = _captioner if kind == 'captioner' else (
      lambda mode: _seq2seq(mode, attention))
  full, predict = build('eval'), build('predict')
  rng = np.random.default_rng(0)
  context = _contexts(kind, rows, rng)
  full.init((shapes.signature(context), shapes.ShapeDtype((rows, 4), np.int32)),
            rng=jax.random.PRNGKey(0))  # the same weights in every process
  # The weights are scaled up so that the likeliest token often differs
  # from step to step and EOS is likely enough to end some sequences.
  full.weights = _scaled(full.weights, 3.0)
  return full, decoding.SequenceGenerator(predict, full.weights, mesh), context


def _scaled(weights, factor):
  if isinstance(weights, (tuple, list)):
    return type(weights)(_scaled(w, factor) for w in weights)
  return weights * factor if hasattr(weights, 'shape') else weights


_COMPILED = {}


def _log_probs(full, context, prefixes, width):
  """f32[rows, vocab]: the full model's next-token distribution after each prefix.

  The prefixes are padded to `width` tokens, so that every call runs one
  compiled function: the decoder is causal, so the padding after a prefix
  changes nothing at its end.
  """
  if id(full) not in _COMPILED:
    _COMPILED[id(full)] = full, jax.jit(
        lambda inputs, weights: full.pure_fn(inputs, weights, full.state,
                                             full.rng)[0])
  length = len(prefixes[0])
  target = np.array([list(p) + [PAD_ID] * (width - length) for p in prefixes],
                    np.int32)
  _, apply = _COMPILED[id(full)]
  return np.asarray(apply((context, target), full.weights))[:, length]


def _greedy_by_rerunning(full, context, max_length):
  rows = context.shape[0]
  prefixes, done = [[] for _ in range(rows)], np.zeros(rows, bool)
  for _ in range(max_length):
    best = np.argmax(_log_probs(full, context, prefixes, max_length + 1),
                     axis=-1)
    for row, token in enumerate(best):
      prefixes[row].append(PAD_ID if done[row] else int(token))
    done |= best == EOS_ID
  return np.array(prefixes, np.int32)


@pytest.mark.parametrize('kind, attention', [
    ('seq2seq', True), ('seq2seq', False), ('captioner', True)])
def test_predict_mode_greedy_equals_rerunning_the_model_on_the_prefix(
    kind, attention):
  full, generator, context = _models(kind, attention)
  greedy = generator.greedy(context, max_length=6)
  np.testing.assert_array_equal(greedy,
                                _greedy_by_rerunning(full, context, 6))


@pytest.mark.parametrize('kind', ['seq2seq', 'captioner'])
def test_beam_width_one_is_greedy(kind):
  _, generator, context = _models(kind)
  np.testing.assert_array_equal(generator.beam_search(context, 6, width=1),
                                generator.greedy(context, 6))
  settings = decoding.DecodingSettings(beam_width=1)
  np.testing.assert_array_equal(generator.generate(context, settings, 6),
                                generator.greedy(context, 6))


def _sequence_log_probs(full, context_row, sequences):
  """The full model's log-probability of each sequence, given `context_row`.

  All are scored in one call: padded to one length, the tokens after a
  sequence's end change nothing before it (the decoder is causal).
  """
  length = max(map(len, sequences))
  target = np.array([list(s) + [PAD_ID] * (length - len(s)) for s in sequences],
                    np.int32)
  context = np.repeat(context_row[None], len(sequences), axis=0)
  log_probs = np.asarray(full((context, target)))
  return [sum(log_probs[i, t, token] for t, token in enumerate(s))
          for i, s in enumerate(sequences)]


def test_a_full_width_beam_finds_the_likeliest_finished_sequence():
  """Exhaustive search over every sequence of up to 3 tokens ending in EOS."""
  full, generator, context = _models('seq2seq')
  max_length = 3
  found = generator.beam_search(context, max_length, width=VOCAB ** max_length)
  others = [t for t in range(VOCAB) if t != EOS_ID]
  candidates = [(*body, EOS_ID) for n in range(max_length)
                for body in itertools.product(others, repeat=n)]
  for row in range(context.shape[0]):
    scores = _sequence_log_probs(full, context[row], candidates)
    best = candidates[int(np.argmax(scores))]
    assert tuple(found[row][:len(best)]) == best
    assert (found[row][len(best):] == PAD_ID).all()


def _finished_log_probs(full, context, outputs):
  """f32[rows]: the full model's log-probability of each row's output up to
  and including its EOS; NaN for a row that has none."""
  log_probs = np.asarray(full((context, outputs)), np.float64)
  scores = np.full(len(outputs), np.nan)
  for row, ids in enumerate(outputs.tolist()):
    if EOS_ID in ids:
      end = ids.index(EOS_ID) + 1
      scores[row] = sum(log_probs[row, t, ids[t]] for t in range(end))
  return scores


def test_a_wider_beam_never_finds_a_less_likely_sequence():
  full, generator, context = _models('seq2seq', rows=64)
  greedy = _finished_log_probs(full, context, generator.greedy(context, 5))
  finished = ~np.isnan(greedy)
  # The scaled weights end most greedy sequences within 5 tokens; the
  # comparison is over those (an unfinished one has no full score).
  assert finished.sum() >= 48
  for width in (2, 4):
    beam = _finished_log_probs(full, context,
                               generator.beam_search(context, 5, width))
    assert not np.isnan(beam[finished]).any()  # it finds an ending too
    assert (beam[finished] >= greedy[finished] - 1e-5).all()
    # Not merely greedy again: on some contexts it finds a likelier one.
    assert (beam[finished] > greedy[finished] + 1e-3).any()


def test_decoding_settings_are_checked():
  with pytest.raises(Exception, match='beam_width = 0'):
    decoding.DecodingSettings(beam_width=0)


# Decodes with the rows of a batch split over 4 simulated devices; prints
# the outputs and how the decoder's inputs lay on the devices.
_ON_FOUR_DEVICES = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, 'tests')
    from rnn_toolkit.runtime import devices
    import test_decoding
    results = {}
    for kind in ('seq2seq', 'captioner'):
      for rows in (8, 3):  # 3 rows do not split over 4 devices
        _, generator, context = test_decoding._models(
            kind, rows=rows, mesh=devices.local_mesh())
        memory = generator.remember(context, copies=2)
        results[f'{kind} {rows}'] = {
            'devices': len(memory[0].sharding.device_set),
            'replicated': memory[0].sharding.is_fully_replicated,
            'greedy': generator.greedy(context, 6).tolist(),
            'beam': generator.beam_search(context, 6, width=3).tolist()}
    print(json.dumps(results))
''')


@pytest.mark.slow
def test_rows_split_over_devices_decode_as_on_one():
  result = run_on_devices(_ON_FOUR_DEVICES, 4)
  assert result.returncode == 0, result.stderr[-3000:]
  on_four = json.loads(result.stdout.strip().splitlines()[-1])
  for kind in ('seq2seq', 'captioner'):
    for rows in (8, 3):
      _, generator, context = _models(kind, rows=rows)
      got = on_four[f'{kind} {rows}']
      assert got['devices'] == 4
      assert got['replicated'] == (rows == 3)  # else each device has 2 rows
      np.testing.assert_array_equal(got['greedy'], generator.greedy(context, 6))
      np.testing.assert_array_equal(got['beam'],
                                    generator.beam_search(context, 6, width=3))
