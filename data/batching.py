"""Batch-shape helpers shared by the input pipelines."""

import numpy as np


def pad_batch(batch: tuple[np.ndarray, ...],
              batch_size: int) -> tuple[np.ndarray, ...]:
  """Pads a tuple of arrays with zero rows up to `batch_size` rows.

  Pipelines pad their last eval batch this way; the padding rows have
  weight 0, so they count in no metric.
  """
  missing = batch_size - batch[0].shape[0]
  if missing == 0:
    return batch
  return tuple(np.concatenate([a, np.zeros((missing,) + a.shape[1:], a.dtype)])
               for a in batch)
