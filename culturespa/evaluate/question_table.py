"""The per-question evaluation table: one row per (culture, question, run), to see which answers move a score.

Columns: question id, topic, culture, run, prompt (the chat sent, when the model answered), raw reply, parsed answer,
valid, gold (the culture's majority option), option count and the question's distance ``|a - g| / (n - 1)`` (0 for
agreement, 1 for opposite ends of the scale; empty when invalid or without survey answers). The alignment score is
``1 - ||a - g||_2 / ||n - 1||_2`` over the same rows, so the largest distances are the questions that cost most.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from culturespa.evaluate.prompting import adapter_style, answer_messages
from culturespa.prompts.builder import PromptStyle
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData

COLUMNS = [
    "question_id",
    "topic",
    "culture",
    "run",
    "prompt",
    "raw",
    "parsed",
    "valid",
    "gold",
    "n_options",
    "distance",
]


def distance(answer: int | None, gold: int | None, numbers: Sequence[int]) -> float | None:
    """``|a - g| / (n - 1)`` on the option numbers, as the score measures them; None when the answer is invalid or
    there is no gold (neither enters the score), 0.0 for a single-option question."""
    if answer is None or gold is None or answer not in numbers:
        return None
    return abs(answer - gold) / (len(numbers) - 1) if len(numbers) > 1 else 0.0


def render(messages: Sequence[Any]) -> str:
    """A chat as text: ``role: content`` blocks."""
    parts = []
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", "")
        content = message.get("content") if isinstance(message, Mapping) else getattr(message, "content", "")
        parts.append(f"{role}: {content}")
    return "\n\n".join(parts)


def rows(
    answers: Mapping[str | None, Sequence[Mapping[str, Any]]],
    questions: Sequence[Question],
    wvs: WVSData,
    cultures: Sequence[str],
    prompt_for: Callable[[Question, str | None], str] | None = None,
) -> list[list[Any]]:
    """Table rows for every culture's answers (a culture-independent answer set is scored once per culture)."""
    by_id = {q.id: q for q in questions}
    prompts: dict[tuple[str, str | None], str] = {}
    out: list[list[Any]] = []
    for culture in cultures:
        key = culture if culture in answers else None
        for record in answers.get(key, ()):
            question = by_id.get(str(record["id"]))
            if question is None:
                continue
            parsed = record.get("answer") if record.get("valid") else None
            gold = wvs.majority_answer(culture, question.id)
            numbers = list(question.numbers)
            prompt = None
            if prompt_for is not None:
                if (question.id, key) not in prompts:
                    prompts[(question.id, key)] = prompt_for(question, key)
                prompt = prompts[(question.id, key)]
            out.append(
                [
                    question.id,
                    question.topic,
                    culture,
                    int(record.get("run", 0)),
                    prompt,
                    record.get("raw"),
                    parsed,
                    bool(record.get("valid")),
                    gold,
                    len(numbers),
                    distance(int(parsed) if parsed is not None else None, gold, numbers),
                ]
            )
    return out


def model_prompts(style: PromptStyle, wvs: WVSData, plan: Any) -> Callable[[Question, str | None], str]:
    """The prompt each question was asked with (the configured variant ``style``, with the adapter's saved
    templates)."""
    styles: dict[str | None, PromptStyle] = {}

    def prompt(question: Question, culture: str | None) -> str:
        if culture not in styles:
            styles[culture] = adapter_style(style, plan.style_for(culture))
        return render(answer_messages(wvs, styles[culture], question, culture))

    return prompt


def log_table(
    run: Any,
    answers: Mapping[str | None, Sequence[Mapping[str, Any]]],
    questions: Sequence[Question],
    wvs: WVSData,
    cultures: Sequence[str],
    prompt_for: Callable[[Question, str | None], str] | None = None,
    key: str = "alignment/questions",
) -> int:
    """Log the table to ``run`` (a no-op without a run); returns the number of rows."""
    if run is None:
        return 0
    import wandb

    data = rows(answers, questions, wvs, cultures, prompt_for)
    run.log({key: wandb.Table(columns=COLUMNS, data=data)})
    return len(data)
