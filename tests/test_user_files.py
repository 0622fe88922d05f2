"""The user's own files: --data_file / Run.evaluate(FILE) and --predict_file.

A split written out as a file in the task's format must score exactly as
the split does; the predictions written for a file must be Run.predict's
(tag, translate, caption) of its inputs; a malformed line stops the
program with exit status 2, naming the file and the line, and writes
nothing. One tiny run per task is trained for a few steps (the point is
the plumbing, not learning) and shared by the tests.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import tiny_labelled_datasets as tiny
import tiny_text_dataset
from conftest import fails_with, raw_examples, snapshot, tiny_data_params
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation import files
from rnn_toolkit.evaluation.run import Run
import evaluate as evaluate_py
import train as train_py

STEPS = 6
QUICK = ['train_and_evaluate.eval_every = 1000',
         'train_and_evaluate.n_eval_batches = 1', 'multifactor.warmup_steps = 2']


def _train(config: str, output_dir: str, params: list[str]) -> str:
  train_py.main(['--gin_file', config, '--output_dir', output_dir,
                 '--steps', str(STEPS),
                 *[a for p in [*QUICK, *params] for a in ('--gin_param', p)]])
  return output_dir


@pytest.fixture(scope='module')
def labelled_data_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp('labelled_tfds'))
  tiny.prepare(data_dir)
  return data_dir


@pytest.fixture(scope='module')
def sentiment_run(labelled_data_dir, tmp_path_factory) -> str:
  return _train('configs/sst2_rnn.gin', str(tmp_path_factory.mktemp('sst')), [
      *tiny.sentiment_bindings(labelled_data_dir),
      'RNNClassifier.d_model = 8', 'RNNClassifier.n_units = 8',
      'TextClassificationInputs.batch_size = 16'])


@pytest.fixture(scope='module')
def ner_run(labelled_data_dir, tmp_path_factory) -> str:
  return _train('configs/conll2003_ner_rnn.gin',
                str(tmp_path_factory.mktemp('ner')), [
                    *tiny.ner_bindings(labelled_data_dir),
                    'RNNTagger.d_model = 8', 'RNNTagger.n_units = 8',
                    'TaggingInputs.batch_size = 16'])


@pytest.fixture(scope='module')
def lm_run(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp('tiny_text'))
  tiny_text_dataset.prepare(data_dir)
  output_dir = str(tmp_path_factory.mktemp('lm'))
  train_py.main(['--gin_file', 'configs/char_rnn_tiny.gin', '--output_dir',
                 output_dir, '--steps', str(STEPS), *tiny_data_params(data_dir),
                 '--gin_param', 'RNNLanguageModel.d_model = 8'])
  return output_dir


def _small(inputs: str, dataset: str, data_dir: str) -> list[str]:
  return [f"{inputs}.dataset = '{dataset}/small'",
          f"{inputs}.data_dir = '{data_dir}'", 'BATCH_SIZE = 16']


@pytest.fixture(scope='module')
def dates_run(generated_dir, tmp_path_factory) -> str:
  return _train('configs/date_normalisation.gin',
                str(tmp_path_factory.mktemp('dates')), [
                    *_small('TranslationInputs', 'date_normalisation',
                            generated_dir),
                    'RNNSeq2Seq.n_units = 8', 'RNNSeq2Seq.d_model = 8',
                    'DecodingSettings.beam_width = 2'])


@pytest.fixture(scope='module')
def shapes_run(generated_dir, tmp_path_factory) -> str:
  return _train('configs/shape_captions.gin',
                str(tmp_path_factory.mktemp('shapes')), [
                    *_small('CaptioningInputs', 'shape_captions',
                            generated_dir),
                    'RNNCaptioner.n_units = 8', 'RNNCaptioner.d_model = 8',
                    'RNNCaptioner.conv_channels = (4, 4)'])


@pytest.fixture(scope='module')
def match_run(generated_dir, tmp_path_factory) -> str:
  return _train('configs/match_winner.gin',
                str(tmp_path_factory.mktemp('match')), [
                    *_small('FeatureVectorInputs', 'match_results',
                            generated_dir),
                    'VectorClassifier.n_units = 8'])


# ---- helpers ------------------------------------------------------------------

# Keys of an evaluation record that say what was read or where its files
# went, not what was measured.
_WHERE = ('split', 'file', 'outputs', 'contact_sheet')


def _assert_same_metrics(from_file: dict, from_split: dict) -> None:
  """The measured values of two evaluation records are equal (floats closely)."""
  def same(a, b, where):
    if isinstance(a, dict):
      assert isinstance(b, dict) and set(a) == set(b), where
      for key in a:
        same(a[key], b[key], f'{where}/{key}')
    elif isinstance(a, list):
      assert isinstance(b, list) and len(a) == len(b), where
      for i, (x, y) in enumerate(zip(a, b)):
        same(x, y, f'{where}[{i}]')
    elif isinstance(a, float):
      assert a == pytest.approx(b, rel=1e-5, abs=1e-7), where
    else:
      assert a == b, where
  assert set(from_file) - set(_WHERE) == set(from_split) - set(_WHERE)
  same({k: v for k, v in from_file.items() if k not in _WHERE},
       {k: v for k, v in from_split.items() if k not in _WHERE}, '')


def _write(path, text) -> str:
  mode = 'wb' if isinstance(text, bytes) else 'w'
  with open(path, mode, **({} if mode == 'wb' else {'encoding': 'utf-8'})) as f:
    f.write(text)
  return str(path)


def _jsonl(path: str) -> list[dict]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _saved(run_dir: str, name: str) -> dict:
  with open(os.path.join(run_dir, name), encoding='utf-8') as f:
    return json.load(f)


# ---- what counts as a file ----------------------------------------------------

def test_a_source_with_a_separator_or_an_extension_is_a_file(tmp_path):
  for split in ('validation', 'train[:10%]+test', 'train[10:20]'):
    assert not files.looks_like_file(split)
  for name in ('reviews.tsv', 'a.jsonl', 'dev.conll', 'corpus.txt',
               'data/reviews', str(tmp_path)):
    assert files.looks_like_file(name)
  assert files.stem('/x/y/my.reviews.tsv') == 'my.reviews'


def test_a_missing_file_is_named_not_taken_for_a_split(sentiment_run,
                                                       tmp_path, capsys):
  run = Run.load(sentiment_run)
  for missing in (str(tmp_path / 'nope.tsv'), 'sub/reviews'):
    with pytest.raises(UsageError, match='does not exist'):
      run.evaluate(missing)
  fails_with(capsys, evaluate_py.main,
             ['--output_dir', sentiment_run, '--data_file', 'reviews'],
             'The data file reviews does not exist')


# ---- classifiers ----------------------------------------------------------------

def test_a_classifier_scores_a_tsv_and_a_jsonl_file_as_the_split(
    sentiment_run, labelled_data_dir, tmp_path, capsys):
  raw = raw_examples('tiny_sentiment', 'validation', labelled_data_dir)
  names = tiny.SENTIMENT_CLASSES
  tsv = _write(tmp_path / 'reviews.tsv', 'label\tsentence\n' + ''.join(
      f'{names[ex["label"]]}\t{ex["sentence"].decode()}\n' for ex in raw))
  # Labels by id, and a key the pipeline does not read.
  jsonl = _write(tmp_path / 'reviews.jsonl', ''.join(
      json.dumps({'sentence': ex['sentence'].decode(),
                  'label': int(ex['label']), 'id': i}) + '\n'
      for i, ex in enumerate(raw)))
  run = Run.load(sentiment_run)
  split = run.evaluate('validation')
  assert split['n_texts'] == len(raw) == 200  # batches of 16: one padded
  for path in (tsv, jsonl):
    result = run.evaluate(path)
    _assert_same_metrics(result, split)
    assert result['file'] == os.path.abspath(path) and 'split' not in result
    assert _saved(sentiment_run, 'eval_file_reviews.json') == result
  # evaluate.py prints the metrics and writes them, as for a split.
  capsys.readouterr()
  evaluate_py.main(['--output_dir', sentiment_run, '--data_file', tsv])
  printed = json.loads(capsys.readouterr().out)
  _assert_same_metrics(printed, split)
  assert _saved(sentiment_run, 'eval_file_reviews.json') == printed


def test_a_classifier_predicts_for_each_line_of_a_file(sentiment_run,
                                                       tmp_path):
  texts = ['the movie was wonderful but the ending was dull',
           'a boring film with superb music', 'good', 'Awful. Great?']
  run = Run.load(sentiment_run)
  expected = run.predict(texts)
  one_by_one = [run.predict([text])[0] for text in texts]
  inputs = {
      'texts.txt': '\n'.join(texts[:2]) + '\n\n' + '\n'.join(texts[2:]),
      'texts.tsv': 'id\tsentence\n' + ''.join(
          f'{i}\t{t}\n' for i, t in enumerate(texts)),
      'texts.jsonl': ''.join(json.dumps({'sentence': t}) + '\n'
                             for t in texts)}
  for name, text in inputs.items():
    out = str(tmp_path / f'{name}.predictions.jsonl')
    evaluate_py.main(['--output_dir', sentiment_run, '--predict_file',
                      _write(tmp_path / name, text), '--out', out])
    lines = _jsonl(out)
    assert [line['text'] for line in lines] == texts
    assert [(line['label'], line['probability']) for line in lines] == [
        (label, pytest.approx(p, rel=1e-5)) for label, p in expected]
    assert [line['label'] for line in lines] == [l for l, _ in one_by_one]
    assert [line['probability'] for line in lines] == pytest.approx(
        [p for _, p in one_by_one], rel=1e-4)


def test_a_vector_classifier_scores_and_predicts_a_file(match_run,
                                                        generated_dir,
                                                        tmp_path):
  raw = raw_examples('match_results/small', 'validation', generated_dir)
  numbers = [' '.join(f'{v:g}' for v in ex['scores']) for ex in raw]
  path = _write(tmp_path / 'matches.tsv', 'scores\twinner\n' + ''.join(
      f'{n}\t{int(ex["winner"])}\n' for n, ex in zip(numbers, raw)))
  run = Run.load(match_run)
  _assert_same_metrics(run.evaluate(path), run.evaluate('validation'))
  out = str(tmp_path / 'out.jsonl')
  evaluate_py.main(['--output_dir', match_run, '--predict_file',
                    _write(tmp_path / 'matches.txt', '\n'.join(numbers[:20])),
                    '--out', out])
  lines = _jsonl(out)
  assert [line['features'] for line in lines] == [
      [float(v) for v in ex['scores']] for ex in raw[:20]]
  assert [(line['label'], line['probability']) for line in lines] == [
      (label, pytest.approx(p, rel=1e-5))
      for label, p in run.predict(numbers[:20])]


# ---- taggers ----------------------------------------------------------------------

def _conll(examples: list[dict], tags: list[str]) -> str:
  """CoNLL-2003 style: -DOCSTART-, then word, POS-like and tag columns."""
  sentences = ['\n'.join(f'{w.decode()} X\t{tags[t]}'
                         for w, t in zip(ex['tokens'], ex['ner']))
               for ex in examples]
  return '-DOCSTART- -X- O\n\n' + '\n\n'.join(sentences) + '\n'


def test_a_tagger_scores_a_conll_file_as_the_split(ner_run,
                                                   labelled_data_dir,
                                                   tmp_path):
  raw = raw_examples('tiny_ner', 'dev', labelled_data_dir)
  path = _write(tmp_path / 'dev.conll', _conll(raw, tiny.NER_TAGS))
  run = Run.load(ner_run)
  read = run.task.files.read_examples(run.inputs, run.vocab, path)
  assert len(read) == len(raw) and read.lines[:2] == [
      3, 3 + len(raw[0]['tokens']) + 1]
  result = run.evaluate(path)
  _assert_same_metrics(result, run.evaluate('dev'))
  assert _saved(ner_run, 'eval_file_dev.json') == result


def test_a_tagger_predicts_for_sentences_and_conll_words(ner_run, tmp_path):
  sentences = ['the Zorblax film visited the story of Paris',
               'met   Jordan\tSmith', 'Zorblax\u00a0film visited Paris']
  run = Run.load(ner_run)
  expected = [{'words': [w for w, _ in tagged], 'tags': [t for _, t in tagged]}
              for tagged in run.tag(sentences)]
  assert expected[1]['words'] == ['met', 'Jordan', 'Smith']
  assert expected[2]['words'][0] == 'Zorblax\u00a0film'
  conll = '\n\n'.join('\n'.join(words) for words in
                      (['the', 'Zorblax', 'film', 'visited', 'the', 'story',
                        'of', 'Paris'], ['met', 'Jordan', 'Smith'],
                       ['Zorblax\u00a0film', 'visited', 'Paris']))
  for name, text in (('sentences.txt', '\n'.join(sentences) + '\n'),
                     ('words.conll', conll)):
    out = str(tmp_path / f'{name}.jsonl')
    evaluate_py.main(['--output_dir', ner_run, '--predict_file',
                      _write(tmp_path / name, text), '--out', out])
    assert _jsonl(out) == expected


def test_a_crf_taggers_vocabulary_of_other_tags_is_named(ner_run, tmp_path,
                                                         capsys):
  # The CRF is built with the tag names: one more tag is still explained
  # as vocab.json changed, not a failure to build the model.
  run = str(tmp_path / 'run')
  shutil.copytree(ner_run, run)
  path = os.path.join(run, 'vocab.json')
  with open(path, encoding='utf-8') as f:
    record = json.load(f)
  n_tags = len(record['labels'])
  record['labels'].append('B-ART')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(record, f)
  fails_with(capsys, evaluate_py.main, ['--output_dir', run],
             f'vocab.json gives n_tags = {n_tags + 1}',
             f'trained with n_tags = {n_tags}')


# ---- language models --------------------------------------------------------------

def test_a_language_model_scores_a_text_file_and_refuses_predict_file(
    lm_run, tmp_path, capsys):
  [text] = tiny_text_dataset.TEXTS['test']
  path = _write(tmp_path / 'play.txt', text)
  run = Run.load(lm_run)
  result = run.evaluate(path)
  _assert_same_metrics(result, run.evaluate('test'))
  assert result['n_chars'] == len(text)
  before = snapshot(lm_run)
  out = str(tmp_path / 'out.jsonl')
  fails_with(capsys, evaluate_py.main, ['--output_dir', lm_run,
                                        '--predict_file', path, '--out', out],
             'holds a language model', '--generate')
  assert snapshot(lm_run) == before and not os.path.exists(out)


# ---- translators and captioners -----------------------------------------------------

def _outputs_table(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


def test_a_translator_scores_and_predicts_a_file(dates_run, generated_dir,
                                                 tmp_path):
  split = 'validation[:40]'
  raw = raw_examples('date_normalisation/small', split, generated_dir)
  path = _write(tmp_path / 'dates.tsv', 'source\ttarget\n' + ''.join(
      f'{ex["source"].decode()}\t{ex["target"].decode()}\n' for ex in raw))
  run = Run.load(dates_run)
  from_split = run.evaluate(split, beam_width=1)
  result = run.evaluate(path, beam_width=1)
  _assert_same_metrics(result, from_split)
  assert result['n_examples'] == len(raw)
  assert result['outputs'] == os.path.join(dates_run,
                                           'eval_file_dates_outputs.tsv')
  assert _outputs_table(result['outputs']) == _outputs_table(
      from_split['outputs'])
  # Without a header row, every line is a pair.
  bare = _write(tmp_path / 'bare.tsv', ''.join(
      f'{ex["source"].decode()}\t{ex["target"].decode()}\n' for ex in raw))
  assert run.task.files.read_examples(run.inputs, run.vocab, bare).examples == (
      run.task.files.read_examples(run.inputs, run.vocab, path).examples)
  sources = [ex['source'].decode() for ex in raw[:5]]
  out = str(tmp_path / 'out.jsonl')
  evaluate_py.main(['--output_dir', dates_run, '--predict_file',
                    _write(tmp_path / 'sources.txt', '\n'.join(sources)),
                    '--out', out, '--beam_width', '1'])
  assert _jsonl(out) == [{'source': s, 'output': o} for s, o in
                         zip(sources, run.translate(sources, beam_width=1))]


def _images(examples: list[dict], directory) -> list[str]:
  """Writes each example's image as PNG under `directory`; their names."""
  os.makedirs(directory, exist_ok=True)
  names = []
  for i, ex in enumerate(examples):
    names.append(f'scene_{i}.png')
    Image.fromarray(ex['image']).save(os.path.join(directory, names[-1]))
  return names


def test_a_captioner_scores_and_predicts_a_file_of_images(shapes_run,
                                                          generated_dir,
                                                          tmp_path):
  split = 'validation[:24]'
  raw = raw_examples('shape_captions/small', split, generated_dir)
  names = _images(raw, tmp_path / 'images')
  # Paths relative to the file's directory; a header row.
  path = _write(tmp_path / 'captions.tsv', 'image\tcaption\n' + ''.join(
      f'images/{name}\t' + '\t'.join(c.decode() for c in ex['captions']['text'])
      + '\n' for name, ex in zip(names, raw)))
  run = Run.load(shapes_run)
  from_split = run.evaluate(split)
  result = run.evaluate(path)
  _assert_same_metrics(result, from_split)
  assert _outputs_table(result['outputs']) == _outputs_table(
      from_split['outputs'])
  assert os.path.isfile(os.path.join(shapes_run,
                                     'eval_file_captions_captions.png'))
  out = str(tmp_path / 'out.jsonl')
  evaluate_py.main(['--output_dir', shapes_run, '--predict_file',
                    _write(tmp_path / 'images.txt', ''.join(
                        f'images/{name}\n' for name in names[:5])),
                    '--out', out])
  assert _jsonl(out) == [
      {'image': f'images/{name}', 'caption': caption} for name, caption in
      zip(names[:5], run.caption([str(tmp_path / 'images' / n)
                                  for n in names[:5]]))]


def test_an_images_captions_may_be_columns_or_repeated_rows(shapes_run,
                                                            generated_dir,
                                                            tmp_path):
  raw = raw_examples('shape_captions/small', 'validation[:2]', generated_dir)
  first, second = _images(raw, tmp_path)
  path = _write(tmp_path / 'captions.tsv',
                f'{first}\ta red square\ta square\n'
                f'{second}\ta blue circle\n\n'
                f'{first}\tred square\n')
  run = Run.load(shapes_run)
  read = run.task.files.read_examples(run.inputs, run.vocab, path)
  assert read.lines == [1, 2]
  loaded = [read.load(ex) for ex in read.examples]
  np.testing.assert_array_equal(loaded[0]['image'], raw[0]['image'])
  assert [list(ex['captions']['text'].numpy()) for ex in loaded] == [
      [b'a red square', b'a square', b'red square'], [b'a blue circle']]


# ---- malformed files ----------------------------------------------------------------

_GOOD_IMAGE = 'good.png'

MALFORMED_DATA = [
    # (run, file name, content, line, words the message holds)
    ('sentiment_run', 'missing_column.tsv',
     'sentence\tlabel\ngood film\tpositive\na bad film\n', 3,
     ['has 1 tab-separated field,', 'header row (line 1) has 2']),
    ('sentiment_run', 'no_text_column.tsv',
     'text\tlabel\ngood film\tpositive\n', 1, ["no column 'sentence'"]),
    ('sentiment_run', 'unknown_label.tsv',
     'sentence\tlabel\ngood\tpositive\nmeh\tneutral\n', 3,
     ["'neutral'", 'negative, positive']),
    ('sentiment_run', 'out_of_range.jsonl',
     '{"sentence": "good", "label": 1}\n\n{"sentence": "bad", "label": 2}\n',
     3, ['label id 2', 'ids 0 to 1']),
    ('sentiment_run', 'bad_json.jsonl',
     '{"sentence": "good", "label": 1}\n{"sentence": "bad", label: 0}\n', 2,
     ['not valid JSON']),
    ('sentiment_run', 'no_key.jsonl', '{"text": "good", "label": 1}\n', 1,
     ["no 'sentence' key"]),
    ('sentiment_run', 'not_utf8.tsv',
     b'sentence\tlabel\ngood\t1\nbad \xff film\t0\n', 3,
     ['byte 0xff at column 5', 'UTF-8']),
    ('sentiment_run', 'empty.tsv', b'', 1, ['the file is empty']),
    ('sentiment_run', 'header_only.tsv', 'sentence\tlabel\n', 1,
     ['a header row and no examples']),
    ('ner_run', 'bad_tag.conll', 'met O\nJordan B-XYZ\n', 2,
     ["tag 'B-XYZ'", 'O, B-PER']),
    ('ner_run', 'no_tag.conll', '-DOCSTART- O\n\nmet O\n\nJordan\n', 5,
     ['no tag']),
    ('dates_run', 'three_fields.tsv', '1 May 2020\t2020-05-01\n2 May\ta\tb\n',
     2, ['3 tab-separated fields, not 2']),
    ('match_run', 'short.tsv', 'scores\twinner\n1 2 3\tteam_1\n', 2,
     ['is not 12 numbers']),
    ('shapes_run', 'missing_image.tsv',
     f'{_GOOD_IMAGE}\ta red square\nnope.png\ta blue circle\n', 2,
     ["'nope.png' does not exist"]),
    ('shapes_run', 'not_an_image.tsv',
     f'{_GOOD_IMAGE}\ta red square\nnotes.png\ta blue circle\n', 2,
     ["'notes.png' is not an image"]),
]


def _with_images(directory) -> None:
  Image.new('RGB', (32, 32), 'red').save(os.path.join(directory, _GOOD_IMAGE))
  _write(os.path.join(directory, 'notes.png'), 'not a picture')


@pytest.mark.parametrize('run, name, content, line, words', MALFORMED_DATA,
                         ids=[case[1] for case in MALFORMED_DATA])
def test_a_malformed_data_file_names_its_line_and_writes_nothing(
    run, name, content, line, words, request, tmp_path, capsys):
  run_dir = request.getfixturevalue(run)
  _with_images(tmp_path)
  path = _write(tmp_path / name, content)
  before = snapshot(run_dir)
  fails_with(capsys, evaluate_py.main,
             ['--output_dir', run_dir, '--data_file', path],
             f'evaluate.py: error: {path}, line {line}:', *words,
             'nothing was written')
  assert snapshot(run_dir) == before


MALFORMED_INPUTS = [
    ('sentiment_run', 'no_key.jsonl', '{"sentence": "good"}\n{"text": "x"}\n',
     2, ["no 'sentence' key"]),
    ('sentiment_run', 'not_utf8.txt', b'good\n\xc3\x28 bad\n', 2, ['UTF-8']),
    ('dates_run', 'long.txt', '1 May 2020\n' + 'x' * 40 + '\n', 2,
     ['more than the 32']),
    ('shapes_run', 'missing.txt', f'{_GOOD_IMAGE}\n\nnope.png\n', 3,
     ["'nope.png' does not exist"]),
    ('match_run', 'words.txt', '1 2 3 4 5 6 7 8 9 10 11 12\nsome words\n', 2,
     ['is not 12 numbers']),
]


@pytest.mark.parametrize('run, name, content, line, words', MALFORMED_INPUTS,
                         ids=[case[1] for case in MALFORMED_INPUTS])
def test_a_malformed_predict_file_names_its_line_and_writes_nothing(
    run, name, content, line, words, request, tmp_path, capsys):
  run_dir = request.getfixturevalue(run)
  _with_images(tmp_path)
  path = _write(tmp_path / name, content)
  out = str(tmp_path / 'predictions.jsonl')
  _write(out, 'earlier predictions\n')
  before = snapshot(run_dir)
  fails_with(capsys, evaluate_py.main,
             ['--output_dir', run_dir, '--predict_file', path, '--out', out],
             f'evaluate.py: error: {path}, line {line}:', *words)
  assert snapshot(run_dir) == before
  assert _outputs_table(out) == 'earlier predictions\n'


def test_predict_file_flags_are_checked_before_the_run_is_read(
    sentiment_run, tmp_path, capsys):
  path = _write(tmp_path / 'texts.txt', 'good\n')
  fails_with(capsys, evaluate_py.main, ['--output_dir', sentiment_run,
                                        '--predict_file', path],
             '--predict_file needs --out')
  fails_with(capsys, evaluate_py.main, ['--output_dir', sentiment_run,
                                        '--data_file', path, '--split', 'x'],
             'not allowed with argument')
  fails_with(capsys, evaluate_py.main, ['--output_dir', sentiment_run,
                                        '--predict_file', path, '--out', path],
             'is the --predict_file itself')
  fails_with(capsys, evaluate_py.main, ['--output_dir', sentiment_run,
                                        '--predict_file', path, '--out',
                                        str(tmp_path / 'no' / 'out.jsonl')],
             'does not exist')
  assert _outputs_table(path) == 'good\n'
