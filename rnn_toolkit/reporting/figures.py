"""Figures the toolkit draws with matplotlib: contact sheets, curves, heatmaps."""

import os
import textwrap
from typing import Any, Sequence, Union

import numpy as np

import matplotlib
matplotlib.use('Agg')  # files only; no display is needed or wanted
from matplotlib import pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top


def contact_sheet(images: np.ndarray, generated: Sequence[str],
                  references: Sequence[Sequence[str]], path: str,
                  columns: int = 4) -> None:
  """Writes a PNG grid of images, each with its generated and reference captions.

  Args:
    images: f32[n, height, width, 3] in [0, 1] (or uint8).
    generated: the n generated captions.
    references: for each image, its reference captions (the first is shown).
    path: the PNG file to write (through a temporary file and a rename).
    columns: images per row.
  """
  rows = max(1, -(-len(images) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows),
                           squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, output, refs in zip(axes.flat, images, generated, references):
    ax.imshow(image, interpolation='nearest')
    right = output in refs
    ax.set_title(f'{_wrapped(output)}\n(true: {_wrapped(refs[0])})',
                 fontsize=8, color='darkgreen' if right else 'firebrick')
  _save(fig, path)


def training_curves(runs: dict[str, list[dict[str, Any]]], path: str) -> None:
  """Writes a PNG of each metric against step, the runs overlaid.

  Args:
    runs: {label: records}, records as in a run's metrics.jsonl: dicts with
      'step' and keys 'train/NAME' or 'eval/NAME'.
    path: the PNG file to write.
  """
  names = curve_names(runs)
  columns = min(3, len(names))
  rows = -(-len(names) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.4 * rows),
                           squeeze=False)
  for ax in axes.flat[len(names):]:
    ax.axis('off')
  colours = dict(zip(runs, plt.rcParams['axes.prop_cycle'].by_key()['color']
                     * len(runs)))
  for ax, name in zip(axes.flat, names):
    for label, records in runs.items():
      for part, style in (('eval', '-'), ('train', '--')):
        points = [(r['step'], r[f'{part}/{name}']) for r in records
                  if f'{part}/{name}' in r]
        if points:
          ax.plot(*zip(*points), style, marker='.', color=colours[label],
                  label=f'{label} ({part})' if len(runs) > 1 else part)
    _log_scale_if_wide(ax)
    ax.set_title(name)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  _save(fig, path)


def _log_scale_if_wide(ax):
  """A log y axis for positive curves spanning over two orders of magnitude."""
  values = np.concatenate([line.get_ydata() for line in ax.get_lines()])
  if values.size and values.min() > 0 and values.max() > 100 * values.min():
    ax.set_yscale('log')


# Shown first, in this order; the other metrics follow alphabetically.
_LEADING_CURVES = ('loss', 'accuracy', 'learning_rate')
# Training diagnostics that say little about the model: left out.
_UNPLOTTED = ('steps per second',)


def curve_names(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
  """The metric names of the records of `runs` that training_curves draws."""
  names = {key.split('/', 1)[1] for records in runs.values()
           for record in records for key in record if '/' in key}
  names -= set(_UNPLOTTED)
  return ([n for n in _LEADING_CURVES if n in names]
          + sorted(names - set(_LEADING_CURVES)))


def confusion_matrix(matrix: Union[np.ndarray, Sequence[Sequence[int]]],
                     labels: Sequence[str], path: str,
                     title: str = 'confusion matrix') -> None:
  """Writes a PNG heatmap of `matrix[i][j]`: examples of class i predicted j."""
  matrix = np.asarray(matrix)
  legible = len(labels) <= MAX_LABELLED_CLASSES
  size = 1.2 + 0.6 * min(len(labels), MAX_LABELLED_CLASSES)
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(matrix, cmap='Blues')
  fig.colorbar(image, ax=ax)
  if legible:
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha='right')
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), count in np.ndenumerate(matrix):
      ax.text(j, i, str(count), ha='center', va='center', fontsize=8,
              color='white' if count > matrix.max() / 2 else 'black')
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title)
  _save(fig, path)


def transition_scores(scores: np.ndarray, labels: Sequence[str], path: str,
                      forbidden: float, title: str) -> None:
  """Writes a PNG heatmap of a CRF's transition scores, scores[i][j] of tag
  j after tag i; transitions held at `forbidden` are left blank and
  crossed, so that the colours span the learned ones."""
  scores = np.asarray(scores, np.float64)
  blocked = scores <= forbidden / 2
  learned = np.ma.masked_where(blocked, scores)
  limit = max(float(np.abs(learned).max()) if learned.count() else 1.0, 1e-6)
  size = 1.2 + 0.6 * min(len(labels), MAX_LABELLED_CLASSES)
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(learned, cmap='RdBu', vmin=-limit, vmax=limit)
  fig.colorbar(image, ax=ax, label='score')
  if len(labels) <= MAX_LABELLED_CLASSES:
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha='right')
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(scores):
      ax.text(j, i, 'x' if blocked[i, j] else f'{value:.1f}', ha='center',
              va='center', fontsize=7, color='grey' if blocked[i, j] else
              ('white' if abs(value) > limit / 2 else 'black'))
  ax.set_xlabel('next tag')
  ax.set_ylabel('tag')
  ax.set_title(title)
  _save(fig, path)


# Above this many classes a confusion matrix is drawn without names and
# counts, at a fixed size: they would not be legible.
MAX_LABELLED_CLASSES = 30


def bars(values: dict[str, float], path: str, title: str, xlabel: str) -> None:
  """Writes a PNG of horizontal bars, one per name of `values`."""
  fig, ax = plt.subplots(figsize=(6, 1 + 0.4 * len(values)))
  ax.barh(list(values), list(values.values()), color='tab:blue')
  for y, value in enumerate(values.values()):
    ax.text(value, y, f' {value:.3f}', va='center', fontsize=8)
  ax.set_xlim(0, 1.1)
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  ax.set_title(title)
  _save(fig, path)


def retention_curves(curves: dict[str, np.ndarray], path: str) -> None:
  """Writes a PNG of each run's mean ‖∂h_T/∂x_t‖ against T - t (log scale).

  Args:
    curves: {label: f32[time]}, entry d the mean norm at distance d.
    path: the PNG file to write.
  """
  fig, ax = plt.subplots(figsize=(6.4, 4))
  for label, curve in curves.items():
    ax.semilogy(np.arange(len(curve)), curve, label=label)
  ax.set_xlabel('distance T - t (steps back from the last input)')
  ax.set_ylabel('mean ‖∂h_T / ∂x_t‖')
  ax.set_title('How much the last state still holds each input')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  _save(fig, path)


def attention_maps(maps: Sequence[tuple[np.ndarray, list[str], list[str]]],
                   path: str) -> None:
  """Writes a PNG heatmap of each sentence's attention weights.

  Args:
    maps: (weights f32[output_len, source_len], source tokens, output
      tokens) for each sentence; row t of weights is what output token t
      attended to.
    path: the PNG file to write.
  """
  fig, axes = plt.subplots(1, len(maps), squeeze=False,
                           figsize=(0.3 * sum(len(m[1]) for m in maps) + 2.5
                                    * len(maps), 4.5))
  for ax, (weights, source, output) in zip(axes.flat, maps):
    ax.imshow(weights, cmap='viridis', vmin=0, vmax=1)
    ax.set_xticks(range(len(source)), source, rotation=90, fontsize=7)
    ax.set_yticks(range(len(output)), output, fontsize=7)
    ax.set_xlabel('source')
    ax.set_ylabel('output')
  _save(fig, path)


def _save(fig, path):
  """Writes `fig` to `path` through a temporary file and a rename."""
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def _wrapped(text, width=34):
  return '\n'.join(textwrap.wrap(text, width)) or '(empty)'
