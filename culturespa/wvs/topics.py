"""The 13 WVS topics and which questions belong to each, and the 259 evaluation questions.

Question ranges are those the CultureSPA paper uses; ``topic_of`` maps any WVS id (``Q234A`` included) to its topic.
"""

from __future__ import annotations

import re

TOPICS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("Social Values, Attitudes & Stereotypes", (1, 45)),
    ("Happiness and Well-being", (46, 56)),
    ("Social Capital, Trust & Organizational Membership", (57, 105)),
    ("Economic Values", (106, 111)),
    ("Corruption", (112, 120)),
    ("Migration", (121, 130)),
    ("Security", (131, 151)),
    ("Postmaterialist Index", (152, 157)),
    ("Science & Technology", (158, 163)),
    ("Religious Values", (164, 175)),
    ("Ethical Values and Norms", (176, 198)),
    ("Political Interest & Political Participation", (199, 234)),
    ("Political Culture & Political Regimes", (235, 259)),
)
TOPIC_NAMES: tuple[str, ...] = tuple(name for name, _ in TOPICS)

# Questions whose options are numbered from 0 (option_lst[k] has number k); all others number from 1.
_ZERO_BASED_RANGES = ((94, 105), (119, 119), (122, 129), (241, 249))
# Demographics (Q260-Q290) and the party-vote question Q223 are not scored.
_EXCLUDED_FROM_EVAL = {f"Q{n}" for n in range(260, 291)} | {"Q223"}

_QID = re.compile(r"^Q(\d+)([A-Z]?)$")


def question_number(q_id: str) -> int:
    """The numeric part of a WVS id (``Q234A`` → 234); raises ValueError for ids that are not WVS ids."""
    match = _QID.match(q_id)
    if not match:
        raise ValueError(f"not a WVS question id: {q_id!r}")
    return int(match.group(1))


def is_zero_based(q_id: str) -> bool:
    n = question_number(q_id)
    return any(lo <= n <= hi for lo, hi in _ZERO_BASED_RANGES)


def option_numbers(q_id: str, n_options: int) -> list[int]:
    """The answer numbers a respondent may give for a WVS question with ``n_options`` options."""
    start = 0 if is_zero_based(q_id) else 1
    return list(range(start, start + n_options))


def topic_of(q_id: str) -> str | None:
    """Topic name of a WVS question, or None for questions outside the 13 topics (demographics)."""
    n = question_number(q_id)
    for name, (lo, hi) in TOPICS:
        if lo <= n <= hi:
            return name
    return None


def is_eval_question(q_id: str) -> bool:
    return q_id not in _EXCLUDED_FROM_EVAL
