"""Exports a trained run's model as one jax.export artifact, for serving.

    python export.py --output_dir runs/sst2_rnn --out sst2.jax
    python export.py --output_dir runs/char_rnn_shakespeare --out lm.jax \
        --platforms cpu,cuda

Writes OUT (the serialized inference function, the checkpoint's weights
inside) and OUT.json (the vocabulary, the class names, how text becomes
ids, the inputs and outputs). docs/serve_exported.py loads them with jax
and numpy alone; docs/accelerators.md#export-for-serving says more.

Exit status: 0 written, 2 bad input (nothing was written).
"""

import argparse
import sys

from rnn_toolkit.errors import UsageError, exit_with


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description='Export a trained run\'s model with jax.export.')
  parser.add_argument('--output_dir', required=True,
                      help='run directory written by train.py.')
  parser.add_argument('--out', required=True,
                      help='the artifact\'s path; its description goes to '
                           'OUT.json beside it.')
  parser.add_argument('--checkpoint', default='best',
                      help='best (the default), latest, or a step number.')
  parser.add_argument('--platforms', default='cpu,cuda,tpu',
                      help='comma-separated platforms the artifact runs '
                           'on (default: cpu,cuda,tpu).')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace OUT and OUT.json if they exist.')
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  try:
    from rnn_toolkit import Run  # pylint: disable=g-import-not-at-top
    from rnn_toolkit.evaluation import export  # pylint: disable=g-import-not-at-top
    platforms = export.check_platforms(args.platforms.split(','))
    export.check_out(args.out, args.overwrite)
    run = Run.load(args.output_dir, args.checkpoint)
    description = run.export(args.out, platforms, args.overwrite)
    print(f'{args.out}: {description["task"]} at step {description["step"]}, '
          f'{description["function"]}() for {", ".join(platforms)}; '
          f'described in {export.description_path(args.out)}')
  except UsageError as e:
    exit_with(e, 'export.py')


if __name__ == '__main__':
  main(sys.argv[1:])
