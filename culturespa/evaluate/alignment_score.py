"""Score answer records (the shared answer schema) against the survey answers of a culture.

Glue between the records written by the model run or read from prediction files and the pure functions in
:mod:`culturespa.evaluate.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from culturespa.evaluate.metrics import Item, culture_report, headline
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData


def items_for(
    records: Sequence[dict[str, Any]], questions: Mapping[str, Question], wvs: WVSData, gold_culture: str
) -> list[Item]:
    """One :class:`Item` per record whose question is scored, with ``gold_culture``'s majority answer as gold."""
    items = []
    for record in records:
        question = questions.get(str(record["id"]))
        if question is None:
            continue
        answer = record.get("answer") if record.get("valid") else None
        items.append(
            Item(
                q_id=question.id,
                topic=question.topic,
                numbers=tuple(question.numbers),
                answer=int(answer) if answer is not None else None,
                gold=wvs.majority_answer(gold_culture, question.id),
                run=int(record.get("run", 0)),
            )
        )
    return items


def model_distributions(records: Sequence[dict[str, Any]]) -> dict[str, dict[int, float]] | None:
    """Per-question option distribution from log-prob answers (averaged over runs); None when records carry none."""
    sums: dict[str, dict[int, float]] = {}
    counts: dict[str, int] = {}
    for record in records:
        dist = record.get("distribution")
        if not dist:
            continue
        q_id = str(record["id"])
        target = sums.setdefault(q_id, {})
        for number, prob in dist.items():
            target[int(number)] = target.get(int(number), 0.0) + float(prob)
        counts[q_id] = counts.get(q_id, 0) + 1
    if not sums:
        return None
    return {q: {n: p / counts[q] for n, p in d.items()} for q, d in sums.items()}


def score_culture(
    records: Sequence[dict[str, Any]], questions: Sequence[Question], wvs: WVSData, gold_culture: str
) -> dict[str, object]:
    """The ``alignment.json`` entry for ``records`` scored against ``gold_culture``'s survey answers."""
    by_id = {q.id: q for q in questions}
    items = items_for(records, by_id, wvs, gold_culture)
    survey = {q.id: wvs.answer_shares(gold_culture, q.id) for q in questions}
    return culture_report(items, survey, model_distributions(records))


def items_by_culture(
    answers: Mapping[str | None, Sequence[dict[str, Any]]],
    questions: Sequence[Question],
    wvs: WVSData,
    cultures: Sequence[str],
) -> dict[str, list[Item]]:
    """Each culture's scorable items (its own answers, or the shared ones under None), as :func:`score_all` scores
    them: what the bootstrap in :mod:`culturespa.evaluate.uncertainty` resamples."""
    by_id = {q.id: q for q in questions}
    return {c: items_for(answers[c] if c in answers else answers[None], by_id, wvs, c) for c in cultures}


def score_all(
    answers: Mapping[str | None, Sequence[dict[str, Any]]],
    questions: Sequence[Question],
    wvs: WVSData,
    cultures: Sequence[str],
) -> dict[str, Any]:
    """The ``alignment.json`` body: each culture's answers (or the shared ones under None) against its own survey."""
    results = {c: score_culture(answers[c] if c in answers else answers[None], questions, wvs, c) for c in cultures}
    unscored = [c for c, r in results.items() if r["score"] is None]
    return {
        "metric": "alignment",
        "cultures": results,
        "average": headline(results),
        "js_similarity_average": headline(results, "js_similarity"),
        "unscored": unscored,
    }


def relation_matrix(
    answers: Mapping[str | None, Sequence[dict[str, Any]]],
    questions: Sequence[Question],
    wvs: WVSData,
    cultures: Sequence[str],
    key: str = "score",
) -> list[list[float | None]]:
    """``matrix[i][j]``: the model steered to culture i, scored against culture j's answers."""
    rows = []
    for steered in cultures:
        records = answers[steered] if steered in answers else answers[None]
        rows.append([score_culture(records, questions, wvs, scored)[key] for scored in cultures])  # type: ignore[misc]
    return rows
