"""Run directories written by earlier versions keep working.

tests/saved_runs/dates_ba377df is a run that train.py of commit ba377df
(the last before the machinery moved into rnn_toolkit/) wrote with:

    python train.py --gin_file configs/date_normalisation.gin \
        --output_dir dates_ba377df \
        --gin_param "TranslationInputs.dataset='date_normalisation/small'" \
        --gin_param RNNSeq2Seq.d_model=4 --gin_param RNNSeq2Seq.n_units=4 \
        --gin_param BATCH_SIZE=4 --gin_param N_STEPS=2 \
        --gin_param train_and_evaluate.eval_every=2 \
        --gin_param train_and_evaluate.n_eval_batches=1 \
        --gin_param multifactor.warmup_steps=1 \
        --gin_param DecodingSettings.beam_width=2

(its TensorBoard summaries left out). Its config.gin names the gin
configurables as that version registered them.
"""

import json
import os
import shutil

import pytest

from conftest import REPO_ROOT, committed_steps
from rnn_toolkit import configurables
from rnn_toolkit.evaluation.run import Run
from rnn_toolkit.reporting import run_report
import evaluate as evaluate_py
import report as report_py
import train as train_py

SAVED = os.path.join(REPO_ROOT, 'tests', 'saved_runs', 'dates_ba377df')
# The command that wrote it, less its output directory.
ORIGINAL_FLAGS = [
    '--gin_file', 'configs/date_normalisation.gin',
    *[flag for binding in (
        "TranslationInputs.dataset='date_normalisation/small'",
        'RNNSeq2Seq.d_model=4', 'RNNSeq2Seq.n_units=4', 'BATCH_SIZE=4',
        'N_STEPS=2', 'train_and_evaluate.eval_every=2',
        'train_and_evaluate.n_eval_batches=1', 'multifactor.warmup_steps=1',
        'DecodingSettings.beam_width=2') for flag in ('--gin_param', binding)]]


@pytest.fixture
def saved_run(tmp_path, monkeypatch):
  """A copy of the saved run; its generated dataset is prepared on first use."""
  monkeypatch.setenv('TOOLKIT_CACHE_DIR', str(tmp_path / 'cache'))
  copy = str(tmp_path / 'dates')
  shutil.copytree(SAVED, copy)
  return copy


def test_its_config_parses_as_it_was_written():
  text = configurables.parse_run_config(os.path.join(SAVED, 'config.gin'))
  assert 'experiment.model = @RNNSeq2Seq' in text
  assert 'DecodingSettings.beam_width = 2' in text


def test_it_resumes_evaluates_and_reports(saved_run, tmp_path):
  assert committed_steps(saved_run) == [2]
  # Resumed with the command that started it: the config recorded in its
  # checkpoint must read as unchanged.
  train_py.main([*ORIGINAL_FLAGS, '--output_dir', saved_run, '--steps', '4'])
  assert committed_steps(saved_run)[-1] == 4
  with open(os.path.join(saved_run, 'metrics.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f] == [2, 4]

  run = Run.load(saved_run, 'latest')
  assert run.step == 4 and run.task.name == 'translation'
  assert run.decoding.beam_width == 2  # as its config.gin says
  metrics = run.evaluate()
  assert metrics['step'] == 4 and metrics['beam_width'] == 2
  assert 0 <= metrics['token_accuracy'] <= 1
  assert len(run.translate(['Wed 25 Nov 2026'])) == 1
  evaluate_py.main(['--output_dir', saved_run, '--checkpoint', '2'])

  out = str(tmp_path / 'report')
  report_py.main(['--output_dir', saved_run, '--out', out])
  assert sorted(os.listdir(out)) == [run_report.MARKER, 'attention.png',
                                     'curves.png', 'index.html']
