"""Character vocabulary: built from a training split, saved with the run."""

import collections
import json
import os

PAD_ID = 0  # padding, and the "previous token" the model sees at position 0
UNK_ID = 1  # characters not seen when the vocabulary was built
_FIRST_CHAR_ID = 2


class CharVocab:
  """Maps characters to ids and back; ids 0 and 1 are padding and unknown."""

  def __init__(self, chars):
    self.chars = list(chars)
    self._ids = {c: i + _FIRST_CHAR_ID for i, c in enumerate(self.chars)}

  @classmethod
  def from_texts(cls, texts, min_count=1):
    """Builds the vocabulary of every character seen at least `min_count` times."""
    counts = collections.Counter()
    for text in texts:
      counts.update(text)
    return cls(sorted(c for c, n in counts.items() if n >= min_count))

  @property
  def size(self):
    return len(self.chars) + _FIRST_CHAR_ID

  def encode(self, text):
    """Returns the ids of the characters of `text` (unknown ones map to UNK_ID)."""
    return [self._ids.get(c, UNK_ID) for c in text]

  def decode(self, ids):
    """Returns the text of `ids`, dropping padding and showing unknowns as '?'."""
    pieces = []
    for i in ids:
      i = int(i)
      if i >= _FIRST_CHAR_ID:
        pieces.append(self.chars[i - _FIRST_CHAR_ID])
      elif i == UNK_ID:
        pieces.append('?')
    return ''.join(pieces)

  def save(self, path):
    """Writes the vocabulary as JSON, through a temporary file and a rename."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump({'type': 'char', 'pad_id': PAD_ID, 'unk_id': UNK_ID,
                 'chars': self.chars}, f, ensure_ascii=False)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path):
    with open(path, encoding='utf-8') as f:
      return cls(json.load(f)['chars'])

  def __eq__(self, other):
    return isinstance(other, CharVocab) and self.chars == other.chars
