"""The one exception type for problems the user can fix, and how CLIs report it."""

import sys
import textwrap
from typing import Any, NoReturn


class UsageError(Exception):
  """A problem with the user's config, data or directories, with the fix.

  The message is a single paragraph that names the problem and says how to
  fix it; command-line entry points print it without a traceback.
  """


def without_gin_trace(message: str) -> str:
  """`message` without the "In call to configurable ..." gin appends.

  gin adds that trace to every error raised inside a configurable; for a
  problem the user fixes in config it is noise.
  """
  return message.split('  In call to configurable')[0]


def exit_with(error: BaseException, program: str) -> NoReturn:
  """Prints `error` as one wrapped paragraph on stderr and exits with status 2."""
  text = ' '.join(without_gin_trace(str(error)).split())
  print(textwrap.fill(f'{program}: error: {text}', width=100,
                    break_long_words=False, break_on_hyphens=False),
        file=sys.stderr)
  sys.exit(2)


def check_positive(owner: str, **values: Any) -> None:
  """Raises UsageError unless every value is a positive whole number."""
  bad = [f'{name} = {value!r}' for name, value in values.items()
         if isinstance(value, bool) or not isinstance(value, int) or value < 1]
  if bad:
    raise UsageError(f'{owner} needs positive whole numbers, but got '
                     f'{", ".join(bad)}. Fix these bindings in your gin config.')
