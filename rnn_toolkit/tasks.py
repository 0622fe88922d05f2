"""The task table: everything that differs between the toolkit's tasks.

A data pipeline names its task (`CharLMInputs.task = 'language_model'`);
evaluation, prediction, printing and the report look the task up here
instead of testing its name.
"""

import dataclasses
from typing import Any, Callable

from rnn_toolkit.evaluation import files
from rnn_toolkit.evaluation import metrics


@dataclasses.dataclass(frozen=True)
class Task:
  """What the toolkit does with a model of one task.

  Attributes:
    name: the pipelines' `task` attribute.
    model_noun: what a model of the task is called in messages.
    metrics: (sums of w·nll, w·correct and w, gathered (targets, weights,
      predictions) batches or [], vocabulary) -> the task's metrics.
    gathers_predictions: whether `metrics` needs every prediction, not
      only the sums.
    generates: whether its models write sequences, decoded by
      models/decoding.py (evaluation then generates for every example).
    use: the `Run` method that applies a model of the task to new inputs.
    flag: the evaluate.py flag that calls `use`.
    show: (input, result of `use`) -> the line evaluate.py prints.
    files: how the task's data files (--data_file) and predict files
      (--predict_file) read, and its prediction records.
    context_is_text: whether a generating model's context is text, shown
      beside its output in the evaluation's examples.
    report_sections: the report's sections of a run of the task, besides
      the metrics, curves and config every run gets.
  """
  name: str
  model_noun: str
  metrics: Callable[..., dict]
  use: str
  flag: str
  show: Callable[[Any, Any], str]
  files: files.FileFormat
  gathers_predictions: bool = False
  generates: bool = False
  context_is_text: bool = False
  report_sections: tuple[str, ...] = ()


def _show_class(text: str, prediction: tuple[str, float]) -> str:
  label, probability = prediction
  return f'{label}\t{probability:.3f}\t{text}'


def _show_tags(unused_text: str, tagged: list[tuple[str, str]]) -> str:
  return ' '.join(f'{word}/{tag}' for word, tag in tagged)


def _show_output(source: str, output: str) -> str:
  return f'{source}\t{output}'


_TASKS = (
    Task('language_model', 'language model', metrics.language_model_metrics,
         use='generate', flag='--generate', show=_show_output,
         files=files.LANGUAGE_MODEL,
         report_sections=('window_retention', 'samples')),
    Task('classification', 'text classifier', metrics.classifier_metrics,
         use='predict', flag='--predict', show=_show_class,
         files=files.CLASSIFIER,
         gathers_predictions=True,
         report_sections=('text_retention', 'confusion_matrix')),
    # Classes of fixed-length number vectors: no words, so no retention of
    # them to measure.
    Task('vector_classification', 'classifier', metrics.classifier_metrics,
         use='predict', flag='--predict', show=_show_class,
         files=files.VECTOR_CLASSIFIER,
         gathers_predictions=True, report_sections=('confusion_matrix',)),
    Task('tagging', 'tagger', metrics.tagger_metrics, use='tag',
         flag='--predict', show=_show_tags,
         files=files.TAGGER, gathers_predictions=True,
         report_sections=('text_retention', 'f1_by_kind', 'crf_transitions')),
    Task('translation', 'translator', metrics.target_token_metrics,
         use='translate', flag='--translate', show=_show_output,
         files=files.TRANSLATOR,
         generates=True, context_is_text=True,
         report_sections=('attention',)),
    Task('captioning', 'captioner', metrics.target_token_metrics,
         use='caption', flag='--caption', show=_show_output,
         files=files.CAPTIONER, generates=True,
         report_sections=('contact_sheet',)),
)
TASKS = {task.name: task for task in _TASKS}


def of(inputs: Any) -> Task:
  """The task of a data pipeline object (or class)."""
  return TASKS[inputs.task]
