"""SIGTERM and SIGINT as requests to stop at a safe point, not kills.

train.py calls `record_early_signals` before it imports JAX, trax or
TensorFlow, so that a signal during those slow imports is a stop request
too; `stop_requests` then takes over for the whole of training. Training
stops after the step in progress has been evaluated and checkpointed, or
before anything is written if it has not begun.
"""

import contextlib
import signal
import sys
import time
from typing import Iterator

STARTED = time.time()  # the time to the first step counts imports too

# SIGTERM and SIGINT received so far. From `record_early_signals` on,
# through the slow imports and all start-up work, a signal is a request to
# stop at the next safe point (`stop_requests`), not a kill.
STOP_SIGNALS: list[int] = []

_STOP_SIGNAL_KINDS = (signal.SIGTERM, signal.SIGINT)
_DEFAULT_HANDLERS = {signal.SIGTERM: signal.SIG_DFL,
                     signal.SIGINT: signal.default_int_handler}
# Non-empty once this train.py has begun to write the run directory; until
# then a second signal stops it at once (`_request_stop`).
RUN_DIR_WRITTEN: list[bool] = []


class Interrupted(Exception):
  """Training stopped by SIGTERM or SIGINT after a step; rerun to resume.

  Attributes:
    finished: the signal came in the last step, which completed training.
  """

  def __init__(self, finished: bool = False):
    super().__init__()
    self.finished = finished


def record_early_signals() -> None:
  """Records SIGTERM and SIGINT in STOP_SIGNALS while the program loads."""
  for signum in _STOP_SIGNAL_KINDS:
    signal.signal(signum, _record_stop_request)


def _record_stop_request(signum, unused_frame):
  STOP_SIGNALS.append(signum)


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
  """Turns SIGTERM and SIGINT into a stop request, honoured at a safe point.

  Yields the list of signals received (STOP_SIGNALS, which also holds any
  received while train.py was loading); training stops once it is
  non-empty, after the step in progress has been evaluated and
  checkpointed, or before anything is written if training has not begun.
  Further signals while stopping are only recorded, so they cannot
  interrupt the checkpoint being written.
  """
  if STOP_SIGNALS:
    print(f'{signal.Signals(STOP_SIGNALS[0]).name} received while starting: '
          f'stopping before training.', file=sys.stderr)
  previous = {s: signal.getsignal(s) for s in _STOP_SIGNAL_KINDS}
  listen_for_stop_requests()
  try:
    yield STOP_SIGNALS
  finally:
    for s, handler in previous.items():
      if handler is _record_stop_request:  # set while loading: not wanted now
        handler = _DEFAULT_HANDLERS[s]
      signal.signal(s, handler)
    STOP_SIGNALS.clear()  # a later in-process call starts afresh
    RUN_DIR_WRITTEN.clear()


def listen_for_stop_requests() -> None:
  """Makes `_request_stop` the handler of SIGTERM and SIGINT (again)."""
  for s in _STOP_SIGNAL_KINDS:
    signal.signal(s, _request_stop)


def _request_stop(signum, unused_frame):
  """Records a stop request; a repeated one before anything was written
  stops start-up at once (waiting to join, reading a large dataset)."""
  if not STOP_SIGNALS:
    print(f'\n{signal.Signals(signum).name} received: finishing this step '
          f'and saving a checkpoint.', file=sys.stderr)
  STOP_SIGNALS.append(signum)
  if len(STOP_SIGNALS) > 1 and not RUN_DIR_WRITTEN:
    raise Interrupted()
