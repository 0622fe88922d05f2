"""Files replaced whole: after a crash or power cut, the old text or the new.

train.py rewrites a run's config.gin, vocab.json and metrics.jsonl this way.
"""

import os
import stat
import tempfile


def write_text_atomically(path: str, text: str) -> None:
  """Replaces `path` with `text` atomically and durably.

  The text goes to a new temporary file beside `path` (created exclusively,
  so a link planted under its name is never followed), which is flushed to
  disk and renamed over `path`; the directory is flushed too, so that the
  rename itself survives a power cut. A failure before the rename leaves
  `path` as it was.
  """
  write_bytes_atomically(path, text.encode('utf-8'))


def write_bytes_atomically(path: str, data: bytes) -> None:
  """`write_text_atomically` for bytes."""
  directory, name = os.path.split(os.path.abspath(path))
  descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f'.{name}.')
  try:
    with os.fdopen(descriptor, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    # mkstemp makes it private; keep the mode the file had, else rw-r--r--.
    os.chmod(temporary, _mode_of(path, default=0o644))
    os.replace(temporary, path)
  except BaseException:
    os.remove(temporary)
    raise
  fsync_directory(directory)


def fsync_directory(directory: str) -> None:
  """Flushes `directory`'s entries (a rename or removal in it) to disk."""
  descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def _mode_of(path: str, default: int) -> int:
  try:
    return stat.S_IMODE(os.stat(path).st_mode)
  except FileNotFoundError:
    return default
