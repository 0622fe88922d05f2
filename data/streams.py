"""Texts laid out as contiguous streams, one per batch row (truncated BPTT).

A document of n characters is read as n steps: at each the model is given
the previous character (PAD_ID before the first) and predicts the current
one. It is cut into windows of `seq_len` steps; its first window, flagged as
a start, begins from a zeroed recurrent state, and its last is padded with
weight 0, so that no window holds two documents and one reset flag per row
and window is enough (models/carried_state.py).

The windows of all documents, in order, are dealt to `rows` streams as
contiguous runs: batch k holds window k of every run. A model that carries
its state from batch to batch then reads every run as one text.

- Training (`training_epoch`): each epoch shuffles the documents, cuts each
  one longer than a window at a random offset (so windows do not always
  split the same characters), rotates the whole sequence of windows by a
  random amount (so the windows left over after dealing, fewer than `rows`,
  differ from epoch to epoch) and, if asked, starts every stream afresh.
- Evaluation (`evaluation_streams`): the documents in order, every
  character scored once. A run that begins inside a document is preceded by
  up to `warmup` characters of it, read but not scored, so that its first
  scored characters have context as they would in one long stream.

Plain NumPy: a stream's position is a function of (seed, epoch, batch), so
resuming at any batch is free, and every process lays out the same global
batches and keeps its own rows.
"""

from typing import Iterator, NamedTuple, Sequence

import numpy as np

from rnn_toolkit.token_ids import PAD_ID

# A batch of streams: (input ids int32[rows, seq_len], reset f32[rows],
# target ids int32[rows, seq_len], weights f32[rows, seq_len]).
StreamBatch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Windows(NamedTuple):
  """Windows of `seq_len` steps, in text order.

  Attributes:
    inputs: int32[n, seq_len], the previous character at each step.
    targets: int32[n, seq_len], the character to predict (PAD_ID: padding).
    weights: f32[n, seq_len], 1 at real steps, 0 at padding.
    starts: bool[n], whether a document starts at the window's first step.
  """
  inputs: np.ndarray
  targets: np.ndarray
  weights: np.ndarray
  starts: np.ndarray

  def __len__(self) -> int:
    return len(self.starts)

  def take(self, index: np.ndarray) -> 'Windows':
    return Windows(*(a[index] for a in self))


def document_windows(documents: Sequence[np.ndarray], seq_len: int,
                     offsets: Sequence[int] | None = None) -> Windows:
  """Every document as whole windows, cut at offset, offset + seq_len, ...

  `offsets[i]` (default 0) is the length of document i's first window; the
  others hold seq_len steps, the last padded.
  """
  pieces = []
  for index, ids in enumerate(documents):  # pieces: (inputs, targets, start)
    ids = np.asarray(ids, np.int32)
    if not ids.size:
      continue
    offset = offsets[index] if offsets is not None else 0
    head = [ids[:offset]] if 0 < offset < ids.size else []
    rest = ids[offset:] if head else ids
    cuts = head + [rest[i:i + seq_len] for i in range(0, rest.size, seq_len)]
    position = 0
    for k, cut in enumerate(cuts):
      previous = ids[position - 1] if position else PAD_ID
      pieces.append((np.concatenate([[previous], cut[:-1]]), cut, k == 0))
      position += cut.size
  n = len(pieces)
  inputs = np.full((n, seq_len), PAD_ID, np.int32)
  targets = np.full((n, seq_len), PAD_ID, np.int32)
  weights = np.zeros((n, seq_len), np.float32)
  for row, (window_inputs, cut, _) in enumerate(pieces):
    inputs[row, :cut.size] = window_inputs
    targets[row, :cut.size] = cut
    weights[row, :cut.size] = 1.0
  return Windows(inputs, targets, weights,
                 np.array([p[2] for p in pieces], bool))


def count_windows(lengths: Sequence[int], seq_len: int) -> int:
  """How many windows documents of `lengths` characters make, cut at 0."""
  return sum(-(-n // seq_len) for n in lengths)


class _EpochPlan(NamedTuple):
  """The random choices of one training epoch."""
  order: np.ndarray        # the documents' order
  offsets: list[int]       # each (ordered) document's first cut
  n_windows: int
  rotation: int            # windows moved from the front to the back


def _epoch_plan(lengths: Sequence[int], seq_len: int, seed: int,
                epoch: int) -> _EpochPlan:
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(len(lengths))
  offsets = [int(rng.integers(seq_len)) if lengths[i] > seq_len else 0
             for i in order]
  n_windows = sum(int(0 < offset < lengths[i])
                  + -(-(lengths[i] - offset) // seq_len)
                  for i, offset in zip(order, offsets))
  return _EpochPlan(order, offsets, n_windows,
                    int(rng.integers(max(n_windows, 1))))


def training_epoch(documents: Sequence[np.ndarray], seq_len: int, rows: int,
                   seed: int, epoch: int,
                   reset_each_epoch: bool = True) -> list[StreamBatch]:
  """The batches of one training epoch: `rows` streams, each contiguous text.

  Raises:
    ValueError: the documents make fewer windows than `rows` (the caller
      checks this first, with a message naming its settings).
  """
  plan = _epoch_plan([len(d) for d in documents], seq_len, seed, epoch)
  windows = document_windows([documents[i] for i in plan.order], seq_len,
                             plan.offsets)
  per_row = len(windows) // rows
  if not per_row:
    raise ValueError(f'{len(windows)} windows cannot fill {rows} streams.')
  index = (np.arange(rows * per_row) + plan.rotation) % len(windows)
  laid_out = windows.take(index.reshape(rows, per_row))
  resets = laid_out.starts.astype(np.float32)
  if reset_each_epoch:
    resets[:, 0] = 1.0
  return [(laid_out.inputs[:, k], resets[:, k], laid_out.targets[:, k],
           laid_out.weights[:, k]) for k in range(per_row)]


def training_batches(documents: Sequence[np.ndarray], seq_len: int,
                     rows: int, seed: int, start: int = 0,
                     reset_each_epoch: bool = True,
                     keep_rows: slice = slice(None)
                     ) -> Iterator[StreamBatch]:
  """Endless training batches from batch `start` on; `keep_rows` of each."""
  lengths = [len(d) for d in documents]
  epoch, skip = 0, start
  # Epochs differ in length by the windows their offsets add.
  while skip >= (n := _epoch_plan(lengths, seq_len, seed, epoch).n_windows
                 // rows):
    skip, epoch = skip - n, epoch + 1
  while True:
    batches = training_epoch(documents, seq_len, rows, seed, epoch,
                             reset_each_epoch)
    for batch in batches[skip:]:
      yield tuple(a[keep_rows] for a in batch)
    skip, epoch = 0, epoch + 1


def evaluation_streams(documents: Sequence[np.ndarray], seq_len: int,
                       rows: int, warmup: int) -> list[StreamBatch]:
  """Every character of `documents` scored once, over `rows` streams.

  Each stream reads a contiguous run of the windows; one that begins inside
  a document first reads the ceil(warmup / seq_len) windows before it (as
  far back as the document's start) with weight 0. Streams are padded to
  one length with empty windows.
  """
  windows = document_windows(documents, seq_len)
  if not len(windows):
    return []
  back = -(-warmup // seq_len)
  streams = []
  for run in np.array_split(np.arange(len(windows)), rows):
    if not run.size:
      streams.append((np.zeros(0, np.int64), np.zeros(0, bool)))
      continue
    first = run[0]
    begin = first
    while begin > 0 and first - begin < back and not windows.starts[begin]:
      begin -= 1
    index = np.arange(begin, run[-1] + 1)
    scored = index >= first
    streams.append((index, scored))
  length = max(index.size for index, _ in streams)
  inputs = np.full((rows, length, seq_len), PAD_ID, np.int32)
  targets = np.full((rows, length, seq_len), PAD_ID, np.int32)
  weights = np.zeros((rows, length, seq_len), np.float32)
  resets = np.ones((rows, length), np.float32)
  for row, (index, scored) in enumerate(streams):
    n = index.size
    inputs[row, :n] = windows.inputs[index]
    targets[row, :n] = windows.targets[index]
    weights[row, :n] = windows.weights[index] * scored[:, None]
    resets[row, :n] = windows.starts[index]
    if n:
      resets[row, 0] = 1.0
  return [(inputs[:, k], resets[:, k], targets[:, k], weights[:, k])
          for k in range(length)]
