"""report.py on runs trained here, as a user runs it."""

import base64
import html
import json
import os
import re

import numpy as np
import pytest

from conftest import fails_with, snapshot, tiny_data_params
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.reporting import run_report
import report as report_py
import train as train_py

TINY = 'configs/char_rnn_tiny.gin'


def _train(output_dir, config, steps, params):
  train_py.main(['--gin_file', config, '--output_dir', output_dir,
              '--steps', str(steps),
              *[a for p in params for a in ('--gin_param', p)]])


@pytest.fixture(scope='module')
def language_model_runs(tiny_data_dir, tmp_path_factory):
  """Two tiny language model runs, the Elman layer and GRU, on one config."""
  runs = []
  for cell in ('elman', 'gru'):
    output_dir = str(tmp_path_factory.mktemp(cell))
    train_py.main(['--gin_file', TINY, '--output_dir', output_dir, '--steps', '10',
                *tiny_data_params(tiny_data_dir),
                '--gin_param', f"RNNLanguageModel.cell = '{cell}'"])
    runs.append(output_dir)
  return runs


def _images(page):
  return [base64.b64decode(data) for data in
          re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_language_model_report_overlays_the_runs(language_model_runs, tmp_path):
  out = str(tmp_path / 'report')
  report_py.main([*[a for d in language_model_runs for a in ('--output_dir', d)],
               '--out', out, '--retention_windows', '3'])
  with open(os.path.join(out, run_report.PAGE), encoding='utf-8') as f:
    page = f.read()
  labels = run_report.labels_of(language_model_runs)
  assert all(f'<h2>{label}</h2>' in page for label in labels)
  # Curves and retention (both runs), the embedded copies of the PNGs.
  assert len(_images(page)) == 2
  for name, embedded in zip(('curves.png', 'retention.png'), _images(page)):
    with open(os.path.join(out, name), 'rb') as f:
      assert f.read() == embedded
  assert html.escape("RNNLanguageModel.cell = 'gru'") in page
  with open(os.path.join(language_model_runs[0], 'eval_validation.json')) as f:
    evaluation = json.load(f)
  assert f'<th>loss</th><td>{evaluation["loss"]:.4g}</td>' in page
  assert page.count('<pre>') == 2 * (3 + 1)  # samples and the config


def test_retention_curve_covers_every_distance(language_model_runs):
  run = language_model_runs[0]
  loaded = Run.load(run)
  curve = run_report.language_model_retention(loaded, windows=2)
  assert curve.shape == (loaded.inputs.seq_len,)
  assert np.all(np.isfinite(curve)) and np.all(curve > 0)


def test_longer_retention_windows_are_the_text_end_to_end(language_model_runs):
  # Windows longer than the training ones, cut from the split's text here,
  # give the curve the report computes over them.
  loaded = Run.load(language_model_runs[0])
  length = loaded.inputs.seq_len + 8
  text = loaded.inputs.encoded_texts(loaded.vocab, 'validation')[0]
  assert len(text) >= 2 * length
  tokens = np.stack([text[:length], text[length:2 * length]])
  want = run_report._retention_curve(loaded, tokens)  # pylint: disable=protected-access
  got = run_report.language_model_retention(loaded, windows=2, length=length)
  assert got.shape == (length,)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_each_run_gets_its_own_report_by_default(language_model_runs):
  run = language_model_runs[0]
  report_py.main(['--output_dir', run, '--retention_windows', '2'])
  assert sorted(os.listdir(os.path.join(run, 'report'))) == [
      run_report.MARKER, 'curves.png', run_report.PAGE, 'retention.png']


def test_classifier_report_draws_its_confusion_matrix(generated_dir, tmp_path):
  run = str(tmp_path / 'match')
  _train(run, 'configs/match_winner.gin', 50,
         ["FeatureVectorInputs.dataset = 'match_results/small'",
          f"FeatureVectorInputs.data_dir = '{generated_dir}'",
          'VectorClassifier.n_units = 16', 'train_and_evaluate.eval_every = 25'])
  report_py.main(['--output_dir', run])
  names = sorted(os.listdir(os.path.join(run, 'report')))
  assert names == [run_report.MARKER, 'confusion.png', 'curves.png', run_report.PAGE]
  with open(os.path.join(run, 'eval_validation.json')) as f:
    evaluation = json.load(f)
  with open(os.path.join(run, 'report', run_report.PAGE), encoding='utf-8') as f:
    page = f.read()
  assert f'<th>accuracy</th><td>{evaluation["accuracy"]:.4g}</td>' in page
  assert 'retention.png' not in page


def _earlier_report(run, out):
  """Writes a report of `run` into `out`; returns its files' contents."""
  report_py.main(['--output_dir', run, '--out', out, '--retention_windows', '2'])
  return snapshot(out)


def test_bad_input_fails_clearly_and_keeps_the_earlier_report(
    language_model_runs, tmp_path, capsys):
  out = str(tmp_path / 'report')
  before = _earlier_report(language_model_runs[0], out)
  fails_with(capsys, report_py.main, ['--output_dir', language_model_runs[0],
                                   '--output_dir', str(tmp_path), '--out', out],
             'is not a run directory')
  fails_with(capsys, report_py.main, ['--output_dir', language_model_runs[0],
                                   '--retention_windows', '0', '--out', out],
             '--retention_windows')
  fails_with(capsys, report_py.main, ['--output_dir', language_model_runs[0],
                                   '--retention_length', '1', '--out', out],
             '--retention_length')
  fails_with(capsys, report_py.main, ['--output_dir', language_model_runs[0],
                                   '--retention_length', '10000000',
                                   '--out', out],
             'no text of 10000000 characters', '--retention_length')
  assert snapshot(out) == before
  # A directory of other files is not replaced by a report.
  other = tmp_path / 'notes'
  other.mkdir()
  (other / 'mine.txt').write_text('keep me')
  fails_with(capsys, report_py.main, ['--output_dir', language_model_runs[0],
                                   '--out', str(other)], 'not a report')
  assert os.listdir(other) == ['mine.txt']
  # Nor is one that only looks like a report: report.py did not make it.
  (other / 'mine.txt').unlink()
  (other / run_report.PAGE).write_text('<html>my own page</html>')
  fails_with(capsys, report_py.main, ['--output_dir', language_model_runs[0],
                                   '--out', str(other)], 'not a report')
  assert os.listdir(other) == [run_report.PAGE]


def test_an_empty_directory_of_the_users_receives_the_report(
    language_model_runs, tmp_path):
  out = tmp_path / 'mine'
  out.mkdir()
  identity = os.stat(out).st_ino
  report_py.main(['--output_dir', language_model_runs[0], '--out', str(out),
               '--retention_windows', '2'])
  assert os.stat(out).st_ino == identity  # the same directory, filled
  assert run_report.PAGE in os.listdir(out) and run_report.MARKER in os.listdir(out)


def test_a_failure_while_drawing_keeps_the_earlier_report(
    language_model_runs, tmp_path, monkeypatch):
  out = str(tmp_path / 'report')
  before = _earlier_report(language_model_runs[0], out)

  def fails_half_way(curves, path):
    with open(path, 'w') as f:
      f.write('half a figure')
    raise OSError('No space left on device')
  monkeypatch.setattr(run_report.figures, 'retention_curves', fails_half_way)
  with pytest.raises(OSError):
    report_py.main(['--output_dir', language_model_runs[0], '--out', out,
                 '--retention_windows', '2'])
  assert snapshot(out) == before
  assert os.listdir(tmp_path) == ['report']  # no partial report left


def test_a_new_report_leaves_no_file_of_the_earlier_one(language_model_runs,
                                                         tmp_path):
  out = str(tmp_path / 'report')
  report_py.main([*[a for d in language_model_runs for a in ('--output_dir', d)],
               '--out', out, '--retention_windows', '2'])
  report_py.main(['--output_dir', language_model_runs[1], '--out', out,
               '--retention_windows', '2'])
  assert sorted(os.listdir(out)) == [run_report.MARKER, 'curves.png',
                                     run_report.PAGE, 'retention.png']
