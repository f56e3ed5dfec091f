"""Confidence intervals and paired tests for the WVS alignment score (seeded numpy bootstrap).

Why a dedicated module: the score is ``100 × (1 − ‖a − g‖₂ / ‖n − 1‖₂)`` over the questions answered validly, a ratio
of norms, not a mean of per-question values. A bootstrap must therefore recompute the score on every resample. Here a
resample is a vector of question weights (how often each question was drawn) plus a choice of runs; both norms are
weighted sums of per-question squares, so every resample is a matrix product over a :class:`ScoreTable`.

* **What is resampled.** Questions, with replacement (one draw shared by every culture, so the average over cultures
  keeps their correlation), and, when several runs were scored (``eval.runs``), runs with replacement. A question
  answered invalidly in a run, or without survey answers for a culture, adds nothing to either norm — exactly as in the
  point estimate, so invalid answers are excluded the same way in every resample.
* **Intervals.** ``percentile`` (default) or ``bca`` (bias-corrected and accelerated; acceleration from the
  leave-one-question-out jackknife).
* **Paired comparison** (base vs adapter, :mod:`culturespa.evaluate.paired`): both systems are resampled with the *same* questions and runs, so what the
  questions have in common (hard or easy for both) cancels out of the difference's interval.
* **p-value** of "no difference" (``p_value``): ``permutation`` (default) — a paired approximate-randomisation test:
  each question's answers (all runs) are swapped between the two systems with probability ½, the score difference is
  recomputed, and ``p = (1 + #{|d*| ≥ |d|}) / (1 + samples)``; valid under the null that the two systems' answers to a
  question are exchangeable. ``bootstrap`` — two-sided from the paired bootstrap distribution,
  ``p = min(1, 2 · min((1 + #{d* ≤ 0}), (1 + #{d* ≥ 0})) / (1 + samples))``: about the smallest ``1 − confidence`` at
  which the percentile interval would exclude 0.
* **Over seeds** (:func:`culturespa.evaluate.paired.over_seeds`): each bootstrap sample draws seeds with replacement and one question resample
  shared by every seed (seeds and questions are crossed: every seed answers the same questions), plus runs within each
  seed; the difference is the mean over the drawn seeds. Percentile intervals and the bootstrap p-value.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import norm
from scipy.stats import t as student_t

from culturespa.errors import CultureSPAError
from culturespa.evaluate.metrics import Item

METHODS = ("percentile", "bca")
P_VALUES = ("permutation", "bootstrap")
TIE = 1e-9  # score differences closer than this count as equal (float noise in the matrix products)


@dataclass(frozen=True)
class BootstrapSettings:
    """``eval.bootstrap``: resample count, confidence level, seed, interval method and p-value kind."""

    samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    method: str = "percentile"
    p_value: str = "permutation"

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or self.samples < 1:
            raise CultureSPAError(f"eval.bootstrap.samples={self.samples!r} must be a positive integer")
        if not 0.0 < float(self.confidence) < 1.0:
            raise CultureSPAError(f"eval.bootstrap.confidence={self.confidence!r} must lie strictly between 0 and 1")
        if self.method not in METHODS:
            raise CultureSPAError(f"eval.bootstrap.method={self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.p_value not in P_VALUES:
            raise CultureSPAError(f"eval.bootstrap.p_value={self.p_value!r}; choose one of: {', '.join(P_VALUES)}")

    @classmethod
    def from_config(cls, cfg: Any) -> BootstrapSettings:
        """Read ``eval.bootstrap`` (defaults for any key missing, e.g. in configs made before it existed)."""
        node = OmegaConf.select(cfg, "eval.bootstrap", default=None) if cfg is not None else None
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}  # type: ignore[union-attr]
        return cls(**known)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreTable:
    """Per culture (C), run (R) and question (Q): the squared error ``(a − g)²`` and the worst case ``(n − 1)²`` of
    each scored answer, and 1 where the answer is scored (valid, with survey answers); 0 everywhere else."""

    cultures: tuple[str, ...]
    questions: tuple[str, ...]
    runs: tuple[int, ...]
    err: np.ndarray  # (C, R, Q)
    worst: np.ndarray  # (C, R, Q)
    count: np.ndarray  # (C, R, Q)

    @classmethod
    def from_items(
        cls, items: Mapping[str, Sequence[Item]], questions: Sequence[str] | None = None, runs: Sequence[int] = ()
    ) -> ScoreTable:
        """``items`` per culture; ``questions`` fixes the column order (default: first appearance), ``runs`` adds
        runs that may have no items (so two systems' tables line up)."""
        cultures = tuple(items)
        if questions is None:
            questions = list(dict.fromkeys(i.q_id for rows in items.values() for i in rows))
        run_ids = tuple(sorted({*runs, *(i.run for rows in items.values() for i in rows)}) or [0])
        q_index = {q: k for k, q in enumerate(questions)}
        r_index = {r: k for k, r in enumerate(run_ids)}
        shape = (len(cultures), len(run_ids), len(questions))
        err, worst, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for c, code in enumerate(cultures):
            for item in items[code]:
                if item.gold is None or not item.valid or item.q_id not in q_index:
                    continue
                at = (c, r_index[item.run], q_index[item.q_id])
                err[at] += (float(item.answer) - float(item.gold)) ** 2  # type: ignore[arg-type]
                worst[at] += (len(item.numbers) - 1.0) ** 2
                count[at] += 1.0
        return cls(cultures, tuple(questions), run_ids, err, worst, count)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.err.shape  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------- scores
Sums = tuple[np.ndarray, np.ndarray, np.ndarray]


def weighted_sums(table: ScoreTable, weights: np.ndarray) -> Sums:
    """Weighted sums over questions of err, worst and count: each (B, C, R) for weights (B, Q)."""
    c, r, q = table.shape
    out = []
    for array in (table.err, table.worst, table.count):
        out.append((weights @ array.reshape(c * r, q).T).reshape(len(weights), c, r))
    return out[0], out[1], out[2]


def add_sums(a: Sums, b: Sums) -> Sums:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def score_sums(sums: Sums, picks: np.ndarray | None) -> np.ndarray:
    """(B, C) scores: per run ``100 (1 − sqrt(Σerr / Σworst))`` (NaN when nothing is scored, 100 when only
    single-option questions are), then the mean over the runs drawn in ``picks`` (B, R) or over all runs."""
    num, den, cnt = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        per_run = 100.0 * (1.0 - np.sqrt(num / den))
    per_run = np.where(den > 0, per_run, 100.0)
    per_run = np.where(cnt > 0, per_run, np.nan)
    if picks is not None:
        b, c, _ = per_run.shape
        per_run = per_run[np.arange(b)[:, None, None], np.arange(c)[None, :, None], picks[:, None, :]]
    return nanmean(per_run, axis=2)


def scores(table: ScoreTable, weights: np.ndarray | None = None, picks: np.ndarray | None = None) -> np.ndarray:
    """Scores (B, C) for question weights (B, Q) and run picks (B, R); without weights, the point estimate (1, C)."""
    if weights is None:
        weights = np.ones((1, table.shape[2]))
    return score_sums(weighted_sums(table, weights), picks)


def draws(
    rng: np.random.Generator, n_questions: int, n_runs: int, samples: int
) -> tuple[np.ndarray, np.ndarray | None]:
    weights = rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=samples).astype(float)
    picks = rng.integers(0, n_runs, size=(samples, n_runs)) if n_runs > 1 else None
    return weights, picks


def jackknife_weights(n_questions: int) -> np.ndarray:
    return 1.0 - np.eye(n_questions)


# ------------------------------------------------------------------------------------------------------- intervals
def interval(
    boot: np.ndarray,
    estimate: float | None,
    confidence: float,
    method: str = "percentile",
    jack: np.ndarray | None = None,
) -> tuple[float | None, float | None]:
    """The ``confidence`` interval from a bootstrap distribution (NaN resamples dropped); (None, None) when there is
    no estimate. BCa needs the jackknife values ``jack``; it falls back to percentile when the bootstrap distribution
    lies entirely on one side of the estimate (no bias correction is defined)."""
    values = boot[np.isfinite(boot)]
    if estimate is None or not np.isfinite(estimate) or values.size == 0:
        return None, None
    alpha = 1.0 - confidence
    levels = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if method == "bca" and jack is not None:
        below = float(np.mean(values < estimate - TIE)) + 0.5 * float(np.mean(np.abs(values - estimate) <= TIE))
        jack = jack[np.isfinite(jack)]
        if 0.0 < below < 1.0 and jack.size > 2:
            z0 = norm.ppf(below)
            d = jack.mean() - jack
            spread = 6.0 * float(np.sum(d**2)) ** 1.5
            accel = float(np.sum(d**3)) / spread if spread > 0 else 0.0
            z = norm.ppf(levels)
            levels = norm.cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    lo, hi = np.quantile(values, levels)
    return float(lo), float(hi)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The mean's t interval, mean ± t · sd / √n (None below two values): for a handful of values (seeds, timed
    prompts) whose spread, not a resampling, is all there is to go on."""
    if len(values) < 2:
        return None
    mean, sem = statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5
    half = float(student_t.ppf(0.5 + confidence / 2.0, len(values) - 1)) * sem
    return mean - half, mean + half


def finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def score_intervals(table: ScoreTable, settings: BootstrapSettings) -> dict[str, Any]:
    """``{"cultures": {code: {"score", "lo", "hi"}}, "average": {"score", "lo", "hi"}}`` for one system."""
    rng = np.random.default_rng(settings.seed)
    _, n_runs, n_questions = table.shape
    weights, picks = draws(rng, n_questions, n_runs, settings.samples)
    point = scores(table)[0]
    boot = scores(table, weights, picks)
    jack = scores(table, jackknife_weights(n_questions)) if settings.method == "bca" else None

    def entry(est: float, b: np.ndarray, j: np.ndarray | None) -> dict[str, Any]:
        lo, hi = interval(b, finite_or_none(est), settings.confidence, settings.method, j)
        return {"score": finite_or_none(est), "lo": lo, "hi": hi}

    cultures = {
        code: entry(point[c], boot[:, c], None if jack is None else jack[:, c]) for c, code in enumerate(table.cultures)
    }
    average = entry(average_last(point[None, :])[0], average_last(boot), None if jack is None else average_last(jack))
    return {"cultures": cultures, "average": average}


def average_last(values: np.ndarray) -> np.ndarray:
    """The mean over cultures (last axis) of an array shaped (..., C), leaving out cultures with no score."""
    flat = values.reshape(-1, values.shape[-1])
    return nanmean(flat, axis=1).reshape(values.shape[:-1])


# ----------------------------------------------------------------------------------------- alignment.json glue
def attach_intervals(results: dict[str, Any], table: ScoreTable, settings: BootstrapSettings) -> dict[str, Any]:
    """Add ``score_lo``/``score_hi`` to each culture of an ``alignment.json`` body, ``average_lo``/``average_hi`` to
    it, and an ``uncertainty`` block saying how they were made. Returns ``results``."""
    found = score_intervals(table, settings)
    for code, row in results["cultures"].items():
        ci = found["cultures"].get(code, {})
        row["score_lo"], row["score_hi"] = ci.get("lo"), ci.get("hi")
    results["average_lo"], results["average_hi"] = found["average"]["lo"], found["average"]["hi"]
    results["uncertainty"] = {
        **settings.describe(),
        "resampled": "questions and runs" if table.shape[1] > 1 else "questions",
        "questions": table.shape[2],
        "runs": table.shape[1],
    }
    return results
