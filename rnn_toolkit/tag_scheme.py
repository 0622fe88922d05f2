"""The IOB2 tag scheme, which models and data pipelines agree on.

Entities are tagged B-TYPE at their first word and I-TYPE at the others;
O is outside any. A CRF tagger can hold its paths to the scheme
(models/crf.py), and a pipeline can rewrite IOB1 tags into it
(data/text_classification.py); both read the rules here, so neither
package depends on the other.
"""

import re
from typing import Sequence


def unreadable(tag_names: Sequence[str]) -> list[str]:
  """The tags that are not O, B-TYPE or I-TYPE."""
  return [t for t in tag_names if not re.fullmatch(r'O|[BI]-.+', t)]


def may_follow(before: str, tag: str) -> bool:
  """Whether IOB2 allows `tag` after `before` ('O' at a sentence's start):
  I-X only continues an entity of type X."""
  return not tag.startswith('I-') or before in (f'B-{tag[2:]}', tag)


def first_invalid(tags: Sequence[str]) -> int | None:
  """The position of the first tag IOB2 forbids where it stands, or None."""
  before = 'O'
  for i, tag in enumerate(tags):
    if not may_follow(before, tag):
      return i
    before = tag
  return None


def as_iob2(tags: Sequence[str]) -> list[str]:
  """`tags` with each I-X that begins an entity (IOB1's way) made B-X.

  Entities read the same before and after (as CoNLL's evaluation and
  seqeval's default mode read them), so entity scores do not change (token
  accuracy counts the rewritten tags).
  """
  rewritten, before = [], 'O'
  for tag in tags:
    rewritten.append(tag if may_follow(before, tag) else f'B-{tag[2:]}')
    before = tag
  return rewritten
