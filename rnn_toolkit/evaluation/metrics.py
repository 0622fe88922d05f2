"""Evaluation metrics, from the libraries people compare with.

scikit-learn for classifiers' per-class precision, recall and F1 and the
confusion matrix; seqeval for taggers' entity-level scores by the CoNLL
definition (an entity counts as found only if its type and both its ends
are right); sacrebleu for the corpus BLEU of generated text.
"""

import math
import re
from typing import Any, Sequence

import numpy as np
import sacrebleu
import seqeval.metrics
from sklearn import metrics as sk_metrics


def classification_metrics(targets: Sequence[int], predictions: Sequence[int],
                           names: Sequence[str]) -> dict[str, Any]:
  """Accuracy, per-class precision/recall/F1 and the confusion matrix.

  Args:
    targets: int[n] true class ids.
    predictions: int[n] predicted class ids.
    names: the class names, in id order.

  Returns:
    A JSON-ready dict. `confusion_matrix[i][j]` counts texts of class i
    predicted as class j.
  """
  ids = list(range(len(names)))
  precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
      targets, predictions, labels=ids, zero_division=0)
  return {
      'accuracy': float(np.mean(np.asarray(targets) == predictions)),
      'macro_f1': float(np.mean(f1)),
      'per_class': {name: {'precision': float(p), 'recall': float(r),
                           'f1': float(f), 'support': int(s)}
                    for name, p, r, f, s in zip(names, precision, recall, f1,
                                                support)},
      'confusion_matrix': sk_metrics.confusion_matrix(
          targets, predictions, labels=ids).tolist(),
      'labels': list(names),
  }


def tagging_metrics(target_tags: list[list[str]],
                    predicted_tags: list[list[str]]) -> dict[str, Any]:
  """Token accuracy and entity-level precision/recall/F1 (CoNLL definition).

  Args:
    target_tags: list of sentences, each a list of true tag names ('B-PER').
    predicted_tags: the predicted tag names, sentence by sentence.

  Returns:
    A JSON-ready dict, with the scores of each entity type in `per_type`.
  """
  flat_true = [t for sentence in target_tags for t in sentence]
  flat_pred = [t for sentence in predicted_tags for t in sentence]
  report = seqeval.metrics.classification_report(
      target_tags, predicted_tags, output_dict=True, zero_division=0)
  return {
      'token_accuracy': float(np.mean(np.array(flat_true) ==
                                      np.array(flat_pred))),
      'entity_precision': float(seqeval.metrics.precision_score(
          target_tags, predicted_tags, zero_division=0)),
      'entity_recall': float(seqeval.metrics.recall_score(
          target_tags, predicted_tags, zero_division=0)),
      'entity_f1': float(seqeval.metrics.f1_score(
          target_tags, predicted_tags, zero_division=0)),
      'per_type': {kind: {'precision': float(s['precision']),
                          'recall': float(s['recall']),
                          'f1': float(s['f1-score']),
                          'support': int(s['support'])}
                   for kind, s in report.items() if 'avg' not in kind},
  }


def generation_metrics(outputs: Sequence[str],
                       references: Sequence[Sequence[str]],
                       level: str) -> dict[str, float]:
  """Exact-match rate and corpus BLEU of generated texts.

  Args:
    outputs: the generated texts.
    references: for each output, the list of its reference texts (as
      many as there are; e.g. five captions of an image).
    level: 'word' or 'char': BLEU counts n-grams of the texts' words (as
      they are, already split) or of their characters.

  Returns:
    A JSON-ready dict: `exact_match`, the share of outputs equal to one of
    their references; `bleu`, sacrebleu's corpus BLEU (0-100).
  """
  exact = np.mean([out in refs for out, refs in zip(outputs, references)])
  n_refs = max(map(len, references))
  # sacrebleu takes one stream per reference position; missing ones are None.
  streams = [[refs[i] if i < len(refs) else None for refs in references]
             for i in range(n_refs)]
  bleu = sacrebleu.BLEU(tokenize='none' if level == 'word' else 'char')
  return {'exact_match': float(exact),
          'bleu': float(bleu.corpus_score(list(outputs), streams).score)}


# (targets, weights, predictions) of each evaluated batch, gathered.
Labelled = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


# The task table's metrics (rnn_toolkit/tasks.py). Each takes the sums over
# the evaluated batches (of w·nll, w·correct and w, the loss weight w being
# 0 on padding), the gathered (targets, weights, predictions) batches of a
# task that keeps them, and the run's vocabulary.

def language_model_metrics(totals: np.ndarray, unused_labelled: Labelled,
                           unused_vocab: Any) -> dict[str, Any]:
  """Accuracy, perplexity and bits per character of next-character guesses."""
  nll, correct, n_chars = totals
  loss = nll / n_chars
  return {'accuracy': correct / n_chars, 'perplexity': math.exp(loss),
          'bits_per_char': loss / math.log(2), 'n_chars': int(n_chars)}


def classifier_metrics(unused_totals: np.ndarray, labelled: Labelled,
                       vocab: Any) -> dict[str, Any]:
  """classification_metrics of the texts (rows of weight 0 are padding)."""
  targets, weights, predictions = (np.concatenate(a) for a in zip(*labelled))
  real = weights > 0
  return {**classification_metrics(targets[real], predictions[real],
                                    vocab.labels),
          'n_texts': int(real.sum())}


def tagger_metrics(totals: np.ndarray, labelled: Labelled,
                   vocab: Any) -> dict[str, Any]:
  """Token accuracy; entity scores too when the tags are IOB-style (B-PER)."""
  true, predicted = [], []
  for targets, weights, predictions in labelled:
    for t, w, p in zip(targets, weights, predictions):
      if w.any():
        true.append([vocab.labels[i] for i in t[w > 0]])
        predicted.append([vocab.labels[i] for i in p[w > 0]])
  if all(re.fullmatch(r'O|[BIES]-.+', tag) for tag in vocab.labels):
    scores = tagging_metrics(true, predicted)
  else:  # part-of-speech or chunk tags: no entities, so each tag is scored
    scores = _per_tag_metrics(true, predicted, vocab.labels)
  return {**scores, 'n_tokens': int(totals[2])}


def _per_tag_metrics(true, predicted, tags):
  """Token accuracy and each tag's precision, recall and F1 over the tokens."""
  ids = {tag: i for i, tag in enumerate(tags)}
  scores = classification_metrics(
      [ids[t] for sentence in true for t in sentence],
      [ids[p] for sentence in predicted for p in sentence], tags)
  return {'token_accuracy': scores['accuracy'], 'per_tag': scores['per_class']}


def target_token_metrics(totals: np.ndarray, unused_labelled: Labelled,
                         unused_vocab: Any) -> dict[str, Any]:
  """Token accuracy of the reference targets, read teacher-forced."""
  _, correct, n_tokens = totals
  return {'token_accuracy': correct / n_tokens, 'n_tokens': int(n_tokens)}
