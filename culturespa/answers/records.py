"""The answer record: one line of every answers file (answers stage and evaluation), built in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from culturespa.wvs.questions import Question

if TYPE_CHECKING:  # the engine pulls in torch; a record needs only its fields
    from culturespa.infer.engine import Result


class AnswerRecord(TypedDict):
    """One answer to one question, as written to (and read back from) an answers ``.jsonl`` file."""

    id: str
    culture: str | None  # None: a culture-unaware answer (or one set that serves every culture in evaluation)
    setting: str  # unaware | aware | cct (answers stage) or the evaluation prompt's name
    run: int  # sample number: 0, 1, ... (always 0 for greedy and logprob answers)
    raw: str  # the reply as generated (logprob: the best option number)
    answer: int | None  # the parsed option number; None exactly when ``valid`` is false
    valid: bool
    distribution: dict[str, float] | None  # logprob: option number -> probability; else None
    question: dict[str, Any]  # the question as asked (``Question.to_record``)


def answer_key(record: Mapping[str, Any]) -> str:
    """``id|culture|run``: the identity of a record in an answers file and its part file."""
    return f"{record['id']}|{record['culture']}|{record['run']}"


def answer_record(result: Result, question: Question, setting: str, culture: str | None, run: int) -> AnswerRecord:
    """The record of the engine's ``result`` for ``question``. An invalid reply has no answer (None), whatever the
    parser left behind, so readers may use ``answer`` without checking ``valid`` first."""
    dist = result.distribution
    return AnswerRecord(
        id=question.id,
        culture=culture,
        setting=setting,
        run=run,
        raw=result.text,
        answer=result.answer if result.valid else None,
        valid=bool(result.valid),
        distribution={str(k): float(v) for k, v in dist.items()} if dist else None,
        question=question.to_record(),
    )
