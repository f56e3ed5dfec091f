"""The paper's question filter (``filter=paper``, the default), step by step, with a count after each step.

The rules follow the paper's filtering notebook (``data_process/2.question_filtering.ipynb``); they are restated here
in our own code. Every test is made on the question and option strings exactly as the generator wrote them
(no case folding, no trimming), as the notebook does:

1. ``duplicates`` (removes): a question whose text equals, character for character, a WVS seed question (all 291,
   including the demographic ones without options) or an earlier generated question.
2. ``bare_numbers_unexplained`` (removes): every option is made of digits only, and the lower-cased question contains
   none of the phrases that explain a scale ("on a scale", "with 1 being", "where 1 means", "which 1 means").
3. ``prefix_cleaned`` (changes): every option starts with a digit, not all are bare numbers, and every option opens
   with a number prefix (``N.``, ``N -``, ``N (``): the prefixes are removed, and a label left with a closing
   bracket but no opening one loses it ("1 (Rarely)" -> "Rarely"). A list whose options all open with a numeric range
   ("1-3: Too slow") is left as it is (the notebook exempts its one such question by id).
4. ``scale_converted`` (changes): a numbered list where only the first and last options carry a label
   ("1 - Not at all", "2", ..., "10 - Completely") becomes the end numbers plus the unlabelled middle options, and a
   sentence naming the two ends is appended to the question (``filter.scale_note``).
5. ``unconvertible_or_refusal`` (removes): the other numbered lists of step 4's kind (a label in the middle, or no
   label at an end), and those whose end label offers a refusal.

Options are numbered from 0 when the first option is the number 0, else from 1, as the paper's answer prompts do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from culturespa.wvs.questions import Question

STEPS: tuple[tuple[str, str], ...] = (
    ("duplicates", "removed"),
    ("bare_numbers_unexplained", "removed"),
    ("prefix_cleaned", "changed"),
    ("scale_converted", "changed"),
    ("unconvertible_or_refusal", "removed"),
)
SCALE_CUES = ("on a scale", "with 1 being", "where 1 means", "which 1 means")
DEFAULT_SCALE_NOTE = " Using this card on which {low} means '{low_label}' and {high} means '{high_label}'"

_STARTS_WITH_DIGIT = re.compile(r"^\d")
_PREFIX = re.compile(r"^(\d+)(?:\s*[-.]\s*|\s*\(\s*)")
_RANGE = re.compile(r"^\d+\s*-\s*\d")


@dataclass
class StepCount:
    """One step's outcome: how many questions it removed or changed, how many remain after it, and sub-counts."""

    step: str
    kind: str
    count: int
    remaining: int
    detail: dict[str, int]

    def row(self) -> list[Any]:
        return [self.step, self.kind, self.count, self.remaining]


def clean_label(option: str) -> str:
    """The option without its number prefix; a closing bracket left without an opening one goes too."""
    label = _PREFIX.sub("", option, count=1).strip()
    if label.endswith(")") and "(" not in label:
        label = label[:-1]
    return label


def numbered_kind(options: list[str]) -> str | None:
    """``"bare"`` when every option is digits only, ``"mixed"`` when every option starts with a digit but not all
    are bare numbers, else None (a text list the notebook leaves alone)."""
    if not options or not all(_STARTS_WITH_DIGIT.match(o) for o in options):
        return None
    return "bare" if "".join(options).isdigit() else "mixed"


def explains_scale(question: str) -> bool:
    text = question.lower()
    return any(cue in text for cue in SCALE_CUES)


def convert_scale(options: list[str], note: str) -> tuple[str, list[str]] | str:
    """Step 4 for a mixed list that is not fully prefixed: ``(sentence, options)``, or the reason it is dropped."""
    prefixed = [bool(_PREFIX.match(o)) for o in options]
    if not (prefixed[0] and prefixed[-1] and not any(prefixed[1:-1])):
        return "unconvertible"
    low_label, high_label = clean_label(options[0]), clean_label(options[-1])
    if "refuse" in low_label.lower() or "refuse" in high_label.lower():
        return "refusal"
    low = _PREFIX.match(options[0]).group(1)  # type: ignore[union-attr]
    high = _PREFIX.match(options[-1]).group(1)  # type: ignore[union-attr]
    sentence = note.format(low=low, high=high, low_label=low_label, high_label=high_label)
    return sentence, [low, *options[1:-1], high]


def first_option(options: Iterable[str]) -> int:
    first = next(iter(options), "")
    return 0 if first.isdigit() and int(first) == 0 else 1


def paper_filter(
    questions: list[Question], seed_texts: Iterable[str], scale_note: str = DEFAULT_SCALE_NOTE
) -> tuple[list[Question], list[StepCount], dict[str, list[str]]]:
    """Apply the five steps in order; returns the kept questions (input order), the per-step counts and, per step,
    the ids it removed or changed."""
    seen = set(seed_texts)
    ids: dict[str, list[str]] = {step: [] for step, _ in STEPS}
    counts: list[StepCount] = []

    # 1. exact duplicates of a seed question or of an earlier generated question
    pool: list[Question] = []
    of_seed = 0
    seeds = set(seen)
    for q in questions:
        if q.text in seen:
            ids["duplicates"].append(q.id)
            of_seed += q.text in seeds
            continue
        seen.add(q.text)
        pool.append(q)
    counts.append(
        StepCount(
            "duplicates",
            "removed",
            len(ids["duplicates"]),
            len(pool),
            {"of_seed": of_seed, "of_generated": len(ids["duplicates"]) - of_seed},
        )
    )

    # 2. bare numbers without a scale explanation
    kinds = {q.id: numbered_kind(list(q.options)) for q in pool}
    kept: list[Question] = []
    for q in pool:
        if kinds[q.id] == "bare" and not explains_scale(q.text):
            ids["bare_numbers_unexplained"].append(q.id)
        else:
            kept.append(q)
    pool = kept
    counts.append(StepCount("bare_numbers_unexplained", "removed", len(ids["bare_numbers_unexplained"]), len(pool), {}))

    # 3. prefixes cleaned where every option is prefixed; 4./5. the other mixed lists converted or dropped
    cleaned: list[Question] = []
    convertible: dict[str, tuple[str, list[str]] | str] = {}
    for q in pool:
        options = list(q.options)
        if kinds[q.id] == "mixed" and not all(_RANGE.match(o) for o in options):
            if all(_PREFIX.match(o) for o in options):
                ids["prefix_cleaned"].append(q.id)
                q = _changed(q, q.text, [clean_label(o) for o in options], "prefix_cleaned")
            else:
                convertible[q.id] = convert_scale(options, scale_note)
        cleaned.append(q)
    counts.append(StepCount("prefix_cleaned", "changed", len(ids["prefix_cleaned"]), len(cleaned), {}))

    final: list[Question] = []
    dropped = {"unconvertible": 0, "refusal": 0}
    for q in cleaned:
        outcome = convertible.get(q.id)
        if isinstance(outcome, str):
            dropped[outcome] += 1
            ids["unconvertible_or_refusal"].append(q.id)
            continue
        if outcome is not None:
            sentence, options = outcome
            ids["scale_converted"].append(q.id)
            q = _changed(q, q.text + sentence, options, "scale_converted")
        final.append(q)
    n_converted = len(ids["scale_converted"])
    counts.append(StepCount("scale_converted", "changed", n_converted, len(cleaned), {}))
    counts.append(StepCount("unconvertible_or_refusal", "removed", sum(dropped.values()), len(final), dropped))
    return [_numbered(q) for q in final], counts, ids


def _changed(q: Question, text: str, options: list[str], change: str) -> Question:
    meta = dict(q.meta)
    previous = meta.get("filter", {})
    meta["filter"] = {
        "changes": [*previous.get("changes", []), change],
        "original_text": previous.get("original_text", q.text),
        "original_options": previous.get("original_options", list(q.options)),
    }
    return replace(q, text=text, options=tuple(options), meta=meta)


def _numbered(q: Question) -> Question:
    return replace(q, first_option=first_option(q.options))


def table(n_input: int, counts: list[StepCount]) -> str:
    """The per-step counts as a plain-text table (what the stage prints)."""
    rows = [("step", "removed/changed", "count", "remaining"), ("input", "", "", str(n_input))]
    rows += [(c.step, c.kind, str(c.count), str(c.remaining)) for c in counts]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "\n".join(lines)
