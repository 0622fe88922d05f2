"""The one exception type for problems the user can fix, and how CLIs report it."""

import sys
import textwrap


class UsageError(Exception):
  """A problem with the user's config, data or directories, with the fix.

  The message is a single paragraph that names the problem and says how to
  fix it; command-line entry points print it without a traceback.
  """


def exit_with(error, program):
  """Prints `error` as one wrapped paragraph on stderr and exits with status 2."""
  # gin appends "In call to configurable ..." to errors raised inside a
  # configurable; that trace is noise for a problem the user fixes in config.
  text = ' '.join(str(error).split('  In call to configurable')[0].split())
  print(textwrap.fill(f'{program}: error: {text}', width=100,
                    break_long_words=False, break_on_hyphens=False),
        file=sys.stderr)
  sys.exit(2)
