"""The paragraph under every evaluation and comparison table: what the numbers above it mean.

A score alone says little (a model stuck on option 1 scores 35–65 on the WVS), and a difference with its interval and
p-value still leaves the reader to decide. The verdict is computed from the numbers shown: where each score sits
against the prompt-free references (:mod:`culturespa.evaluate.references`), whether the difference is distinguishable
from zero, how many per-culture differences survive Holm's adjustment, and, for models known to hold no culture
signal, that the numbers test the pipeline rather than the method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from culturespa.evaluate.multiplicity import holm

# Reference strategies in the order a reader climbs them: chance first, the survey-informed bar last.
REFERENCE_LABELS = {
    "uniform_random": "chance (uniform random)",
    "first_option": "always-first-option",
    "middle_option": "always-middle-option",
    "culture_blind": "culture-blind",
}
# Models whose scores carry no culture signal, measured (docs/results.md) or by construction.
NO_SIGNAL = {
    "smollm2_135m": "SmolLM2-135M, the embedded demo model, holds no measurable culture signal (docs/results.md): "
    "these numbers show that the pipeline runs, not whether CultureSPA works",
    "tiny_random": "the tiny_random test model has random weights: these numbers only show that the pipeline runs",
}
SAME = 0.005  # scores this close are equal as printed (two decimals)


@dataclass(frozen=True)
class Estimate:
    """A score or difference with its interval (None where there is none)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    def shown(self, signed: bool = False) -> str:
        if self.value is None:
            return "—"
        text = f"{self.value:+.2f}" if signed else f"{self.value:.2f}"
        return text if self.lo is None or self.hi is None else f"{text} [{self.lo:.2f}, {self.hi:.2f}]"


def _side(est: Estimate, reference: float) -> str:
    """``equal``, ``below``, ``above`` or ``within`` (the reference lies inside the interval)."""
    assert est.value is not None
    if abs(est.value - reference) < SAME:
        return "equal"
    if est.lo is not None and est.hi is not None and est.lo <= reference <= est.hi:
        return "within"
    return "below" if est.value < reference else "above"


def placement(label: str, est: Estimate, references: Mapping[str, float | None]) -> str:
    """``base 33.79 [30.10, 37.50] is below chance (uniform random) 53.10, …`` and what that position means."""
    known = {name: ref for name, ref in references.items() if ref is not None and name in REFERENCE_LABELS}
    if est.value is None or not known:
        return f"{label} {est.shown()}" + ("" if known else " (no reference scores to compare with)")
    sides: dict[str, list[str]] = {"equal": [], "below": [], "within": [], "above": []}
    for name in REFERENCE_LABELS:
        if name in known:
            sides[_side(est, known[name])].append(name)
    words = {"equal": "equals", "below": "is below", "within": "is indistinguishable from", "above": "is above"}
    parts = [
        f"{words[side]}{' every reference:' if len(names) == len(known) > 1 else ''} "
        + ", ".join(f"{REFERENCE_LABELS[n]} {known[n]:.2f}" for n in names)
        for side, names in sides.items()
        if names
    ]
    text = f"{label} {est.shown()} " + "; ".join(parts)
    if "uniform_random" in sides["below"]:
        text += " — worse than guessing at random: the answers follow something other than the survey"
    elif "first_option" in sides["equal"]:
        text += " — exactly the always-first-option score: the model very likely answers option 1 every time"
    elif "culture_blind" in sides["above"]:
        text += " — above the best single answer for all cultures: a culture-specific signal"
    return text


def difference(delta: Estimate, p: float | None, confidence: float, p_method: str | None = None) -> str:
    """Whether ``delta`` is distinguishable from zero, by its p-value (else its interval)."""
    alpha = 1.0 - confidence
    if delta.value is None:
        return "no difference could be computed"
    if delta.value == 0.0 and delta.lo == 0.0 and delta.hi == 0.0:
        return f"the difference is exactly {delta.shown(signed=True)}: the two systems' scored answers are the same"
    excludes = delta.lo is not None and delta.hi is not None and (delta.lo > 0 or delta.hi < 0)
    test = f", {p_method} test" if p_method else ""
    if p is not None:
        clear = p < alpha
        text = f"the difference {delta.shown(signed=True)} (p = {p:.3f}{test})"
        if clear != excludes and delta.lo is not None:
            text += f"; borderline: its {confidence * 100:g}% interval {'excludes' if excludes else 'includes'} 0"
    else:
        clear = excludes
        text = f"the difference {delta.shown(signed=True)}"
    if clear:
        direction = "CultureSPA higher" if delta.value > 0 else "CultureSPA lower"
        return f"{text} is distinguishable from zero ({direction})"
    return f"{text} is not distinguishable from zero at the {alpha:g} level"


def per_culture(p_values: Mapping[str, float | None], confidence: float) -> str:
    """How many per-culture differences stay significant after Holm's adjustment (and the smallest adjusted p)."""
    alpha = 1.0 - confidence
    codes = list(p_values)
    adjusted = dict(zip(codes, holm([p_values[c] for c in codes]), strict=True))
    tested = {c: p for c, p in adjusted.items() if p is not None}
    if not tested:
        return "no per-culture p-values"
    hits = sorted(c for c, p in tested.items() if p < alpha)
    smallest = min(tested, key=lambda c: tested[c])
    which = f" ({', '.join(hits)})" if hits else ""
    return (
        f"{len(hits)} of {len(tested)} per-culture differences have a Holm-adjusted p < {alpha:g}{which} "
        f"(smallest Holm-adjusted p {tested[smallest]:.3f}, {smallest})"
    )


def model_note(model: str | None) -> str:
    return NO_SIGNAL.get(str(model), "")


def _paragraph(sentences: list[str]) -> str:
    return "Verdict: " + " ".join(s[0].upper() + s[1:] + "." for s in sentences if s)


def comparison_verdict(
    model: str | None,
    base: Estimate,
    tuned: Estimate,
    delta: Estimate,
    p: float | None,
    culture_p: Mapping[str, float | None],
    references: Mapping[str, float | None],
    confidence: float = 0.95,
    p_method: str | None = None,
) -> str:
    """The paragraph under a base-vs-CultureSPA table (averages over cultures, per-culture p-values)."""
    return _paragraph(
        [
            placement("base", base, references),
            placement("CultureSPA", tuned, references),
            difference(delta, p, confidence, p_method),
            per_culture(culture_p, confidence) if culture_p else "",
            model_note(model),
        ]
    )


def evaluation_verdict(
    model: str | None,
    average: Estimate,
    scores: Mapping[str, float | None],
    references: Mapping[str, Mapping[str, Any]] | None,
) -> str:
    """The paragraph under one evaluation's table: the average against the references, and the cultures that score
    below their own chance reference."""
    refs = references or {}
    averages = {name: ref.get("average") for name, ref in refs.items()}
    chance = (refs.get("uniform_random") or {}).get("cultures") or {}
    below = sorted(c for c, s in scores.items() if s is not None and chance.get(c) is not None and s < chance[c])
    counted = f"{len(below)} of {len(scores)} cultures score below their chance reference" + (
        f" ({', '.join(below)})" if below else ""
    )
    return _paragraph([placement("the average", average, averages), counted if chance else "", model_note(model)])
