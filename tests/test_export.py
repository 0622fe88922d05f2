"""export.py's bad input: each is one paragraph with exit status 2, and
nothing is written. (Every shipped config's model is exported and served
in tests/test_shipped_configs.py.)"""

import os
import shutil

from conftest import REPO_ROOT, fails_with, snapshot
import export as export_py

# A translator's run that train.py wrote (tests/test_saved_runs.py).
TRANSLATOR_RUN = os.path.join(REPO_ROOT, 'tests', 'saved_runs',
                              'dates_ba377df')


def _export_fails(capsys, tmp_path, *argv_and_words, words=()):
  before = snapshot(str(tmp_path))
  fails_with(capsys, export_py.main, list(argv_and_words), *words)
  assert snapshot(str(tmp_path)) == before


def test_an_unknown_platform_is_named(capsys, tmp_path):
  _export_fails(capsys, tmp_path, '--output_dir', TRANSLATOR_RUN, '--out',
                str(tmp_path / 'model.jax'), '--platforms', 'cpu,rocm',
                words=("'rocm'", 'cpu, cuda, tpu'))


def test_an_existing_artifact_is_kept_without_overwrite(capsys, tmp_path):
  out = tmp_path / 'model.jax'
  out.write_bytes(b'an earlier export')
  _export_fails(capsys, tmp_path, '--output_dir', TRANSLATOR_RUN, '--out',
                str(out), words=(str(out), '--overwrite'))
  (tmp_path / 'other.jax.json').write_text('{}')
  _export_fails(capsys, tmp_path, '--output_dir', TRANSLATOR_RUN, '--out',
                str(tmp_path / 'other.jax'),
                words=('other.jax.json', 'exists'))


def test_a_missing_directory_for_the_artifact_is_named(capsys, tmp_path):
  _export_fails(capsys, tmp_path, '--output_dir', TRANSLATOR_RUN, '--out',
                str(tmp_path / 'nowhere' / 'model.jax'),
                words=('does not exist',))


def test_a_run_without_a_committed_checkpoint_is_refused(capsys, tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  for name in ('config.gin', 'vocab.json'):
    shutil.copy(os.path.join(TRANSLATOR_RUN, name), run)
  _export_fails(capsys, tmp_path, '--output_dir', str(run), '--out',
                str(tmp_path / 'model.jax'),
                words=('no committed checkpoint',))
