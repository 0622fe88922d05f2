"""evaluate.py's work: `evaluate_from_command_line`."""

import argparse
import json
import os
from typing import Optional

import jax

from rnn_toolkit.errors import UsageError, exit_with
from rnn_toolkit.evaluation import scoring
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.runtime import devices
from rnn_toolkit.storage.atomic_files import write_text_atomically


def evaluate_from_command_line(args: argparse.Namespace) -> None:
  """Evaluates, predicts or samples as evaluate.py's flags say.

  Prints the metrics as JSON, or one line per prediction; a UsageError
  becomes a one-paragraph message and exit status 2.
  """
  try:
    devices.set_up(args)
    if args.predict_file is not None:
      check_out(args.out, args.predict_file)
    run = Run.load(args.output_dir, args.checkpoint)
    if args.generate is not None:
      samples = run.generate(args.prompt, args.generate, args.length,
                             args.temperature, args.seed)
      for i, text in enumerate(samples):
        print(f'--- sample {i + 1} ---\n{text}\n')
      return
    if args.predict_file is not None:
      count = predict_file(run, args.predict_file, args.out, args.beam_width)
      if jax.process_index() == 0:
        print(f'{count} predictions written to {args.out}')
      return
    for flag in ('predict', 'translate', 'caption'):
      if getattr(args, flag):
        _apply_and_print(run, flag, getattr(args, flag), args.beam_width)
        return
    adapting = _dynamic_settings(run, args)
    if args.data_file is not None:
      result = scoring.evaluate_file(run, args.data_file, args.beam_width,
                                     adapting)
    else:
      result = run.evaluate(args.split, args.beam_width, adapting)
    if jax.process_index() == 0:
      print(json.dumps(result, indent=2))
  except UsageError as e:
    exit_with(e, 'evaluate.py')


def _dynamic_settings(run, args):
  """The dynamic evaluation --dynamic_eval asks for, or None."""
  if not args.dynamic_eval:
    if args.dynamic_lr is not None or args.dynamic_decay is not None:
      raise UsageError('--dynamic_lr and --dynamic_decay set dynamic '
                       'evaluation; add --dynamic_eval to run it.')
    return None
  return run.dynamic_settings(args.dynamic_lr, args.dynamic_decay)


def predict_file(run: Run, path: str, out: str,
                 beam_width: Optional[int] = None) -> int:
  """Writes the run's prediction for each input of `path` to `out`, as JSONL.

  The whole file is read and checked first (evaluation/files.py's
  formats); `out` is written atomically, by process 0, once every
  prediction is made, so a malformed line or a failure leaves it as it
  was. Returns how many predictions were written.

  Raises:
    UsageError: the run is a language model, or a line is malformed.
  """
  check_out(out, path)
  # Before the dataset is opened (run.inputs) to read the file.
  run.task.files.check_predict_file(run.output_dir, run.task.model_noun)
  if run.task.generates:
    run.decoding_settings(beam_width)  # a bad width, before the file is read
  items = run.task.files.read_inputs(run.inputs, run.vocab, path)
  results = run.apply([item.value for item in items], beam_width)
  if jax.process_index() == 0:
    write_text_atomically(out, ''.join(
        json.dumps(run.task.files.record(item, result),
                   ensure_ascii=False) + '\n'
        for item, result in zip(items, results)))
  return len(items)


def check_out(out: Optional[str], predict_file_path: str) -> None:
  """Raises UsageError unless `out` is a file --predict_file can write."""
  if out is None:
    raise UsageError('--predict_file needs --out FILE, the file the '
                     'predictions go to (one JSON object a line).')
  if os.path.isdir(out):
    raise UsageError(f'--out {out} is a directory; name the file the '
                     f'predictions go to.')
  directory = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(directory):
    raise UsageError(f'--out {out}: the directory {directory} does not '
                     f'exist. Create it, or name a file in an existing '
                     f'directory.')
  if (os.path.exists(predict_file_path)
      and os.path.exists(out) and os.path.samefile(out, predict_file_path)):
    raise UsageError(f'--out {out} is the --predict_file itself; name '
                     f'another file, so that the inputs are not replaced.')


def _apply_and_print(run, flag, items, beam_width):
  """Applies the run's model to each of `items`; prints the task's lines.

  --predict serves classifiers and taggers alike.
  """
  use = run.task.use if f'--{flag}' == run.task.flag else flag
  run.check_use(use)
  for item, result in zip(items, run.apply(items, beam_width)):
    print(run.task.show(item, result))
