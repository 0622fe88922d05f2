"""Trains a model described by gin config files.

    python train.py --gin_file configs/char_rnn_shakespeare.gin \
        --output_dir runs/char_rnn [--gin_param 'RNNLanguageModel.cell = "gru"']

Re-running with the same --output_dir resumes exactly where the newest
intact checkpoint left off. SIGTERM or SIGINT (Ctrl-C) stops training after
the current step, writes a checkpoint and exits with status 75; rerun the
same command to go on.

Exit status: 0 trained, 2 bad config or input (nothing was changed),
3 training diverged (non-finite loss; the checkpoints are kept),
75 interrupted by a signal (resume by rerunning).
"""

# Before anything else loads: a program under tcmalloc must start under it,
# and a signal while JAX and trax load is a stop request, not a kill.
from rnn_toolkit.runtime import allocator  # pylint: disable=g-bad-import-order
from rnn_toolkit.training import stopping  # pylint: disable=g-bad-import-order
if __name__ == '__main__':
  allocator.relaunch_with_fast_allocator()
  stopping.record_early_signals()

import argparse  # pylint: disable=g-import-not-at-top
import sys  # pylint: disable=g-import-not-at-top

from rnn_toolkit.runtime import devices  # pylint: disable=g-import-not-at-top
from rnn_toolkit.training import trainer  # pylint: disable=g-import-not-at-top


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description='Train a model from gin config files.')
  parser.add_argument('--gin_file', action='append', required=True,
                      help='gin config file; repeat to combine several.')
  parser.add_argument('--gin_param', action='append', default=[],
                      help='one gin binding, e.g. "train_and_evaluate.seed = 1"; '
                           'repeatable, applied after the files.')
  parser.add_argument('--output_dir', required=True,
                      help='run directory (resumed if it holds a checkpoint).')
  parser.add_argument('--steps', type=int,
                      help='shorthand for --gin_param "train_and_evaluate.n_steps = N".')
  parser.add_argument('--allow_config_change', action='store_true',
                      help='resume even though the config differs from the '
                           'one the checkpoint was trained with.')
  parser.add_argument('--from_scratch', action='store_true',
                      help='start at step 0 when every checkpoint in '
                           '--output_dir is damaged (they are moved aside).')
  devices.add_arguments(parser)
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  trainer.train_from_command_line(parse_args(argv))


if __name__ == '__main__':
  main(sys.argv[1:])
