"""Answers made elsewhere (another framework, an API model, a person) read from files, so they can be scored exactly
like our own model's answers.

A predictions file is a JSON list or JSONL of records with at least ``Q_id`` (or ``id``, as in this project's own
answer files) and ``answer``; the answer is free text parsed like model output (the first valid option number in it),
so ``"3"``, ``3`` and ``"3. Agree"`` all count. Our own answer files (``generate.py stage=answers answers.input=wvs``,
``evaluate.py``'s ``answers/``) are read as they are: their ``run`` (sampled runs, one record per question and run)
and option ``distribution`` (logprob answers) are kept, so they score as they did when written. Other fields are
ignored. ``{culture}`` in the path is replaced by each culture code; a path without it is one file scored
against every culture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError, fail
from culturespa.infer.parsing import parse_answer
from culturespa.utils.jsonl import read_records
from culturespa.wvs.questions import Question

PLACEHOLDER = "{culture}"


def prediction_paths(template: str | None, cultures: Sequence[str]) -> dict[str, Path]:
    """The file for each culture; every file must exist (checked up front, before anything is scored)."""
    if not template:
        raise CultureSPAError("eval.predictions.path: not set (give e.g. 'DIR/answers_{culture}.json')")
    paths = {code: Path(str(template).replace(PLACEHOLDER, code)).expanduser() for code in cultures}
    missing = [f"{code}: {path}" for code, path in paths.items() if not path.is_file()]
    if missing:
        raise CultureSPAError(f"eval.predictions.path: file not found for {'; '.join(missing)}")
    return paths


def _answer_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # bool is an int subclass; true/false are not option numbers
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _run_number(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(where, f"'run' must be a run number >= 0, got {value!r}")
    return value


def load_predictions(path: str | Path, questions: Sequence[Question]) -> list[dict[str, Any]]:
    """Answer records (the shared answer schema, run 0) for the questions found in ``path``.

    An unknown ``Q_id`` (not one of ``questions``), a duplicate, or a record without ``Q_id``/``answer`` is a one-line
    error naming the file, the record and the id. Questions absent from the file are simply not scored.
    """
    by_id = {q.id: q for q in questions}
    seen: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    for where, item in read_records(path):
        for key in ("Q_id", "answer"):
            if key not in item and not (key == "Q_id" and "id" in item):
                raise fail(where, f"missing field {key!r} (a prediction needs 'Q_id' (or 'id') and 'answer')")
        q_id = str(item["Q_id"] if "Q_id" in item else item["id"]).strip()
        question = by_id.get(q_id)
        if question is None:
            raise fail(where, f"unknown Q_id {q_id!r} (not one of the {len(by_id)} evaluation questions)")
        run = _run_number(item.get("run", 0), where)
        key = f"{q_id}|{run}"
        if key in seen:
            again = f" run {run}" if "run" in item else ""
            raise fail(where, f"duplicate Q_id {q_id!r}{again} (first seen at {seen[key]})")
        seen[key] = where
        raw = _answer_text(item["answer"])
        number = parse_answer(raw, question.numbers)
        dist = item.get("distribution")
        records.append(
            {
                "id": q_id,
                "culture": None,
                "setting": "predictions",
                "run": run,
                "raw": raw,
                "answer": number,
                "valid": number is not None,
                "distribution": dist if isinstance(dist, dict) and dist else None,
                "question": question.to_record(),
            }
        )
    return records
