"""Evaluates a trained run's checkpoint; samples text or predicts with it.

    python evaluate.py --output_dir runs/char_rnn_shakespeare [--split test]
    python evaluate.py --output_dir runs/char_rnn_shakespeare --dynamic_eval
    python evaluate.py --output_dir runs/char_rnn_shakespeare \
        --generate 3 --prompt 'ROMEO:' --length 300 --temperature 0.8
    python evaluate.py --output_dir runs/sst2_rnn --predict 'a witty film'
    python evaluate.py --output_dir runs/dates --translate 'Wed 25 Nov 2026'
    python evaluate.py --output_dir runs/shapes --caption picture.png
    python evaluate.py --output_dir runs/sst2_rnn --data_file reviews.tsv
    python evaluate.py --output_dir runs/sst2_rnn --predict_file reviews.txt \
        --out predictions.jsonl

The model is rebuilt from the run's config.gin and vocab.json, and its
weights come from a committed checkpoint (checksums checked). Evaluation
makes one full pass over the split and writes OUTPUT_DIR/eval_SPLIT.json
(of a --data_file, eval_file_STEM.json); rnn_toolkit/evaluation/scoring.py
says what each task's holds, rnn_toolkit/evaluation/files.py the formats
of --data_file and --predict_file.
"""

# Before anything else loads: a program under tcmalloc must start under it.
from rnn_toolkit.runtime import allocator  # pylint: disable=g-bad-import-order
if __name__ == '__main__':
  allocator.relaunch_with_fast_allocator()

import argparse  # pylint: disable=g-import-not-at-top
import sys  # pylint: disable=g-import-not-at-top

from rnn_toolkit.evaluation import command  # pylint: disable=g-import-not-at-top
from rnn_toolkit.runtime import devices  # pylint: disable=g-import-not-at-top


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description='Evaluate a run directory written by train.py, or sample '
                  'text from it.')
  parser.add_argument('--output_dir', required=True,
                      help='run directory written by train.py.')
  parser.add_argument('--checkpoint', default='best',
                      help='best (the best evaluated; the default), latest, '
                           'or a step number.')
  what = parser.add_mutually_exclusive_group()
  what.add_argument('--split', help='split to evaluate (default: the eval '
                    'split of the run\'s config, e.g. validation).')
  what.add_argument('--data_file', metavar='FILE',
                    help='evaluate on FILE, examples of your own in the '
                         'task\'s format (TSV or JSONL, CoNLL, text; see '
                         'rnn_toolkit/evaluation/files.py), instead of a '
                         'split; writes OUTPUT_DIR/eval_file_STEM.json.')
  what.add_argument('--predict_file', metavar='FILE',
                    help='classifiers, taggers, translators and captioners: '
                         'predict for every input of FILE (one a line, or '
                         'TSV/JSONL/CoNLL) and write one JSON object a line '
                         'to --out.')
  what.add_argument('--generate', type=int, metavar='N',
                    help='language models: sample N texts instead of '
                         'evaluating.')
  what.add_argument('--predict', action='append', metavar='TEXT',
                    help='classifiers and taggers: print the class (and '
                         'its probability) or the tags of TEXT instead of '
                         'evaluating; may be given several times.')
  what.add_argument('--translate', action='append', metavar='TEXT',
                    help='translation models: print the translation of '
                         'TEXT instead of evaluating; may be repeated.')
  what.add_argument('--caption', action='append', metavar='IMAGE',
                    help='captioning models: print a caption of the image '
                         'file IMAGE instead of evaluating; may be repeated.')
  parser.add_argument('--out', metavar='FILE',
                      help='with --predict_file: the JSONL file the '
                           'predictions go to (replaced whole).')
  parser.add_argument('--beam_width', type=int,
                      help='translation and captioning: beam width (1 is '
                           'greedy); default, the run\'s '
                           'DecodingSettings.beam_width.')
  parser.add_argument('--dynamic_eval', action='store_true',
                      help='language models: also score the text while '
                           'adapting the weights to it (dynamic evaluation; '
                           'the checkpoint is not changed), reported as '
                           'dynamic_loss beside the static loss.')
  parser.add_argument('--dynamic_lr', type=float, metavar='LR',
                      help='dynamic evaluation\'s learning rate (default: '
                           'the run\'s dynamic_evaluation.learning_rate).')
  parser.add_argument('--dynamic_decay', type=float, metavar='DECAY',
                      help='dynamic evaluation\'s pull toward the trained '
                           'weights per segment (default: the run\'s '
                           'dynamic_evaluation.decay).')
  parser.add_argument('--prompt', default='', help='text the samples continue.')
  parser.add_argument('--length', type=int, default=300,
                      help='characters to sample after the prompt.')
  parser.add_argument('--temperature', type=float, default=0.8,
                      help='sampling temperature; 0 picks the likeliest.')
  parser.add_argument('--seed', type=int, default=0, help='sampling seed.')
  devices.add_arguments(parser)
  args = parser.parse_args(argv)
  if args.predict_file is not None and args.out is None:
    parser.error('--predict_file needs --out FILE, the file the predictions '
                 'go to (one JSON object a line).')
  if args.out is not None and args.predict_file is None:
    parser.error('--out is where --predict_file writes; give --predict_file '
                 'FILE too.')
  return args


def main(argv: list[str]) -> None:
  command.evaluate_from_command_line(parse_args(argv))


if __name__ == '__main__':
  main(sys.argv[1:])
