"""Many-to-many input pipeline: parallel text, for encoder-decoder models.

Batches are (source int32[batch, max_source_len], target
int32[batch, max_target_len], the same target again, weights
f32[batch, max_target_len]): the model reads the source and the target
(which it shifts right by itself, as the language model does), and the
loss compares its output with the target. Every target ends with EOS_ID,
so the model learns where to stop; padding has weight 0.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data.pipeline import FixedShapeInputs
from data.tokenize import split_text
from data.vocab import EOS_ID, PAD_ID, TokenVocab, check_kind
from rnn_toolkit.errors import UsageError, check_positive


class Seq2SeqInputs(FixedShapeInputs):
  """What translation and captioning share: one target vocabulary, EOS-ended targets.

  Subclasses set `context_signature()`, `_context(ex)`, `_target_texts(ex)`
  (string[n], the references of an example) and `_vocab_texts(ex)`.
  """

  def __init__(self, dataset, features, level, vocab_size, min_count,
               max_target_len, **kwargs):
    super().__init__(dataset, features, **kwargs)
    check_positive(type(self).__name__, vocab_size=vocab_size,
                   min_count=min_count, max_target_len=max_target_len)
    if level not in TokenVocab.LEVELS:
      raise UsageError(f'{type(self).__name__}.level = {level!r} is not one '
                       f'of {TokenVocab.LEVELS}. Fix it in your gin config.')
    if vocab_size <= TokenVocab.FIRST_ID:
      raise UsageError(
          f'{type(self).__name__}.vocab_size = {vocab_size} leaves no id for '
          f'tokens: ids 0, 1 and 2 are padding, unknown and end of sequence. '
          f'Bind it to {TokenVocab.FIRST_ID + 1} or more.')
    self.level = level
    self.vocab_size = vocab_size
    self.min_count = min_count
    self.max_target_len = max_target_len

  def build_vocab(self):
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

  def model_dimensions(self, vocab):
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size}

  def check_vocab(self, vocab):
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, TokenVocab, type(self).__name__, level=self.level)

  def input_signature(self):
    """The model inputs of a training batch: (context, target)."""
    return (self.context_signature(),
            shapes.ShapeDtype((self.batch_size, self.max_target_len), np.int32))

  def decoding_batches(self, vocab, split=None):
    """One ordered pass over `split` for decoding: (context, references) batches.

    `context` is the model's first input for up to `batch_size` examples
    (the last batch may be short; the caller pads it as its devices need);
    `references` is, for each row, its reference texts, tokenised and
    joined as the vocabulary decodes text.
    """
    split = split or self.eval_split
    table, sep = vocab.lookup_table(), '' if self.level == 'char' else ' '

    def as_decoded(text):
      return tf.strings.reduce_join(vocab.split(text), separator=sep)

    ds = self._read(split).map(
        lambda ex: (self._context(table, ex),
                    tf.map_fn(as_decoded, self._target_texts(ex),
                              fn_output_signature=tf.string)),
        num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.padded_batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
    for context, references in tfds.as_numpy(ds):
      yield context, [[r.decode('utf-8') for r in row if r]
                      for row in references]

  def _examples(self, vocab, split, training, shuffle_seed=None):
    table = vocab.lookup_table()

    def pairs(ex):
      """Each reference its own example in training; the first one in eval."""
      texts = self._target_texts(ex)
      texts = texts if training else texts[:1]
      context = self._context(table, ex)
      return tf.data.Dataset.from_tensor_slices(texts).map(
          lambda text: (context, vocab.split(text)))

    ds = self._read(split, shuffle_seed)
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

  def _vocab_texts(self, ex):
    return self._target_texts(ex)

  def _context_fits(self, ex):
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
    The others are as in `data.pipeline.FixedShapeInputs`.
  """

  task = 'translation'

  def __init__(self, dataset='ted_hrlr_translate/pt_to_en', source_key='pt',
               target_key='en', level='word', vocab_size=8_000, min_count=1,
               max_source_len=64, max_target_len=64, data_dir=None,
               train_split='train', eval_split='validation', batch_size=64,
               shuffle_buffer=20_000, data_shards=None, download=True):
    check_positive('TranslationInputs', max_source_len=max_source_len)
    super().__init__(dataset, {'source text': source_key,
                               'target text': target_key},
                     level, vocab_size, min_count, max_target_len,
                     data_dir=data_dir, train_split=train_split,
                     eval_split=eval_split, batch_size=batch_size,
                     shuffle_buffer=shuffle_buffer, data_shards=data_shards,
                     download=download)
    self.source_key = source_key
    self.target_key = target_key
    self.max_source_len = max_source_len

  def context_signature(self):
    return shapes.ShapeDtype((self.batch_size, self.max_source_len), np.int32)

  def encode(self, vocab, texts):
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
