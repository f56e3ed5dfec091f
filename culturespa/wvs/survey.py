"""World Values Survey wave-7 data as released with the CultureSPA paper, loaded and validated.

Holds the survey questions, each country's answer shares, country similarities (for cross-culture thinking) and the
ranked in-context examples (for self-alignment). Every defect in the files is reported as one line naming the file
and the item, before any model work starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError, fail
from culturespa.wvs.cultures import CULTURES, get_culture
from culturespa.wvs.questions import Question
from culturespa.wvs.topics import is_eval_question, option_numbers, topic_of

DATA_ENV = "CULTURESPA_DATA_DIR"
QUESTIONS_FILE = "wvs_questions.json"
SHARES_FILE = "proportions_group_by_country.json"
SIMILARITY_FILE = "country_similarity.json"
EXAMPLES_FILE = "self_alignment_examples.json"


def default_data_dir() -> Path:
    """Data folder: ``$CULTURESPA_DATA_DIR`` when set, else ``data/`` at the repository root (filled by make data)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data"


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line user error naming the file."""
    if not path.is_file():
        raise fail(path, "file not found (run `make data`, or set paths.wvs_dir / $CULTURESPA_DATA_DIR)")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise fail(path, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


@dataclass
class WVSData:
    """All WVS reference data, validated at load time."""

    questions: dict[str, Question]
    shares: dict[str, dict[str, dict[int, float]]]
    similarity: dict[str, dict[str, float]]
    examples: dict[str, list[str]]
    root: Path

    @classmethod
    def load(cls, root: str | Path | None = None) -> WVSData:
        root = Path(root) if root else default_data_dir()
        wvs_dir = root / "wvs" if (root / "wvs" / QUESTIONS_FILE).exists() else root
        questions = _load_questions(wvs_dir / QUESTIONS_FILE)
        shares = _load_shares(wvs_dir / SHARES_FILE, questions)
        similarity = _load_similarity(wvs_dir / SIMILARITY_FILE)
        examples = _load_examples(wvs_dir / EXAMPLES_FILE)
        return cls(questions, shares, similarity, examples, wvs_dir)

    @cached_property
    def eval_questions(self) -> list[Question]:
        """The 259 scored questions, in survey order (Q260-Q290 and Q223 excluded)."""
        return [q for q in self.questions.values() if is_eval_question(q.id)]

    def questions_of_topic(self, topic: str) -> list[Question]:
        return [q for q in self.eval_questions if q.topic == topic]

    def answer_shares(self, culture: str, q_id: str) -> dict[int, float]:
        """Share of respondents per option number; empty when the culture has no answers for the question."""
        self._require_culture(culture)
        return self.shares[culture].get(q_id, {})

    def majority_answer(self, culture: str, q_id: str) -> int | None:
        """The option most respondents of ``culture`` chose, or None when it has no answers for ``q_id``.

        A tie goes to the option listed first in the shares file (its stored order, which ``json`` keeps), as the
        paper's scoring does: it takes each question's first key, and the file lists options largest share first.
        """
        shares = self.answer_shares(culture, q_id)
        if not shares:
            return None
        return max(shares.items(), key=lambda kv: kv[1])[0]  # max keeps the first of equal keys

    def answered_questions(self, culture: str) -> list[Question]:
        """Evaluation questions for which ``culture`` has answers."""
        return [q for q in self.eval_questions if self.answer_shares(culture, q.id)]

    def missing_questions(self, culture: str) -> list[str]:
        return [q.id for q in self.eval_questions if not self.answer_shares(culture, q.id)]

    def most_and_least_similar(self, culture: str, among: list[str], k: int = 3) -> tuple[list[str], list[str]]:
        """The ``k`` most and ``k`` least similar cultures to ``culture`` among ``among`` (itself excluded), most
        similar first and least similar first.

        Ties follow the paper's cross-culture-thinking code: the row is sorted by similarity, ascending and stable
        (equal values keep the file's order), the least similar are read from its start and the most similar from its
        end; so of two equally similar cultures the one listed later counts as more similar.
        """
        self._require_culture(culture)
        row = self.similarity.get(culture)
        if row is None:
            raise CultureSPAError(f"{self.root / SIMILARITY_FILE}: no similarity row for culture {culture}")
        wanted = set(among)
        ascending = sorted((c for c in row if c != culture and c in wanted), key=lambda c: row[c])
        return list(reversed(ascending))[:k], ascending[:k]

    def _require_culture(self, culture: str) -> None:
        get_culture(culture)
        if culture not in self.shares:
            raise CultureSPAError(f"{self.root / SHARES_FILE}: no answer shares for culture {culture}")


def _load_questions(path: Path) -> dict[str, Question]:
    raw = read_json(path)
    if not isinstance(raw, list):
        raise fail(path, "expected a list of {Q_id, question, option_lst}")
    questions: dict[str, Question] = {}
    for index, item in enumerate(raw):
        where = f"{path}: item {index}"
        if not isinstance(item, dict) or "Q_id" not in item or "question" not in item:
            raise fail(where, "expected an object with 'Q_id' and 'question'")
        q_id = str(item["Q_id"])
        options = item.get("option_lst") or []
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise fail(f"{path}: {q_id}", "'option_lst' must be a list of strings")
        if not options:
            if is_eval_question(q_id):
                raise fail(f"{path}: {q_id}", "question has no options but is an evaluation question")
            continue  # demographics without options are never asked
        first = option_numbers(q_id, len(options))[0]
        questions[q_id] = Question(q_id, str(item["question"]), tuple(options), first, topic_of(q_id), "wvs")
    return questions


def _load_shares(path: Path, questions: dict[str, Question]) -> dict[str, dict[str, dict[int, float]]]:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise fail(path, "expected {country: {Q_id: {option_number: share}}}")
    shares: dict[str, dict[str, dict[int, float]]] = {}
    for country, per_question in raw.items():
        if country not in CULTURES:
            raise fail(f"{path}: {country}", f"unknown culture code; valid codes: {', '.join(CULTURES)}")
        if not isinstance(per_question, dict):
            raise fail(f"{path}: {country}", "expected {Q_id: {option_number: share}}")
        table: dict[str, dict[int, float]] = {}
        for q_id, dist in per_question.items():
            where = f"{path}: {country} {q_id}"
            question = questions.get(q_id)
            if question is None:
                raise fail(where, "question not in wvs_questions.json")
            if not isinstance(dist, dict):
                raise fail(where, "expected {option_number: share}")
            parsed: dict[int, float] = {}
            for option, share in dist.items():
                try:
                    number = int(option)
                except ValueError:
                    raise fail(where, f"option {option!r} is not a number") from None
                if number not in question.numbers:
                    raise fail(where, f"option {number} is not an option of {q_id} (valid: {question.numbers})")
                if not isinstance(share, (int, float)) or share < 0:
                    raise fail(where, f"share for option {number} must be a non-negative number, got {share!r}")
                parsed[number] = float(share)
            table[q_id] = parsed
        shares[country] = table
    return shares


def _load_similarity(path: Path) -> dict[str, dict[str, float]]:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise fail(path, "expected {country: {other_country: similarity}}")
    for country, row in raw.items():
        if country not in CULTURES:
            raise fail(f"{path}: {country}", f"unknown culture code; valid codes: {', '.join(CULTURES)}")
        if not isinstance(row, dict):
            raise fail(f"{path}: {country}", "expected {other_country: similarity}")
        for other, value in row.items():
            if other not in CULTURES:
                raise fail(f"{path}: {country} -> {other}", "unknown culture code")
            if not isinstance(value, (int, float)):
                raise fail(f"{path}: {country} -> {other}", f"similarity must be a number, got {value!r}")
    return {c: {o: float(v) for o, v in row.items()} for c, row in raw.items()}


def _load_examples(path: Path) -> dict[str, list[str]]:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise fail(path, "expected {Q_id: [ranked Q_ids]}")
    for q_id, ranked in raw.items():
        if not isinstance(ranked, list) or not all(isinstance(x, str) for x in ranked):
            raise fail(f"{path}: {q_id}", "expected a list of question ids")
    return {q: list(r) for q, r in raw.items()}
