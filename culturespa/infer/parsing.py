"""Turn a model's reply into an option number.

The paper parses the first number in the reply; we take the first integer that is a *valid* option number for the
question, so a reply such as "On a scale of 1-10 ... I choose 3" to a 4-option question yields 3 and a reply with no
valid number is recorded as invalid (never silently mapped to some default).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_INTEGER = re.compile(r"(?<![0-9])[0-9]+(?![0-9])")


def parse_answer(text: str, numbers: Sequence[int]) -> int | None:
    """The first integer in ``text`` that is one of ``numbers`` (0-based numbering and multi-digit numbers work);
    integers that are not valid options are skipped; None when there is none.

    Digits are read as whole runs, so "10" is ten (never 1) and "3.5" gives 3 then 5. A leading sign is ignored:
    "-1" reads as 1, since replies like "Answer -1" mean the option, not a negative number.
    """
    valid = set(int(n) for n in numbers)
    for match in _INTEGER.finditer(text or ""):
        value = int(match.group(0))
        if value in valid:
            return value
    return None
