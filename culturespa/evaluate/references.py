"""Reference scores that put an alignment score in context: what answer strategies that ignore the prompt get on
the same questions and cultures.

The paper's score has no zero point a reader can feel: a model that always picks the first option, or picks at random,
still scores 35–50 on the WVS. A model's score means something only next to these:

* ``first_option`` / ``middle_option``: always that option (a model stuck on "1" scores about ``first_option``);
* ``uniform_random``: a uniformly random option, averaged over ``draws`` seeded draws;
* ``culture_blind``: per question, the option with the highest mean survey share over the evaluated cultures — the
  best a model can do with the same answer for every culture, using survey knowledge (not a bound, but a high bar).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from culturespa.evaluate.metrics import alignment_score, mean_or_none
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData

Strategy = Callable[[Question], int]


def _culture_blind(wvs: WVSData, questions: Sequence[Question], cultures: Sequence[str]) -> Strategy:
    """Per question, the option with the highest summed survey share over ``cultures`` (computed once)."""
    picks = {}
    for q in questions:
        total = {n: sum(wvs.answer_shares(c, q.id).get(n, 0.0) for c in cultures) for n in q.numbers}
        picks[q.id] = max(q.numbers, key=lambda n: (total[n], -n))
    return lambda q: picks[q.id]


def _score(wvs: WVSData, questions: Sequence[Question], culture: str, pick: Strategy) -> float | None:
    scored = [(q, wvs.majority_answer(culture, q.id)) for q in questions]
    scored = [(q, g) for q, g in scored if g is not None]
    return alignment_score([pick(q) for q, _ in scored], [g for _, g in scored], [q.n_options for q, _ in scored])


def reference_scores(
    wvs: WVSData, questions: Sequence[Question], cultures: Sequence[str], draws: int = 20, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """``{strategy: {"average": score, "cultures": {code: score}}}``, scored exactly like a model's answers."""
    rng = random.Random(seed)
    blind = _culture_blind(wvs, questions, cultures)
    strategies: dict[str, Callable[[str], float | None]] = {
        "first_option": lambda c: _score(wvs, questions, c, lambda q: q.numbers[0]),
        "middle_option": lambda c: _score(wvs, questions, c, lambda q: q.numbers[len(q.numbers) // 2]),
        "uniform_random": lambda c: mean_or_none(
            _score(wvs, questions, c, lambda q: rng.choice(q.numbers)) for _ in range(draws)
        ),
        "culture_blind": lambda c: _score(wvs, questions, c, blind),
    }
    out = {}
    for name, score in strategies.items():
        per_culture = {c: score(c) for c in cultures}
        out[name] = {"average": mean_or_none(per_culture.values()), "cultures": per_culture}
    return out


def averages(references: Mapping[str, Mapping[str, Any]] | None) -> dict[str, float | None]:
    """``{strategy: average}`` of :func:`reference_scores`' output (what summaries, reports and W&B show)."""
    return {name: ref["average"] for name, ref in (references or {}).items()}


def describe(averages: Mapping[str, float | None]) -> str:
    """One line for reports: ``references (same questions, prompt ignored): first option 38.28, …``."""
    shown = ", ".join(f"{name.replace('_', ' ')} {v:.2f}" for name, v in averages.items() if v is not None)
    return f"references (same questions, prompt ignored): {shown}"
