"""Runs the toolkit's programs under tcmalloc when it is installed.

XLA on CPU allocates fresh temporaries for every step. glibc's malloc gives
large blocks back to the kernel on free, so each step faults its pages in
again; tcmalloc (or jemalloc told never to return memory) keeps them. On
the 2-core machine of docs/performance.md this makes a training
step of the RNN layer about 1.3 times faster; TensorFlow gains little.

`relaunch_with_fast_allocator()` re-executes the current program with the
library in LD_PRELOAD (an allocator must be loaded before anything else),
unless TOOLKIT_MALLOC=system is set. Install it with
`apt-get install libtcmalloc-minimal4` on Debian or Ubuntu (jemalloc,
`libjemalloc2`, is used if tcmalloc is absent). Linux only.
"""

import json
import os
import sys
from typing import Optional

OPT_OUT = 'TOOLKIT_MALLOC'
# Set in the relaunched process only: what to give back to its children.
_RELAUNCHED = '_TOOLKIT_MALLOC_RELAUNCHED_FROM'
# (name, shared library, environment the library needs)
_ALLOCATORS = (
    # Its "large alloc" notices on stderr would greet every user.
    ('tcmalloc', 'libtcmalloc_minimal.so.4',
     {'TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD': str(1 << 40)}),
    # jemalloc returns freed pages after 10 s by default; -1: never.
    ('jemalloc', 'libjemalloc.so.2',
     {'MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1'}),
)
_LIBRARY_DIRS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
                 '/usr/lib64', '/usr/lib', '/usr/local/lib')


def find() -> Optional[tuple[str, str, dict[str, str]]]:
  """(name, path, environment) of the first installed allocator, or None."""
  for name, library, environment in _ALLOCATORS:
    for directory in _LIBRARY_DIRS:
      path = os.path.join(directory, library)
      if os.path.exists(path):
        return name, path, environment
  return None


def environment() -> dict[str, str]:
  """The variables a toolkit program runs with: {} under glibc malloc."""
  found = find()
  if found is None or os.environ.get(OPT_OUT) == 'system':
    return {}
  _, path, extra = found
  return dict(extra, LD_PRELOAD=':'.join(
      filter(None, [path, os.environ.get('LD_PRELOAD')])))


def in_use() -> Optional[str]:
  """Name of the preloaded allocator this process runs under, or None."""
  try:
    with open('/proc/self/maps', encoding='utf-8') as maps:
      loaded = maps.read()
  except OSError:  # not Linux
    return None
  for name, _, _ in _ALLOCATORS:
    # Any build of it: Colab, for one, preloads the full libtcmalloc.
    if f'/lib{name}' in loaded:
      return name
  return None


def relaunch_with_fast_allocator() -> None:
  """Re-executes this program under tcmalloc or jemalloc if installed.

  Does nothing when one is loaded already, when none is installed, when
  TOOLKIT_MALLOC=system, or when the program is not a script file. After
  the relaunch the environment is put back as it was, so that programs
  this one starts are not preloaded. On success it does not return.
  """
  if _RELAUNCHED in os.environ:
    _restore_environment()
    return
  extra = environment()
  if not extra or in_use() or not os.path.isfile(sys.argv[0]):
    return
  saved = {k: os.environ.get(k) for k in extra}
  env = dict(os.environ, **extra, **{_RELAUNCHED: json.dumps(saved)})
  try:  # orig_argv keeps the interpreter's own flags (-u, -X, -I, ...)
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError:
    pass  # go on under glibc malloc


def _restore_environment():
  """Puts back the variables the relaunch set, as they were before it."""
  saved = json.loads(os.environ.pop(_RELAUNCHED))
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


def describe() -> str:
  """One log line naming the allocator, and how to get a faster one."""
  name = in_use()
  if name:
    return f'memory allocator: {name} (preloaded; {OPT_OUT}=system to turn off)'
  found = find()
  if os.environ.get(OPT_OUT) == 'system':
    hint = f'{OPT_OUT}=system is set'
  elif found is None:
    hint = 'install libtcmalloc-minimal4 for faster CPU steps'
  else:
    hint = f'{found[1]} could not be preloaded'
  return f'memory allocator: glibc malloc ({hint})'
