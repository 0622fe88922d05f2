"""The toolkit's machinery: training, evaluation and reporting of RNN runs.

    from rnn_toolkit import Run
    run = Run.load('runs/sst2_rnn')
    run.predict(['a gorgeous, witty film'])

Importing this package loads nothing heavy: the programs import
`runtime.allocator` and install their signal handlers before JAX, trax or
TensorFlow load, so `Run` is imported on first use.
"""

__all__ = ['Run']


def __getattr__(name):
  if name == 'Run':
    from rnn_toolkit.evaluation.run import Run  # pylint: disable=g-import-not-at-top
    return Run
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
