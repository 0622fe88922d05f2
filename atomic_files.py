"""Files replaced whole: after a crash or power cut, the old text or the new.

train.py rewrites a run's config.gin, vocab.json and metrics.jsonl this way.
"""

import os


def write_text_atomically(path: str, text: str) -> None:
  """Replaces `path` with `text` atomically and durably.

  The text goes to a temporary file beside `path`, which is flushed to disk
  and renamed over it; the directory is flushed too, so that the rename
  itself survives a power cut. A failure before the rename leaves `path` as
  it was.
  """
  temporary = path + '.tmp'
  try:
    with open(temporary, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  fsync_directory(os.path.dirname(os.path.abspath(path)))


def fsync_directory(directory: str) -> None:
  """Flushes `directory`'s entries (a rename or removal in it) to disk."""
  descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)
