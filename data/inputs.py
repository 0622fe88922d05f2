"""The contract every input pipeline keeps, and what the pipelines share.

An input pipeline (`CharLMInputs`, `TextClassificationInputs`,
`TaggingInputs`, `FeatureVectorInputs`, `TranslationInputs`,
`CaptioningInputs`) turns the examples of one TFDS dataset into the batches
trax trains and evaluates on. `Inputs` declares what the rest of the toolkit
may ask of one (rnn_toolkit/training, evaluation and reporting use nothing
else), and does once what every pipeline does alike: checking its settings,
opening the dataset and checking its splits and features, reading the
training split in parts with seeded shuffles, checking a split's examples
once, and padding the last evaluation batch.

A pipeline says how examples become batches (`_train_stream`,
`_eval_stream`), what it builds its vocabulary from (`build_vocab`) and
what its model is (`model_dimensions`, `input_signature`).

Evaluation reads a split of the dataset, or any `tf.data.Dataset` of raw
examples (`eval_batches(..., examples=...)`): dicts keyed by the dataset's
feature names, holding what TFDS gives for a split (`example_spec()`), as a
user's own file does once read.
"""

import abc
from collections.abc import Iterator, Mapping
import dataclasses
from typing import Any, ClassVar, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import tfds_io
from data.batching import pad_batch
from data.vocab import Vocab
from rnn_toolkit.errors import UsageError, check_positive

# A batch as NumPy arrays: (model inputs..., targets, weights).
Batch = tuple[np.ndarray, ...]


class Feature(NamedTuple):
  """A feature a pipeline reads: its name in the dataset, and its TFDS kind.

  `spec` is the builder's FeatureConnector (`tfds.features.Text`,
  `ClassLabel` with its `names`, `Sequence`, `Image`, `Tensor`...).
  """
  name: str
  spec: tfds.features.FeatureConnector


@dataclasses.dataclass(frozen=True)
class Source:
  """Where examples are read from, as messages name it.

  Attributes:
    split: the dataset's split, or None for examples given to
      `eval_batches` / `decoding_batches`.
    described: "split 'validation' of glue/sst2", or the name the caller
      gave the examples (a file's path, ...).
  """
  split: str | None
  described: str

  @property
  def is_split(self) -> bool:
    return self.split is not None

  def capitalized(self) -> str:
    return self.described[:1].upper() + self.described[1:]


class Inputs(abc.ABC):
  """The contract of an input pipeline, and the parts every pipeline shares.

  Class attribute:
    task: the pipeline's row of rnn_toolkit/tasks.py ('language_model',
      'classification', 'vector_classification', 'tagging', 'translation',
      'captioning').

  Attributes every pipeline has:
    dataset: TFDS name of the dataset.
    builder: its prepared TFDS builder.
    train_split: split trained on (and the vocabulary built from).
    eval_split: split evaluated during training, and by default.
    batch_size: rows of a (global) batch.
    shuffle_buffer: what the training shuffle buffer holds.
    data_shards: parts the training split is read in (see `train_shards`);
      None: one per process.

  Attributes some pipelines have, as their task needs:
    labels: class or tag names (classification, vector_classification,
      tagging), from the dataset's ClassLabel feature.
    seq_len: characters per window (language_model).
    max_len: words a text is cut to (classification, tagging).
    level: 'char' or 'word' tokens (translation, captioning).
    max_target_len: target tokens, EOS included (translation, captioning).

  Methods some pipelines have (the others raise NotImplementedError):
    encode: texts typed by a user -> the model's input (classification,
      vector_classification, tagging, translation).
    load_image: an image file -> the model's input (captioning).
    context_signature, decoding_batches: models that generate (translation,
      captioning).

  Args (of every pipeline's constructor, with these names; a subclass adds
  its own):
    dataset: TFDS name of the dataset.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or
      ~/tensorflow_datasets; the toolkit's generated datasets: its cache).
    train_split, eval_split, batch_size, shuffle_buffer, data_shards: as
      the attributes.
    download: whether TFDS may download an absent dataset.
    features: {role: feature name} the pipeline reads ('text': 'sentence');
      each is checked, and named by `features()`.
    positive: {setting: value} of the subclass's settings that must be
      positive whole numbers, in the order a message lists them;
      batch_size, shuffle_buffer and (when set) data_shards are added.
  """

  task: ClassVar[str]  # rnn_toolkit/tasks.py

  dataset: str
  builder: tfds.core.DatasetBuilder
  train_split: str
  eval_split: str
  batch_size: int
  shuffle_buffer: int
  data_shards: int | None

  # Whether training reads contiguous streams with carried state
  # (CharLMInputs.streaming; data/streams.py); no other pipeline does.
  streaming: bool = False

  # Only some pipelines have these (see the class docstring).
  labels: list[str]
  seq_len: int
  max_len: int
  level: str
  max_target_len: int

  def __init__(self, *, dataset: str, data_dir: str | None, train_split: str,
               eval_split: str, batch_size: int, shuffle_buffer: int,
               data_shards: int | None, download: bool,
               features: Mapping[str, str],
               positive: Mapping[str, int] | None = None):
    check_positive(type(self).__name__,
                   **{**(positive or {}), 'batch_size': batch_size,
                      'shuffle_buffer': shuffle_buffer},
                   **({} if data_shards is None
                      else {'data_shards': data_shards}))
    self._check_settings()
    self.dataset = dataset
    self.train_split = train_split
    self.eval_split = eval_split
    self.batch_size = batch_size
    self.shuffle_buffer = shuffle_buffer
    self.data_shards = data_shards
    self.builder = tfds_io.get_builder(dataset, data_dir, download)
    for split in (train_split, eval_split):
      tfds_io.check_split(self.builder, split)
    for role, feature in features.items():
      tfds_io.check_feature(self.builder, feature, role)
    self._feature_names = dict(features)
    self._checked_splits: set[str] = set()

  # The contract: what every pipeline does.

  @abc.abstractmethod
  def build_vocab(self) -> Vocab:
    """The vocabulary of the training split (a data.vocab kind).

    Raises:
      UsageError: the split gives no vocabulary, or holds an example the
        pipeline can't use.
    """

  @abc.abstractmethod
  def check_vocab(self, vocab: Any) -> None:
    """Raises UsageError unless `vocab` (a run's) is of the kind this reads."""

  @abc.abstractmethod
  def model_dimensions(self, vocab: Vocab) -> dict[str, int]:
    """The sizes the model is built with ('vocab_size', 'n_classes'...)."""

  @abc.abstractmethod
  def input_signature(self) -> Any:
    """The model input of a training batch: a trax ShapeDtype, or a tuple of them."""

  def features(self) -> dict[str, Feature]:
    """{role: Feature(name, TFDS spec)} of every feature this reads.

    Roles are what messages call them ('text', 'label', 'numeric',
    'source text', 'target text', 'image', 'captions'); the names are the
    keys of an example (`example_spec`). A ClassLabel spec has the class
    names (`spec.names`; of tags, `spec.feature.names`).
    """
    info = self.builder.info.features
    return {role: Feature(name, info[name])
            for role, name in self._feature_names.items()}

  def example_spec(self) -> dict[str, Any]:
    """{feature name: tf.TensorSpec} of the raw examples this reads.

    What an example of a split holds of the features this reads, as TFDS
    gives it (a text a tf.string scalar, a ClassLabel int64, a Sequence a
    vector, an Image uint8[h, w, 3]); examples given to `eval_batches` must
    hold these (other keys are ignored).
    """
    info = self.builder.info.features
    return {name: info[name].get_tensor_spec()
            for name in self._feature_names.values()}

  def check_trainable(self) -> None:
    """Raises UsageError if the training split can't make batches as set.

    Called before a run writes anything; most pipelines find nothing here
    that the constructor did not (a streaming one lays out its streams).
    """

  def train_shards(self, process_count: int = 1) -> int:
    """How many parts the training split is read in; see tfds_io.train_parts.

    Raises:
      UsageError: the parts can't divide among `process_count` processes.
    """
    return tfds_io.train_parts(self, process_count)

  def train_batches(self, vocab: Vocab, seed: int = 0, start: int = 0,
                    process_index: int = 0,
                    process_count: int = 1) -> Iterator[Batch]:
    """Endless, shuffled training batches, from batch `start` of the seeded order.

    The stream is a function of `seed` and `train_shards()` alone; `start`
    skips its first batches, so a resumed run continues exactly where it
    stopped.

    Args:
      vocab: the vocabulary to encode with (`build_vocab`'s, or the run's).
      seed: seed of the data order.
      start: how many batches to skip.
      process_index: which process this is; each yields only its own rows
        of every global batch, read from its own parts of the split.
      process_count: how many processes feed the global batches.
    """
    shards = self.train_shards(process_count)
    self._check_split(self.train_split)
    # tf.data's seeded shuffles (and map functions with randomness) also
    # depend on TF's global seed, which trax's Loop sets (to the same seed)
    # when it starts. Setting it first makes the stream the same whether or
    # not a Loop ran before in this process.
    tf.random.set_seed(seed)

    def stream(split, part_seed, rows):
      examples = tfds_io.read_split(self.builder, split, shuffle_seed=part_seed)
      return self._train_stream(vocab, examples, part_seed, rows,
                                fixed_shape=shards > 1)

    ds = tfds_io.read_in_parts(self.train_split, shards, seed,
                               self.batch_size, process_index, process_count,
                               stream)
    source = self._split_source(self.train_split)
    return (self._checked(b, source)
            for b in tfds.as_numpy(ds.skip(start).prefetch(tf.data.AUTOTUNE)))

  def eval_batches(self, vocab: Vocab, split: str | None = None,
                   rows: slice = slice(None),
                   examples: tf.data.Dataset | None = None
                   ) -> Iterator[Batch]:
    """One ordered pass over `split` (default eval_split) or `examples`.

    Every example (every character, of a language model) is in one row of
    one batch; the last batch is padded to `batch_size` with rows of
    weight 0, so every batch of a bucket has the same shape.

    Args:
      vocab: the vocabulary to encode with.
      split: the split to read; with `examples`, what messages call them
        (e.g. "file 'my.tsv'"; default 'the given examples').
      rows: the rows of each batch to keep (a process's share).
      examples: raw examples to read instead of a split: a tf.data.Dataset
        of dicts as `example_spec()`.

    Raises:
      UsageError: no such split; `examples` lack a feature, or hold one of
        another dtype or rank; an example the pipeline can't use (a label
        outside the classes...), before any batch.
    """
    source, examples = self._eval_examples(split, examples)
    ds = self._eval_stream(vocab, examples).prefetch(tf.data.AUTOTUNE)
    return (tuple(a[rows] for a in pad_batch(self._checked(b, source),
                                             self.batch_size))
            for b in tfds.as_numpy(ds))

  # Optional: only pipelines whose task needs them have these.

  def encode(self, vocab: Vocab, texts: list[str]) -> np.ndarray:
    """The model's input for `texts` typed by a user, one row each."""
    raise NotImplementedError(f'{type(self).__name__} reads no typed text.')

  def load_image(self, path: str) -> np.ndarray:
    """The model's input for the image file at `path`."""
    raise NotImplementedError(f'{type(self).__name__} reads no images.')

  def context_signature(self) -> Any:
    """A generating model's first input (its context) of a batch."""
    raise NotImplementedError(f'{type(self).__name__} has no context: its '
                              f'models do not generate.')

  def decoding_batches(self, vocab: Vocab, split: str | None = None,
                       examples: tf.data.Dataset | None = None
                       ) -> Iterator[tuple[np.ndarray, list[list[str]]]]:
    """(context, references) batches to decode; see Seq2SeqInputs."""
    raise NotImplementedError(f'{type(self).__name__} has no decoding '
                              f'batches: its models do not generate.')

  # What a subclass supplies.

  def _check_settings(self) -> None:
    """Raises UsageError if a subclass's settings can't be used.

    Called after the positivity checks and before the dataset is opened;
    a subclass sets the attributes it checks before calling
    `Inputs.__init__`.
    """

  @abc.abstractmethod
  def _train_stream(self, vocab: Vocab, examples: tf.data.Dataset, seed: int,
                    rows: int, fixed_shape: bool) -> tf.data.Dataset:
    """Shuffled batches of `rows` rows from `examples`, repeated without end.

    `examples` is one part of the training split, its files shuffled with
    `seed`; shuffles use `seed` too. With `fixed_shape`, every batch has
    one shape: the parts' batches are put side by side.
    """

  @abc.abstractmethod
  def _eval_stream(self, vocab: Vocab,
                   examples: tf.data.Dataset) -> tf.data.Dataset:
    """`examples` in order, in batches of `batch_size` (the last may be short)."""

  def _check_examples(self, examples: tf.data.Dataset, source: Source) -> None:
    """Raises UsageError if an example of `examples` is one this can't use.

    Called before they are read, so a bad example is named before any
    batch (or any file of the run) is made; a split is checked once.
    """
    del examples, source  # every example will do, unless a subclass says

  def _checked(self, batch: Batch, source: Source) -> Batch:
    """`batch`, after checks that need it encoded; raises UsageError."""
    del source
    return batch

  # Shared machinery.

  def _read(self, split: str,
            shuffle_seed: int | None = None) -> tf.data.Dataset:
    """The raw examples of `split`; files shuffled if seeded."""
    return tfds_io.read_split(self.builder, split, shuffle_seed)

  def _split_source(self, split: str) -> Source:
    return Source(split, f'split {split!r} of {self.dataset}')

  def _check_split(self, split: str) -> None:
    """`_check_examples` of `split`, once per split."""
    if split in self._checked_splits:
      return
    # A pipeline that checks nothing needs no pass over the split.
    if type(self)._check_examples is not Inputs._check_examples:
      self._check_examples(self._read(split), self._split_source(split))
    self._checked_splits.add(split)

  def _eval_examples(self, split: str | None,
                     examples: tf.data.Dataset | None
                     ) -> tuple[Source, tf.data.Dataset]:
    """The checked examples to evaluate: of `split`, or `examples`."""
    if examples is None:
      split = split or self.eval_split
      tfds_io.check_split(self.builder, split)
      self._check_split(split)
      return self._split_source(split), self._read(split)
    source = Source(None, split or 'the given examples')
    self._check_given(examples, source)
    self._check_examples(examples, source)
    return source, examples

  def _check_given(self, examples: tf.data.Dataset, source: Source) -> None:
    """Raises UsageError unless `examples` hold what `example_spec` says."""
    problems = []

    def compare(want, got, name):
      if isinstance(want, dict):
        if not isinstance(got, dict):
          problems.append(f'{name!r} is not a dict of {sorted(want)}')
          return
        for key, spec in want.items():
          if key not in got:
            problems.append(f'no feature {name + key!r}')
          else:
            compare(spec, got[key], f'{name}{key}/')
        return
      name = name.rstrip('/')
      if (not isinstance(got, tf.TensorSpec) or got.dtype != want.dtype
          or not got.shape.is_compatible_with(want.shape)):
        problems.append(f'feature {name!r} is {_spec_text(got)}, not '
                        f'{_spec_text(want)}')

    compare(self.example_spec(), examples.element_spec, '')
    if problems:
      raise UsageError(
          f'{source.capitalized()} cannot be read by {type(self).__name__} '
          f'of {self.dataset}: {"; ".join(problems)}. Give examples with '
          f'the features of the dataset, as TFDS reads them.')


def _spec_text(spec: Any) -> str:
  """'int64[]', 'string[None]': how a message shows a feature's spec."""
  if not isinstance(spec, tf.TensorSpec):
    return type(spec).__name__
  shape = spec.shape.as_list() if spec.shape.rank is not None else '[...]'
  return f'{spec.dtype.name}{shape}'
