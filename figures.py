"""Figures the toolkit writes beside its metrics, drawn with matplotlib."""

import os
import textwrap

import matplotlib
matplotlib.use('Agg')  # files only; no display is needed or wanted
from matplotlib import pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top


def contact_sheet(images, generated, references, path, columns=4):
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
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def _wrapped(text, width=34):
  return '\n'.join(textwrap.wrap(text, width)) or '(empty)'
