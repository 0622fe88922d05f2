"""Input pipelines for labelled text: one label per text, or one tag per word.

`TextClassificationInputs` reads any TFDS dataset with a text feature and a
ClassLabel feature; texts are split into lower-cased words (punctuation marks
are words of their own). `TaggingInputs` reads token-level tagging datasets
(a sequence of words and a sequence of ClassLabel tags, as in `conll2003`).

Words become ids through a vocabulary built from the training split, and
batches are what trax trains on: (tokens int32[batch, length], labels
int32[batch] or int32[batch, length], weights of the same shape as labels).
With `max_word_chars`, each word comes with its characters (a tagger's as
typed, case kept; a classifier's from its lower-cased words): tokens are
int32[batch, length, 1 + max_word_chars], the word's id
and then its characters' ids, PAD_ID after the word's end, for models that
read them (models/word_features.py). Longer words are cut, and the
vocabulary's building says how many there were.
`length` is the longest text of the batch rounded up to a bucket boundary:
training texts of similar length are batched together, so short sentences
don't pay for long ones, and XLA compiles the step for a handful of shapes.
"""

import collections
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data import tfds_io
from data.inputs import Inputs, Source
from data.tokenize import lower, split_at_spaces, split_words
from data.vocab import (FIRST_CHAR_ID as FIRST_WORD_ID, PAD_ID, WordVocab,
                        check_kind)
from rnn_toolkit import tag_scheme
from rnn_toolkit.errors import UsageError

# Batches are padded to one of these lengths below `max_len`, or `max_len`.
BUCKET_BOUNDARIES = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
                     1024)


class TextClassificationInputs(Inputs):
  """Builds the vocabulary and the train/eval batch streams of one dataset.

  Args:
    dataset: TFDS name of a dataset with a text and a ClassLabel feature.
    text_key: name of the text feature.
    label_key: name of the class-label feature.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    train_split: split to train on and to build the vocabulary from.
    eval_split: split evaluated during training.
    batch_size: texts per batch.
    max_len: texts longer than this many words are cut to their first
      `max_len` words.
    max_word_chars: give the model each word's first `max_word_chars`
      characters beside its id; 0, the word ids only.
    vocab_size: largest number of ids, the padding and unknown ids included;
      the most frequent training words get the others.
    min_count: training-split occurrences a word needs to get its own id.
    shuffle_buffer: texts held in the shuffle buffer.
    data_shards: parts the training split is read in (see
      `tfds_io.train_parts`); None: one per process.
    download: whether TFDS may download an absent dataset.
  """

  task = 'classification'  # rnn_toolkit/tasks.py
  LABEL_PER_WORD = False  # one label a text; a tagger's: one a word

  def __init__(self, dataset: str = 'glue/sst2', text_key: str = 'sentence',
               label_key: str = 'label', data_dir: str | None = None,
               train_split: str = 'train', eval_split: str = 'validation',
               batch_size: int = 64, max_len: int = 256,
               vocab_size: int = 20_000, min_count: int = 1,
               shuffle_buffer: int = 20_000, data_shards: int | None = None,
               download: bool = True, max_word_chars: int = 0):
    self.text_key = text_key
    self.label_key = label_key
    self.max_len = max_len
    self.max_word_chars = max_word_chars
    self.vocab_size = vocab_size
    self.min_count = min_count
    super().__init__(
        dataset=dataset, data_dir=data_dir, train_split=train_split,
        eval_split=eval_split, batch_size=batch_size,
        shuffle_buffer=shuffle_buffer, data_shards=data_shards,
        download=download, features={'text': text_key, 'label': label_key},
        positive={'batch_size': batch_size, 'max_len': max_len,
                  'vocab_size': vocab_size, 'min_count': min_count})
    tfds_io.check_feature_kind(self.builder, text_key, self.LABEL_PER_WORD)
    self.labels = tfds_io.class_names(self.builder, label_key,
                                      self.LABEL_PER_WORD)

  def _check_settings(self) -> None:
    if not (isinstance(self.max_word_chars, int) and self.max_word_chars >= 0
            and not isinstance(self.max_word_chars, bool)):
      raise UsageError(
          f'{type(self).__name__}.max_word_chars must be a whole number, 0 '
          f'for word ids only (got {self.max_word_chars!r}).')
    if self.vocab_size <= FIRST_WORD_ID:
      raise UsageError(
          f'{type(self).__name__}.vocab_size = {self.vocab_size} leaves no id '
          f'for words: ids 0 and 1 are padding and unknown words. Bind it to '
          f'{FIRST_WORD_ID + 1} or more.')

  @property
  def boundaries(self) -> list[int]:
    """The lengths batches are padded to, the last one `max_len`."""
    return [b for b in BUCKET_BOUNDARIES if b < self.max_len] + [self.max_len]

  def build_vocab(self) -> WordVocab:
    """Returns the WordVocab of the training split, checking its labels."""
    self._check_split(self.train_split)
    source = self._split_source(self.train_split)
    counts, char_counts = collections.Counter(), collections.Counter()
    for words, labels in tfds.as_numpy(
        self._words_and_labels(self._read(self.train_split))):
      counts.update(words)
      self._check_labels(labels, source)
    if self.max_word_chars:
      for word, n in counts.items():
        for char in word.decode('utf-8'):
          char_counts[char] += n
      self._say_which_words_are_cut(counts)
    counts = _merged(counts, self._vocab_key)
    vocab = WordVocab.from_counts(counts, self.vocab_size, self.min_count,
                                  labels=self.labels, dataset=self.dataset)
    vocab.chars = sorted(char_counts)
    if not vocab.words:
      raise UsageError(f'No word of the train split {self.train_split!r} of '
                       f'{self.dataset} occurs {self.min_count} times or more '
                       f'(min_count). Lower {type(self).__name__}.min_count, '
                       f'or bind train_split to a split with text.')
    return vocab

  def model_dimensions(self, vocab: WordVocab) -> dict[str, Any]:
    """The sizes the model is built with: its vocabulary and its classes
    (and, when words come with their characters, n_chars)."""
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size, 'n_classes': len(vocab.labels),
            **self._char_dimensions(vocab)}

  def _char_dimensions(self, vocab: WordVocab) -> dict[str, int]:
    if not self.max_word_chars:
      return {}
    if not vocab.chars:
      raise UsageError(
          f'{type(self).__name__}.max_word_chars = {self.max_word_chars} '
          f'gives the model each word\'s characters, but the run\'s '
          f'vocabulary was built without them. Train a new run (another '
          f'--output_dir), or bind max_word_chars = 0.')
    return {'n_chars': vocab.n_chars}

  def check_vocab(self, vocab: Any) -> None:
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, WordVocab, type(self).__name__)

  def input_signature(self) -> shapes.ShapeDtype:
    """The model input of a training batch (of the shortest bucket)."""
    return shapes.ShapeDtype((self.batch_size, self.boundaries[0],
                              *self._per_word()), np.int32)

  def _per_word(self) -> tuple[int, ...]:
    """The shape of one word's ids: () or (1 + max_word_chars,)."""
    return (1 + self.max_word_chars,) if self.max_word_chars else ()

  def encode(self, vocab: WordVocab, texts: list[str]) -> np.ndarray:
    """int32[len(texts), length(, 1 + max_word_chars)]: `texts` (strings)
    as one batch of ids.

    Raises:
      UsageError: a text has no words.
    """
    tables = self._tables(vocab)
    words = [self.split_text(tf.constant(t)) for t in texts]
    ids = [self._ids(tables, w).numpy() for w in words]
    empty = [t for t, row in zip(texts, ids) if not row.size]
    if empty:
      raise UsageError(f'--predict {empty[0]!r} has no words to classify. '
                       f'Pass a text with at least one word.')
    if self.max_word_chars:
      self._say_which_words_are_cut(collections.Counter(
          w for row in words for w in row.numpy()))
    batch = np.full((len(ids), max(map(len, ids), default=0),
                     *self._per_word()), PAD_ID, np.int32)
    for row, text_ids in zip(batch, ids):
      row[:len(text_ids)] = text_ids
    return self._pad_to_boundary(batch, None)[0].numpy()

  def split_text(self, text: tf.Tensor) -> tf.Tensor:
    """string -> string[n]: the words of `text`, cut to `max_len`."""
    return split_words(text)[:self.max_len]

  def _vocab_key(self, words: Any) -> Any:
    """What the vocabulary knows `words` (strings) as: split_text's words
    already are."""
    return words

  def _tables(self, vocab: WordVocab) -> tuple[Any, Any]:
    """The TF tables of words and, with max_word_chars, of characters."""
    return (vocab.lookup_table(),
            vocab.char_table() if self.max_word_chars else None)

  def _ids(self, tables: tuple[Any, Any], words: tf.Tensor) -> tf.Tensor:
    """string[n] -> int32[n], or int32[n, 1 + max_word_chars] with the
    characters of each of the words (as split_text gives them)."""
    word_table, char_table = tables
    ids = word_table.lookup(self._vocab_key(words))
    if not self.max_word_chars:
      return ids
    chars = tf.strings.unicode_split(words, 'UTF-8')[:, :self.max_word_chars]
    char_ids = tf.ragged.map_flat_values(char_table.lookup, chars).to_tensor(
        default_value=PAD_ID, shape=[None, self.max_word_chars])
    return tf.concat([ids[:, None], char_ids], axis=1)

  def _say_which_words_are_cut(self, counts: collections.Counter) -> None:
    """Prints one line if words longer than max_word_chars are among
    `counts` (bytes -> occurrences): their characters are cut."""
    long = {w.decode('utf-8'): n for w, n in counts.items()
            if len(w.decode('utf-8')) > self.max_word_chars}
    if long:
      longest = max(long, key=len)
      print(f'{sum(long.values())} words ({len(long)} distinct) are longer '
            f'than {type(self).__name__}.max_word_chars = '
            f'{self.max_word_chars} characters; the model reads their first '
            f'{self.max_word_chars} (the longest: {longest!r}, '
            f'{len(longest)}).')

  def _words_and_labels(self, examples: tf.data.Dataset) -> tf.data.Dataset:
    """(words string[n], label) pairs of raw `examples`."""
    return examples.map(
        lambda ex: (self.split_text(ex[self.text_key]),
                    tf.cast(ex[self.label_key], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _encoded(self, vocab: WordVocab,
               examples: tf.data.Dataset) -> tf.data.Dataset:
    tables = self._tables(vocab)
    return self._words_and_labels(examples).map(
        lambda words, labels: (self._ids(tables, words), labels),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _train_stream(self, vocab: WordVocab, examples: tf.data.Dataset,
                    seed: int, rows: int,
                    fixed_shape: bool) -> tf.data.Dataset:
    """Shuffled batches of `rows` texts, bucketed by length.

    With `fixed_shape`, every batch is padded to `max_len` instead: the
    parts of a multi-part stream must give batches of one shape to be put
    side by side.
    """
    ds = (self._encoded(vocab, examples)
          .shuffle(self.shuffle_buffer, seed=seed)
          .repeat())
    if fixed_shape:
      ds = ds.padded_batch(rows, padded_shapes=self._padded_shapes(),
                           drop_remainder=True)
    else:
      ds = ds.bucket_by_sequence_length(
          lambda ids, labels: tf.shape(ids)[0],
          bucket_boundaries=[b + 1 for b in self.boundaries[:-1]],
          bucket_batch_sizes=[rows] * len(self.boundaries),
          drop_remainder=True).map(self._pad_to_boundary)
    return ds.map(_with_weights)

  def _eval_stream(self, vocab: WordVocab,
                   examples: tf.data.Dataset) -> tf.data.Dataset:
    return (self._encoded(vocab, examples)
            .padded_batch(self.batch_size)
            .map(self._pad_to_boundary)
            .map(_with_weights))

  def _padded_shapes(self):
    return ([self.max_len, *self._per_word()], [])

  def _pad_to_boundary(self, ids, labels):
    """Pads int32[batch, n, ...] ids to the first bucket boundary >= n."""
    boundaries = tf.constant(self.boundaries)
    n = tf.shape(ids)[1]
    length = tf.gather(boundaries, tf.argmax(boundaries >= n))
    return tf.pad(ids, [[0, 0], [0, length - n]] + [[0, 0]] * len(
        self._per_word()), constant_values=PAD_ID), labels

  def _check_labels(self, labels: np.ndarray, source: Source) -> None:
    """Raises UsageError if a label id is not one of the classes."""
    outside = labels[(labels < 0) | (labels >= len(self.labels))]
    if outside.size:
      fix = (' (TFDS marks unlabelled test examples with -1). Evaluate a '
             'split with labels.' if source.is_split else
             '. Give every example one of these classes.')
      raise UsageError(
          f'{source.capitalized()} has an example labelled '
          f'{int(outside.flat[0])}, outside the {len(self.labels)} classes '
          f'{self.labels} of its {self.label_key!r} feature{fix}')

  def _checked(self, batch, source):
    """`batch`, once its real rows' labels are found to be classes."""
    tokens, labels, weights = batch
    self._check_labels(labels[weights > 0], source)
    return batch


class TaggingInputs(TextClassificationInputs):
  """Batches of (tokens, tags, weights) from a token-level tagging dataset.

  Args:
    dataset: TFDS name of a dataset with a sequence-of-words feature and a
      sequence-of-ClassLabel feature (`conll2003`: 'tokens', 'ner').
    text_key: name of the words feature.
    label_key: name of the tags feature.
    lowercase: whether words are lower-cased (for NER, case is a clue).
    to_iob2: rewrite each I-X that begins an entity (IOB1's way: after O or
      another type) as B-X, as it is read anyway (seqeval, CoNLL's
      evaluation: entity scores are unchanged), so that the tags follow
      IOB2, which a CRF can keep to.
    The others are as in TextClassificationInputs.
  """

  task = 'tagging'
  LABEL_PER_WORD = True

  def __init__(self, dataset: str = 'conll2003', text_key: str = 'tokens',
               label_key: str = 'ner', lowercase: bool = False,
               data_dir: str | None = None, train_split: str = 'train',
               eval_split: str = 'dev', batch_size: int = 32,
               max_len: int = 128, vocab_size: int = 30_000,
               min_count: int = 1, shuffle_buffer: int = 20_000,
               data_shards: int | None = None, download: bool = True,
               max_word_chars: int = 0, to_iob2: bool = False):
    self.lowercase = lowercase
    self.to_iob2 = to_iob2
    super().__init__(dataset, text_key, label_key, data_dir, train_split,
                     eval_split, batch_size, max_len, vocab_size, min_count,
                     shuffle_buffer, data_shards, download, max_word_chars)
    self._rewrite = _iob2_tables(self.labels) if to_iob2 else None

  def model_dimensions(self, vocab: WordVocab) -> dict[str, Any]:
    """The sizes the model is built with: its vocabulary, its tags (their
    number and names) and, when words come with their characters, n_chars."""
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size, 'n_tags': len(vocab.labels),
            'tag_names': tuple(vocab.labels),
            **self._char_dimensions(vocab)}

  def tag_sequences(self, split: str) -> Any:
    """(words, tag names) of each example of `split`, as typed, in order."""
    for words, tags in tfds.as_numpy(self._words_and_labels(
        self._read(split))):
      yield ([w.decode('utf-8') for w in words],
             [self.labels[t] for t in tags])

  def split_text(self, text: tf.Tensor) -> tf.Tensor:
    """string -> string[n]: whitespace-separated words, as the dataset's
    and as typed (the vocabulary may know them lower-cased)."""
    return split_at_spaces(text)[:self.max_len]

  def _vocab_key(self, words: Any) -> Any:
    return lower(words) if self.lowercase else words

  def _check_examples(self, examples: tf.data.Dataset,
                      source: Source) -> None:
    """Raises UsageError if an example has not one tag per word.

    Cutting the longer to the shorter would pair words with other words'
    tags; the first such example is named, so it can be fixed.
    """
    words, tags = self.text_key, self.label_key
    found = tfds_io.first_example_where(
        examples,
        lambda ex: tf.size(ex[words]) != tf.size(ex[tags]),
        lambda ex: (ex[words], tf.size(ex[tags])))
    if found:
      index, (text, n_tags) = found
      fix = ('Fix or remove that example in the dataset, or bind '
             'TaggingInputs.text_key and label_key to features of one tag '
             'per word.' if source.is_split else
             'Fix or remove that example.')
      raise UsageError(
          f'Example {index} of {source.described} has '
          f'{len(text)} words ({words!r}) but {n_tags} tags ({tags!r}); its '
          f'words begin {tfds_io.first_words(text)}. A tagging dataset '
          f'needs one tag per word, and which tag goes with which word '
          f'cannot be guessed. {fix}')

  def _words_and_labels(self, examples: tf.data.Dataset) -> tf.data.Dataset:
    def words_and_tags(ex):
      # One tag per word (see _check_examples); both cut to max_len.
      words, tags = ex[self.text_key], tf.cast(ex[self.label_key], tf.int32)
      if self._rewrite is not None:
        tags = _as_iob2(tags, *self._rewrite)
      return words[:self.max_len], tags[:self.max_len]
    return examples.map(words_and_tags, num_parallel_calls=tf.data.AUTOTUNE)

  def _padded_shapes(self):
    return ([self.max_len, *self._per_word()], [self.max_len])

  def _pad_to_boundary(self, ids, tags):
    padded, _ = super()._pad_to_boundary(ids, None)
    if tags is not None:
      tags = tf.pad(tags, [[0, 0], [0, tf.shape(padded)[1] - tf.shape(tags)[1]]])
    return padded, tags


def _with_weights(ids, labels):
  """Weight 1 for each real label: every text, or every real word's tag."""
  if labels.shape.rank == 1:
    return ids, labels, tf.ones_like(labels, tf.float32)
  words = ids[..., 0] if ids.shape.rank == 3 else ids
  return ids, labels, tf.cast(words != PAD_ID, tf.float32)


def _iob2_tables(labels: list[str]) -> tuple[tf.Tensor, tf.Tensor]:
  """(each tag's entity type, -1 for O; the id of B- of each I- tag's
  type, or the tag's own id): what `_as_iob2` looks up."""
  unreadable = tag_scheme.unreadable(labels)
  missing = [t for t in labels if t.startswith('I-')
             and f'B-{t[2:]}' not in labels]
  if unreadable or missing:
    raise UsageError(
        f'TaggingInputs.to_iob2 rewrites IOB1 tags as IOB2, which needs tags '
        f'named O, B-TYPE and I-TYPE, with a B- tag for every type among the '
        f'dataset\'s tag names; they are {labels}, which it cannot rewrite. '
        f'Convert the dataset\'s tags to IOB2 (a B- tag for each type), or '
        f'bind TaggingInputs.to_iob2 = False.')
  types = sorted({t[2:] for t in labels if t != 'O'})
  kind = [types.index(t[2:]) if t != 'O' else -1 for t in labels]
  begin = [labels.index(f'B-{t[2:]}') if t.startswith('I-') else i
           for i, t in enumerate(labels)]
  return tf.constant(kind, tf.int32), tf.constant(begin, tf.int32)


def _as_iob2(tags: tf.Tensor, kind: tf.Tensor, begin: tf.Tensor) -> tf.Tensor:
  """int32[n] tag ids, each I-X that follows no B-X or I-X made B-X (as
  `tag_scheme.as_iob2` does to names)."""
  previous_kind = tf.concat([[-1], tf.gather(kind, tags[:-1])], axis=0)
  begins = tf.not_equal(tf.gather(begin, tags), tags) & tf.not_equal(
      previous_kind, tf.gather(kind, tags))
  return tf.where(begins, tf.gather(begin, tags), tags)


def _merged(counts: collections.Counter, key: Any) -> collections.Counter:
  """`counts` of words, counted again as the vocabulary knows them (`key`
  of a string tensor, e.g. lower-cased)."""
  if not counts:
    return counts
  words = list(counts)
  merged = collections.Counter()
  for word, known_as in zip(words, key(tf.constant(words)).numpy()):
    merged[known_as] += counts[word]
  return merged
