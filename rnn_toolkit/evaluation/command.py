"""evaluate.py's work: `evaluate_from_command_line`."""

import argparse
import json

import jax

from rnn_toolkit.errors import UsageError, exit_with
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.runtime import devices


def evaluate_from_command_line(args: argparse.Namespace) -> None:
  """Evaluates, predicts or samples as evaluate.py's flags say.

  Prints the metrics as JSON, or one line per prediction; a UsageError
  becomes a one-paragraph message and exit status 2.
  """
  try:
    devices.set_up(args)
    run = Run.load(args.output_dir, args.checkpoint)
    if args.generate is not None:
      samples = run.generate(args.prompt, args.generate, args.length,
                             args.temperature, args.seed)
      for i, text in enumerate(samples):
        print(f'--- sample {i + 1} ---\n{text}\n')
      return
    for flag in ('predict', 'translate', 'caption'):
      if getattr(args, flag):
        _apply_and_print(run, flag, getattr(args, flag), args.beam_width)
        return
    result = run.evaluate(args.split, args.beam_width)
    if jax.process_index() == 0:
      print(json.dumps(result, indent=2))
  except UsageError as e:
    exit_with(e, 'evaluate.py')


def _apply_and_print(run, flag, items, beam_width):
  """Applies the run's model to each of `items`; prints the task's lines.

  --predict serves classifiers and taggers alike.
  """
  use = run.task.use if f'--{flag}' == run.task.flag else flag
  run.check_use(use)
  for item, result in zip(items, run.apply(items, beam_width)):
    print(run.task.show(item, result))
