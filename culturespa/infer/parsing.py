"""Turn a model's reply into an option number.

The paper parses the first number in the reply; we take the first integer that is a *valid* option number for the
question, so a reply such as "On a scale of 1-10 ... I choose 3" to a 4-option question yields 3 and a reply with no
valid number is recorded as invalid (never silently mapped to some default).

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


def parse_answer(text: str, numbers: Sequence[int], reject_option_lists: bool = False) -> int | None:
    """The first integer in ``text`` that is one of ``numbers`` (0-based numbering and multi-digit numbers work);
    integers that are not valid options are skipped; None when there is none (or, with ``reject_option_lists``, when
    the reply enumerates the options).

    Digits are read as whole runs, so "10" is ten (never 1) and "3.5" gives 3 then 5. A leading sign is ignored:
    "-1" reads as 1, since replies like "Answer -1" mean the option, not a negative number.
    """
    if reject_option_lists and is_option_list(text, numbers):
        return None
    valid = set(int(n) for n in numbers)
    for match in _INTEGER.finditer(text or ""):
        value = int(match.group(0))
        if value in valid:
            return value
    return None
