"""Runs the toolkit's programs under tcmalloc when it is installed.

XLA on CPU allocates fresh temporaries for every step. glibc's malloc gives
large blocks back to the kernel on free, so each step faults its pages in
again; tcmalloc (or jemalloc told never to return memory) keeps them. On
the 2-core machine of README's Performance section this makes a training
step of the RNN layer about 1.4 times faster; TensorFlow gains little.

`relaunch_with_fast_allocator()` re-executes the current program with the
library in LD_PRELOAD (the allocator must be loaded before anything else),
unless TOOLKIT_MALLOC=system is set. Install with
`apt-get install libtcmalloc-minimal4` on Debian or Ubuntu.
"""

import glob
import os
import sys

OPT_OUT = 'TOOLKIT_MALLOC'
# (name, shared-library file pattern, environment the library needs)
_ALLOCATORS = (
    ('tcmalloc', 'libtcmalloc_minimal.so.4', {}),
    # jemalloc returns freed pages after 10 s by default; -1: never.
    ('jemalloc', 'libjemalloc.so.2',
     {'MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1'}),
)
_LIBRARY_DIRS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
                 '/usr/lib64', '/usr/lib', '/usr/local/lib', '/opt/homebrew/lib')


def find():
  """(name, path, environment) of the first installed allocator, or None."""
  for name, library, environment in _ALLOCATORS:
    for directory in _LIBRARY_DIRS:
      matches = glob.glob(os.path.join(directory, library))
      if matches:
        return name, matches[0], environment
  return None


def find_tcmalloc():
  """Path of libtcmalloc_minimal, or None."""
  found = find()
  return found[1] if found and found[0] == 'tcmalloc' else None


def in_use():
  """Name of the preloaded allocator this process runs under, or None."""
  try:
    with open('/proc/self/maps', encoding='utf-8') as maps:
      loaded = maps.read()
  except OSError:  # not Linux
    return None
  for name, library, _ in _ALLOCATORS:
    if library.split('.so')[0] in loaded:
      return name
  return None


def relaunch_with_fast_allocator():
  """Re-executes this program under tcmalloc or jemalloc if installed.

  Does nothing when one is already loaded, when none is installed, or
  when TOOLKIT_MALLOC=system. On success it does not return.
  """
  found = find()
  if os.environ.get(OPT_OUT) == 'system' or in_use() or found is None:
    return
  _, path, environment = found
  env = dict(os.environ, **environment)
  env['LD_PRELOAD'] = ':'.join(filter(None, [path, env.get('LD_PRELOAD')]))
  # Marks the relaunch, so a library that fails to preload can't loop.
  env[OPT_OUT] = 'system'
  os.execve(sys.executable, [sys.executable] + sys.argv, env)


def describe():
  """One log line naming the allocator, and how to get a faster one."""
  name = in_use()
  if name:
    return f'memory allocator: {name} (preloaded; {OPT_OUT}=system to turn off)'
  hint = ('install libtcmalloc-minimal4 for faster CPU steps'
          if find() is None else f'{OPT_OUT}=system is set')
  return f'memory allocator: glibc malloc ({hint})'
