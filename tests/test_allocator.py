"""train.py and evaluate.py relaunch themselves under tcmalloc when it is
installed; TOOLKIT_MALLOC=system keeps glibc's malloc."""

import os
import subprocess
import sys

import pytest

import allocator
from conftest import REPO_ROOT

needs_fast_allocator = pytest.mark.skipif(
    allocator.find() is None, reason='neither tcmalloc nor jemalloc installed')


def _run_program(tmp_path, **env):
  """A script that relaunches like train.py; prints (allocator, pid, argv)."""
  script = tmp_path / 'program.py'
  script.write_text(
      f'import os, sys\nsys.path.insert(0, {REPO_ROOT!r})\n'
      'import allocator\nallocator.relaunch_with_fast_allocator()\n'
      'print(allocator.in_use(), os.getpid(), sys.argv[1:])\n'
      'print(allocator.describe())\n')
  environment = {k: v for k, v in os.environ.items()
                 if k not in ('LD_PRELOAD', allocator.OPT_OUT)}
  process = subprocess.Popen([sys.executable, str(script), '--flag', 'a b'],
                             env=dict(environment, **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  out, err = process.communicate(timeout=60)
  assert process.returncode == 0, err
  used, pid, argv = out.splitlines()[0].split(' ', 2)
  return used, int(pid), argv, out.splitlines()[1], process.pid


@needs_fast_allocator
def test_relaunches_under_the_installed_allocator_in_the_same_process(
    tmp_path):
  used, pid, argv, line, started_pid = _run_program(tmp_path)
  assert used == allocator.find()[0]
  assert pid == started_pid  # exec, not a child: signals still reach it
  assert argv == "['--flag', 'a b']"
  assert line.startswith(f'memory allocator: {used} (preloaded')


def test_opting_out_keeps_glibc_malloc(tmp_path):
  used, _, argv, line, _ = _run_program(
      tmp_path, **{allocator.OPT_OUT: 'system'})
  assert used == 'None' and argv == "['--flag', 'a b']"
  assert line.startswith('memory allocator: glibc malloc')
