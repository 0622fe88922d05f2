"""The user's own files: examples to score (--data_file) and inputs to predict for (--predict_file).

A run is scored on a file by exactly the code that scores a split: the
file becomes raw examples (dicts keyed by the run's dataset's feature
names, with the dtypes TFDS gives), which the pipeline batches as it
batches a split's. Every line is checked before anything is computed, so
a malformed line stops the program with a message that names the file and
the line, before any file is written.

Formats (the column names are the run's dataset's feature names, e.g.
`sentence` and `label` for glue/sst2; see `FileFormat.describe`):

| task | --data_file F | --predict_file F |
| --- | --- | --- |
| classifier | TSV with a header row, or JSONL (.jsonl): text and label columns; a label is a class name or id | one text per line; or TSV (.tsv, header row) or JSONL (.jsonl) with the text column |
| vector classifier | as the classifier, the features column holding numbers separated by spaces or commas (JSONL: also a list) | one vector per line; or TSV/JSONL with the features column |
| tagger | CoNLL columns (word first, tag last, spaces or tabs), a blank line between sentences | one sentence per line; or CoNLL columns (.conll, .iob, .bio), the first one the word |
| language model | plain UTF-8 text, scored as one text | (--generate instead) |
| translator | TSV: source, target (2 columns); a first row of the two feature names is a header | one source per line; or TSV (.tsv) of which the first column is the source |
| captioner | TSV: image path, then 1 or more captions; rows naming one image add to its captions; a first row starting with the image feature's name is a header | one image path per line; or TSV (.tsv) of which the first column is the image |

Files are UTF-8 (a byte-order mark is allowed; line ends \\n or \\r\\n).
Blank lines are skipped (in CoNLL, they end sentences); TSV fields are
separated by tabs, with no quoting. Image paths are relative to the
directory of the file that names them.
"""

import dataclasses
import json
import math
import os
import re
from typing import Any, Callable, Iterator, Optional

import numpy as np

from rnn_toolkit.errors import UsageError

# What makes Run.evaluate's argument a file rather than a split: a path
# separator, or a file extension (splits are names such as 'validation' or
# 'train[:10%]+test').
_EXTENSION = re.compile(r'\.[A-Za-z][A-Za-z0-9]{0,7}$')
JSONL_EXTENSIONS = ('.jsonl', '.ndjson')
CONLL_EXTENSIONS = ('.conll', '.conllu', '.conll03', '.iob', '.bio')
DOCSTART = '-DOCSTART-'
# The whitespace TensorFlow's string split uses (data/tokenize.py): ASCII
# only, so a no-break space stays inside a word, as it does in training.
_ASCII_SPACE = re.compile(r'[ \t\n\r\f\v]+')
_BOM = b'\xef\xbb\xbf'


def looks_like_file(source: str) -> bool:
  """Whether `source` (a split or a file) names a file.

  It does when it names an existing path, holds a path separator or ends
  in a file extension (.tsv, .jsonl, .txt, .conll...).
  """
  return (os.path.exists(source) or os.sep in source
          or (os.altsep is not None and os.altsep in source)
          or bool(_EXTENSION.search(source)))


def stem(path: str) -> str:
  """The file name of `path` without its extension: eval_file_STEM.json."""
  return os.path.splitext(os.path.basename(path))[0] or 'data'


# ---- raw examples of a data file ----------------------------------------------

@dataclasses.dataclass(frozen=True)
class Examples:
  """A data file read and checked: its raw examples, in file order.

  Attributes:
    path: the file.
    examples: the raw examples, dicts keyed by the dataset's feature names
      (texts as UTF-8 bytes, class ids as int64, ...). A captioner's hold
      the image's path instead of its pixels, read by `dataset()`.
    lines: the line each example starts at (1-based).
    signature: the tf.TensorSpec of each feature, as TFDS would give it.
    load: stored example -> raw example (reads a captioner's image).
  """
  path: str
  examples: list[dict]
  lines: list[int]
  signature: dict
  load: Optional[Callable[[dict], dict]] = None

  def __len__(self) -> int:
    return len(self.examples)

  def dataset(self) -> Any:
    """The raw examples as a tf.data.Dataset, in file order."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    load = self.load or (lambda ex: ex)
    return tf.data.Dataset.from_generator(
        lambda: (load(ex) for ex in self.examples),
        output_signature=self.signature)


# ---- inputs of a predict file -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Item:
  """One input of a predict file.

  Attributes:
    line: where it is in the file (1-based).
    value: what the run's `apply` (Run.predict, .tag...) takes for it.
    shown: what its prediction record shows of it (the text, the words,
      the image path as written...).
  """
  line: int
  value: str
  shown: Any


def check_exists(path: str, what: str) -> None:
  """Raises UsageError unless `path` is a file; `what` names it ('data file')."""
  if os.path.isdir(path):
    raise UsageError(f'The {what} {path} is a directory; pass a file.')
  if not os.path.exists(path):
    raise UsageError(
        f'The {what} {path} does not exist. (Run.evaluate takes an argument '
        f'that holds a path separator or ends in a file extension such as '
        f'.tsv, .jsonl, .txt or .conll as a file, not as a split of the '
        f'dataset.) Check the path.')


# ---- reading lines ------------------------------------------------------------

def _read_text(path: str) -> str:
  """The text of `path`, checked to be UTF-8 and not empty."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise UsageError(f'Cannot read {path} ({e.strerror}).') from None
  if data.startswith(_BOM):
    data = data[len(_BOM):]
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    column = e.start - (data.rfind(b'\n', 0, e.start) + 1) + 1
    raise _line_error(
        path, line, f'byte {data[e.start]:#04x} at column {column} is not '
        f'UTF-8 text', 'Save the file as UTF-8.') from None
  if not text.strip():
    raise _line_error(path, 1, 'the file is empty',
                      'The file needs at least one example.')
  return text


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
  """(line number, line without its end) of each line of `text`.

  Only \\n ends a line (a \\r before it goes too): text may hold other
  characters Python counts as line breaks.
  """
  for number, line in enumerate(text.split('\n'), 1):
    yield number, line[:-1] if line.endswith('\r') else line


def _nonblank_lines(text: str) -> list[tuple[int, str]]:
  return [(n, line) for n, line in _numbered_lines(text) if line.strip()]


def _line_error(path: str, line: int, problem: str, hint: str) -> UsageError:
  return UsageError(f'{path}, line {line}: {problem}. {hint} Fix or remove '
                    f'that line; nothing was written.')


def _at_line(path: str, line: int, error: UsageError, hint: str) -> UsageError:
  """`error` (a pipeline's, about one input) as about `line` of `path`."""
  return _line_error(path, line, str(error).rstrip('.'), hint)


def _ends_with(path: str, extensions: tuple[str, ...]) -> bool:
  return path.lower().endswith(extensions)


def _is_blank(text: str) -> bool:
  """Whether `text` has no word for TensorFlow's split (ASCII whitespace only)."""
  return not _ASCII_SPACE.sub('', text)


@dataclasses.dataclass(frozen=True)
class _Table:
  """Rows of named columns, from a TSV file with a header row or JSONL."""
  rows: list[tuple[int, dict]]  # (line, {column: value})
  columns: list[str]            # the header's, or None for JSONL
  jsonl: bool


def _table(path: str, text: str, wanted: list[str], hint: str,
           jsonl: bool) -> _Table:
  """The `wanted` columns of every row of a TSV (with header) or JSONL text."""
  lines = _nonblank_lines(text)
  rows = []
  if jsonl:
    for number, line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise _line_error(path, number, f'this is not valid JSON ({e.msg} at '
                          f'column {e.colno})', hint) from None
      if not isinstance(row, dict):
        raise _line_error(path, number, f'this is a JSON '
                          f'{type(row).__name__}, not an object', hint)
      missing = [key for key in wanted if key not in row]
      if missing:
        raise _line_error(path, number, f'the object has no {missing[0]!r} '
                          f'key (its keys: {sorted(row)})', hint)
      rows.append((number, {key: row[key] for key in wanted}))
    return _Table(rows, None, True)
  header_line, header = lines[0]
  columns = [c.strip() for c in header.split('\t')]
  missing = [name for name in wanted if name not in columns]
  if missing:
    raise _line_error(
        path, header_line, f'the header row has no column {missing[0]!r} '
        f'(its columns: {columns})', hint)
  index = {name: columns.index(name) for name in wanted}
  for number, line in lines[1:]:
    fields = line.split('\t')
    if len(fields) != len(columns):
      raise _line_error(
          path, number, f'this row has {_fields(len(fields))}, but the '
          f'header row (line {header_line}) has {len(columns)}', hint)
    rows.append((number, {name: fields[i] for name, i in index.items()}))
  if not rows:
    raise _line_error(path, header_line, 'the file holds a header row and no '
                      'examples', hint)
  return _Table(rows, columns, False)


def _fields(count: int) -> str:
  return f'{count} tab-separated field{"" if count == 1 else "s"}'


def _class_id(value: Any, labels: list[str]) -> tuple[Optional[int], str]:
  """(class id, '') of a label given by name or id, else (None, the problem)."""
  classes = f'{len(labels)} classes ({", ".join(labels)})'
  if isinstance(value, str):
    name = value.strip()
    if name in labels:
      return labels.index(name), ''
    if not re.fullmatch(r'[+-]?\d+', name):
      return None, f'the label {value!r} is not one of the run\'s {classes}'
    value = int(name)
  if isinstance(value, bool) or not isinstance(value, int):
    return None, (f'the label {value!r} is neither a class name nor a class '
                  f'id')
  if not 0 <= value < len(labels):
    return None, (f'the label id {value} is outside the run\'s {classes}, '
                  f'ids 0 to {len(labels) - 1}')
  return value, ''


# ---- classifiers of texts -----------------------------------------------------

def _texts_format(inputs: Any, vocab: Any) -> str:
  labels = ', '.join(vocab.labels)
  return (f'A classifier\'s data file is a TSV file with a header row, or a '
          f'JSONL file (.jsonl), with a column {inputs.text_key!r} (the text) '
          f'and a column {inputs.label_key!r} (a class name, one of {labels}, '
          f'or its id, 0 to {len(vocab.labels) - 1}), as the run\'s dataset '
          f'{inputs.dataset} names them.')


def _text_examples(inputs: Any, vocab: Any, path: str) -> Examples:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hint = _texts_format(inputs, vocab)
  text_key, label_key = inputs.text_key, inputs.label_key
  table = _table(path, _read_text(path), [text_key, label_key], hint,
                 _ends_with(path, JSONL_EXTENSIONS))
  examples, lines = [], []
  for number, row in table.rows:
    text = _text_value(path, number, row[text_key], text_key, hint)
    label, problem = _class_id(row[label_key], vocab.labels)
    if problem:
      raise _line_error(path, number, problem, hint)
    examples.append({text_key: text.encode('utf-8'),
                     label_key: np.int64(label)})
    lines.append(number)
  signature = {text_key: tf.TensorSpec([], tf.string),
               label_key: tf.TensorSpec([], tf.int64)}
  return Examples(path, examples, lines, signature)


def _text_value(path: str, number: int, value: Any, key: str,
                hint: str) -> str:
  if not isinstance(value, str):
    raise _line_error(path, number, f'the {key!r} value {value!r} is not a '
                      f'text', hint)
  if _is_blank(value):
    raise _line_error(path, number, f'the {key!r} text has no words', hint)
  return value


def _text_inputs(inputs: Any, vocab: Any, path: str) -> list[Item]:
  del vocab
  text = _read_text(path)
  key = inputs.text_key
  hint = (f'A classifier\'s predict file holds one text per line, or is a '
          f'TSV file (.tsv) with a header row or a JSONL file (.jsonl) with '
          f'a column {key!r} (the text).')
  jsonl = _ends_with(path, JSONL_EXTENSIONS)
  if jsonl or _ends_with(path, ('.tsv',)):
    rows = _table(path, text, [key], hint, jsonl).rows
    texts = [(n, _text_value(path, n, row[key], key, hint)) for n, row in rows]
  else:
    texts = _nonblank_lines(text)
  return [Item(n, value, value) for n, value in texts]


def _class_record(item: Item, result: tuple[str, float]) -> dict:
  label, probability = result
  return {'text': item.shown, 'label': label, 'probability': probability}


# ---- classifiers of feature vectors -------------------------------------------

def _vectors_format(inputs: Any, vocab: Any) -> str:
  labels = ', '.join(vocab.labels)
  return (f'A vector classifier\'s data file is a TSV file with a header row, '
          f'or a JSONL file (.jsonl), with a column {inputs.features_key!r} '
          f'({inputs.n_features} numbers, separated by spaces or commas; in '
          f'JSONL also a list) and a column {inputs.label_key!r} (a class '
          f'name, one of {labels}, or its id, 0 to {len(vocab.labels) - 1}), '
          f'as the run\'s dataset {inputs.dataset} names them.')


def _feature_spec(inputs: Any) -> Any:
  return inputs.builder.info.features[inputs.features_key]


def _numbers(path: str, number: int, value: Any, inputs: Any,
             hint: str) -> list[float]:
  """The feature vector of a line, checked: `inputs.n_features` numbers."""
  n = inputs.n_features
  if isinstance(value, str):
    parts = value.replace(',', ' ').split()
    try:
      numbers = [float(p) for p in parts]
    except ValueError:
      numbers = None
  elif isinstance(value, list) and all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
    numbers = [float(v) for v in value]
  else:
    numbers = None
  if numbers is None or len(numbers) != n:
    raise _line_error(path, number, f'the {inputs.features_key!r} value '
                      f'{_shorten(value)} is not {n} numbers', hint)
  if not all(math.isfinite(v) for v in numbers):
    raise _line_error(path, number, f'the {inputs.features_key!r} value '
                      f'{_shorten(value)} holds a number that is not finite',
                      hint)
  if np.dtype(_feature_spec(inputs).np_dtype).kind in 'iu' and not all(
      v.is_integer() for v in numbers):
    raise _line_error(path, number, f'the {inputs.features_key!r} value '
                      f'{_shorten(value)} holds a number that is not whole, '
                      f'but the dataset\'s feature holds whole numbers', hint)
  return numbers


def _shorten(value: Any, limit: int = 60) -> str:
  shown = repr(value)
  return shown if len(shown) <= limit else shown[:limit] + '...'


def _vector_examples(inputs: Any, vocab: Any, path: str) -> Examples:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hint = _vectors_format(inputs, vocab)
  key, label_key = inputs.features_key, inputs.label_key
  spec = _feature_spec(inputs)
  table = _table(path, _read_text(path), [key, label_key], hint,
                 _ends_with(path, JSONL_EXTENSIONS))
  examples, lines = [], []
  for number, row in table.rows:
    values = _numbers(path, number, row[key], inputs, hint)
    label, problem = _class_id(row[label_key], vocab.labels)
    if problem:
      raise _line_error(path, number, problem, hint)
    examples.append({key: np.asarray(values).astype(spec.np_dtype).reshape(
        spec.shape), label_key: np.int64(label)})
    lines.append(number)
  signature = {key: tf.TensorSpec(spec.shape, tf.as_dtype(spec.np_dtype)),
               label_key: tf.TensorSpec([], tf.int64)}
  return Examples(path, examples, lines, signature)


def _vector_inputs(inputs: Any, vocab: Any, path: str) -> list[Item]:
  del vocab
  text = _read_text(path)
  key = inputs.features_key
  hint = (f'A vector classifier\'s predict file holds one vector of '
          f'{inputs.n_features} numbers per line (separated by spaces or '
          f'commas), or is a TSV file (.tsv) with a header row or a JSONL '
          f'file (.jsonl) with a column {key!r}.')
  jsonl = _ends_with(path, JSONL_EXTENSIONS)
  if jsonl or _ends_with(path, ('.tsv',)):
    rows = [(n, row[key]) for n, row in _table(path, text, [key], hint,
                                                 jsonl).rows]
  else:
    rows = _nonblank_lines(text)
  items = []
  for n, value in rows:
    numbers = _numbers(path, n, value, inputs, hint)
    items.append(Item(n, ' '.join(map(repr, numbers)), numbers))
  return items


def _vector_record(item: Item, result: tuple[str, float]) -> dict:
  label, probability = result
  return {'features': item.shown, 'label': label, 'probability': probability}


# ---- taggers ------------------------------------------------------------------

def _tags_format(inputs: Any, vocab: Any) -> str:
  del inputs
  return (f'A tagger\'s data file has CoNLL columns: one word a line, the '
          f'word in the first column and its tag in the last (columns '
          f'separated by spaces or tabs), a blank line between sentences; '
          f'{DOCSTART} lines are skipped. The tags are the run\'s: '
          f'{", ".join(vocab.labels)}.')


def _conll_sentences(path: str, text: str, hint: str, tags: Optional[list[str]]
                     ) -> list[tuple[int, list[str], list[int]]]:
  """(first line, words, tag ids) of each sentence of a CoNLL text.

  With `tags` None, only the words are read (the first column).
  """
  sentences = []
  current = None
  for number, line in _numbered_lines(text):
    fields = _ASCII_SPACE.split(line.strip(' \t\n\r\f\v'))
    if not fields[0] or fields[0] == DOCSTART:
      current = None
      continue
    if current is None:
      current = (number, [], [])
      sentences.append(current)
    current[1].append(fields[0])
    if tags is not None:
      if len(fields) < 2:
        raise _line_error(path, number, f'the line {line.strip()!r} has one '
                          f'column, the word, and no tag', hint)
      if fields[-1] not in tags:
        raise _line_error(path, number, f'the tag {fields[-1]!r} is not one '
                          f'of the run\'s tags', hint)
      current[2].append(tags.index(fields[-1]))
  if not sentences:
    raise _line_error(path, 1, 'the file holds no words, only '
                      f'{DOCSTART} lines', hint)
  return sentences


def _tagged_examples(inputs: Any, vocab: Any, path: str) -> Examples:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hint = _tags_format(inputs, vocab)
  sentences = _conll_sentences(path, _read_text(path), hint, vocab.labels)
  words_key, tags_key = inputs.text_key, inputs.label_key
  examples = [{words_key: np.array([w.encode('utf-8') for w in words],
                                   dtype=object),
               tags_key: np.array(tags, np.int64)}
              for _, words, tags in sentences]
  signature = {words_key: tf.TensorSpec([None], tf.string),
               tags_key: tf.TensorSpec([None], tf.int64)}
  return Examples(path, examples, [n for n, _, _ in sentences], signature)


def _tagger_inputs(inputs: Any, vocab: Any, path: str) -> list[Item]:
  del inputs, vocab
  text = _read_text(path)
  if _ends_with(path, CONLL_EXTENSIONS):
    hint = (f'A tagger\'s predict file ending in {", ".join(CONLL_EXTENSIONS)} '
            f'has CoNLL columns: one word a line, the word in the first '
            f'column, a blank line between sentences.')
    sentences = [(n, words) for n, words, _ in
                 _conll_sentences(path, text, hint, None)]
  else:  # one sentence a line, split as Run.tag splits it
    from data.tokenize import words_as_typed  # pylint: disable=g-import-not-at-top
    sentences = [(n, words_as_typed(line)) for n, line in _nonblank_lines(text)
                 if not _is_blank(line)]
    if not sentences:
      raise _line_error(path, 1, 'the file holds no words',
                        'A tagger\'s predict file holds one sentence a line.')
  return [Item(n, ' '.join(words), words) for n, words in sentences]


def _tags_record(item: Item, result: list[tuple[str, str]]) -> dict:
  return {'words': [word for word, _ in result],
          'tags': [tag for _, tag in result]}


# ---- language models ----------------------------------------------------------

def _lm_format(inputs: Any, vocab: Any) -> str:
  del inputs, vocab
  return ('A language model\'s data file is plain UTF-8 text, scored as one '
          'text.')


def _lm_examples(inputs: Any, vocab: Any, path: str) -> Examples:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del vocab
  text = _read_text(path)
  return Examples(path, [{inputs.text_key: text.encode('utf-8')}], [1],
                  {inputs.text_key: tf.TensorSpec([], tf.string)})


# ---- translators --------------------------------------------------------------

def _pairs_format(inputs: Any, vocab: Any) -> str:
  del vocab
  return (f'A translator\'s data file is a TSV file of two columns, the '
          f'source text and its target text, separated by a tab; a first row '
          f'"{inputs.source_key}<tab>{inputs.target_key}" (the run\'s '
          f'dataset\'s feature names) is a header and skipped.')


def _translation_examples(inputs: Any, vocab: Any, path: str) -> Examples:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hint = _pairs_format(inputs, vocab)
  source_key, target_key = inputs.source_key, inputs.target_key
  lines = _nonblank_lines(_read_text(path))
  if lines[0][1].split('\t') == [source_key, target_key]:
    lines = lines[1:]
    if not lines:
      raise _line_error(path, 1, 'the file holds a header row and no '
                        'examples', hint)
  examples, numbers = [], []
  for number, line in lines:
    fields = line.split('\t')
    if len(fields) != 2:
      raise _line_error(path, number, f'this row has '
                        f'{_fields(len(fields))}, not 2', hint)
    for field, what in zip(fields, ('source', 'target')):
      if not field.strip():
        raise _line_error(path, number, f'the {what} text is empty', hint)
    examples.append({source_key: fields[0].encode('utf-8'),
                     target_key: fields[1].encode('utf-8')})
    numbers.append(number)
  signature = {source_key: tf.TensorSpec([], tf.string),
               target_key: tf.TensorSpec([], tf.string)}
  return Examples(path, examples, numbers, signature)


def _translation_inputs(inputs: Any, vocab: Any, path: str) -> list[Item]:
  hint = ('A translator\'s predict file holds one source text a line, or is '
          'a TSV file (.tsv) of which the first column is the source text.')
  lines = _nonblank_lines(_read_text(path))
  if _ends_with(path, ('.tsv',)):
    lines = [(n, line.split('\t')[0]) for n, line in lines]
    if lines[0][1] == inputs.source_key:  # a header row
      lines = lines[1:]
  items = []
  for number, source in lines:
    try:
      inputs.encode(vocab, [source])  # as Run.translate will
    except UsageError as e:
      raise _at_line(path, number, e, hint) from None
    items.append(Item(number, source, source))
  if not items:
    raise _line_error(path, 1, 'the file holds a header row and no sources',
                      hint)
  return items


def _output_record(item: Item, output: str) -> dict:
  return {'source': item.shown, 'output': output}


# ---- captioners ---------------------------------------------------------------

def _captions_format(inputs: Any, vocab: Any) -> str:
  del vocab
  return (f'A captioner\'s data file is a TSV file: an image file\'s path '
          f'(relative to the file\'s directory, or absolute), then one or '
          f'more captions of it, separated by tabs; rows that name the same '
          f'image add to its captions, and a first row starting with '
          f'"{inputs.image_key}" is a header and skipped.')


def _image_path(path: str, written: str) -> str:
  return os.path.join(os.path.dirname(os.path.abspath(path)), written)


def _decoded_image(full_path: str) -> Any:
  """uint8[h, w, 3]: the image file, decoded as TFDS decodes an Image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tf.io.read_file(full_path)
  return tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                            expand_animations=False)


def _checked_image(path: str, number: int, written: str, hint: str) -> str:
  """The full path of image `written` on a line, checked to be an image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  full = _image_path(path, written)
  if not os.path.isfile(full):
    raise _line_error(path, number, f'the image {written!r} does not exist '
                      f'(looked for {full})', hint)
  try:
    _decoded_image(full)
  except (tf.errors.OpError, ValueError) as e:
    reason = ' '.join(str(getattr(e, 'message', e)).split())[:200]
    raise _line_error(path, number, f'the file {written!r} is not an image '
                      f'TensorFlow can read ({reason})', hint) from None
  return full


def _caption_examples(inputs: Any, vocab: Any, path: str) -> Examples:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hint = _captions_format(inputs, vocab)
  image_key, captions_key = inputs.image_key, inputs.captions_key
  text_key = inputs.caption_text_key
  lines = _nonblank_lines(_read_text(path))
  if lines[0][1].split('\t')[0].strip() == image_key:
    lines = lines[1:]
    if not lines:
      raise _line_error(path, 1, 'the file holds a header row and no '
                        'examples', hint)
  by_image: dict[str, dict] = {}
  examples, numbers = [], []
  for number, line in lines:
    written, *captions = line.split('\t')
    if not written.strip():
      raise _line_error(path, number, 'the row has no image path', hint)
    if not captions or not all(c.strip() for c in captions):
      raise _line_error(path, number, 'the row has an image and no caption'
                        if not captions else 'the row has an empty caption',
                        hint)
    full = _image_path(path, written)
    if full not in by_image:
      _checked_image(path, number, written, hint)
      by_image[full] = {'path': full, 'captions': []}
      examples.append(by_image[full])
      numbers.append(number)
    by_image[full]['captions'] += [c.encode('utf-8') for c in captions]

  def load(stored: dict) -> dict:
    return {image_key: _decoded_image(stored['path']),
            captions_key: {text_key: tf.constant(stored['captions'])}}

  signature = {image_key: tf.TensorSpec([None, None, 3], tf.uint8),
               captions_key: {text_key: tf.TensorSpec([None], tf.string)}}
  return Examples(path, examples, numbers, signature, load)


def _caption_inputs(inputs: Any, vocab: Any, path: str) -> list[Item]:
  del vocab
  hint = ('A captioner\'s predict file holds one image file\'s path a line '
          '(relative to the file\'s directory, or absolute), or is a TSV '
          'file (.tsv) of which the first column is the path.')
  lines = _nonblank_lines(_read_text(path))
  if _ends_with(path, ('.tsv',)):
    lines = [(n, line.split('\t')[0]) for n, line in lines]
    if lines[0][1].strip() == inputs.image_key:  # a header row
      lines = lines[1:]
  items = [Item(n, _checked_image(path, n, written, hint), written)
           for n, written in lines]
  if not items:
    raise _line_error(path, 1, 'the file holds a header row and no images',
                      hint)
  return items


def _caption_record(item: Item, caption: str) -> dict:
  return {'image': item.shown, 'caption': caption}


# ---- by task ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FileFormat:
  """How the files of one task read: a row of the task table's (`Task.files`).

  A task whose models predict nothing for an input (a language model) has
  no predict file: `_inputs` and `record` are None.
  """
  describe: Callable[[Any, Any], str]
  _examples: Callable[[Any, Any, str], Examples]
  _inputs: Optional[Callable[[Any, Any, str], list[Item]]]
  record: Optional[Callable[[Item, Any], dict]]

  def read_examples(self, inputs: Any, vocab: Any, path: str) -> Examples:
    """The checked examples of data file `path`, for a run's `inputs`, `vocab`.

    Raises:
      UsageError: the file is missing or unreadable, or a line is
        malformed (named with its number); nothing has been computed or
        written.
    """
    check_exists(path, 'data file')
    return self._examples(inputs, vocab, path)

  def check_predict_file(self, output_dir: str, model_noun: str) -> None:
    """Raises UsageError if the task has no predict file (language models)."""
    if self._inputs is None:
      raise UsageError(
          f'--predict_file needs a classifier, tagger, translator or '
          f'captioner, but {output_dir} holds a {model_noun}, which predicts '
          f'no labels or outputs for inputs. Use --generate N to sample text '
          f'from it, or --data_file FILE to score it on a text file.')

  def read_inputs(self, inputs: Any, vocab: Any, path: str, *,
                  output_dir: str = 'this run',
                  model_noun: str = 'model') -> list[Item]:
    """The checked inputs of predict file `path`, for a run's `inputs`, `vocab`.

    `output_dir` and `model_noun` say whose model a refusal names.

    Raises:
      UsageError: the task has no predict file (language models), the
        file is missing or unreadable, or a line is malformed (named with
        its number).
    """
    self.check_predict_file(output_dir, model_noun)
    check_exists(path, 'predict file')
    return self._inputs(inputs, vocab, path)


CLASSIFIER = FileFormat(_texts_format, _text_examples, _text_inputs,
                        _class_record)
VECTOR_CLASSIFIER = FileFormat(_vectors_format, _vector_examples,
                               _vector_inputs, _vector_record)
TAGGER = FileFormat(_tags_format, _tagged_examples, _tagger_inputs,
                    _tags_record)
LANGUAGE_MODEL = FileFormat(_lm_format, _lm_examples, None, None)
TRANSLATOR = FileFormat(_pairs_format, _translation_examples,
                        _translation_inputs, _output_record)
CAPTIONER = FileFormat(_captions_format, _caption_examples, _caption_inputs,
                       _caption_record)
