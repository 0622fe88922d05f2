"""One-to-one, many-to-many (translation) and one-to-many (captioning) runs.

Pipelines are checked against the raw examples; each shipped config trains
briefly on the small version of its generated dataset and must learn well
above chance; evaluate.py's generated-text metrics are recomputed from the
outputs it writes; bad input fails clearly without touching the run.
"""

import csv
import json
import os
import random
import textwrap

import numpy as np
import pytest
import sacrebleu
from PIL import Image

import data
from conftest import (fails_with, metrics_of_a_mock_data_run, raw_examples,
                      run_on_devices,
                      snapshot)
from data import generated
from rnn_toolkit.token_ids import EOS_ID, PAD_ID
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.reporting import run_report
import evaluate as evaluate_py
import report as report_py
import train as train_py


def _dates(data_dir, **kwargs):
  defaults = dict(dataset='date_normalisation/small', source_key='source',
                  target_key='target', level='char', vocab_size=100,
                  max_source_len=32, max_target_len=12, batch_size=8,
                  data_dir=data_dir)
  return data.TranslationInputs(**{**defaults, **kwargs})


# ---- pipelines ------------------------------------------------------------

def test_translation_batches_are_source_and_eos_ended_target(generated_dir):
  inputs = _dates(generated_dir)
  vocab = inputs.build_vocab()
  raw = raw_examples('date_normalisation/small', 'validation', generated_dir)
  batches = list(inputs.eval_batches(vocab))
  source, target, same_target, weights = (np.concatenate(a)
                                          for a in zip(*batches))
  assert len(source) == len(raw) + (-len(raw)) % inputs.batch_size
  for i, ex in enumerate(raw):
    assert vocab.decode(source[i]) == ex['source'].decode()
    n = len(ex['target'])
    assert vocab.decode(target[i]) == ex['target'].decode()
    assert target[i, n] == EOS_ID and (target[i, n + 1:] == PAD_ID).all()
  np.testing.assert_array_equal(target, same_target)
  np.testing.assert_array_equal(weights, (target != PAD_ID).astype(np.float32))


def test_over_long_pairs_are_skipped_in_training_and_cut_in_evaluation(
    generated_dir):
  inputs = _dates(generated_dir, max_source_len=12, batch_size=64)
  vocab = inputs.build_vocab()
  short = {ex['source'].decode() for ex in raw_examples(
      'date_normalisation/small', 'train', generated_dir)
           if len(ex['source']) <= 12}
  batches = inputs.train_batches(vocab)
  for _ in range(5):
    for row in next(batches)[0]:
      assert vocab.decode(row) in short
  cut = [vocab.decode(row) for batch in inputs.eval_batches(vocab)
         for row, weight in zip(batch[0], batch[3]) if weight.any()]
  raw = raw_examples('date_normalisation/small', 'validation', generated_dir)
  assert cut == [ex['source'].decode()[:12] for ex in raw]


def test_token_vocab_round_trips_and_stops_decoding_at_eos(tmp_path):
  words = data.TokenVocab(['a', 'red', 'square'], 'word', 'shapes')
  path = str(tmp_path / 'vocab.json')
  words.save(path)
  assert data.load_vocab(path) == words
  ids = words.encode('A red, square')  # lower-cased; ',' is a token, unknown
  assert ids == [3, 4, 1, 5]
  assert words.decode(ids + [EOS_ID, 3]) == 'a red <unk> square'
  chars = data.TokenVocab(list('01236-'), 'char')
  assert chars.decode(chars.encode('2026-x') + [EOS_ID]) == '2026-?'


def test_caption_batches_hold_scaled_images_and_every_caption(generated_dir):
  inputs = data.CaptioningInputs('shape_captions/small', image_size=32,
                                 eval_split='validation', max_caption_len=12,
                                 batch_size=8, data_dir=generated_dir)
  vocab = inputs.build_vocab()
  assert set(vocab.tokens) == set(
      'a above to the left of'.split() + list(generated.COLOURS)
      + list(generated.SHAPES))
  raw = raw_examples('shape_captions/small', 'validation', generated_dir)[:8]
  images, captions, _, weights = next(inputs.eval_batches(vocab))
  for ex, image, caption in zip(raw, images, captions):
    np.testing.assert_allclose(image, ex['image'] / 255.0, atol=1e-6)
    assert vocab.decode(caption) == ex['captions']['text'][0].decode()
  assert weights.sum() == sum(len(c.split()) + 1 for c in
                              (ex['captions']['text'][0] for ex in raw))


def test_feature_vectors_are_read_and_typed_numbers_checked(generated_dir):
  inputs = data.FeatureVectorInputs('match_results/small', scale=0.5,
                                    batch_size=4, data_dir=generated_dir)
  raw = raw_examples('match_results/small', 'validation', generated_dir)[:4]
  features, labels, weights = next(inputs.eval_batches(inputs.build_vocab()))
  np.testing.assert_array_equal(features, [ex['scores'] * 0.5 for ex in raw])
  np.testing.assert_array_equal(labels, [ex['winner'] for ex in raw])
  assert inputs.encode(None, ['1 2 3 4 5 6 7 8 9 10 11 12'])[0, -1] == 6.0
  with pytest.raises(UsageError, match='is not 12 numbers'):
    inputs.encode(None, ['1 2 3'])
  with pytest.raises(UsageError, match='is not 12 numbers'):
    inputs.encode(None, ['1 2 3 4 5 6 7 8 9 10 11 twelve'])


def test_labels_outside_the_classes_are_named(faulty_data_dir, tmp_path,
                                              capsys):
  raw = raw_examples('tiny_feature_labels', 'test', faulty_data_dir)
  index = next(i for i, ex in enumerate(raw) if ex['winner'] == -1)
  names = (f"Example {index} of split 'test'", 'labelled -1',
           '3 classes 0 to 2 (low, middle, high)',
           ' '.join(f'{v:g}' for v in raw[index]['scores']))
  inputs = data.FeatureVectorInputs('tiny_feature_labels', batch_size=4,
                                    data_dir=faulty_data_dir)
  vocab = inputs.build_vocab()
  assert len(list(inputs.eval_batches(vocab))) == 3  # validation: labelled
  with pytest.raises(UsageError) as error:
    list(inputs.eval_batches(vocab, 'test'))
  for words in names:
    assert words in str(error.value)
  # Training on it: refused when the vocabulary is made, on resuming, and
  # by train.py before it writes anything.
  on_test = data.FeatureVectorInputs('tiny_feature_labels', batch_size=4,
                                     data_dir=faulty_data_dir,
                                     train_split='test')
  for start_reading in (on_test.build_vocab,
                        lambda: on_test.train_batches(vocab)):
    with pytest.raises(UsageError, match=names[0]):
      start_reading()
  run = str(tmp_path / 'run')
  fails_with(capsys, train_py.main, [
      '--gin_file', 'configs/match_winner.gin', '--output_dir', run,
      '--gin_param', "FeatureVectorInputs.dataset = 'tiny_feature_labels'",
      '--gin_param', f"FeatureVectorInputs.data_dir = '{faulty_data_dir}'",
      '--gin_param', "FeatureVectorInputs.train_split = 'test'"], *names)
  assert not os.path.exists(run)


# ---- training and evaluation ------------------------------------------------

def _train(config, output_dir, steps, params):
  train_py.main(['--gin_file', config, '--output_dir', output_dir,
              '--steps', str(steps),
              *[a for p in params for a in ('--gin_param', p)]])


def _small(inputs, dataset, data_dir, batch_size=32):
  return [f"{inputs}.dataset = '{dataset}/small'",
          f"{inputs}.data_dir = '{data_dir}'", f'BATCH_SIZE = {batch_size}',
          'train_and_evaluate.eval_every = 200',
          'multifactor.warmup_steps = 20']


@pytest.mark.parametrize('body', ['rnn', 'dense'])
def test_one_to_one_classifier_finds_the_champion(body, generated_dir,
                                                  tmp_path, capsys):
  output_dir = str(tmp_path / body)
  _train('configs/match_winner.gin', output_dir, 400,
         [*_small('FeatureVectorInputs', 'match_results', generated_dir, 64),
          f"VectorClassifier.body = '{body}'", 'VectorClassifier.n_units = 64'])
  result = Run.load(output_dir).evaluate()
  assert result['accuracy'] > 0.7  # chance 0.25; no team wins over 30%
  assert result['labels'] == generated.TEAMS
  # Team 2 wins all three of its matches; the others draw.
  capsys.readouterr()
  evaluate_py.main(['--output_dir', output_dir,
                 '--predict', '0 3 0 0 0 0 3 0 3 0 1 1'])
  assert capsys.readouterr().out.startswith('team_2\t')


@pytest.fixture(scope='module')
def dates_run(generated_dir, tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('dates'))
  _train('configs/date_normalisation.gin', output_dir, 600,
         [*_small('TranslationInputs', 'date_normalisation', generated_dir),
          'RNNSeq2Seq.n_units = 96', 'RNNSeq2Seq.d_model = 32',
          'multifactor.constant = 0.005'])
  return output_dir


def _outputs(path):
  with open(path, encoding='utf-8', newline='') as f:
    rows = list(csv.reader(f, delimiter='\t'))[1:]
  return [row[0] for row in rows], [row[1:] for row in rows]


def test_translator_learns_and_its_metrics_match_its_outputs(dates_run):
  result = Run.load(dates_run).evaluate('test')
  assert result['beam_width'] == 4  # the config's DecodingSettings
  assert result['token_accuracy'] > 0.9 and result['exact_match'] > 0.5
  outputs, references = _outputs(result['outputs'])
  assert len(outputs) == result['n_examples'] == 300
  assert result['exact_match'] == pytest.approx(
      np.mean([o in r for o, r in zip(outputs, references)]))
  bleu = sacrebleu.corpus_bleu(outputs, [[r[0] for r in references]],
                               tokenize='char')
  assert result['bleu'] == pytest.approx(bleu.score)
  example = result['examples'][0]
  assert example['references'] == [references[0][0]]
  with open(os.path.join(dates_run, 'eval_test.json')) as f:
    assert json.load(f) == result


def test_greedy_evaluation_is_beam_width_one(dates_run):
  greedy = Run.load(dates_run).evaluate(beam_width=1)
  assert greedy['beam_width'] == 1 and greedy['exact_match'] > 0.5


def test_translate_prints_each_text_and_its_translation(dates_run, capsys):
  capsys.readouterr()
  evaluate_py.main(['--output_dir', dates_run, '--translate', '25 November 2026',
                 '--translate', '03/01/1999', '--beam_width', '2'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split('\t')[0] for line in lines] == ['25 November 2026',
                                                     '03/01/1999']
  assert lines[0].split('\t')[1][:4] == '2026'


@pytest.mark.parametrize('text, message', [
    ('', 'has no characters to translate'),
    ('   ', None),  # spaces are characters of this char-level model
    ('Wednesday, the 25th of November in the year 2026', 'more than the 32'),
])
def test_bad_source_texts_fail_clearly_and_change_nothing(
    dates_run, capsys, text, message):
  before = snapshot(dates_run)
  argv = ['--output_dir', dates_run, '--translate', text]
  if message is None:
    evaluate_py.main(argv)
  else:
    fails_with(capsys, evaluate_py.main, argv, message)
  assert snapshot(dates_run) == before


@pytest.mark.slow
def test_decoding_over_three_devices_writes_the_same_outputs(dates_run):
  """Batches of 32 are padded to 33 rows and split over 3 simulated devices."""
  on_one = Run.load(dates_run).evaluate()
  with open(on_one['outputs'], encoding='utf-8') as f:
    outputs = f.read()
  os.remove(on_one['outputs'])
  result = run_on_devices(textwrap.dedent(f'''
      import json, jax
      from rnn_toolkit.evaluation.run import Run
      result = Run.load({dates_run!r}).evaluate()
      print(json.dumps({{'devices': jax.local_device_count(), **result}}))
  '''), 3)
  assert result.returncode == 0, result.stderr[-3000:]
  on_three = json.loads(result.stdout.strip().splitlines()[-1])
  assert on_three['devices'] == 3
  assert on_three['exact_match'] == on_one['exact_match']
  assert on_three['loss'] == pytest.approx(on_one['loss'], rel=1e-4)
  with open(on_three['outputs'], encoding='utf-8') as f:
    assert f.read() == outputs


def test_the_run_records_its_decoding_settings(dates_run, capsys):
  with open(os.path.join(dates_run, 'config.gin')) as f:
    assert 'DecodingSettings.beam_width = 4' in f.read()
  fails_with(capsys, evaluate_py.main, ['--output_dir', dates_run,
                                        '--caption', 'x.png'],
             '--caption (Run.caption) needs a captioner', 'Use --translate')
  fails_with(capsys, evaluate_py.main, ['--output_dir', dates_run,
                                        '--predict', 'x'],
             'needs a classifier, tagger or text classifier',
             'Use --translate')
  fails_with(capsys, evaluate_py.main, ['--output_dir', dates_run,
                                        '--beam_width', '0'], '--beam_width')


@pytest.fixture(scope='module')
def shapes_run(generated_dir, tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('shapes'))
  _train('configs/shape_captions.gin', output_dir, 600,
         [*_small('CaptioningInputs', 'shape_captions', generated_dir),
          'RNNCaptioner.n_units = 96', 'RNNCaptioner.conv_channels = (16, 32)'])
  return output_dir


def test_captioner_learns_and_draws_a_contact_sheet(shapes_run):
  result = Run.load(shapes_run).evaluate()
  assert result['token_accuracy'] > 0.85
  outputs, references = _outputs(result['outputs'])
  assert result['exact_match'] == pytest.approx(
      np.mean([o in r for o, r in zip(outputs, references)]))
  assert result['exact_match'] > 0.05  # chance: 1 in 288 captions
  with Image.open(result['contact_sheet']) as sheet:
    sheet.verify()
    assert sheet.format == 'PNG' and min(sheet.size) > 300


def test_caption_prints_a_caption_of_an_image_file(shapes_run, tmp_path,
                                                   capsys):
  image, truth = generated.shape_scene(random.Random(7))
  path = str(tmp_path / 'scene.png')
  Image.fromarray(image).save(path)
  capsys.readouterr()
  evaluate_py.main(['--output_dir', shapes_run, '--caption', path])
  printed, caption = capsys.readouterr().out.strip().split('\t')
  assert printed == path
  words = caption.split()
  assert words[0] == 'a' and words[2] in generated.SHAPES, (caption, truth)


def test_unreadable_images_fail_clearly_and_change_nothing(shapes_run,
                                                           tmp_path, capsys):
  not_an_image = tmp_path / 'notes.png'
  not_an_image.write_text('not a picture')
  before = snapshot(shapes_run)
  for path in (str(not_an_image), str(tmp_path / 'missing.png')):
    fails_with(capsys, evaluate_py.main, ['--output_dir', shapes_run,
                                       '--caption', path], 'Cannot read')
  assert snapshot(shapes_run) == before


@pytest.mark.parametrize('config, dataset, inputs, model', [
    ('configs/ted_pt_en.gin', 'ted_hrlr_translate/pt_to_en',
     'TranslationInputs', 'RNNSeq2Seq'),
    ('configs/coco_captions.gin', 'coco_captions', 'CaptioningInputs',
     'RNNCaptioner'),
])
def test_configs_for_downloaded_datasets_run_on_mock_examples(
    config, dataset, inputs, model, mock_dataset, tmp_path):
  """The real feature specs, with random examples (no network here)."""
  metrics = metrics_of_a_mock_data_run(mock_dataset, tmp_path, config, dataset,
                                       inputs, model)
  assert metrics['step'] == 4 and np.isfinite(metrics['loss'])
  assert 0.0 <= metrics['exact_match'] <= 1.0
  assert 0.0 <= metrics['bleu'] <= 100.0


@pytest.mark.parametrize('run, figure', [('dates_run', 'attention.png'),
                                         ('shapes_run', 'captions.png')])
def test_report_shows_attention_maps_and_contact_sheets(run, figure, request,
                                                        tmp_path):
  out = str(tmp_path / 'report')
  report_py.main(['--output_dir', request.getfixturevalue(run), '--out', out])
  assert sorted(os.listdir(out)) == sorted([run_report.MARKER, 'curves.png',
                                            'index.html', figure])


def test_attention_maps_are_of_the_real_tokens(dates_run):
  maps = run_report.translation_attention(Run.load(dates_run), count=2)
  assert len(maps) == 2
  for weights, source, output in maps:
    assert weights.shape == (len(output), len(source))
    assert output[-1] == '</s>' and '</s>' not in source
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
