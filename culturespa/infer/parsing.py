"""Turn a model's reply into an option number.

Two rules (``decoding.parse``):

* ``first_integer`` (the default, the paper's): the first integer in the reply is the answer; when it is not one of
  the question's option numbers the reply is invalid. The paper's scripts accept any first integer up to 10
  (evaluation) or 15 (pair collection) even when the question has fewer options, and score it; we count such a reply
  invalid instead (an answer that is no option cannot be placed on the scale).
* ``first_valid`` (ours): the first integer that *is* a valid option number, so a reply such as "On a scale of 1-10
  ... I choose 3" to a 4-option question yields 3.

Neither maps a reply with no usable number to some default: it is recorded as invalid.

Small models often echo the option list instead of choosing ("1. Strongly agree\n2. Agree\n3. ..."); the first-integer
rule reads that as option 1. ``reject_option_lists=True`` (``decoding.reject_option_lists``) marks such replies invalid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_INTEGER = re.compile(r"(?<![0-9])[0-9]+(?![0-9])")
_LIST_ITEM = re.compile(r"^[ \t]*(?:option[ \t]*)?([0-9]+)[ \t]*[.):][ \t]*\S", re.IGNORECASE | re.MULTILINE)


def is_option_list(text: str, numbers: Sequence[int]) -> bool:
    """True when the reply enumerates options: two lines in a row that start with consecutive valid option numbers
    ("1. ..." then "2. ..."), rather than naming one choice."""
    valid = set(int(n) for n in numbers)
    items = [int(m.group(1)) for m in _LIST_ITEM.finditer(text or "")]
    return any(a in valid and b == a + 1 and b in valid for a, b in zip(items, items[1:], strict=False))


PARSE_RULES = ("first_integer", "first_valid")


def parse_answer(
    text: str, numbers: Sequence[int], reject_option_lists: bool = False, rule: str = "first_integer"
) -> int | None:
    """The answer in ``text`` under ``rule`` (module docstring); 0-based numbering and multi-digit numbers work; None
    when there is none (or, with ``reject_option_lists``, when the reply enumerates the options).

    Digits are read as whole runs, so "10" is ten (never 1) and "3.5" gives 3 then 5. A leading sign is ignored:
    "-1" reads as 1, since replies like "Answer -1" mean the option, not a negative number.
    """
    if reject_option_lists and is_option_list(text, numbers):
        return None
    if rule not in PARSE_RULES:
        raise ValueError(f"parse rule {rule!r}; choose one of: {', '.join(PARSE_RULES)}")
    valid = set(int(n) for n in numbers)
    for match in _INTEGER.finditer(text or ""):
        value = int(match.group(0))
        if value in valid:
            return value
        if rule == "first_integer":
            return None
    return None
