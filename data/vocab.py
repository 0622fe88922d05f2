"""Character vocabulary: built from a training split, saved with the run."""

import collections
import json
import os

PAD_ID = 0  # padding, and the "previous token" the model sees at position 0
UNK_ID = 1  # characters not seen when the vocabulary was built
FIRST_CHAR_ID = 2  # ids of characters start here


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
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump({'type': 'char', 'dataset': self.dataset, 'pad_id': PAD_ID,
                 'unk_id': UNK_ID, 'chars': self.chars}, f, ensure_ascii=False)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path):
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
    return cls(saved['chars'], saved.get('dataset'))

  def __eq__(self, other):
    return isinstance(other, CharVocab) and self.chars == other.chars
