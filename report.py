r"""Writes a report of one or more runs: PNG plots and one HTML page.

  python report.py --output_dir runs/char_rnn_shakespeare
  python report.py --output_dir runs/sst2_rnn --output_dir runs/sst2_gru \
      --out reports/sst2

The page, index.html, is self-contained (its plots embedded): the runs'
operative configs, final metrics and training curves, and the figures of
each run's task (rnn_toolkit/reporting/run_report.py says which).
"""

# Before anything else loads: a program under tcmalloc must start under it.
from rnn_toolkit.runtime import allocator  # pylint: disable=g-bad-import-order
if __name__ == '__main__':
  allocator.relaunch_with_fast_allocator()

import argparse  # pylint: disable=g-import-not-at-top
import sys  # pylint: disable=g-import-not-at-top

from rnn_toolkit.reporting import run_report  # pylint: disable=g-import-not-at-top


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description='Write plots and an HTML page of one or more runs.')
  parser.add_argument('--output_dir', action='append', required=True,
                      help='run directory written by train.py; repeat it to '
                           'compare runs.')
  parser.add_argument('--out', help='write one report here (default: '
                      'OUTPUT_DIR/report for each run).')
  parser.add_argument('--split', help='split to report (default: each run\'s '
                      'eval split).')
  parser.add_argument('--retention_windows', type=int, default=16,
                      help='validation windows (texts, for classifiers '
                           'and taggers) the memory-retention curve '
                           'averages over.')
  parser.add_argument('--retention_length', type=int,
                      help='language models: characters per retention '
                           'window (default: the run\'s seq_len). Longer '
                           'windows show what a model trained on streams '
                           'keeps from beyond its training windows.')
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  run_report.report_from_command_line(parse_args(argv))


if __name__ == '__main__':
  main(sys.argv[1:])
