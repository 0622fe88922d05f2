"""Keeps TensorFlow's native log lines off the terminal; import before TF.

TensorFlow, which the toolkit uses only to read TFDS datasets, prints C++
log lines through absl as it loads and when it first looks for a GPU:
"Could not find cuda drivers", "failed call to cuInit", a oneDNN notice and
absl's "All log messages before absl::InitializeLog()". They say nothing
about the run, and absl writes them to file descriptor 2 before any Python
setting can filter them. So TensorFlow is imported here with descriptor 2
captured, the lines that are native log lines are dropped, and anything
else is written on. TensorFlow is also kept off GPUs: the input pipelines
run on the CPU, and the accelerator's memory belongs to JAX.

If the import fails, everything it wrote is shown unfiltered. A crash that
ends the process during the import loses those lines: set
TOOLKIT_NATIVE_LOGS=1 to see everything, as TensorFlow prints it.
"""

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

SHOW_ENV = 'TOOLKIT_NATIVE_LOGS'
# absl's line format ("E0000 00:00:1796200584.735539    2516 file.cc:52] ..."),
# its notice that logging is not set up, and the continuation line of
# TensorFlow's CPU-feature notice.
_NATIVE_LOG_LINE = re.compile(
    r'^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] |'
    r'WARNING: All log messages before absl::InitializeLog\(\) |'
    r'To enable the following instructions: .* in other operations, rebuild)')


def showing_native_logs() -> bool:
  return os.environ.get(SHOW_ENV, '') not in ('', '0')


@contextlib.contextmanager
def native_logs_dropped() -> Iterator[None]:
  """Drops native log lines written to descriptor 2 within the block.

  If the block fails, everything it wrote is shown, unfiltered: then the
  native lines may say why.
  """
  saved = None if showing_native_logs() else _duplicate_stderr()
  if saved is None:  # asked for, or no descriptor 2 to capture
    yield
    return
  with tempfile.TemporaryFile(mode='w+b') as captured:
    os.dup2(captured.fileno(), 2)
    failed = True
    try:
      yield
      failed = False
    finally:
      _flush_stderr()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      _write_on(captured.read().decode('utf-8', 'replace'), keep_all=failed)


def _duplicate_stderr():
  """A copy of descriptor 2, or None where there is none."""
  _flush_stderr()
  try:
    return os.dup(2)
  except OSError:
    return None


def _flush_stderr():
  if sys.stderr is not None:
    sys.stderr.flush()


def _write_on(text, keep_all=False):
  kept = [line for line in text.splitlines(keepends=True)
          if keep_all or not _NATIVE_LOG_LINE.match(line)]
  if kept and sys.stderr is not None:
    sys.stderr.write(''.join(kept))
    sys.stderr.flush()


def _import_tensorflow_quietly():
  if not showing_native_logs():
    # TensorFlow's later C++ warnings and notes too; its errors still show.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with native_logs_dropped():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      tf.config.set_visible_devices([], 'GPU')  # looks for GPUs, once, here
    except RuntimeError:  # TensorFlow was already in use: too late to hide them
      pass


_import_tensorflow_quietly()
