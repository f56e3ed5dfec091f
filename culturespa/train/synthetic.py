"""Hand-made pairs files in the contract's schema, for tests and the SFT benchmark (not for real training).

The benchmark and the tests must not depend on the generate stage, so they write small, seeded pairs files here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from culturespa.utils.jsonl import write_json, write_jsonl

TOPICS = ("social values", "religious values", "security")
OPTION_SETS = (
    ["Very important", "Rather important", "Not very important", "Not at all important"],
    ["Agree", "Disagree"],
    ["Strongly agree", "Agree", "Neither agree nor disagree", "Disagree", "Strongly disagree"],
)


def pair_record(culture: str, index: int, rng: random.Random) -> dict:
    topic = TOPICS[index % len(TOPICS)]
    options = OPTION_SETS[index % len(OPTION_SETS)]
    question = {
        "id": f"G{index:04d}",
        "text": f"How do you feel about statement {index} on {topic}?",
        "options": list(options),
        "first_option": 1,
        "topic": topic,
        "source": "generated",
        "meta": {},
    }
    answer = rng.randint(1, len(options))
    unaware = answer % len(options) + 1
    return {
        "id": question["id"],
        "culture": culture,
        "topic": topic,
        "question": question,
        "answer": answer,
        "unaware_answer": unaware,
        "js": None,
    }


def write_pairs(folder: str | Path, counts: dict[str, int] | Sequence[str], n: int = 20, seed: int = 0) -> Path:
    """``{CODE}.jsonl`` per culture (``counts`` maps culture -> number of pairs, or lists cultures with ``n`` each)
    plus a ``stats.json``; returns the folder."""
    folder = Path(folder)
    counts = dict(counts) if isinstance(counts, dict) else {c: n for c in counts}
    stats = {}
    for culture, count in counts.items():
        rng = random.Random(f"{seed}|{culture}")
        write_jsonl(folder / f"{culture}.jsonl", [pair_record(culture, i, rng) for i in range(count)])
        stats[culture] = {"valid": count, "same": 0, "differ": count, "differ_rate": 1.0, "kept": count, "topics": {}}
    write_json(folder / "stats.json", {"criterion": "answer", "system": "aware", "cultures": stats})
    return folder
