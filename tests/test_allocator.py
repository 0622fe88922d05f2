"""train.py and evaluate.py relaunch themselves under tcmalloc when it is
installed; TOOLKIT_MALLOC=system keeps glibc's malloc."""

import json
import os
import subprocess
import sys

import pytest

from rnn_toolkit.runtime import allocator
from conftest import REPO_ROOT

needs_fast_allocator = pytest.mark.skipif(
    allocator.find() is None, reason='neither tcmalloc nor jemalloc installed')

# Relaunches as train.py does, then prints what the relaunched process saw.
PROGRAM_BODY = '''
allocator.relaunch_with_fast_allocator()
print(json.dumps({'in_use': allocator.in_use(), 'pid': os.getpid(),
                  'argv': sys.argv[1:], 'optimize': sys.flags.optimize,
                  'child_preload': os.environ.get('LD_PRELOAD'),
                  'describe': allocator.describe()}))
'''


def _run_program(tmp_path, setup='', **env):
  """Runs the program (after `setup`, a line of Python); returns what it saw."""
  script = tmp_path / 'program.py'
  script.write_text(f'import json, os, sys\nsys.path.insert(0, {REPO_ROOT!r})\n'
                    f'from rnn_toolkit.runtime import allocator\n{setup}\n{PROGRAM_BODY}')
  environment = {k: v for k, v in os.environ.items()
                 if k not in ('LD_PRELOAD', allocator.OPT_OUT)}
  process = subprocess.Popen(
      [sys.executable, '-O', str(script), '--flag', 'a b'],
      env=dict(environment, **env), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  out, err = process.communicate(timeout=60)
  assert process.returncode == 0, err
  return dict(json.loads(out), started_pid=process.pid)


@needs_fast_allocator
def test_relaunches_under_the_installed_allocator_in_the_same_process(
    tmp_path):
  seen = _run_program(tmp_path)
  assert seen['in_use'] == allocator.find()[0]
  assert seen['pid'] == seen['started_pid']  # exec: signals still reach it
  assert seen['argv'] == ['--flag', 'a b'] and seen['optimize'] == 1
  assert seen['describe'].startswith(f'memory allocator: {seen["in_use"]} ')
  assert seen['child_preload'] is None  # what it starts runs as before


def test_a_library_that_fails_to_preload_is_reported_not_retried(tmp_path):
  # ld.so ignores a preload it cannot load; the relaunch must not loop.
  (tmp_path / 'libtcmalloc_minimal.so.4').write_text('not a library')
  seen = _run_program(
      tmp_path, setup=f'allocator._LIBRARY_DIRS = ({str(tmp_path)!r},)')
  assert seen['in_use'] is None and seen['pid'] == seen['started_pid']
  assert 'libtcmalloc_minimal.so.4 could not be preloaded' in seen['describe']


def test_opting_out_keeps_glibc_malloc(tmp_path):
  seen = _run_program(tmp_path, **{allocator.OPT_OUT: 'system'})
  assert seen['in_use'] is None and seen['argv'] == ['--flag', 'a b']
  assert seen['describe'] == (
      'memory allocator: glibc malloc (TOOLKIT_MALLOC=system is set)')
