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
* **Paired comparison** (base vs adapter): both systems are resampled with the *same* questions and runs, so what the
  questions have in common (hard or easy for both) cancels out of the difference's interval.
* **p-value** of "no difference" (``p_value``): ``permutation`` (default) — a paired approximate-randomisation test:
  each question's answers (all runs) are swapped between the two systems with probability ½, the score difference is
  recomputed, and ``p = (1 + #{|d*| ≥ |d|}) / (1 + samples)``; valid under the null that the two systems' answers to a
  question are exchangeable. ``bootstrap`` — two-sided from the paired bootstrap distribution,
  ``p = min(1, 2 · min((1 + #{d* ≤ 0}), (1 + #{d* ≥ 0})) / (1 + samples))``: about the smallest ``1 − confidence`` at
  which the percentile interval would exclude 0.
* **Over seeds** (:func:`over_seeds`): each bootstrap sample draws seeds with replacement and one question resample
  shared by every seed (seeds and questions are crossed: every seed answers the same questions), plus runs within each
  seed; the difference is the mean over the drawn seeds. Percentile intervals and the bootstrap p-value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import norm

from culturespa.errors import CultureSPAError
from culturespa.evaluate.metrics import Item

METHODS = ("percentile", "bca")
P_VALUES = ("permutation", "bootstrap")
_TIE = 1e-9  # score differences closer than this count as equal (float noise in the matrix products)


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


def _sums(table: ScoreTable, weights: np.ndarray) -> Sums:
    """Weighted sums over questions of err, worst and count: each (B, C, R) for weights (B, Q)."""
    c, r, q = table.shape
    out = []
    for array in (table.err, table.worst, table.count):
        out.append((weights @ array.reshape(c * r, q).T).reshape(len(weights), c, r))
    return out[0], out[1], out[2]


def _add(a: Sums, b: Sums) -> Sums:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _score(sums: Sums, picks: np.ndarray | None) -> np.ndarray:
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
    return _nanmean(per_run, axis=2)


def scores(table: ScoreTable, weights: np.ndarray | None = None, picks: np.ndarray | None = None) -> np.ndarray:
    """Scores (B, C) for question weights (B, Q) and run picks (B, R); without weights, the point estimate (1, C)."""
    if weights is None:
        weights = np.ones((1, table.shape[2]))
    return _score(_sums(table, weights), picks)


def _draws(
    rng: np.random.Generator, n_questions: int, n_runs: int, samples: int
) -> tuple[np.ndarray, np.ndarray | None]:
    weights = rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=samples).astype(float)
    picks = rng.integers(0, n_runs, size=(samples, n_runs)) if n_runs > 1 else None
    return weights, picks


def _jackknife_weights(n_questions: int) -> np.ndarray:
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
        below = float(np.mean(values < estimate - _TIE)) + 0.5 * float(np.mean(np.abs(values - estimate) <= _TIE))
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


def _estimate(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def score_intervals(table: ScoreTable, settings: BootstrapSettings) -> dict[str, Any]:
    """``{"cultures": {code: {"score", "lo", "hi"}}, "average": {"score", "lo", "hi"}}`` for one system."""
    rng = np.random.default_rng(settings.seed)
    _, n_runs, n_questions = table.shape
    weights, picks = _draws(rng, n_questions, n_runs, settings.samples)
    point = scores(table)[0]
    boot = scores(table, weights, picks)
    jack = scores(table, _jackknife_weights(n_questions)) if settings.method == "bca" else None

    def entry(est: float, b: np.ndarray, j: np.ndarray | None) -> dict[str, Any]:
        lo, hi = interval(b, _estimate(est), settings.confidence, settings.method, j)
        return {"score": _estimate(est), "lo": lo, "hi": hi}

    cultures = {
        code: entry(point[c], boot[:, c], None if jack is None else jack[:, c]) for c, code in enumerate(table.cultures)
    }
    average = entry(
        _average_last(point[None, :])[0], _average_last(boot), None if jack is None else _average_last(jack)
    )
    return {"cultures": cultures, "average": average}


# ----------------------------------------------------------------------------------------------- paired comparison
def _check_aligned(base: ScoreTable, tuned: ScoreTable) -> None:
    if base.cultures != tuned.cultures or base.questions != tuned.questions:
        raise ValueError("paired comparison needs both systems' tables over the same cultures and questions")


def _two_sided_bootstrap_p(deltas: np.ndarray) -> float | None:
    values = deltas[np.isfinite(deltas)]
    if values.size == 0:
        return None
    n = values.size
    low = (1 + int(np.sum(values <= _TIE))) / (n + 1)
    high = (1 + int(np.sum(values >= -_TIE))) / (n + 1)
    return float(min(1.0, 2.0 * min(low, high)))


def _permutation_p(observed: np.ndarray, permuted: np.ndarray) -> list[float | None]:
    """Per column: ``(1 + #{|d*| ≥ |d|}) / (1 + n)`` over the permuted differences (B, K)."""
    out: list[float | None] = []
    for k, obs in enumerate(observed):
        values = permuted[:, k][np.isfinite(permuted[:, k])]
        if not np.isfinite(obs) or values.size == 0:
            out.append(None)
            continue
        extreme = int(np.sum(np.abs(values) >= abs(obs) - _TIE))
        out.append((1 + extreme) / (values.size + 1))
    return out


def _permuted_differences(base: ScoreTable, tuned: ScoreTable, rng: np.random.Generator, samples: int) -> np.ndarray:
    """(B, C + 1) score differences (cultures, then the average) with each question's answers swapped between the
    two systems with probability ½ (the same swap for every culture and run)."""
    swap = rng.integers(0, 2, size=(samples, base.shape[2])).astype(float)
    keep = 1.0 - swap
    new_base = _score(_add(_sums(base, keep), _sums(tuned, swap)), None)
    new_tuned = _score(_add(_sums(tuned, keep), _sums(base, swap)), None)
    return np.column_stack([new_tuned - new_base, _average_last(new_tuned) - _average_last(new_base)])


def paired_comparison(
    base: ScoreTable, tuned: ScoreTable, settings: BootstrapSettings, labels: tuple[str, str] = ("base", "culturespa")
) -> dict[str, Any]:
    """Per culture and on average: each system's score with its interval, and the difference ``tuned − base`` with
    its paired-bootstrap interval and p-value. Keys: ``{label}``, ``{label}_lo``, ``{label}_hi``, ``delta``,
    ``delta_lo``, ``delta_hi``, ``p``."""
    _check_aligned(base, tuned)
    rng = np.random.default_rng(settings.seed)
    n_questions = base.shape[2]
    same_runs = base.shape[1] == tuned.shape[1]
    weights, base_picks = _draws(rng, n_questions, base.shape[1], settings.samples)
    tuned_picks = base_picks if same_runs else _draws(rng, n_questions, tuned.shape[1], settings.samples)[1]

    point = np.stack([scores(base)[0], scores(tuned)[0]])  # (2, C)
    boot = np.stack([scores(base, weights, base_picks), scores(tuned, weights, tuned_picks)])  # (2, B, C)
    jack = None
    if settings.method == "bca":
        jw = _jackknife_weights(n_questions)
        jack = np.stack([scores(base, jw), scores(tuned, jw)])
    p_method = (
        settings.p_value if same_runs else "bootstrap"
    )  # a swap pairs run r of one system with run r of the other
    permuted = _permuted_differences(base, tuned, rng, settings.samples) if p_method == "permutation" else None

    def block(col: int | None) -> dict[str, Any]:
        pick = (lambda a: a[..., col]) if col is not None else _average_last
        est, b = pick(point), pick(boot)
        j = pick(jack) if jack is not None else None
        out: dict[str, Any] = {}
        for k, label in enumerate(labels):
            lo, hi = interval(
                b[k], _estimate(est[k]), settings.confidence, settings.method, None if j is None else j[k]
            )
            out.update({label: _estimate(est[k]), f"{label}_lo": lo, f"{label}_hi": hi})
        delta = _estimate(est[1] - est[0])
        d_boot = b[1] - b[0]
        lo, hi = interval(d_boot, delta, settings.confidence, settings.method, None if j is None else j[1] - j[0])
        if delta is None:
            p = None
        elif permuted is not None:
            p = _permutation_p(np.array([delta]), permuted[:, [len(base.cultures) if col is None else col]])[0]
        else:
            p = _two_sided_bootstrap_p(d_boot)
        out.update({"delta": delta, "delta_lo": lo, "delta_hi": hi, "p": p})
        return out

    return {
        "cultures": {code: block(c) for c, code in enumerate(base.cultures)},
        "average": block(None),
        "p_method": p_method,
    }


def _average_last(values: np.ndarray) -> np.ndarray:
    """The mean over cultures (last axis) of an array shaped (..., C), leaving out cultures with no score."""
    flat = values.reshape(-1, values.shape[-1])
    return _nanmean(flat, axis=1).reshape(values.shape[:-1])


def unpaired_difference(
    base: ScoreTable, tuned: ScoreTable, settings: BootstrapSettings
) -> dict[str, tuple[float | None, float | None]]:
    """The difference's interval when the two systems are resampled *independently* (what ignoring the pairing
    gives); kept to show, and test, how much the pairing narrows the interval."""
    _check_aligned(base, tuned)
    rng = np.random.default_rng(settings.seed)
    wb, pb = _draws(rng, base.shape[2], base.shape[1], settings.samples)
    wt, pt = _draws(rng, tuned.shape[2], tuned.shape[1], settings.samples)
    boot_tuned, boot_base = scores(tuned, wt, pt), scores(base, wb, pb)
    point_tuned, point_base = scores(tuned), scores(base)
    point = point_tuned[0] - point_base[0]
    out = {
        code: interval(boot_tuned[:, c] - boot_base[:, c], _estimate(point[c]), settings.confidence)
        for c, code in enumerate(base.cultures)
    }
    avg = _average_last(boot_tuned) - _average_last(boot_base)
    avg_point = _average_last(point_tuned)[0] - _average_last(point_base)[0]
    out["average"] = interval(avg, _estimate(avg_point), settings.confidence)
    return out


# ------------------------------------------------------------------------------------------------------ over seeds
def over_seeds(
    runs: Sequence[tuple[ScoreTable, ScoreTable]],
    settings: BootstrapSettings,
    labels: tuple[str, str] = ("base", "culturespa"),
) -> dict[str, Any]:
    """Base vs tuned over several seeds (one pair of tables per seed, all over the same cultures and questions):
    means over seeds with a crossed seeds × questions bootstrap (percentile intervals, bootstrap p-value)."""
    if not runs:
        raise ValueError("over_seeds needs at least one seed")
    first = runs[0][0]
    for base, tuned in runs:
        _check_aligned(first, base)
        _check_aligned(first, tuned)
    rng = np.random.default_rng(settings.seed)
    n_seeds, n_questions, samples = len(runs), first.shape[2], settings.samples
    seed_picks = rng.integers(0, n_seeds, size=(samples, n_seeds))
    weights = rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=samples).astype(float)
    boot = np.empty((2, n_seeds, samples, len(first.cultures)))
    point = np.empty((2, n_seeds, len(first.cultures)))
    for s, pair in enumerate(runs):
        same_runs = pair[0].shape[1] == pair[1].shape[1]
        picks = _draws(rng, n_questions, pair[0].shape[1], samples)[1] if pair[0].shape[1] > 1 else None
        tuned_picks = picks if same_runs else (_draws(rng, n_questions, pair[1].shape[1], samples)[1])
        for k, (table, pk) in enumerate(zip(pair, (picks, tuned_picks), strict=True)):
            boot[k, s] = scores(table, weights, pk)
            point[k, s] = scores(table)[0]
    # Mean over the drawn seeds: gather (2, B, S, C) and average over the drawn seeds (axis 2).
    drawn = boot[:, seed_picks, np.arange(samples)[:, None], :]  # (2, B, S, C)
    seed_mean = _nanmean(drawn, axis=2)  # (2, B, C)
    point_mean = _nanmean(point, axis=1)  # (2, C)

    def block(col: int | None) -> dict[str, Any]:
        pick = (lambda a: a[..., col]) if col is not None else _average_last
        est, b = pick(point_mean), pick(seed_mean)
        out: dict[str, Any] = {}
        for k, label in enumerate(labels):
            lo, hi = interval(b[k], _estimate(est[k]), settings.confidence)
            out.update({label: _estimate(est[k]), f"{label}_lo": lo, f"{label}_hi": hi})
        delta = _estimate(est[1] - est[0])
        lo, hi = interval(b[1] - b[0], delta, settings.confidence)
        p = _two_sided_bootstrap_p(b[1] - b[0]) if delta is not None else None
        out.update({"delta": delta, "delta_lo": lo, "delta_hi": hi, "p": p})
        return out

    return {
        "cultures": {code: block(c) for c, code in enumerate(first.cultures)},
        "average": block(None),
        "p_method": "bootstrap",
        "resampled": "seeds and questions (crossed), runs within seeds",
    }


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
