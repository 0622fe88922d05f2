"""Tests of the vocabulary and the character-LM TFDS pipeline."""

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data
from data import char_lm
import tiny_text_dataset
from rnn_toolkit.errors import UsageError


def test_vocab_round_trip_and_reserved_ids(tmp_path):
  vocab = data.CharVocab.from_texts(['hello', 'world!'])
  assert vocab.chars == sorted(set('helloworld!'))
  assert vocab.size == len(vocab.chars) + 2
  ids = vocab.encode('hold~')
  assert ids[-1] == data.UNK_ID and min(ids[:-1]) >= 2
  assert vocab.decode(ids) == 'hold?'
  assert vocab.decode([data.PAD_ID] + ids) == 'hold?'
  path = str(tmp_path / 'vocab.json')
  vocab.save(path)
  assert data.CharVocab.load(path) == vocab


# One vocabulary of each kind, and the list of strings that gives its ids.
VOCABULARIES = [
    (data.CharVocab(['a', 'b', '\u00e9'], 'tiny_text'), 'chars'),
    (data.WordVocab(['the', 'film'], ['negative', 'positive'], 'glue/sst2'),
     'words'),
    (data.TokenVocab(['2', '0', '-'], 'char', 'date_normalisation'),
     'tokens'),
    (data.LabelVocab(['team_1', 'team_2'], 'match_results'), 'labels'),
]

# Damage done to a saved vocabulary record: (how, the words of the error).
DAMAGE = [
    (lambda text, key: text[:-9], ['not valid JSON', 'cut short']),
    (lambda text, key: '"' + text.replace('"', "'") + '"', ['JSON string']),
    (lambda text, key: _changed(text, key, lambda items: items + items[:1]),
     ['twice', 'items 0 and']),
    (lambda text, key: _changed(text, key, lambda items: items[:1] + [None]),
     ['holds None (item 1)', 'JSON null, not a string']),
    (lambda text, key: _changed(text, key, lambda items: ','.join(items)),
     ['JSON string, not a list']),
    (lambda text, key: _changed(text, key, lambda items: []), ['is empty']),
    (lambda text, key: _changed(text, key, lambda items: _DELETE),
     ['has no', 'field']),
    (lambda text, key: _changed(text, 'type', lambda kind: 'chars'),
     ["type 'chars' is none of"]),
    (lambda text, key: _changed(text, 'pad_id', lambda _: 3),
     ['pad_id = 3', 'this toolkit uses 0']),
]
_DELETE = object()


def _changed(text, key, change):
  """JSON `text` of an object, with `key`'s value changed (or deleted)."""
  record = json.loads(text)
  value = change(record.get(key))
  if value is _DELETE:
    del record[key]
  else:
    record[key] = value
  return json.dumps(record)


@pytest.mark.parametrize('vocab, key', VOCABULARIES,
                         ids=[type(v).__name__ for v, _ in VOCABULARIES])
def test_every_kind_of_vocabulary_round_trips_and_refuses_damage(
    vocab, key, tmp_path):
  path = str(tmp_path / 'vocab.json')
  vocab.save(path)
  assert data.load_vocab(path) == vocab and type(vocab).load(path) == vocab
  with open(path, encoding='utf-8') as f:
    saved = f.read()
  for damage, words in DAMAGE:
    with open(path, 'w', encoding='utf-8') as f:
      f.write(damage(saved, key))
    for load in (data.load_vocab, type(vocab).load):
      with pytest.raises(UsageError) as error:
        load(path)
      message = str(error.value)
      assert message.startswith(f'The vocabulary file {path} cannot be used')
      assert all(word in message for word in words), (words, message)
      assert '\n' not in message


def test_a_character_vocabulary_holds_single_characters(tmp_path):
  path = str(tmp_path / 'vocab.json')
  data.CharVocab(['a', 'b']).save(path)
  with open(path, encoding='utf-8') as f:
    text = _changed(f.read(), 'chars', lambda chars: chars + ['ch'])
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  with pytest.raises(UsageError, match=r"holds 'ch' \(item 2\), not one "
                                       r'character'):
    data.load_vocab(path)


def _inputs(tiny_data_dir, **kwargs):
  defaults = dict(dataset='tiny_text', data_dir=tiny_data_dir, seq_len=16,
                  batch_size=4, download=False)
  return data.CharLMInputs(**{**defaults, **kwargs})


def test_vocab_is_built_from_the_training_split(tiny_data_dir):
  vocab = _inputs(tiny_data_dir).build_vocab()
  assert vocab.chars == sorted(set(''.join(tiny_text_dataset.TEXTS['train'])))


@pytest.mark.parametrize('split', ['validation', 'test'])
def test_eval_pass_holds_every_character_once_in_order(tiny_data_dir, split):
  inputs = _inputs(tiny_data_dir)
  vocab = inputs.build_vocab()
  batches = list(inputs.eval_batches(vocab, split))
  texts = tiny_text_dataset.TEXTS[split]
  for x, y, w in batches:
    assert x.shape == y.shape == w.shape == (4, 16)
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(w, (x != data.PAD_ID).astype(np.float32))
  windows = np.concatenate([x for x, _, _ in batches])
  decoded = [vocab.decode(row) for row in windows]
  # Each example starts a new window; its last window is padded.
  want = []
  for text in texts:
    ids = vocab.encode(text)
    want += [vocab.decode(ids[i:i + 16]) for i in range(0, len(ids), 16)]
  assert decoded[:len(want)] == want
  assert all(d == '' for d in decoded[len(want):])


def test_train_batches_are_windows_of_one_text_and_repeat(tiny_data_dir):
  inputs = _inputs(tiny_data_dir)
  vocab = inputs.build_vocab()
  texts = tiny_text_dataset.TEXTS['train']
  batches = list(itertools.islice(inputs.train_batches(vocab, seed=3), 40))
  for x, y, w in batches:
    assert x.shape == (4, 16) and x.dtype == np.int32
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(w, (x != data.PAD_ID).astype(np.float32))
    for row, weights in zip(x, w):
      n_real = int(weights.sum())
      assert n_real > 0 and not weights[n_real:].any()  # padding only trails
      assert any(vocab.decode(row) in text for text in texts)
  # 40 batches of 4 windows cover the ~700 training characters several times.
  assert sum(w.sum() for _, _, w in batches) > 2 * len(''.join(texts))


@pytest.mark.parametrize('length', [1, 5, 16, 37])
def test_moved_window_boundaries_keep_every_character(length):
  ids = np.arange(2, 2 + length, dtype=np.int32)
  for offset in range(min(length, 16)):
    windows = char_lm._cut_at(ids, offset, 16).numpy()
    assert windows.shape[1] == 16
    real = [row[row != data.PAD_ID] for row in windows]
    np.testing.assert_array_equal(np.concatenate(real), ids)
    starts = np.cumsum([0] + [len(r) for r in real[:-1]])
    assert all(start == 0 or (start - offset) % 16 == 0 for start in starts)


def test_train_order_follows_the_seed(tiny_data_dir):
  inputs = _inputs(tiny_data_dir)
  vocab = inputs.build_vocab()
  def first(seed):
    return np.concatenate([b[0] for b in itertools.islice(
        inputs.train_batches(vocab, seed=seed), 5)])
  np.testing.assert_array_equal(first(1), first(1))
  assert not np.array_equal(first(1), first(2))


def _stacked(batches, n=6):
  return [np.stack(b) for b in itertools.islice(batches, n)]  # (3, rows, len)


def _assert_parts_make_the_whole(parts, whole):
  assert parts[0][0].shape[1] == whole[0].shape[1] // len(parts)
  for k, batch in enumerate(whole):
    np.testing.assert_array_equal(
        np.concatenate([part[k] for part in parts], axis=1), batch)


def test_each_process_reads_only_its_part_of_the_train_split(tiny_data_dir):
  inputs = _inputs(tiny_data_dir, data_shards=2)
  vocab = inputs.build_vocab()
  def stream(index, count):
    return _stacked(inputs.train_batches(vocab, seed=3, start=2,
                                         process_index=index,
                                         process_count=count))
  parts = [stream(i, 2) for i in range(2)]
  _assert_parts_make_the_whole(parts, stream(0, 1))
  builder = tfds.builder('tiny_text', data_dir=tiny_data_dir)
  for part, split in zip(parts, tfds.even_splits('train', n=2)):
    texts = [ex['text'].decode() for ex in
             tfds.as_numpy(builder.as_dataset(split=split))]
    others = [t for t in tiny_text_dataset.TEXTS['train'] if t not in texts]
    windows = [vocab.decode(row) for batch in part for row in batch[0]]
    assert all(any(w in t for t in texts) for w in windows)
    assert not any(w in t for w in windows if len(w) > 3 for t in others)


def test_an_undividable_split_is_read_whole_by_each_process(tiny_data_dir):
  inputs = _inputs(tiny_data_dir)  # 3 training texts, 4 processes
  vocab = inputs.build_vocab()
  assert inputs.train_shards(process_count=4) == 1
  def stream(index, count):
    return _stacked(inputs.train_batches(vocab, seed=3, start=2,
                                         process_index=index,
                                         process_count=count))
  _assert_parts_make_the_whole([stream(i, 4) for i in range(4)], stream(0, 1))


def test_eval_rows_put_together_are_the_global_batches(tiny_data_dir):
  inputs = _inputs(tiny_data_dir)
  vocab = inputs.build_vocab()
  half = inputs.batch_size // 2
  parts = [_stacked(inputs.eval_batches(vocab, rows=rows))
           for rows in (slice(0, half), slice(half, None))]
  _assert_parts_make_the_whole(parts, _stacked(inputs.eval_batches(vocab)))


@pytest.mark.parametrize('shards, processes, words', [
    (4, 1, ['data_shards = 4', 'only 3 examples']),
    (3, 2, ['3 parts', '2 processes', 'multiple of 2']),
])
def test_train_parts_that_cant_divide_are_clear_errors(
    tiny_data_dir, shards, processes, words):
  inputs = _inputs(tiny_data_dir, data_shards=shards)
  with pytest.raises(UsageError) as error:
    inputs.train_shards(processes)
  assert all(w in str(error.value) for w in words)


def test_real_tiny_shakespeare_pipeline(shakespeare_data_dir):
  inputs = data.CharLMInputs(data_dir=shakespeare_data_dir, seq_len=100,
                             batch_size=8, download=False)
  vocab = inputs.build_vocab()
  builder = tfds.builder('tiny_shakespeare', data_dir=shakespeare_data_dir)
  text = next(iter(tfds.as_numpy(builder.as_dataset(split='train'))))['text']
  assert vocab.chars == sorted(set(text.decode('utf-8')))
  n_chars = sum(w.sum() for _, _, w in inputs.eval_batches(vocab))
  validation = next(iter(tfds.as_numpy(
      builder.as_dataset(split='validation'))))['text'].decode('utf-8')
  assert n_chars == len(validation)


def test_unknown_dataset_is_named(tmp_path):
  with pytest.raises(UsageError, match="'tiny_shakespear'.*spelling"):
    data.CharLMInputs(dataset='tiny_shakespear', data_dir=str(tmp_path))


def test_absent_dataset_names_dataset_dir_and_fix(tmp_path):
  with pytest.raises(UsageError) as error:
    data.CharLMInputs(dataset='tiny_shakespeare', data_dir=str(tmp_path),
                      download=False)
  message = str(error.value)
  assert 'tiny_shakespeare' in message and str(tmp_path) in message
  assert 'TFDS_DATA_DIR' in message


def test_data_dir_follows_tfds_conventions(monkeypatch, tmp_path):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))
  assert data.resolve_data_dir() == str(tmp_path)
  assert data.resolve_data_dir('/elsewhere') == '/elsewhere'
  monkeypatch.delenv('TFDS_DATA_DIR')
  assert data.resolve_data_dir() == os.path.expanduser('~/tensorflow_datasets')


@pytest.mark.parametrize('kwargs, message', [
    ({'text_key': 'content'}, "no feature 'content'.*'text'"),
    ({'eval_split': 'dev'}, "no split 'dev'.*'validation'"),
])
def test_wrong_feature_or_split_is_named(tiny_data_dir, kwargs, message):
  with pytest.raises(UsageError, match=message):
    _inputs(tiny_data_dir, **kwargs)


# ---- the input contract (data/inputs.py) -----------------------------------

import inspect  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import tensorflow as tf  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from rnn_toolkit import tasks  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import tiny_labelled_datasets  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# Every constructor parameter and default, as saved config.gin files name
# them (the gin names of runs trained before the contract was declared).
CONSTRUCTORS = {
    data.CharLMInputs: "dataset='tiny_shakespeare', text_key='text', data_dir=None, train_split='train', eval_split='validation', seq_len=256, batch_size=64, shuffle_buffer=10000, vocab_max_examples=100000, data_shards=None, download=True, streaming=False, reset_each_epoch=True, stream_warmup=256",
    data.TextClassificationInputs: "dataset='glue/sst2', text_key='sentence', label_key='label', data_dir=None, train_split='train', eval_split='validation', batch_size=64, max_len=256, vocab_size=20000, min_count=1, shuffle_buffer=20000, data_shards=None, download=True, max_word_chars=0",
    data.TaggingInputs: "dataset='conll2003', text_key='tokens', label_key='ner', lowercase=False, data_dir=None, train_split='train', eval_split='dev', batch_size=32, max_len=128, vocab_size=30000, min_count=1, shuffle_buffer=20000, data_shards=None, download=True, max_word_chars=0, to_iob2=False",
    data.FeatureVectorInputs: "dataset='match_results', features_key='scores', label_key='winner', scale=1.0, data_dir=None, train_split='train', eval_split='validation', batch_size=64, shuffle_buffer=10000, data_shards=None, download=True",
    data.TranslationInputs: "dataset='ted_hrlr_translate/pt_to_en', source_key='pt', target_key='en', level='word', vocab_size=8000, min_count=1, max_source_len=64, max_target_len=64, data_dir=None, train_split='train', eval_split='validation', batch_size=64, shuffle_buffer=20000, data_shards=None, download=True",
    data.CaptioningInputs: "dataset='coco_captions', image_key='image', captions_key='captions', caption_text_key='text', image_size=64, level='word', vocab_size=10000, min_count=2, max_caption_len=24, data_dir=None, train_split='train', eval_split='val', batch_size=64, shuffle_buffer=5000, data_shards=None, download=True",
}


@pytest.mark.parametrize('cls', CONSTRUCTORS, ids=lambda c: c.__name__)
def test_every_pipeline_keeps_the_declared_contract(cls):
  assert issubclass(cls, data.Inputs) and not inspect.isabstract(cls)
  assert cls.task in tasks.TASKS
  parameters = inspect.signature(cls).parameters.values()
  assert ', '.join(f'{p.name}={p.default!r}'
                   for p in parameters) == CONSTRUCTORS[cls]
  # What the toolkit may ask of any pipeline is declared on the base class.
  for name in ('build_vocab', 'check_vocab', 'model_dimensions',
               'input_signature', 'train_shards', 'train_batches',
               'eval_batches', 'features', 'example_spec'):
    assert callable(getattr(data.Inputs, name)), name
  generates = tasks.TASKS[cls.task].generates
  assert (cls.decoding_batches is not data.Inputs.decoding_batches) == generates
  assert (cls.context_signature is not data.Inputs.context_signature) == generates


def test_the_base_class_checks_settings_once_for_every_pipeline(tmp_path):
  for cls in CONSTRUCTORS:
    for name in ('batch_size', 'shuffle_buffer', 'data_shards'):
      with pytest.raises(UsageError, match=f'{cls.__name__} needs positive '
                         f'whole numbers, but got {name} = 0'):
        cls(**{name: 0}, data_dir=str(tmp_path), download=False)


@pytest.fixture(scope='module')
def labelled_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('labelled_tfds'))
  tiny_labelled_datasets.prepare(data_dir)
  return data_dir


# Each pipeline on a small dataset: (name, dirs -> the pipeline).
PIPELINES = [
    ('language_model', lambda d: data.CharLMInputs(
        'tiny_text', data_dir=d['tiny'], seq_len=16, batch_size=4,
        download=False)),
    ('classification', lambda d: data.TextClassificationInputs(
        'tiny_sentiment', data_dir=d['labelled'], batch_size=8,
        download=False)),
    ('tagging', lambda d: data.TaggingInputs(
        'tiny_ner', data_dir=d['labelled'], batch_size=8, lowercase=True,
        download=False)),
    ('vector_classification', lambda d: data.FeatureVectorInputs(
        'match_results/small', scale=0.5, batch_size=16,
        data_dir=d['generated'])),
    ('translation', lambda d: data.TranslationInputs(
        'date_normalisation/small', source_key='source', target_key='target',
        level='char', vocab_size=100, max_source_len=32, max_target_len=12,
        batch_size=16, data_dir=d['generated'])),
    ('captioning', lambda d: data.CaptioningInputs(
        'shape_captions/small', image_size=16, eval_split='validation',
        max_caption_len=12, batch_size=16, data_dir=d['generated'])),
]


@pytest.fixture
def dirs(tiny_data_dir, labelled_dir, generated_dir):
  return {'tiny': tiny_data_dir, 'labelled': labelled_dir,
          'generated': generated_dir}


def _given(raw, spec):
  """A tf.data.Dataset of the NumPy examples `raw`, holding only `spec`'s
  features (as a user's file would give them)."""
  def only(example, spec):
    return {k: only(example[k], s) if isinstance(s, dict) else example[k]
            for k, s in spec.items()}
  return tf.data.Dataset.from_generator(
      lambda: (only(ex, spec) for ex in raw), output_signature=spec)


def _assert_same_batches(got, want):
  got, want = list(got), list(want)
  assert len(got) == len(want) and want
  for a, b in zip(got, want):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('task, make', PIPELINES, ids=[t for t, _ in PIPELINES])
def test_given_examples_make_the_batches_their_split_makes(task, make, dirs):
  inputs = make(dirs)
  assert inputs.task == task
  vocab = inputs.build_vocab()
  raw = list(tfds.as_numpy(inputs.builder.as_dataset(split=inputs.eval_split)))
  spec = inputs.example_spec()
  features = inputs.features()
  assert [f.name for f in features.values()] == list(spec)
  if hasattr(inputs, 'labels'):  # the ClassLabel's names
    label = features['label'].spec
    names = getattr(label, 'feature', label).names
    assert names == inputs.labels
  _assert_same_batches(
      inputs.eval_batches(vocab, 'file x', examples=_given(raw, spec)),
      inputs.eval_batches(vocab))
  half = inputs.batch_size // 2
  _assert_same_batches(
      inputs.eval_batches(vocab, rows=slice(half, None),
                          examples=_given(raw, spec)),
      inputs.eval_batches(vocab, rows=slice(half, None)))
  # The examples given are what is read: one example, one row (of a
  # language model, its windows).
  def real_rows(batches):
    return sum(int(np.reshape(b[-1], (len(b[-1]), -1)).any(1).sum())
               for b in batches)
  one = real_rows(inputs.eval_batches(vocab, examples=_given(raw[:1], spec)))
  assert one < real_rows(inputs.eval_batches(vocab))
  assert one == 1 or task == 'language_model'
  if tasks.TASKS[task].generates:
    got = list(inputs.decoding_batches(vocab, examples=_given(raw, spec)))
    want = list(inputs.decoding_batches(vocab))
    assert len(got) == len(want) and want
    for (context, refs), (want_context, want_refs) in zip(got, want):
      np.testing.assert_array_equal(context, want_context)
      assert refs == want_refs
  else:
    with pytest.raises(NotImplementedError):
      inputs.decoding_batches(vocab)


def test_given_examples_without_a_feature_or_of_another_kind_are_refused(
    labelled_dir):
  inputs = data.TextClassificationInputs('tiny_sentiment',
                                         data_dir=labelled_dir, batch_size=8,
                                         download=False)
  vocab = inputs.build_vocab()
  texts = tf.data.Dataset.from_tensor_slices({'sentence': ['a fine film']})
  with pytest.raises(UsageError, match="File 'x.tsv' cannot be read by "
                     "TextClassificationInputs of tiny_sentiment: no feature "
                     "'label'"):
    inputs.eval_batches(vocab, "file 'x.tsv'", examples=texts)
  as_text = tf.data.Dataset.from_tensor_slices(
      {'sentence': ['a fine film'], 'label': ['positive']})
  with pytest.raises(UsageError, match="feature 'label' is string.*not int64"):
    inputs.eval_batches(vocab, examples=as_text)


def test_unusable_given_examples_are_named_as_their_caller_names_them(
    labelled_dir, faulty_data_dir):
  classify = data.TextClassificationInputs(
      'tiny_sentiment', data_dir=labelled_dir, batch_size=8, download=False)
  vocab = classify.build_vocab()
  unlabelled = tf.data.Dataset.from_tensor_slices(
      {'sentence': ['a fine film', 'a dull one'],
       'label': np.array([1, 7], np.int64)})
  with pytest.raises(UsageError, match=r"File 'x.tsv' has an example "
                     r"labelled 7, outside the 2 classes"):
    list(classify.eval_batches(vocab, "file 'x.tsv'", examples=unlabelled))
  tag = data.TaggingInputs('tiny_ner_misaligned', data_dir=faulty_data_dir,
                           eval_split='train', download=False)
  words = tf.data.Dataset.from_generator(
      lambda: iter([{'tokens': np.array([b'Jordan', b'ran']),
                     'ner': np.array([1], np.int64)}]),
      output_signature=tag.example_spec())
  with pytest.raises(UsageError, match=r"Example 0 of file 'y' has 2 words "
                     r"\('tokens'\) but 1 tags"):
    tag.eval_batches(tag.build_vocab(), "file 'y'", examples=words)
