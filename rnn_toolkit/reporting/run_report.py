r"""Writes a report of one or more runs: PNG plots and one HTML page.

  python report.py --output_dir runs/char_rnn_shakespeare
  python report.py --output_dir runs/sst2_rnn --output_dir runs/sst2_gru \
      --out reports/sst2

The page, index.html, is self-contained (its plots embedded) and shows the
given runs' operative configs and final metrics; the training curves and
the memory-retention curves overlay all the runs (e.g. the Elman layer
against GRU and LSTM on one config). By task it shows a classifier's
confusion matrix, a tagger's F1 by entity type or tag, a language model's
samples, the memory retention of language models, text classifiers and
taggers (retention.py), a translator's attention maps and a captioner's
contact sheet (the sections of each task are in rnn_toolkit/tasks.py). The
page and its PNGs go into --out, or, without it, into report/ of each run
directory (each a copy of the page of all the given runs). A run's
evaluation is read from its eval_SPLIT.json, and made by `Run.evaluate`
when that is missing or of another checkpoint.
"""

# Before any trax import: it keeps trax 1.4.1 working on current JAX.
from rnn_toolkit.runtime import trax_compat  # noqa: F401  pylint: disable=g-bad-import-order

import argparse
import base64
import dataclasses
import html
import json
import os
import shutil
import tempfile
from typing import Any, Optional, Sequence

import numpy as np
from trax import shapes

from models import crf
from models import seq2seq
from models import word_features
from rnn_toolkit import tasks
from rnn_toolkit.errors import UsageError, exit_with
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.reporting import figures
from rnn_toolkit.reporting import retention
from rnn_toolkit.storage import run_dir
from rnn_toolkit.token_ids import EOS_ID, PAD_ID

PAGE = 'index.html'
# Written into every report, so that report.py replaces only its own.
MARKER = '.report_by_report_py'
# (weights f32[output_len, source_len], source tokens, output tokens)
AttentionMap = tuple[np.ndarray, list[str], list[str]]


@dataclasses.dataclass
class RunSummary:
  """What the report shows of one run."""
  label: str
  output_dir: str
  task: str
  config: str  # the operative config, as train.py saved it
  records: list[dict[str, Any]]  # the metrics.jsonl records
  evaluation: dict[str, Any]  # the eval_SPLIT.json record
  samples: list[str] = dataclasses.field(default_factory=list)
  # f32[distance]: mean ‖∂h_T/∂x_t‖ by distance, or None
  retention: Optional[np.ndarray] = None
  # (weights, source tokens, output tokens) of each sentence, or None
  attention: Optional[list[AttentionMap]] = None
  # A CRF tagger's transition scores, f32[tags, tags] (row: the tag
  # before), and its tag names; or None
  transitions: Optional[tuple[np.ndarray, tuple[str, ...]]] = None


def summarise(output_dir: str, label: str, split: Optional[str] = None,
              windows: int = 16,
              retention_length: Optional[int] = None) -> RunSummary:
  """Reads (or computes) everything the report shows of run `output_dir`.

  `retention_length` is a language model's retention window, in characters
  (default: its sequence length).
  """
  run = Run.load(output_dir)
  split = split or run.inputs.eval_split
  sections = run.task.report_sections
  summary = RunSummary(label, output_dir, run.task.name,
                       _read_config(output_dir), _read_records(output_dir),
                       _evaluation(run, split))
  if 'window_retention' in sections:
    summary.retention = language_model_retention(run, split, windows,
                                                 retention_length)
  if 'text_retention' in sections:
    summary.retention = text_retention(run, split, windows)
  if 'samples' in sections:
    summary.samples = run.generate(n_samples=3, length=300, temperature=0.8)
  if 'attention' in sections:
    summary.attention = translation_attention(run, split)
  if 'crf_transitions' in sections:
    summary.transitions = crf_transitions(run)
  return summary


def crf_transitions(
    run: Run) -> Optional[tuple[np.ndarray, tuple[str, ...]]]:
  """A CRF tagger's transition scores as its checkpoint holds them (held
  ones at crf.FORBIDDEN) and its tag names; None for a softmax tagger."""
  layer = crf.find(run.model('eval', run.inputs.input_signature()))
  return None if layer is None else (layer.transitions, layer.tag_names)


def _read_config(output_dir):
  with open(os.path.join(output_dir, run_dir.CONFIG_FILE),
            encoding='utf-8') as f:
    return f.read()


def _read_records(output_dir):
  """metrics.jsonl's records; a line cut short by a killed run is skipped."""
  path = os.path.join(output_dir, run_dir.METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def _evaluation(run, split):
  """The run's eval_SPLIT.json, remade when missing or of another checkpoint."""
  path = os.path.join(run.output_dir, f'eval_{split}.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      record = json.load(f)
    if record.get('step') == run.step:
      return record
  return run.evaluate(split)


def language_model_retention(run: Run, split: Optional[str] = None,
                             windows: int = 16,
                             length: Optional[int] = None) -> np.ndarray:
  """The retention curve of a language model run, on `windows` windows.

  The windows are the first full ones of the evaluation split, of `length`
  characters (default: the run's sequence length). Windows longer than the
  ones a model was trained on show what it keeps from further back: one
  trained on streams carried its state past its windows, one trained on
  windows never did.

  Returns:
    NumPy f32[length]: the mean ‖∂h_T/∂x_t‖ at each distance T - t.
  """
  inputs = run.inputs
  split = split or inputs.eval_split
  if length is None or length == inputs.seq_len:
    tokens = _full_windows(inputs, run.vocab, split, windows)
  else:
    tokens = _text_windows(inputs, run.vocab, split, windows, length)
  return _retention_curve(run, tokens)


def text_retention(run: Run, split: Optional[str] = None,
                   windows: int = 16) -> np.ndarray:
  """The retention curve of a text classifier or tagger run.

  Texts vary in length and padding is no input, so the windows are the
  first T words of the `windows` longest texts of the evaluation split, T
  being the shortest of their lengths (at most MAX_TEXT_WINDOW).

  Returns:
    NumPy f32[T]: the mean ‖∂h_T/∂x_t‖ at each distance T - t.
  """
  inputs = run.inputs
  split = split or inputs.eval_split
  # (length in words, row): a row is a text's ids, with its characters'
  # when the model reads them.
  texts = [(int(np.sum(words != PAD_ID)), row)
           for batch in inputs.eval_batches(run.vocab, split)
           for row, words in zip(batch[0], word_features.word_ids(batch[0]))
           if words[0] != PAD_ID]
  texts.sort(key=lambda text: -text[0])
  longest = [row for _, row in texts[:windows]]
  length = min(MAX_TEXT_WINDOW, texts[len(longest) - 1][0]) if texts else 0
  if length < 2:
    raise UsageError(f'Split {split!r} of {inputs.dataset} holds no text of '
                     f'two words or more, so memory retention cannot be '
                     f'measured on it. Choose another --split.')
  tokens = np.stack([row[:length] for row in longest])
  return _retention_curve(run, tokens)


# The longest window of a text model's retention curve, in words.
MAX_TEXT_WINDOW = 64


def _retention_curve(run, tokens):
  """The retention curve of the run's checkpoint over the windows `tokens`.

  A model trained on streams is measured as one that starts each window
  from zeros (its weights are the same), as a windowed one is: the curves
  then compare what each kept of the window it read.
  """
  dimensions = {name: size for name, size in
                run.inputs.model_dimensions(run.vocab).items()
                if name != 'stateful'}
  model = run.model('eval', shapes.signature(tokens), dimensions)
  return retention.retention_curve(model, tokens)


def translation_attention(run: Run, split: Optional[str] = None,
                          count: int = 3) -> Optional[list[AttentionMap]]:
  """Attention maps of the run's greedy translations of `count` sentences.

  Returns:
    [(weights f32[output_len, source_len], source tokens, output tokens)]
    for the first `count` sentences of the split, or None when the model has
    no attention.
  """
  inputs, vocab = run.inputs, run.vocab
  source, references = next(iter(inputs.decoding_batches(vocab, split)),
                            (None, []))
  if not references:
    raise UsageError(f'Split {split or inputs.eval_split!r} of '
                     f'{inputs.dataset} holds no sentence to translate. '
                     f'Choose another --split.')
  source = source[:count]
  output = run.generator(len(source)).greedy(source, inputs.max_target_len)
  model = run.model('eval', (shapes.signature(source),
                             shapes.signature(output)))
  if not seq2seq.has_attention(model):
    return None
  weights = np.asarray(seq2seq.attention_of(model, source, output))
  maps = []
  for w, src, out in zip(weights, source, output):
    src, out = _real_tokens(src), _real_tokens(out)
    maps.append((w[:len(out), :len(src)], [_token(vocab, i) for i in src],
                 [_token(vocab, i) for i in out]))
  return maps


def _real_tokens(ids):
  """The ids up to the first EOS (kept) or padding."""
  ids = [int(i) for i in ids]
  end = ids.index(EOS_ID) + 1 if EOS_ID in ids else len(ids)
  return [i for i in ids[:end] if i != PAD_ID]


def _token(vocab, token_id):
  return '</s>' if token_id == EOS_ID else (vocab.decode([token_id]) or '?')


def _text_windows(inputs, vocab, split, count, length):
  """The first `count` windows of `length` characters of the split's texts,
  each inside one text, end to end."""
  found = [ids[start:start + length]
           for ids in inputs.encoded_texts(vocab, split)
           for start in range(0, len(ids) - length + 1, length)][:count]
  if not found:
    raise UsageError(f'Split {split!r} of {inputs.dataset} holds no text of '
                     f'{length} characters, so memory retention cannot be '
                     f'measured over {length} characters on it. Choose a '
                     f'shorter --retention_length or another --split.')
  return np.stack(found)


def _full_windows(inputs, vocab, split, count):
  found = []
  for batch in inputs.eval_batches(vocab, split):
    targets, weights = batch[-2:]  # a window's characters, and which are real
    found.extend(targets[np.all(weights > 0, axis=1)])
    if len(found) >= count:
      return np.stack(found[:count])
  if not found:
    raise UsageError(f'Split {split!r} of {inputs.dataset} holds no window '
                     f'of {inputs.seq_len} characters, so memory retention '
                     f'cannot be measured on it. Choose another --split.')
  return np.stack(found)


def write_report(summaries: Sequence[RunSummary], out_dir: str) -> str:
  """Draws the plots and writes the page: the directory `out_dir`, whole.

  The report is built in a directory beside `out_dir` and swapped in at the
  end, so a failure leaves an earlier report as it was, and no file of an
  earlier report is left beside the new one.

  Returns:
    The path of the page.
  """
  check_replaceable(out_dir)
  parent, name = os.path.split(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  building = tempfile.mkdtemp(dir=parent, prefix=f'.{name}.partial-')
  try:
    sections = [_overview(summaries, building)]
    several = len(summaries) > 1
    sections += [_run_section(s, building, f'run{i + 1}_' if several else '')
                 for i, s in enumerate(summaries)]
    with open(os.path.join(building, PAGE), 'w', encoding='utf-8') as f:
      f.write(_page(summaries, sections, building))
    with open(os.path.join(building, MARKER), 'w', encoding='utf-8') as f:
      f.write('This directory is a report written by report.py, which '
              'replaces it whole when it writes the report again.\n')
    _swap_in(building, out_dir)
  finally:
    shutil.rmtree(building, ignore_errors=True)
  return os.path.join(out_dir, PAGE)


def check_replaceable(out_dir: str) -> None:
  """Raises UsageError unless `out_dir` is new, empty or an earlier report.

  An earlier report is known by the MARKER file report.py writes into every
  report: a directory without it was not made by report.py, and is never
  replaced, whatever it holds.
  """
  if not os.path.exists(out_dir):
    return
  if not os.path.isdir(out_dir) or (
      os.listdir(out_dir) and
      not os.path.isfile(os.path.join(out_dir, MARKER))):
    raise UsageError(f'{out_dir} exists and is not a report written by '
                     f'report.py (it holds no {MARKER} file). A report '
                     f'replaces its directory whole, so point --out at a new '
                     f'or empty directory, or at an earlier report.')


def _swap_in(built, out_dir):
  """Puts the report in place: moved into a new or empty `out_dir`, or
  swapped for the earlier report there."""
  if not os.path.exists(out_dir):
    os.replace(built, out_dir)
    return
  if not os.listdir(out_dir):  # the user's own directory: keep it
    for name in os.listdir(built):
      os.replace(os.path.join(built, name), os.path.join(out_dir, name))
    return
  check_replaceable(out_dir)  # again: it may have changed while drawing
  old = built + '.old'
  os.replace(out_dir, old)
  os.replace(built, out_dir)
  shutil.rmtree(old)


def _overview(summaries, tmp):
  parts = []
  if figures.curve_names({s.label: s.records for s in summaries}):
    figures.training_curves({s.label: s.records for s in summaries},
                            os.path.join(tmp, 'curves.png'))
    parts.append(('Training and evaluation (solid: evaluation, dashed: '
                  'training)', 'curves.png'))
  curves = {s.label: s.retention for s in summaries
            if s.retention is not None}
  if curves:
    figures.retention_curves(curves, os.path.join(tmp, 'retention.png'))
    parts.append((_RETENTION_CAPTION, 'retention.png'))
  return parts


_RETENTION_CAPTION = (
    'Memory retention: the norm of the Jacobian of the top recurrent layer\'s '
    'last state h_T with respect to the input x_t, averaged over validation '
    'windows (for text classifiers and taggers, the first words of the '
    'longest texts), against the distance T - t. It fades with distance; '
    'where it fades slower, the state holds older inputs longer.')


def _run_section(summary, tmp, stem):
  """[(caption, PNG name)] of the task's figures for one run, named stem*.png."""
  sections = tasks.TASKS[summary.task].report_sections
  parts = []
  for section in sections:
    figure = _FIGURES.get(section)
    if figure:
      parts += figure(summary, tmp, stem)
  return parts


def _confusion_matrix(summary, tmp, stem):
  evaluation, name = summary.evaluation, f'{stem}confusion.png'
  figures.confusion_matrix(evaluation['confusion_matrix'],
                           evaluation['labels'], os.path.join(tmp, name),
                           title=f'{summary.label}: {evaluation["split"]}')
  return [('Confusion matrix (rows: true class)', name)]


def _f1_by_kind(summary, tmp, stem):
  """F1 of each entity type (IOB tags) or of each tag (others)."""
  evaluation, parts = summary.evaluation, []
  for key, what in (('per_type', 'entity type'), ('per_tag', 'tag')):
    if evaluation.get(key):
      name = f'{stem}{key}_f1.png'
      figures.bars({kind: s['f1'] for kind, s in evaluation[key].items()},
                   os.path.join(tmp, name), f'{summary.label}: '
                   f'{evaluation["split"]}', f'F1 of each {what}')
      parts.append((f'F1 of each {what}', name))
  return parts


def _crf_transitions(summary, tmp, stem):
  if summary.transitions is None:  # a softmax tagger
    return []
  name = f'{stem}crf_transitions.png'
  scores, names = summary.transitions
  figures.transition_scores(scores, names, os.path.join(tmp, name),
                            crf.FORBIDDEN,
                            f'{summary.label}: CRF transitions')
  return [('The CRF\'s learned transition scores, of the next tag (column) '
           'after a tag (row); x: forbidden by IOB2', name)]


def _attention(summary, tmp, stem):
  if not summary.attention:  # a model without attention
    return []
  name = f'{stem}attention.png'
  figures.attention_maps(summary.attention, os.path.join(tmp, name))
  return [('Attention of the greedy translations of the first sentences '
           '(rows: output tokens; columns: source tokens)', name)]


def _contact_sheet(summary, tmp, stem):
  """The evaluation's contact sheet of captioned images, as evaluate drew it."""
  sheet = os.path.join(summary.output_dir,
                       f'eval_{summary.evaluation["split"]}_captions.png')
  if not os.path.exists(sheet):
    return []
  name = f'{stem}captions.png'
  shutil.copyfile(sheet, os.path.join(tmp, name))
  return [('Generated captions (green: right) over the reference', name)]


# The report sections drawn as figures of one run; the retention curves are
# drawn with all the runs' (`_overview`), and samples as text (`_page`).
_FIGURES = {'confusion_matrix': _confusion_matrix, 'f1_by_kind': _f1_by_kind,
            'crf_transitions': _crf_transitions, 'attention': _attention,
            'contact_sheet': _contact_sheet}


def _page(summaries, sections, tmp):
  """The HTML page, its images inlined as data: URLs."""
  title = 'Run report: ' + ', '.join(s.label for s in summaries)
  body = [f'<h1>{html.escape(title)}</h1>', _figures_html(sections[0], tmp)]
  for summary, parts in zip(summaries, sections[1:]):
    body += [f'<h2>{html.escape(summary.label)}</h2>',
             f'<p>{html.escape(summary.output_dir)} &middot; task: '
             f'{summary.task}</p>', _metrics_html(summary.evaluation),
             _per_kind_html(summary.evaluation), _figures_html(parts, tmp)]
    if summary.samples:
      body.append('<h3>Samples (temperature 0.8)</h3>' + ''.join(
          f'<pre>{html.escape(text)}</pre>' for text in summary.samples))
    body.append('<details><summary>Operative config</summary>'
                f'<pre>{html.escape(summary.config)}</pre></details>')
  return _TEMPLATE.format(title=html.escape(title), body='\n'.join(body))


_TEMPLATE = '''<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 72em; margin: 2em auto; }}
img {{ max-width: 100%; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
pre {{ background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; }}
</style></head>
<body>
{body}
</body></html>
'''


def _figures_html(parts, tmp):
  out = []
  for caption, name in parts:
    with open(os.path.join(tmp, name), 'rb') as f:
      data = base64.b64encode(f.read()).decode('ascii')
    out.append(f'<figure><img src="data:image/png;base64,{data}" '
               f'alt="{html.escape(name)}"><figcaption>{html.escape(caption)}'
               f'</figcaption></figure>')
  return '\n'.join(out)


def _metrics_html(evaluation):
  """A table of the evaluation's numbers (lists and tables left out)."""
  rows = [(key, value) for key, value in evaluation.items()
          if isinstance(value, (int, float, str)) and key != 'outputs']
  cells = ''.join(f'<tr><th>{html.escape(k)}</th><td>{_number(v)}</td></tr>'
                  for k, v in rows)
  return f'<table>{cells}</table>'


def _per_kind_html(evaluation):
  """A tagger's table of precision, recall, F1 and support of each entity
  type (or tag); '' for other tasks."""
  scores = evaluation.get('per_type') or evaluation.get('per_tag')
  if not scores:
    return ''
  head = ''.join(f'<th>{h}</th>' for h in ('', 'precision', 'recall', 'F1',
                                           'support'))
  rows = ''.join(
      f'<tr><th>{html.escape(kind)}</th>' + ''.join(
          f'<td>{_number(s[key])}</td>'
          for key in ('precision', 'recall', 'f1', 'support')) + '</tr>'
      for kind, s in scores.items())
  return f'<table><tr>{head}</tr>{rows}</table>'


def _number(value):
  if isinstance(value, float):
    return f'{value:.4g}'
  return html.escape(str(value))


def labels_of(output_dirs: Sequence[str]) -> list[str]:
  """Short names of the runs: their directory names, or paths where those clash."""
  names = [os.path.basename(os.path.normpath(d)) for d in output_dirs]
  if len(set(names)) < len(names):
    return [os.path.normpath(d) for d in output_dirs]
  return names


def report_from_command_line(args: argparse.Namespace) -> None:
  """Writes the report report.py's flags ask for; prints each page's path.

  `args` holds output_dir (a list), out, split, retention_windows and
  retention_length. A UsageError becomes a one-paragraph message and exit
  status 2.
  """
  try:
    if args.retention_windows < 1:
      raise UsageError('--retention_windows takes a positive number of '
                       'windows.')
    if args.retention_length is not None and args.retention_length < 2:
      raise UsageError('--retention_length takes a number of characters, '
                       'at least 2.')
    targets = ([args.out] if args.out else
               [os.path.join(d, 'report') for d in args.output_dir])
    for target in targets:
      check_replaceable(target)
    for output_dir in args.output_dir:  # each a run, before any is evaluated
      Run.load(output_dir)
    summaries = [summarise(d, label, args.split, args.retention_windows,
                           args.retention_length)
                 for d, label in zip(args.output_dir,
                                     labels_of(args.output_dir))]
    for target in targets:
      print(write_report(summaries, target))
  except UsageError as e:
    exit_with(e, 'report.py')

