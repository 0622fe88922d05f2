"""Character-level language-model input pipeline over any TFDS text dataset.

Every example's text becomes character ids, is cut into windows of
`seq_len` characters (the last window of an example is padded, and padding
gets loss weight 0), and windows are batched as trax expects:
(inputs int32[batch, seq_len], targets int32[batch, seq_len],
weights f32[batch, seq_len]) with inputs == targets, since the model shifts
its input right by itself.

With `streaming`, training reads the split as `batch_size` contiguous
streams instead (data/streams.py) for a model that carries its state from
batch to batch (RNNLanguageModel with stateful=True, which this asks for
through `model_dimensions`): batches are (previous characters, reset flags,
characters, weights), and `stream_batches` gives a split's streams for
evaluation.
"""

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from trax import shapes

from data import streams
from data.inputs import Batch, Inputs
from data.vocab import CharVocab, FIRST_CHAR_ID, PAD_ID, UNK_ID, check_kind
from rnn_toolkit.errors import UsageError


class CharLMInputs(Inputs):
  """Builds the vocabulary and the train/eval batch streams of one dataset.

  Args:
    dataset: TFDS name of a dataset with a text feature.
    text_key: name of the text feature.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    train_split: split to train on and to build the vocabulary from.
    eval_split: split evaluated during training.
    seq_len: characters per training window.
    batch_size: windows per batch.
    shuffle_buffer: windows held in the shuffle buffer.
    vocab_max_examples: training examples read to build the vocabulary.
    data_shards: parts the training split is read in (see `train_shards`);
      None: one per process, so each host of a multi-host run reads only
      its own part. The data order depends on it, so pin it to compare runs
      on different numbers of hosts. Windows only: every process lays out
      the same streams from the whole split.
    download: whether TFDS may download an absent dataset.
    streaming: train on contiguous streams with carried state (truncated
      BPTT) rather than on shuffled windows that each start from zeros.
    reset_each_epoch: streaming: start every stream from a zero state at
      the start of each epoch (streams then begin at new characters).
    stream_warmup: characters an evaluation stream that begins inside a
      document reads before it scores (see data/streams.py).
  """

  task = 'language_model'  # rnn_toolkit/tasks.py

  def __init__(self, dataset: str = 'tiny_shakespeare', text_key: str = 'text',
               data_dir: str | None = None, train_split: str = 'train',
               eval_split: str = 'validation', seq_len: int = 256,
               batch_size: int = 64, shuffle_buffer: int = 10_000,
               vocab_max_examples: int = 100_000,
               data_shards: int | None = None, download: bool = True,
               streaming: bool = False, reset_each_epoch: bool = True,
               stream_warmup: int = 256):
    self.text_key = text_key
    self.seq_len = seq_len
    self.vocab_max_examples = vocab_max_examples
    self.streaming = streaming
    self.reset_each_epoch = reset_each_epoch
    self.stream_warmup = stream_warmup
    self._documents: dict[str, list[str]] = {}
    super().__init__(
        dataset=dataset, data_dir=data_dir, train_split=train_split,
        eval_split=eval_split, batch_size=batch_size,
        shuffle_buffer=shuffle_buffer, data_shards=data_shards,
        download=download, features={'text': text_key},
        positive={'seq_len': seq_len, 'batch_size': batch_size,
                  'shuffle_buffer': shuffle_buffer,
                  'vocab_max_examples': vocab_max_examples})

  def _check_settings(self) -> None:
    if not (isinstance(self.stream_warmup, int) and self.stream_warmup >= 0):
      raise UsageError(f'CharLMInputs.stream_warmup must be a whole number '
                       f'of characters >= 0 (got {self.stream_warmup!r}). '
                       f'Fix it in your gin config.')

  def build_vocab(self) -> CharVocab:
    """Returns the CharVocab of the training split's characters."""
    ds = self._texts(self._read(self.train_split)).take(
        self.vocab_max_examples)
    vocab = CharVocab.from_texts(
        (t.decode('utf-8') for t in tfds.as_numpy(ds)), dataset=self.dataset)
    if not vocab.chars:
      raise UsageError(f'The train split {self.train_split!r} of '
                       f'{self.dataset} holds no text. Bind '
                       f'CharLMInputs.train_split to a split with examples.')
    return vocab

  def model_dimensions(self, vocab: CharVocab) -> dict[str, int]:
    """The sizes the model is built with."""
    self.check_vocab(vocab)
    return {'vocab_size': vocab.size,
            **({'stateful': True} if self.streaming else {})}

  def check_vocab(self, vocab: Any) -> None:
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""
    check_kind(vocab, CharVocab, type(self).__name__)

  def input_signature(self) -> Any:
    """The model input of a batch: int32[batch_size, seq_len], and when
    streaming, the reset flags f32[batch_size]."""
    tokens = shapes.ShapeDtype((self.batch_size, self.seq_len), np.int32)
    if not self.streaming:
      return tokens
    return tokens, shapes.ShapeDtype((self.batch_size,), np.float32)

  def check_trainable(self) -> None:
    """Raises UsageError if the streams can't be laid out (reads the split)."""
    if not self.streaming:
      return
    lengths = [len(text) for text in self._split_texts(self.train_split)]
    n_chars = sum(lengths)
    where = f'the train split {self.train_split!r} of {self.dataset}'
    if self.seq_len > n_chars:
      problem = (f'a stream window of CharLMInputs.seq_len = {self.seq_len} '
                 f'characters is longer than {where}, which holds {n_chars}')
    elif self.batch_size > n_chars:
      problem = (f'CharLMInputs.batch_size = {self.batch_size} streams are '
                 f'more than the {n_chars} characters of {where}')
    elif (n := streams.count_windows(lengths, self.seq_len)) < self.batch_size:
      problem = (f'{where} makes only {n} windows of {self.seq_len} '
                 f'characters, fewer than the {self.batch_size} streams of '
                 f'CharLMInputs.batch_size')
    else:
      return
    raise UsageError(f'Streaming training cannot start: {problem}. Lower '
                     f'CharLMInputs.seq_len or CharLMInputs.batch_size, or '
                     f'train on a larger split. Nothing was written.')

  def train_batches(self, vocab: CharVocab, seed: int = 0, start: int = 0,
                    process_index: int = 0,
                    process_count: int = 1) -> Any:
    """Windowed: `Inputs.train_batches`. Streaming: the streams of
    data/streams.py, each process keeping its rows of every global batch."""
    if not self.streaming:
      return super().train_batches(vocab, seed, start, process_index,
                                   process_count)
    self.check_trainable()
    per_process = self.batch_size // process_count
    mine = slice(process_index * per_process,
                 (process_index + 1) * per_process)
    return streams.training_batches(
        self.encoded_texts(vocab, self.train_split), self.seq_len,
        self.batch_size, seed, start, self.reset_each_epoch, keep_rows=mine)

  def eval_batches(self, vocab: CharVocab, split: str | None = None,
                   rows: slice = slice(None),
                   examples: tf.data.Dataset | None = None) -> Any:
    """`Inputs.eval_batches`; when streaming, as a stateful model reads
    them: each window from a zero state, its input ids shifted here."""
    batches = super().eval_batches(vocab, split, rows, examples)
    return map(_as_reset_windows, batches) if self.streaming else batches

  def stream_batches(self, vocab: CharVocab, split: str | None = None,
                     rows: slice = slice(None),
                     examples: tf.data.Dataset | None = None,
                     n_streams: int | None = None) -> list[Batch]:
    """A split (default eval_split), or `examples`, as `n_streams` streams
    (default `batch_size`).

    Every character is scored once, each example as one document read from
    a zero state (data/streams.evaluation_streams); batches are (previous
    characters, reset flags, characters, weights), of which `rows` are kept.
    """
    if examples is None:
      texts = self._split_texts(split or self.eval_split)
    else:
      _, examples = self._eval_examples(split, examples)
      texts = [t.decode('utf-8')
               for t in tfds.as_numpy(self._texts(examples))]
    documents = [np.asarray(vocab.encode(t), np.int32) for t in texts]
    batches = streams.evaluation_streams(
        documents, self.seq_len, n_streams or self.batch_size,
        self.stream_warmup)
    return [tuple(a[rows] for a in batch) for batch in batches]

  def _train_stream(self, vocab: CharVocab, examples: tf.data.Dataset,
                    seed: int, rows: int,
                    fixed_shape: bool) -> tf.data.Dataset:
    """Shuffled batches of windows, repeated without end.

    Window boundaries move each epoch: each text is cut at a random offset.
    """
    del fixed_shape  # every window has seq_len characters
    encode = _encoder(vocab)
    seq_len = self.seq_len

    def windows(index, text):
      ids = encode(text)
      seed_pair = tf.stack([tf.cast(seed, tf.int64), index])
      offset = _random_offset(tf.size(ids), seq_len, seed_pair)
      return tf.data.Dataset.from_tensor_slices(
          _cut_at(ids, offset, seq_len))

    return (self._texts(examples)
            .shuffle(1_000, seed=seed)              # examples
            .repeat()
            .enumerate()                            # (index, text)
            .flat_map(windows)                      # windows
            .shuffle(self.shuffle_buffer, seed=seed)
            .batch(rows, drop_remainder=True)
            .map(_with_weights, num_parallel_calls=tf.data.AUTOTUNE))

  def _eval_stream(self, vocab: CharVocab,
                   examples: tf.data.Dataset) -> tf.data.Dataset:
    """Every character once, in windows cut at 0, seq_len, ...; the last
    window of a text is padded, with weight 0."""
    encode = _encoder(vocab)
    seq_len = self.seq_len
    return (self._texts(examples)
            .flat_map(lambda t: tf.data.Dataset.from_tensor_slices(
                _cut(encode(t), seq_len)))
            .batch(self.batch_size)
            .map(_with_weights))

  def _split_texts(self, split: str) -> list[str]:
    """The texts of `split`, in order, read once."""
    if split not in self._documents:
      self._check_split(split)
      self._documents[split] = [
          t.decode('utf-8') for t in tfds.as_numpy(self._texts(
              self._read(split)))]
    return self._documents[split]

  def encoded_texts(self, vocab: CharVocab, split: str) -> list[np.ndarray]:
    """The texts of `split`, in order, as int32 character ids."""
    return [np.asarray(vocab.encode(t), np.int32)
            for t in self._split_texts(split)]

  def _texts(self, examples: tf.data.Dataset) -> tf.data.Dataset:
    """The text feature of `examples`, as a tf.data.Dataset of strings."""
    return examples.map(lambda ex: ex[self.text_key])


def _encoder(vocab):
  """Returns a TF function mapping a UTF-8 string to int32 character ids."""
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant([ord(c) for c in vocab.chars], tf.int32),
          tf.range(FIRST_CHAR_ID, vocab.size, dtype=tf.int32)),
      default_value=UNK_ID)
  return lambda text: table.lookup(tf.strings.unicode_decode(text, 'UTF-8'))


def _random_offset(length, seq_len, seed_pair):
  """A start offset in [0, seq_len) for texts longer than one window, else 0."""
  limit = tf.where(length > seq_len, seq_len, 1)
  return tf.random.stateless_uniform([], seed_pair, 0, limit, dtype=tf.int32)


def _cut(ids, seq_len):
  """int32[n] -> int32[ceil(n / seq_len), seq_len], the tail padded with PAD_ID."""
  pad = (-tf.size(ids)) % seq_len
  return tf.reshape(tf.pad(ids, [[0, pad]], constant_values=PAD_ID),
                    [-1, seq_len])


def _cut_at(ids, offset, seq_len):
  """Windows whose boundaries sit at `offset` + k·seq_len; no id is dropped.

  The text before the offset becomes a short window of its own, so the start
  of every example is trained on in every epoch.
  """
  return tf.concat([_cut(ids[:offset], seq_len), _cut(ids[offset:], seq_len)],
                   axis=0)


def _as_reset_windows(batch):
  """(tokens, tokens, weights) -> (previous tokens, resets of 1, tokens, weights)."""
  tokens, targets, weights = batch
  previous = np.concatenate(
      [np.full_like(tokens[:, :1], PAD_ID), tokens[:, :-1]], axis=1)
  return previous, np.ones(len(tokens), np.float32), targets, weights


def _with_weights(windows):
  weights = tf.cast(tf.not_equal(windows, PAD_ID), tf.float32)
  return windows, windows, weights
