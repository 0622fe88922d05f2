"""Vocabularies of characters and of words: built from a training split, saved with the run."""

import collections
import json
import os

import tensorflow as tf

from data import tokenize

PAD_ID = 0  # padding, and the "previous token" the model sees at position 0
UNK_ID = 1  # characters not seen when the vocabulary was built
FIRST_CHAR_ID = 2  # ids of characters start here
EOS_ID = 2  # TokenVocab: the end of a sequence; its tokens start at 3


class CharVocab:
  """Maps characters to ids and back; ids 0 and 1 are padding and unknown."""

  def __init__(self, chars, dataset=None):
    self.chars = list(chars)
    self.dataset = dataset  # TFDS name of the dataset it was built from
    self._ids = {c: i + FIRST_CHAR_ID for i, c in enumerate(self.chars)}

  @classmethod
  def from_texts(cls, texts, min_count=1, dataset=None):
    """Builds the vocabulary of every character seen at least `min_count` times."""
    counts = collections.Counter()
    for text in texts:
      counts.update(text)
    return cls(sorted(c for c, n in counts.items() if n >= min_count), dataset)

  @property
  def size(self):
    return len(self.chars) + FIRST_CHAR_ID

  def encode(self, text):
    """Returns the ids of the characters of `text` (unknown ones map to UNK_ID)."""
    return [self._ids.get(c, UNK_ID) for c in text]

  def decode(self, ids):
    """Returns the text of `ids`, dropping padding and showing unknowns as '?'."""
    pieces = []
    for i in ids:
      i = int(i)
      if i >= FIRST_CHAR_ID:
        pieces.append(self.chars[i - FIRST_CHAR_ID])
      elif i == UNK_ID:
        pieces.append('?')
    return ''.join(pieces)

  def save(self, path):
    """Writes the vocabulary as JSON, through a temporary file and a rename."""
    _write_json(path, {'type': 'char', 'dataset': self.dataset,
                       'pad_id': PAD_ID, 'unk_id': UNK_ID,
                       'chars': self.chars})

  @classmethod
  def load(cls, path):
    saved = _read_json(path)
    return cls(saved['chars'], saved.get('dataset'))

  def __eq__(self, other):
    return isinstance(other, CharVocab) and self.chars == other.chars


class WordVocab:
  """Maps words to ids and back, and keeps the names of the labels.

  Ids 0 and 1 are padding and unknown words; the others go to the most
  frequent training words, most frequent first. `labels` are the names of
  the classes (or tags) the model predicts, in id order.
  """

  def __init__(self, words, labels, dataset=None):
    self.words = list(words)
    self.labels = list(labels)
    self.dataset = dataset  # TFDS name of the dataset it was built from

  @classmethod
  def from_counts(cls, counts, max_size, min_count=1, labels=(), dataset=None):
    """The `max_size - 2` most frequent words seen at least `min_count` times.

    Ties are broken alphabetically, so the vocabulary doesn't depend on the
    order the words were counted in.
    """
    ranked = sorted(((-n, w) for w, n in counts.items() if n >= min_count))
    words = [w.decode('utf-8') if isinstance(w, bytes) else w
             for _, w in ranked[:max_size - FIRST_CHAR_ID]]
    return cls(words, labels, dataset)

  @property
  def size(self):
    return len(self.words) + FIRST_CHAR_ID

  def lookup_table(self):
    """A TF table from word to id, unknown words to UNK_ID."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.words, tf.string),
            tf.range(FIRST_CHAR_ID, self.size, dtype=tf.int32)),
        default_value=UNK_ID)

  def decode(self, ids):
    """The words of `ids`, padding dropped and unknown words shown as '<unk>'."""
    return [self.words[i - FIRST_CHAR_ID] if i >= FIRST_CHAR_ID else '<unk>'
            for i in map(int, ids) if i != PAD_ID]

  def save(self, path):
    _write_json(path, {'type': 'word', 'dataset': self.dataset,
                       'pad_id': PAD_ID, 'unk_id': UNK_ID,
                       'labels': self.labels, 'words': self.words})

  @classmethod
  def load(cls, path):
    saved = _read_json(path)
    return cls(saved['words'], saved['labels'], saved.get('dataset'))

  def __eq__(self, other):
    return (isinstance(other, WordVocab) and self.words == other.words
            and self.labels == other.labels)


class TokenVocab:
  """Tokens of text a model reads and writes: characters or words.

  Ids 0, 1 and 2 are padding, unknown tokens and the end of a sequence
  (EOS); the others go to the most frequent training tokens. Text is split
  into characters (`level='char'`) or into lower-cased words and
  punctuation marks (`level='word'`); decoding joins words with spaces.
  """

  LEVELS = ('char', 'word')
  FIRST_ID = EOS_ID + 1

  def __init__(self, tokens, level, dataset=None):
    if level not in self.LEVELS:
      raise ValueError(f'Unknown token level {level!r}; choose one of '
                       f'{self.LEVELS}.')
    self.tokens = list(tokens)
    self.level = level
    self.dataset = dataset
    self._ids = {t: i + self.FIRST_ID for i, t in enumerate(self.tokens)}

  @classmethod
  def from_counts(cls, counts, level, max_size, min_count=1, dataset=None):
    """The `max_size - 3` most frequent tokens seen `min_count` times or more."""
    ranked = sorted(((-n, t) for t, n in counts.items() if n >= min_count))
    tokens = [t.decode('utf-8') if isinstance(t, bytes) else t
              for _, t in ranked[:max_size - cls.FIRST_ID]]
    return cls(tokens, level, dataset)

  @property
  def size(self):
    return len(self.tokens) + self.FIRST_ID

  def split(self, text):
    """string -> string[n]: the tokens of a TF string, as in training."""
    return tokenize.split_text(text, self.level)

  def lookup_table(self):
    """A TF table from token to id, unknown tokens to UNK_ID."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.tokens or [''], tf.string),
            tf.range(self.FIRST_ID, self.FIRST_ID + max(len(self.tokens), 1),
                     dtype=tf.int32)),
        default_value=UNK_ID)

  def encode(self, text):
    """int32 ids of the tokens of `text` (str), without EOS."""
    return [self._ids.get(t, UNK_ID)
            for t in self.split(tf.constant(text)).numpy().astype(str)]

  def decode(self, ids):
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

  def save(self, path):
    _write_json(path, {'type': 'tokens', 'level': self.level,
                       'dataset': self.dataset, 'pad_id': PAD_ID,
                       'unk_id': UNK_ID, 'eos_id': EOS_ID,
                       'tokens': self.tokens})

  @classmethod
  def load(cls, path):
    saved = _read_json(path)
    return cls(saved['tokens'], saved['level'], saved.get('dataset'))

  def __eq__(self, other):
    return (isinstance(other, TokenVocab) and self.tokens == other.tokens
            and self.level == other.level)


class LabelVocab:
  """Only class names: for models whose input needs no vocabulary."""

  def __init__(self, labels, dataset=None):
    self.labels = list(labels)
    self.dataset = dataset

  def save(self, path):
    _write_json(path, {'type': 'labels', 'dataset': self.dataset,
                       'labels': self.labels})

  @classmethod
  def load(cls, path):
    saved = _read_json(path)
    return cls(saved['labels'], saved.get('dataset'))

  def __eq__(self, other):
    return isinstance(other, LabelVocab) and self.labels == other.labels


def load_vocab(path):
  """Reads a vocabulary saved with `save`, of whichever kind it is."""
  kind = _read_json(path).get('type', 'char')
  return {'char': CharVocab, 'word': WordVocab, 'tokens': TokenVocab,
          'labels': LabelVocab}[kind].load(path)


def _write_json(path, record):
  """Writes `record` as JSON through a temporary file and a rename."""
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f, ensure_ascii=False)
  os.replace(tmp, path)


def _read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)
