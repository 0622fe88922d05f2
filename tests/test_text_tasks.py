"""Text classification and tagging: pipelines, metrics, and train/evaluate runs."""

import collections
import itertools
import json
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data
from rnn_toolkit.evaluation import metrics
import tiny_labelled_datasets as tiny
from conftest import fails_with, metrics_of_a_mock_data_run
from data import text_classification
from data.vocab import LabelVocab
from rnn_toolkit.errors import UsageError
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.reporting import run_report
import evaluate as evaluate_py
import report as report_py
import train as train_py


@pytest.fixture(scope='module')
def labelled_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('labelled_tfds'))
  tiny.prepare(data_dir)
  return data_dir


def _classification(data_dir, **kwargs):
  defaults = dict(dataset='tiny_sentiment', data_dir=data_dir, batch_size=8,
                  download=False)
  return data.TextClassificationInputs(**{**defaults, **kwargs})


def _tagging(data_dir, **kwargs):
  defaults = dict(dataset='tiny_ner', data_dir=data_dir, batch_size=8,
                  download=False)
  return data.TaggingInputs(**{**defaults, **kwargs})


def _split(data_dir, name, split):
  builder = tfds.builder(name, data_dir=data_dir)
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def test_word_vocab_counts_the_training_split_and_round_trips(
    labelled_data_dir, tmp_path):
  inputs = _classification(labelled_data_dir, vocab_size=12)
  vocab = inputs.build_vocab()
  counts = collections.Counter(
      w for ex in _split(labelled_data_dir, 'tiny_sentiment', 'train')
      for w in ex['sentence'].decode().split())
  ranked = sorted(counts, key=lambda w: (-counts[w], w))
  assert vocab.words == ranked[:10] and vocab.size == 12
  assert vocab.labels == tiny.SENTIMENT_CLASSES
  path = str(tmp_path / 'vocab.json')
  vocab.save(path)
  assert data.load_vocab(path) == vocab


def test_words_are_lower_cased_and_punctuation_split_off():
  words = text_classification.split_words(
      "It's GREAT, truly<br />great!").numpy().tolist()
  assert words == [b"it's", b'great', b',', b'truly', b'great', b'!']


def test_eval_pass_has_every_text_once_padded_to_a_bucket(labelled_data_dir):
  inputs = _classification(labelled_data_dir)
  vocab = inputs.build_vocab()
  examples = _split(labelled_data_dir, 'tiny_sentiment', 'validation')
  batches = list(inputs.eval_batches(vocab))
  assert sum(w.sum() for _, _, w in batches) == len(examples)
  rows = [(tokens, label) for x, y, w in batches
          for tokens, label, weight in zip(x, y, w) if weight]
  for (tokens, label), ex in zip(rows, examples):
    assert label == ex['label']
    assert ' '.join(vocab.decode(tokens)) == ex['sentence'].decode()
  for x, _, _ in batches:
    assert x.shape[0] == 8 and x.shape[1] in inputs.boundaries
    longest = max(int((row != 0).sum()) for row in x)
    assert x.shape[1] == min(b for b in inputs.boundaries if b >= longest)


def test_training_batches_group_texts_of_similar_length(labelled_data_dir):
  inputs = _classification(labelled_data_dir)
  vocab = inputs.build_vocab()
  for x, y, w in itertools.islice(inputs.train_batches(vocab, seed=1), 30):
    lengths = (x != 0).sum(1)
    bucket = x.shape[1]
    assert x.shape[0] == 8 and y.shape == (8,) and w.tolist() == [1.0] * 8
    assert lengths.max() <= bucket
    smaller = [b for b in inputs.boundaries if b < bucket]
    assert not smaller or lengths.min() > smaller[-1]


def test_texts_are_cut_to_max_len(labelled_data_dir):
  inputs = _classification(labelled_data_dir, max_len=5)
  vocab = inputs.build_vocab()
  assert inputs.boundaries == [5]
  for x, _, _ in inputs.eval_batches(vocab):
    assert x.shape[1] == 5


def test_tagging_batches_align_tags_with_words(labelled_data_dir):
  inputs = _tagging(labelled_data_dir)
  vocab = inputs.build_vocab()
  assert vocab.labels == tiny.NER_TAGS
  examples = _split(labelled_data_dir, 'tiny_ner', 'dev')
  rows = [(x[w > 0], y[w > 0]) for xb, yb, wb in inputs.eval_batches(vocab)
          for x, y, w in zip(xb, yb, wb) if w.any()]
  assert len(rows) == len(examples)
  for (ids, tags), ex in zip(rows, examples):
    assert vocab.decode(ids) == [t.decode() for t in ex['tokens']]
    np.testing.assert_array_equal(tags, ex['ner'])


def test_words_come_with_their_characters_as_typed(labelled_data_dir, capsys):
  inputs = _tagging(labelled_data_dir, max_word_chars=4, lowercase=True)
  vocab = inputs.build_vocab()
  train = _split(labelled_data_dir, 'tiny_ner', 'train')
  typed = [w.decode() for ex in train for w in ex['tokens']]
  assert vocab.chars == sorted(set(''.join(typed)))
  assert vocab.words == sorted(set(w.lower() for w in typed),
                               key=lambda w: (-sum(t.lower() == w
                                                   for t in typed), w))
  long = [w for w in typed if len(w) > 4]
  notice = capsys.readouterr().out
  assert notice.count('\n') == 1  # one line, once
  assert f'{len(long)} words ({len(set(long))} distinct) are longer than ' \
      'TaggingInputs.max_word_chars = 4' in notice
  char_ids = {c: i + 2 for i, c in enumerate(vocab.chars)}
  dev = _split(labelled_data_dir, 'tiny_ner', 'dev')
  rows = [x[w > 0] for xb, _, wb in inputs.eval_batches(vocab)
          for x, w in zip(xb, wb) if w.any()]
  assert len(rows) == len(dev)
  for ids, ex in zip(rows, dev):
    words = [t.decode() for t in ex['tokens']]
    assert vocab.decode(ids[:, 0]) == [
        w.lower() if w.lower() in vocab.words else '<unk>' for w in words]
    for word, word_ids in zip(words, ids):
      want = [char_ids.get(c, 1) for c in word[:4]]
      assert list(word_ids[1:]) == want + [0] * (4 - len(want))
  # Read in parts, the batches are padded to max_len, characters and all.
  parted = _tagging(labelled_data_dir, max_word_chars=4, data_shards=2)
  tokens, tags, weights = next(iter(parted.train_batches(vocab)))
  assert tokens.shape == (8, parted.max_len, 5)
  assert tags.shape == weights.shape == (8, parted.max_len)
  batch = inputs.encode(vocab, ['Zorblax  film'])  # 'Z': no training word's
  assert batch.shape == (1, inputs.boundaries[0], 5)
  assert list(batch[0, 0, 1:]) == [char_ids.get(c, 1) for c in 'Zorb']
  assert 1 not in batch[0, 1, 1:] and not batch[0, 2:].any()
  assert "the longest: 'Zorblax', 7" in capsys.readouterr().out


def test_a_classifier_learns_from_characters_alone(labelled_data_dir,
                                                  tmp_path):
  # Every word is the unknown id (vocab_size 3 keeps one word): only the
  # characters tell the opinion words apart, and only a recurrent layer
  # remembers which came first.
  output_dir = str(tmp_path / 'chars')
  _train('configs/sst2_rnn.gin', output_dir, 200,
         [*tiny.sentiment_bindings(labelled_data_dir), *CLASSIFIER_PARAMS,
          'TextClassificationInputs.vocab_size = 3',
          'TextClassificationInputs.max_word_chars = 8',
          "RNNClassifier.char_encoder = 'elman'", 'RNNClassifier.d_char = 8',
          'RNNClassifier.char_units = 16'])
  run = Run.load(output_dir)
  assert run.vocab.size == 3 and run.vocab.chars
  assert run.evaluate()['accuracy'] > 0.9


def test_iob2_tags_are_checked_before_a_crf_trains(mock_dataset, tmp_path,
                                                   capsys):
  # Mock data draws tags at random: I-X after O abound.
  name, data_dir = mock_dataset('conll2003')
  output_dir = str(tmp_path / 'run')
  fails_with(capsys, train_py.main, [
      '--gin_file', 'configs/conll2003_ner_rnn.gin', '--output_dir',
      output_dir, '--gin_param', f"TaggingInputs.dataset = '{name}'",
      '--gin_param', f"TaggingInputs.data_dir = '{data_dir}'",
      '--gin_param', 'TaggingInputs.to_iob2 = False'],
      "of split 'train'", 'breaks the IOB2 tag scheme',
      'TaggingInputs.to_iob2 = True', 'RNNTagger.constrain_iob = False')
  assert not os.path.exists(output_dir)
  # Part-of-speech tags have no IOB2 for the CRF to keep to.
  fails_with(capsys, train_py.main, [
      '--gin_file', 'configs/conll2003_ner_rnn.gin', '--output_dir',
      output_dir, '--gin_param', f"TaggingInputs.dataset = '{name}'",
      '--gin_param', f"TaggingInputs.data_dir = '{data_dir}'",
      '--gin_param', "TaggingInputs.label_key = 'pos'",
      '--gin_param', 'TaggingInputs.to_iob2 = False'],
      'The model could not be built', 'only between tags named O, B-TYPE or '
      'I-TYPE', 'RNNTagger.constrain_iob = False')
  assert not os.path.exists(output_dir)
  with pytest.raises(UsageError, match='to_iob2 rewrites IOB1.*B- tag for '
                                       'every type'):
    text_classification._iob2_tables(['O', 'I-PER', 'B-LOC'])


def test_a_pipeline_for_the_other_kind_of_dataset_is_named(labelled_data_dir):
  with pytest.raises(UsageError, match='one value per word.*TaggingInputs'):
    _classification(labelled_data_dir, dataset='tiny_ner', text_key='tokens',
                    label_key='ner', eval_split='dev')
  with pytest.raises(UsageError,
                     match='one value per example.*TextClassificationInputs'):
    _tagging(labelled_data_dir, dataset='tiny_sentiment',
             text_key='sentence', label_key='label', eval_split='validation')
  with pytest.raises(UsageError, match='vocab_size = 2 leaves no id'):
    _classification(labelled_data_dir, vocab_size=2)


def test_missing_feature_lists_the_datasets_features(labelled_data_dir):
  with pytest.raises(UsageError, match=r"no feature 'text'.*'label', "
                                       r"'sentence'"):
    _classification(labelled_data_dir, text_key='text')
  with pytest.raises(UsageError, match=r"no feature 'sentiment'"):
    _classification(labelled_data_dir, label_key='sentiment')
  with pytest.raises(UsageError, match='not a ClassLabel'):
    _classification(labelled_data_dir, label_key='sentence')


def test_unlabelled_split_is_a_clear_error(labelled_data_dir):
  inputs = _classification(labelled_data_dir)
  vocab = inputs.build_vocab()
  with pytest.raises(UsageError, match=r'labelled -1, outside the 2 classes'):
    list(inputs.eval_batches(vocab, split='test'))


def _first_misaligned(data_dir, split):
  """(index, example) of the first example of `split` of tiny_ner_misaligned
  without one tag per word, as TFDS reads the split."""
  return next((i, ex) for i, ex in enumerate(
      _split(data_dir, 'tiny_ner_misaligned', split))
              if len(ex['tokens']) != len(ex['ner']))


def _names(split, index, example):
  """What a message about a misaligned example must say of it."""
  tokens = [t.decode() for t in example['tokens']]
  return (f"Example {index} of split '{split}'", f'{len(tokens)} words',
          f"{len(example['ner'])} tags", ' '.join(tokens[:3]))


def test_words_and_tags_of_different_lengths_are_named(faulty_data_dir,
                                                        tmp_path, capsys):
  inputs = _tagging(faulty_data_dir, dataset='tiny_ner_misaligned')
  vocab = inputs.build_vocab()  # the train split has one tag per word
  for split in ('dev', 'test'):
    with pytest.raises(UsageError) as error:
      list(inputs.eval_batches(vocab, split))
    for words in _names(split, *_first_misaligned(faulty_data_dir, split)):
      assert words in str(error.value)
  # Training on such a split: refused before a vocabulary is built, on
  # resuming (train_batches), and by train.py before it writes anything.
  on_dev = _tagging(faulty_data_dir, dataset='tiny_ner_misaligned',
                    train_split='dev', eval_split='train')
  names = _names('dev', *_first_misaligned(faulty_data_dir, 'dev'))
  for start_reading in (on_dev.build_vocab,
                        lambda: on_dev.train_batches(vocab)):
    with pytest.raises(UsageError, match=re.escape(names[0])):
      start_reading()
  run = str(tmp_path / 'run')
  fails_with(capsys, train_py.main, [
      '--gin_file', 'configs/conll2003_ner_rnn.gin', '--output_dir', run,
      '--gin_param', "TaggingInputs.dataset = 'tiny_ner_misaligned'",
      '--gin_param', f"TaggingInputs.data_dir = '{faulty_data_dir}'",
      '--gin_param', "TaggingInputs.train_split = 'dev'",
      '--gin_param', "TaggingInputs.eval_split = 'train'"], *names)
  assert not os.path.exists(run)


def test_conll2003_feature_spec_with_mock_data(mock_dataset):
  # tfds.testing.mock_data's examples of conll2003, with one tag per word
  # (see mock_data_run._consistent), written out with its real features.
  name, data_dir = mock_dataset('conll2003')
  inputs = data.TaggingInputs(name, data_dir=data_dir, batch_size=4)
  vocab = inputs.build_vocab()
  assert vocab.labels[:3] == ['O', 'B-PER', 'I-PER']
  assert len(vocab.labels) == 9
  x, y, w = next(inputs.train_batches(vocab))
  assert x.shape == y.shape == w.shape and x.shape[0] == 4
  assert y[w > 0].max() < 9


def test_classification_metrics_match_a_hand_count():
  got = metrics.classification_metrics([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 1],
                                       ['a', 'b', 'c'])
  assert got['accuracy'] == pytest.approx(3 / 6)
  assert got['confusion_matrix'] == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
  # class b: 2 of the 4 predicted b are b; 2 of the 3 true b were found.
  b = got['per_class']['b']
  assert (b['precision'], b['recall']) == (pytest.approx(2 / 4),
                                           pytest.approx(2 / 3))
  assert b['f1'] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
  assert got['per_class']['c'] == {'precision': 0.0, 'recall': 0.0,
                                   'f1': 0.0, 'support': 1}


def test_tagging_metrics_match_a_hand_count():
  true = [['B-PER', 'I-PER', 'O', 'B-LOC'], ['O', 'B-LOC', 'O']]
  pred = [['B-PER', 'O', 'O', 'B-LOC'], ['O', 'B-LOC', 'B-PER']]
  got = metrics.tagging_metrics(true, pred)
  # Entities: true {PER 0-1, LOC 3, LOC 1}; predicted {PER 0, LOC 3, LOC 1,
  # PER 2}. Only the two LOCs match exactly (PER 0 has the wrong end).
  assert got['entity_precision'] == pytest.approx(2 / 4)
  assert got['entity_recall'] == pytest.approx(2 / 3)
  assert got['token_accuracy'] == pytest.approx(5 / 7)
  assert got['per_type']['LOC']['f1'] == 1.0
  assert got['per_type']['PER']['support'] == 1


def test_tags_without_entities_are_scored_tag_by_tag():
  tags = LabelVocab(['DT', 'NN', 'VB'])
  # Two sentences; weights 0 mark the padding after the first one.
  targets = np.array([[0, 1, 2, 0], [0, 1, 1, 2]])
  predicted = np.array([[0, 1, 1, 2], [0, 2, 1, 2]])
  weights = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
  correct = float(((targets == predicted) * weights).sum())
  got = metrics.tagger_metrics(
      (0.0, correct, weights.sum()), [(targets, weights, predicted)], tags)
  assert got['token_accuracy'] == pytest.approx(5 / 7)
  # NN: predicted 3 times, right twice; 3 true NN, 2 found.
  assert got['per_tag']['NN']['precision'] == pytest.approx(2 / 3)
  assert got['per_tag']['NN']['recall'] == pytest.approx(2 / 3)
  # VB: predicted twice, right once; 2 true VB, 1 found.
  assert got['per_tag']['VB']['precision'] == pytest.approx(1 / 2)
  assert got['per_tag']['VB']['recall'] == pytest.approx(1 / 2)
  assert got['per_tag']['DT']['f1'] == 1.0
  assert 'per_type' not in got


CLASSIFIER_PARAMS = ['RNNClassifier.d_model = 16', 'RNNClassifier.n_units = 32',
                     'RNNClassifier.dropout = 0.1',
                     'TextClassificationInputs.batch_size = 16',
                     'train_and_evaluate.eval_every = 100',
                     'multifactor.warmup_steps = 20', 'multifactor.constant = 0.01']


def _train(config, output_dir, steps, params):
  train_py.main(['--gin_file', config, '--output_dir', output_dir,
              '--steps', str(steps),
              *[a for p in params for a in ('--gin_param', p)]])


@pytest.fixture(scope='module')
def sentiment_run(labelled_data_dir, tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('sentiment'))
  _train('configs/sst2_rnn.gin', output_dir, 200,
         [*tiny.sentiment_bindings(labelled_data_dir), *CLASSIFIER_PARAMS])
  return output_dir


def test_classifier_learns_and_evaluate_reports_its_metrics(sentiment_run):
  result = Run.load(sentiment_run).evaluate()
  # Chance, and the best a model without memory does: 0.5 (every text has
  # an opinion word of each polarity; the first one says the label).
  assert result['accuracy'] > 0.9
  matrix = np.array(result['confusion_matrix'])
  assert matrix.sum() == tiny.SPLIT_SIZES['validation']
  assert result['accuracy'] == pytest.approx(np.trace(matrix) / matrix.sum())
  assert set(result['per_class']) == set(tiny.SENTIMENT_CLASSES)
  with open(os.path.join(sentiment_run, 'eval_validation.json')) as f:
    assert json.load(f) == result


def test_predict_prints_the_class_and_its_probability(sentiment_run, capsys):
  evaluate_py.main(['--output_dir', sentiment_run,
                 '--predict', 'the movie was wonderful but the ending was dull',
                 '--predict', 'a boring film with superb music'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith('positive') and lines[1].startswith('negative')
  assert all(0.5 < float(line.split()[1]) <= 1.0 for line in lines)


def test_classifier_report_shows_memory_retention(sentiment_run,
                                                  labelled_data_dir, tmp_path):
  out = str(tmp_path / 'report')
  report_py.main(['--output_dir', sentiment_run, '--out', out,
                  '--retention_windows', '3'])
  assert sorted(os.listdir(out)) == [run_report.MARKER, 'confusion.png',
                                     'curves.png', 'index.html',
                                     'retention.png']
  words = sorted(len(ex['sentence'].split()) for ex in _split(
      labelled_data_dir, 'tiny_sentiment', 'validation'))
  assert len(run_report.text_retention(Run.load(sentiment_run), windows=3)) == min(
      words[-3], run_report.MAX_TEXT_WINDOW)


def test_evaluating_an_unlabelled_split_fails_clearly(sentiment_run, capsys):
  fails_with(capsys, evaluate_py.main, ['--output_dir', sentiment_run,
                                     '--split', 'test'], 'labelled -1')


TAGGER_PARAMS = ['RNNTagger.d_model = 16', 'RNNTagger.n_units = 32',
                 'RNNTagger.dropout = 0.1', 'TaggingInputs.batch_size = 16',
                 'train_and_evaluate.eval_every = 100',
                 'multifactor.warmup_steps = 20', 'multifactor.constant = 0.01']


def test_tagger_beats_the_majority_tag_clearly(labelled_data_dir, tmp_path):
  output_dir = str(tmp_path / 'ner')
  _train('configs/conll2003_ner_rnn.gin', output_dir, 200,
         [*tiny.ner_bindings(labelled_data_dir), *TAGGER_PARAMS])
  result = Run.load(output_dir).evaluate()
  tags = [t for ex in _split(labelled_data_dir, 'tiny_ner', 'dev')
          for t in ex['ner']]
  majority = max(collections.Counter(tags).values()) / len(tags)
  assert result['token_accuracy'] > majority + 0.1
  # Always 'O' finds no entity (F1 0); tagging each name without the cue
  # verb before it finds half of them.
  assert result['entity_f1'] > 0.8
  # Paris 4 words after a place's cue, then a person's; then words that
  # a no-break space joins.
  [place, person, spaced] = Run.load(output_dir).tag([
      'the Zorblax film visited the story of Paris',
      'the Zorblax film met the story of Paris',
      'Zorblax\u00a0film visited the story of Paris'])
  assert [word for word, _ in place] == (
      'the Zorblax film visited the story of Paris'.split())
  assert place[-1] == ('Paris', 'B-LOC') and person[-1] == ('Paris', 'B-PER')
  # The words shown are the model's: Python's split() would make two of
  # the first and pair each later tag with the word before its own.
  assert [w for w, _ in spaced] == ['Zorblax\u00a0film', 'visited', 'the',
                                    'story', 'of', 'Paris']
  assert spaced[-1] == ('Paris', 'B-LOC')
  # The report draws the F1 of each entity type evaluate.py found, and the
  # memory retention over the first words of the longest dev sentences.
  report_py.main(['--output_dir', output_dir, '--retention_windows', '4'])
  assert sorted(os.listdir(os.path.join(output_dir, 'report'))) == [
      run_report.MARKER, 'crf_transitions.png', 'curves.png', 'index.html',
      'per_type_f1.png', 'retention.png']
  with open(os.path.join(output_dir, 'report', 'index.html')) as f:
    page = f.read()
  with open(os.path.join(output_dir, 'eval_dev.json')) as f:
    per_type = json.load(f)['per_type']
  for kind, scores in per_type.items():  # the table of each entity type
    assert (f'<tr><th>{kind}</th><td>{scores["precision"]:.4g}</td>'
            f'<td>{scores["recall"]:.4g}</td><td>{scores["f1"]:.4g}</td>'
            f'<td>{scores["support"]}</td></tr>') in page
  lengths = sorted(len(ex['tokens'])
                   for ex in _split(labelled_data_dir, 'tiny_ner', 'dev'))
  curve = run_report.text_retention(Run.load(output_dir), windows=4)
  assert len(curve) == min(lengths[-4], run_report.MAX_TEXT_WINDOW)
  assert np.all(np.isfinite(curve)) and np.all(curve > 0)


@pytest.mark.parametrize('config, dataset, inputs, model', [
    ('configs/conll2003_ner_rnn.gin', 'conll2003', 'TaggingInputs',
     'RNNTagger'),
    ('configs/imdb_rnn.gin', 'imdb_reviews', 'TextClassificationInputs',
     'RNNClassifier'),
])
def test_shipped_configs_train_on_mock_data_of_their_datasets(
    config, dataset, inputs, model, mock_dataset, tmp_path):
  """The real feature specs (conll2003, imdb_reviews), with random examples."""
  metrics = metrics_of_a_mock_data_run(mock_dataset, tmp_path, config, dataset,
                                       inputs, model)
  assert metrics['step'] in (2, 4) and np.isfinite(metrics['loss'])
  key = 'entity_f1' if model == 'RNNTagger' else 'accuracy'
  assert 0.0 <= metrics[key] <= 1.0
