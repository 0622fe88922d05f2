"""Many-to-many input pipeline: parallel text, for encoder-decoder models.

Batches are (source int32[batch, max_source_len], target
int32[batch, max_target_len], the same target again, weights
f32[batch, max_target_len]): the model reads the source and the target
(which it shifts right by itself, as the language model does), and the
loss compares its output with the target. Every target ends with EOS_ID,
so the model learns where to stop; padding has weight 0.
"""

import abc
import collections
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data.pipeline import FixedShapeInputs
from data.tokenize import split_text
from data.vocab import EOS_ID, PAD_ID, TokenVocab, check_kind
from rnn_toolkit.errors import UsageError


class Seq2SeqInputs(FixedShapeInputs):
  """What translation and captioning share: one target vocabulary, EOS-ended targets.

  Subclasses set `context_signature()`, `_context(table, ex)`,
  `_target_texts(ex)` (string[n], the references of an example) and may
  set `_vocab_texts(ex)` and `_context_fits(ex)`; they set `level`,
  `vocab_size`, `min_count` and `max_target_len` before calling
  `Inputs.__init__`, with those in `positive`.
  """

  level: str
  vocab_size: int
  min_count: int
  max_target_len: int

  def _check_settings(self) -> None:
    if self.level not in TokenVocab.LEVELS:
      raise UsageError(f'{type(self).__name__}.level = {self.level!r} is not '
                       f'one of {TokenVocab.LEVELS}. Fix it in your gin '
                       f'config.')
    if self.vocab_size <= TokenVocab.FIRST_ID:
      raise UsageError(
          f'{type(self).__name__}.vocab_size = {self.vocab_size} leaves no id '
          f'for tokens: ids 0, 1 and 2 are padding, unknown and end of '
          f'sequence. Bind it to {TokenVocab.FIRST_ID + 1} or more.')

  def build_vocab(self) -> TokenVocab:
    """The TokenVocab of the training split's text (see `_vocab_texts`)."""
    vocab = TokenVocab([], self.level)
    counts = collections.Counter()
    ds = self._read(self.train_split).map(
        lambda ex: vocab.split(tf.strings.reduce_join(
            self._vocab_texts(ex), separator=' ')),
        num_parallel_calls=tf.data.AUTOTUNE)
    for tokens in tfds.as_numpy(ds):
      counts.update(tokens)
    vocab = TokenVocab.from_counts(counts, self.level, self.vocab_size,
                                   self.min_count, self.dataset)
    if not vocab.tokens:
      raise UsageError(f'No token of the train split {self.train_split!r} of '
                       f'{self.dataset} occurs {self.min_count} times or more '
                       f'(min_count). Lower {type(self).__name__}.min_count, '
                       f'or bind train_split to a split with text.')
    return vocab

  def model_dimensions(self, vocab: TokenVocab) -> dict[str, int]:
    """The sizes the model is built with: its target vocabulary."""
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size}

  def check_vocab(self, vocab: Any) -> None:
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, TokenVocab, type(self).__name__, level=self.level)

  def input_signature(self) -> tuple[shapes.ShapeDtype, shapes.ShapeDtype]:
    """The model inputs of a training batch: (context, target)."""
    return (self.context_signature(),
            shapes.ShapeDtype((self.batch_size, self.max_target_len), np.int32))

  @abc.abstractmethod
  def context_signature(self) -> shapes.ShapeDtype:
    """The model's first input (its context) of a batch."""

  def decoding_batches(self, vocab: TokenVocab, split: str | None = None,
                       examples: tf.data.Dataset | None = None
                       ) -> Iterator[tuple[np.ndarray, list[list[str]]]]:
    """One ordered pass over `split` (or `examples`) for decoding.

    Yields (context, references) batches: `context` is the model's first
    input for up to `batch_size` examples (the last batch may be short;
    the caller pads it as its devices need); `references` is, for each
    row, its reference texts, tokenised and joined as the vocabulary
    decodes text. `split` and `examples` are as in `eval_batches`.
    """
    _, examples = self._eval_examples(split, examples)
    return self._decoding_batches(vocab, examples)

  def _decoding_batches(self, vocab, examples):
    table, sep = vocab.lookup_table(), '' if self.level == 'char' else ' '

    def as_decoded(text):
      return tf.strings.reduce_join(vocab.split(text), separator=sep)

    ds = examples.map(
        lambda ex: (self._context(table, ex),
                    tf.map_fn(as_decoded, self._target_texts(ex),
                              fn_output_signature=tf.string)),
        num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.padded_batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
    for context, references in tfds.as_numpy(ds):
      yield context, [[r.decode('utf-8') for r in row if r]
                      for row in references]

  def _examples(self, vocab: TokenVocab, examples: tf.data.Dataset,
                training: bool) -> tf.data.Dataset:
    table = vocab.lookup_table()

    def pairs(ex):
      """Each reference its own example in training; the first one in eval."""
      texts = self._target_texts(ex)
      texts = texts if training else texts[:1]
      context = self._context(table, ex)
      return tf.data.Dataset.from_tensor_slices(texts).map(
          lambda text: (context, vocab.split(text)))

    ds = examples
    if training:
      ds = ds.filter(self._context_fits)
    ds = ds.flat_map(pairs)
    if training:  # a cut target would teach the model not to stop
      ds = ds.filter(lambda context, target:
                     tf.size(target) < self.max_target_len)
    return ds.map(lambda context, target: self._with_target(table, context,
                                                            target),
                  num_parallel_calls=tf.data.AUTOTUNE)

  def _with_target(self, table, context, target_tokens):
    ids = table.lookup(target_tokens)[:self.max_target_len - 1]
    target = _pad_to(tf.concat([ids, [EOS_ID]], 0), self.max_target_len)
    return context, target, target, tf.cast(target != PAD_ID, tf.float32)

  @abc.abstractmethod
  def _context(self, table: tf.lookup.StaticHashTable, ex: dict) -> tf.Tensor:
    """The model's context input of raw example `ex`."""

  @abc.abstractmethod
  def _target_texts(self, ex: dict) -> tf.Tensor:
    """string[n]: the reference texts of raw example `ex`."""

  def _vocab_texts(self, ex: dict) -> tf.Tensor:
    """string[n]: the texts of `ex` the vocabulary is built from."""
    return self._target_texts(ex)

  def _context_fits(self, ex: dict) -> tf.Tensor:
    del ex
    return True


class TranslationInputs(Seq2SeqInputs):
  """Batches of a parallel text dataset, with one vocabulary for both languages.

  Args:
    dataset: TFDS name of a dataset with a source and a target text
      feature (`ted_hrlr_translate/pt_to_en`: 'pt' and 'en'; the generated
      `date_normalisation`: 'source' and 'target').
    source_key, target_key: names of the two text features.
    level: 'char' or 'word' tokens (see data.vocab.TokenVocab).
    vocab_size: largest number of ids, padding, unknown and EOS included;
      the most frequent tokens of both sides of the training split get
      the others.
    min_count: training occurrences a token needs to get its own id.
    max_source_len: sources are cut to this many tokens; in training,
      longer ones are skipped.
    max_target_len: target tokens, EOS included; training pairs with
      longer targets are skipped, evaluation targets cut.
    The others are as in `data.inputs.Inputs`.
  """

  task = 'translation'

  def __init__(self, dataset: str = 'ted_hrlr_translate/pt_to_en',
               source_key: str = 'pt', target_key: str = 'en',
               level: str = 'word', vocab_size: int = 8_000,
               min_count: int = 1, max_source_len: int = 64,
               max_target_len: int = 64, data_dir: str | None = None,
               train_split: str = 'train', eval_split: str = 'validation',
               batch_size: int = 64, shuffle_buffer: int = 20_000,
               data_shards: int | None = None, download: bool = True):
    self.source_key = source_key
    self.target_key = target_key
    self.level = level
    self.vocab_size = vocab_size
    self.min_count = min_count
    self.max_source_len = max_source_len
    self.max_target_len = max_target_len
    super().__init__(
        dataset=dataset, data_dir=data_dir, train_split=train_split,
        eval_split=eval_split, batch_size=batch_size,
        shuffle_buffer=shuffle_buffer, data_shards=data_shards,
        download=download,
        features={'source text': source_key, 'target text': target_key},
        positive={'max_source_len': max_source_len, 'batch_size': batch_size,
                  'shuffle_buffer': shuffle_buffer, 'vocab_size': vocab_size,
                  'min_count': min_count, 'max_target_len': max_target_len})

  def context_signature(self) -> shapes.ShapeDtype:
    """int32[batch_size, max_source_len]: the source text's ids."""
    return shapes.ShapeDtype((self.batch_size, self.max_source_len), np.int32)

  def encode(self, vocab: TokenVocab, texts: list[str]) -> np.ndarray:
    """int32[len(texts), max_source_len]: `texts` as the model's source input.

    Raises:
      UsageError: a text has no tokens, or more than `max_source_len`.
    """
    rows = []
    for text in texts:
      ids = vocab.encode(text)
      if not ids:
        unit = 'character' if self.level == 'char' else 'word'
        raise UsageError(f'The source text {text!r} has no {unit}s to '
                         f'translate. Pass a text with at least one {unit}.')
      if len(ids) > self.max_source_len:
        raise UsageError(
            f'The source text {text[:40]!r}... has {len(ids)} {self.level} '
            f'tokens, more than the {self.max_source_len} the model was '
            f'trained to read (TranslationInputs.max_source_len). Split it '
            f'into shorter sentences.')
      rows.append(_pad_list(ids, self.max_source_len))
    return np.asarray(rows, np.int32)

  def _context(self, table, ex):
    ids = table.lookup(split_text(ex[self.source_key], self.level))
    return _pad_to(ids[:self.max_source_len], self.max_source_len)

  def _context_fits(self, ex):
    """A cut source may no longer say what the target says: skipped in training."""
    tokens = split_text(ex[self.source_key], self.level)
    return tf.size(tokens) <= self.max_source_len

  def _target_texts(self, ex):
    return tf.reshape(ex[self.target_key], [1])

  def _vocab_texts(self, ex):
    return tf.stack([ex[self.source_key], ex[self.target_key]])


def _pad_to(ids, length):
  """int32[n] -> int32[length], padded with PAD_ID (n <= length)."""
  return tf.pad(ids, [[0, length - tf.size(ids)]], constant_values=PAD_ID)


def _pad_list(ids, length):
  return list(ids) + [PAD_ID] * (length - len(ids))
