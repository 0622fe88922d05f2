"""Vocabularies of characters and of words: built from a training split, saved with the run."""

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
import json
from typing import Any, Self

import tensorflow as tf

from data import tokenize
from rnn_toolkit.errors import UsageError
from rnn_toolkit.storage.atomic_files import write_text_atomically
# Re-exported: the pipelines encode with them.
from rnn_toolkit.token_ids import EOS_ID, FIRST_CHAR_ID, PAD_ID, UNK_ID  # noqa: F401


class CharVocab:
  """Maps characters to ids and back; ids 0 and 1 are padding and unknown."""

  KIND = 'char'

  def __init__(self, chars: Iterable[str], dataset: str | None = None):
    self.chars = list(chars)
    self.dataset = dataset  # TFDS name of the dataset it was built from
    self._ids = {c: i + FIRST_CHAR_ID for i, c in enumerate(self.chars)}

  @classmethod
  def from_texts(cls, texts: Iterable[str], min_count: int = 1,
                 dataset: str | None = None) -> 'CharVocab':
    """Builds the vocabulary of every character seen at least `min_count` times."""
    counts = collections.Counter()
    for text in texts:
      counts.update(text)
    return cls(sorted(c for c, n in counts.items() if n >= min_count), dataset)

  @property
  def size(self) -> int:
    return len(self.chars) + FIRST_CHAR_ID

  def encode(self, text: str) -> list[int]:
    """Returns the ids of the characters of `text` (unknown ones map to UNK_ID)."""
    return [self._ids.get(c, UNK_ID) for c in text]

  def decode(self, ids: Iterable[int]) -> str:
    """Returns the text of `ids`, dropping padding and showing unknowns as '?'."""
    pieces = []
    for i in ids:
      i = int(i)
      if i >= FIRST_CHAR_ID:
        pieces.append(self.chars[i - FIRST_CHAR_ID])
      elif i == UNK_ID:
        pieces.append('?')
    return ''.join(pieces)

  def save(self, path: str) -> None:
    """Writes the vocabulary as JSON, through a temporary file and a rename."""
    _write_json(path, {'type': self.KIND, 'dataset': self.dataset,
                       'pad_id': PAD_ID, 'unk_id': UNK_ID,
                       'chars': self.chars})

  @classmethod
  def load(cls, path: str) -> Self:
    return cls.from_record(_read_checked(path, cls))

  @classmethod
  def from_record(cls, saved: Mapping[str, Any]) -> Self:
    """The vocabulary of a record `save` wrote, checked by `_read_checked`."""
    return cls(saved['chars'], saved.get('dataset'))

  def __eq__(self, other: object) -> bool:
    return isinstance(other, CharVocab) and self.chars == other.chars


class WordVocab:
  """Maps words to ids and back, and keeps the names of the labels.

  Ids 0 and 1 are padding and unknown words; the others go to the most
  frequent training words, most frequent first. `labels` are the names of
  the classes (or tags) the model predicts, in id order.
  """

  KIND = 'word'

  def __init__(self, words: Iterable[str], labels: Iterable[str],
               dataset: str | None = None, chars: Iterable[str] = ()):
    self.words = list(words)
    self.labels = list(labels)
    self.dataset = dataset  # TFDS name of the dataset it was built from
    # The characters of the training words, for models that read them
    # (models/word_features.py); ids from FIRST_CHAR_ID, as CharVocab's.
    self.chars = list(chars)

  @classmethod
  def from_counts(cls, counts: Mapping[str | bytes, int], max_size: int,
                  min_count: int = 1, labels: Iterable[str] = (),
                  dataset: str | None = None) -> 'WordVocab':
    """The `max_size - 2` most frequent words seen at least `min_count` times.

    Ties are broken alphabetically, so the vocabulary doesn't depend on the
    order the words were counted in.
    """
    ranked = sorted(((-n, w) for w, n in counts.items() if n >= min_count))
    words = [w.decode('utf-8') if isinstance(w, bytes) else w
             for _, w in ranked[:max_size - FIRST_CHAR_ID]]
    return cls(words, labels, dataset)

  @property
  def size(self) -> int:
    return len(self.words) + FIRST_CHAR_ID

  def lookup_table(self) -> tf.lookup.StaticHashTable:
    """A TF table from word to id, unknown words to UNK_ID."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.words, tf.string),
            tf.range(FIRST_CHAR_ID, self.size, dtype=tf.int32)),
        default_value=UNK_ID)

  def decode(self, ids: Iterable[int]) -> list[str]:
    """The words of `ids`, padding dropped and unknown words shown as '<unk>'."""
    return [self.words[i - FIRST_CHAR_ID] if i >= FIRST_CHAR_ID else '<unk>'
            for i in map(int, ids) if i != PAD_ID]

  @property
  def n_chars(self) -> int:
    """Character ids, padding and unknown included; 0 without characters."""
    return len(self.chars) + FIRST_CHAR_ID if self.chars else 0

  def char_table(self) -> tf.lookup.StaticHashTable:
    """A TF table from character to id, unknown characters to UNK_ID."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.chars or [''], tf.string),
            tf.range(FIRST_CHAR_ID, FIRST_CHAR_ID + max(len(self.chars), 1),
                     dtype=tf.int32)),
        default_value=UNK_ID)

  def save(self, path: str) -> None:
    _write_json(path, {'type': self.KIND, 'dataset': self.dataset,
                       'pad_id': PAD_ID, 'unk_id': UNK_ID,
                       'labels': self.labels, 'words': self.words,
                       **({'chars': self.chars} if self.chars else {})})

  @classmethod
  def load(cls, path: str) -> Self:
    return cls.from_record(_read_checked(path, cls))

  @classmethod
  def from_record(cls, saved: Mapping[str, Any]) -> Self:
    """The vocabulary of a record `save` wrote, checked by `_read_checked`."""
    return cls(saved['words'], saved['labels'], saved.get('dataset'),
               saved.get('chars', ()))

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, WordVocab) and self.words == other.words
            and self.labels == other.labels and self.chars == other.chars)


class TokenVocab:
  """Tokens of text a model reads and writes: characters or words.

  Ids 0, 1 and 2 are padding, unknown tokens and the end of a sequence
  (EOS); the others go to the most frequent training tokens. Text is split
  into characters (`level='char'`) or into lower-cased words and
  punctuation marks (`level='word'`); decoding joins words with spaces.
  """

  KIND = 'tokens'
  LEVELS = ('char', 'word')
  FIRST_ID = EOS_ID + 1

  def __init__(self, tokens: Iterable[str], level: str,
               dataset: str | None = None):
    if level not in self.LEVELS:
      raise ValueError(f'Unknown token level {level!r}; choose one of '
                       f'{self.LEVELS}.')
    self.tokens = list(tokens)
    self.level = level
    self.dataset = dataset
    self._ids = {t: i + self.FIRST_ID for i, t in enumerate(self.tokens)}

  @classmethod
  def from_counts(cls, counts: Mapping[str | bytes, int], level: str,
                  max_size: int, min_count: int = 1,
                  dataset: str | None = None) -> 'TokenVocab':
    """The `max_size - 3` most frequent tokens seen `min_count` times or more."""
    ranked = sorted(((-n, t) for t, n in counts.items() if n >= min_count))
    tokens = [t.decode('utf-8') if isinstance(t, bytes) else t
              for _, t in ranked[:max_size - cls.FIRST_ID]]
    return cls(tokens, level, dataset)

  @property
  def size(self) -> int:
    return len(self.tokens) + self.FIRST_ID

  def split(self, text: tf.Tensor) -> tf.Tensor:
    """string -> string[n]: the tokens of a TF string, as in training."""
    return tokenize.split_text(text, self.level)

  def lookup_table(self) -> tf.lookup.StaticHashTable:
    """A TF table from token to id, unknown tokens to UNK_ID."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.tokens or [''], tf.string),
            tf.range(self.FIRST_ID, self.FIRST_ID + max(len(self.tokens), 1),
                     dtype=tf.int32)),
        default_value=UNK_ID)

  def encode(self, text: str) -> list[int]:
    """int32 ids of the tokens of `text` (str), without EOS."""
    return [self._ids.get(t, UNK_ID)
            for t in self.split(tf.constant(text)).numpy().astype(str)]

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids` up to the first EOS; padding dropped, unknowns '?'."""
    pieces = []
    for i in map(int, ids):
      if i == EOS_ID:
        break
      if i >= self.FIRST_ID:
        pieces.append(self.tokens[i - self.FIRST_ID])
      elif i == UNK_ID:
        pieces.append('?' if self.level == 'char' else '<unk>')
    return ('' if self.level == 'char' else ' ').join(pieces)

  def save(self, path: str) -> None:
    _write_json(path, {'type': self.KIND, 'level': self.level,
                       'dataset': self.dataset, 'pad_id': PAD_ID,
                       'unk_id': UNK_ID, 'eos_id': EOS_ID,
                       'tokens': self.tokens})

  @classmethod
  def load(cls, path: str) -> Self:
    return cls.from_record(_read_checked(path, cls))

  @classmethod
  def from_record(cls, saved: Mapping[str, Any]) -> Self:
    """The vocabulary of a record `save` wrote, checked by `_read_checked`."""
    return cls(saved['tokens'], saved['level'], saved.get('dataset'))

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, TokenVocab) and self.tokens == other.tokens
            and self.level == other.level)


class LabelVocab:
  """Only class names: for models whose input needs no vocabulary."""

  KIND = 'labels'

  def __init__(self, labels: Iterable[str], dataset: str | None = None):
    self.labels = list(labels)
    self.dataset = dataset

  def save(self, path: str) -> None:
    _write_json(path, {'type': self.KIND, 'dataset': self.dataset,
                       'labels': self.labels})

  @classmethod
  def load(cls, path: str) -> Self:
    return cls.from_record(_read_checked(path, cls))

  @classmethod
  def from_record(cls, saved: Mapping[str, Any]) -> Self:
    """The vocabulary of a record `save` wrote, checked by `_read_checked`."""
    return cls(saved['labels'], saved.get('dataset'))

  def __eq__(self, other: object) -> bool:
    return isinstance(other, LabelVocab) and self.labels == other.labels


def load_vocab(path: str) -> 'Vocab':
  """Reads a vocabulary saved with `save`, of whichever kind it is.

  Raises:
    UsageError: the file cannot be read, is not JSON, or is not a
      vocabulary as `save` writes one (see `_problem`).
  """
  record = _read_json(path)
  cls = KINDS[_kind(path, record)]
  return cls.from_record(_checked(path, record, cls))


def check_kind(vocab: Any, expected: type, reader: str,
               level: str | None = None) -> None:
  """Raises UsageError unless `vocab` is an `expected` (a vocabulary class).

  A vocab.json of another kind than the run's inputs read, or of tokens of
  another `level` (TokenVocab), belongs to another run; `reader` names
  those inputs in the message.
  """
  if not isinstance(vocab, expected):
    found, needed = f'a {_kind_of(vocab)}', f'a {expected.KIND}'
  elif level is not None and vocab.level != level:
    found, needed = f'a {vocab.level}-level', f'a {level}-level'
  else:
    return
  raise UsageError(
      f'The run\'s vocabulary (vocab.json) is {found} vocabulary, but '
      f'{reader} reads its data with {needed} vocabulary, so the file '
      f'belongs to another run. {_FIX}')


def size_mismatch(dimensions: Mapping[str, int],
                  saved: Sequence[Sequence[int]],
                  shapes_of: Callable[[Mapping[str, int]],
                                      list[tuple[int, ...]]],
                  step: int) -> UsageError | None:
  """The UsageError of a checkpoint trained with another vocabulary size.

  Args:
    dimensions: the model's sizes that the vocabulary gives
      (`inputs.model_dimensions(vocab)`: vocab_size, n_classes...).
    saved: the shapes of the checkpoint's flat weights.
    shapes_of: sizes -> the shapes of the flat weights of the run's model
      built with them.
    step: the checkpoint's step.

  Returns:
    The error, when the checkpoint's shapes are those of the model built
    with one of `dimensions` changed (to the size the checkpoint was
    trained with); None when they agree, or when no such change explains
    them (the config changed, say).
  """
  saved = [tuple(s) for s in saved]
  wanted = shapes_of(dimensions)
  for name, theirs in _sizes_that_differ(dimensions, saved, wanted):
    if shapes_of(_resized(dimensions, name, theirs)) == saved:
      return UsageError(
          f'The checkpoint at step {step} does not fit the run\'s '
          f'vocabulary: vocab.json gives {name} = {dimensions[name]}, but '
          f'the checkpoint was trained with {name} = {theirs}, so vocab.json '
          f'was changed or replaced after training. {_FIX}')
  return None


def _resized(dimensions, name, size):
  """`dimensions` with `name` = `size`. A CRF tagger is also built with its
  tag names, as many as n_tags: 'O's of the new number stand in for them
  (only the weights' shapes are wanted)."""
  resized = {**dimensions, name: size}
  if name == 'n_tags' and 'tag_names' in dimensions:
    resized['tag_names'] = ('O',) * size
  return resized


def _sizes_that_differ(dimensions, saved, wanted):
  """(name, the checkpoint's size) where a shape the model has of one of
  `dimensions` differs from the checkpoint's; the candidates to try."""
  found = []
  for theirs_shape, ours_shape in zip(saved, wanted):
    if len(theirs_shape) != len(ours_shape):
      continue
    for theirs, ours in zip(theirs_shape, ours_shape):
      found += [(name, theirs) for name, value in dimensions.items()
                if value == ours != theirs and (name, theirs) not in found]
  return found


def _kind_of(vocab):
  return getattr(vocab, 'KIND', type(vocab).__name__)


def _write_json(path, record):
  """Writes `record` as JSON, atomically and durably."""
  write_text_atomically(path, json.dumps(record, ensure_ascii=False))


# How to fix a vocab.json that cannot be used: train.py writes it once,
# when a run starts, and the checkpoints' weights are for its ids only.
_FIX = ('Restore the run\'s own vocab.json from a copy, or train a new run '
        'in another --output_dir.')


def _damaged(path, problem):
  """The UsageError of a vocabulary file with `problem`."""
  return UsageError(f'The vocabulary file {path} cannot be used: {problem}. '
                    f'A run must keep the vocabulary its model was trained '
                    f'with. {_FIX}')


def _read_json(path):
  """The JSON object in `path`; UsageError if it is anything else."""
  try:
    with open(path, encoding='utf-8') as f:
      record = json.load(f)
  except json.JSONDecodeError as e:
    raise _damaged(path, f'it is not valid JSON ({e.msg} at line {e.lineno}, '
                         f'column {e.colno}); it may have been cut short or '
                         f'edited') from None
  except UnicodeDecodeError:
    raise _damaged(path, 'it is not UTF-8 text') from None
  except OSError as e:
    raise _damaged(path, f'it cannot be read ({e.strerror})') from None
  if not isinstance(record, dict):
    raise _damaged(path, f'it holds a JSON {_json_type(record)} where an '
                         f'object of the vocabulary\'s fields belongs')
  return record


def _read_checked(path, cls):
  """The record of a `cls` vocabulary in `path`, checked field by field."""
  record = _read_json(path)
  kind = _kind(path, record)
  if kind != cls.KIND:
    raise _damaged(path, f'it is a {kind!r} vocabulary, not a '
                         f'{cls.KIND!r} one')
  return _checked(path, record, cls)


def _kind(path, record):
  """The kind of vocabulary `record` says it is, one of KINDS."""
  kind = record.get('type', 'char')  # the first versions wrote no type
  if not isinstance(kind, str) or kind not in KINDS:
    raise _damaged(path, f'its type {kind!r} is none of '
                         f'{", ".join(map(repr, KINDS))}')
  return kind


def _checked(path, record, cls):
  """`record`, if its fields are those of a `cls` vocabulary."""
  problem = _problem(record, cls)
  if problem:
    raise _damaged(path, problem)
  return record


# The lists of strings each kind of vocabulary holds: the first gives the
# ids of the tokens, the others the names of the classes.
_LISTS = {'char': ('chars',), 'word': ('words', 'labels'),
          'tokens': ('tokens',), 'labels': ('labels',)}
# The reserved ids a file records, and this toolkit's.
_RESERVED = {'pad_id': PAD_ID, 'unk_id': UNK_ID, 'eos_id': EOS_ID}


def _problem(record, cls):
  """What is wrong with the fields of `record`, a `cls` vocabulary, or None."""
  for field in _LISTS[cls.KIND]:
    problem = _list_problem(record, field, one_char=field == 'chars')
    if problem:
      return problem
  if cls.KIND == 'tokens' and record.get('level') not in TokenVocab.LEVELS:
    return (f'its \'level\' is {record.get("level")!r}, not one of '
            f'{TokenVocab.LEVELS}')
  dataset = record.get('dataset')
  if dataset is not None and not isinstance(dataset, str):
    return f'its \'dataset\' is {dataset!r}, not a dataset name'
  for field, wanted in _RESERVED.items():
    if field in record and record[field] != wanted:
      return (f'it gives {field} = {record[field]!r}, where this toolkit '
              f'uses {wanted}')
  return None


def _list_problem(record, field, one_char):
  """What is wrong with `record[field]`, a list of unique strings, or None."""
  if field not in record:
    return f'it has no {field!r} field'
  items = record[field]
  if not isinstance(items, list):
    return (f'its {field!r} is a JSON {_json_type(items)}, not a list of '
            f'strings')
  if not items:
    return f'its {field!r} list is empty'
  first_seen = {}
  for i, item in enumerate(items):
    if not isinstance(item, str):
      return (f'its {field!r} holds {item!r} (item {i}), a JSON '
              f'{_json_type(item)}, not a string')
    if one_char and len(item) != 1:
      return f'its {field!r} holds {item!r} (item {i}), not one character'
    if item in first_seen:
      return (f'its {field!r} holds {item!r} twice (items {first_seen[item]} '
              f'and {i}), which would give it two ids')
    first_seen[item] = i
  return None


def _json_type(value):
  """The JSON name of the type of a value `json.load` returned."""
  for python_type, name in ((bool, 'boolean'), (dict, 'object'),
                            (list, 'array'), (str, 'string'),
                            ((int, float), 'number')):
    if isinstance(value, python_type):
      return name
  return 'null'


KINDS = {cls.KIND: cls for cls in (CharVocab, WordVocab, TokenVocab,
                                   LabelVocab)}

# Any kind of vocabulary: what a pipeline's build_vocab returns.
Vocab = CharVocab | WordVocab | TokenVocab | LabelVocab
