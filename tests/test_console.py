"""TensorFlow's native log lines stay off the terminal unless asked for."""

import re

from rnn_toolkit.runtime import console
from conftest import run_script

# absl's format for a native log line: severity, date, time, thread, file:line.
NATIVE_LINE = re.compile(r'^[IWEF]\d{4} .*\] |absl::InitializeLog', re.M)


def test_programs_start_without_native_log_lines(tmp_path):
  started = run_script('evaluate.py', '--help')  # imports everything
  assert started.returncode == 0 and 'usage: evaluate.py' in started.stdout
  assert not NATIVE_LINE.search(started.stderr), started.stderr
  # The toolkit's own lines still show.
  refused = run_script('evaluate.py', '--output_dir', str(tmp_path / 'none'))
  assert refused.returncode == 2
  assert 'evaluate.py: error:' in refused.stderr
  assert not NATIVE_LINE.search(refused.stderr), refused.stderr


def test_native_log_lines_show_when_asked_for():
  # TensorFlow prints such lines on this machine: without them the test
  # above would prove nothing.
  shown = run_script('evaluate.py', '--help', env={console.SHOW_ENV: '1'})
  assert shown.returncode == 0
  assert NATIVE_LINE.search(shown.stderr), shown.stderr


def test_only_native_log_lines_are_dropped(capfd):
  with console.native_logs_dropped():
    with open('/dev/stderr', 'w') as stderr:  # descriptor 2, as C++ writes
      stderr.write('I0000 00:00:1796200581.756899    2516 cudart_stub.cc:31] '
                   'Could not find cuda drivers on your machine.\n'
                   'train.py: error: a line of the toolkit\'s own\n')
  assert capfd.readouterr().err == 'train.py: error: a line of the toolkit\'s own\n'


def test_everything_shows_when_the_block_fails(capfd):
  line = ('F0000 00:00:1796200581.756899    2516 loader.cc:12] '
          'could not load a library\n')
  try:
    with console.native_logs_dropped():
      with open('/dev/stderr', 'w') as stderr:
        stderr.write(line)
      raise ImportError('no such library')
  except ImportError:
    pass
  assert capfd.readouterr().err == line
