"""The Colab notebook runs, cell by cell, on CPU with the tiny config."""

import json
import os

import nbclient
import nbformat
import pytest

from conftest import REPO_ROOT, committed_steps, tiny_data_params

NOTEBOOK = os.path.join(REPO_ROOT, 'notebooks', 'colab_tpu.ipynb')


def _with_parameters(notebook, **values):
  """Adds a cell after the 'parameters' one that overrides its values."""
  index = next(i for i, cell in enumerate(notebook.cells)
               if 'parameters' in cell.metadata.get('tags', []))
  source = '\n'.join(f'{name} = {value!r}' for name, value in values.items())
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
  return notebook


def _text(notebook):
  return '\n'.join(output.get('text', '') for cell in notebook.cells
                   if cell.cell_type == 'code' for output in cell.outputs)


@pytest.mark.slow
def test_notebook_trains_evaluates_and_samples_on_cpu(tiny_data_dir, tmp_path):
  output_dir = str(tmp_path / 'run')
  notebook = _with_parameters(
      nbformat.read(NOTEBOOK, as_version=4),
      CONFIG='configs/char_rnn_tiny.gin', OUTPUT_DIR=output_dir,
      EXTRA_ARGS=[*tiny_data_params(tiny_data_dir), '--steps', '10'],
      PLATFORM='cpu', TENSORBOARD=False)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': REPO_ROOT}}).execute()
  text = _text(notebook)
  assert 'devices: [CpuDevice(id=0)]' in text
  assert 'Data parallel over 1 cpu device in 1 process' in text
  assert committed_steps(output_dir)[-1] == 10
  with open(os.path.join(output_dir, 'eval_validation.json')) as f:
    assert f'"loss": {json.load(f)["loss"]}' in text
  assert text.count('--- sample') == 2 and 'ROMEO:' in text
