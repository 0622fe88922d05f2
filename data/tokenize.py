"""How text becomes tokens (TF string ops, usable inside tf.data pipelines)."""

import tensorflow as tf


def split_words(text: tf.Tensor) -> tf.Tensor:
  """string -> string[n]: lower-cased words; punctuation marks are words too."""
  text = lower(text)
  text = tf.strings.regex_replace(text, r'<br\s*/?>', ' ')  # IMDB line breaks
  text = tf.strings.regex_replace(text, r"([^\pL\pN\s'])", r' \1 ')
  return split_at_spaces(text)


def words_as_typed(text: str) -> list[str]:
  """The words a tagger tags in `text`, as typed (str): split as in training."""
  return [w.decode('utf-8') for w in split_at_spaces(text).numpy()]


def lower(text: tf.Tensor) -> tf.Tensor:
  """`text` (strings of any shape) lower-cased, not only ASCII capitals."""
  return tf.strings.lower(text, encoding='utf-8')


def split_at_spaces(text: tf.Tensor) -> tf.Tensor:
  """string -> string[n], split at whitespace.

  trax turns on TF's NumPy behaviour, under which tf.strings.split of a
  scalar fails (it indexes with an empty list), so a 1-element vector is
  split instead.
  """
  return tf.strings.split(tf.reshape(text, [1])).values


def split_chars(text: tf.Tensor) -> tf.Tensor:
  """string -> string[n]: the characters of `text` (UTF-8 code points)."""
  return tf.strings.unicode_split(tf.reshape(text, [1]), 'UTF-8').values


def split_text(text: tf.Tensor, level: str) -> tf.Tensor:
  """string -> string[n]: the tokens of `text` at `level` 'char' or 'word'."""
  return split_chars(text) if level == 'char' else split_words(text)
