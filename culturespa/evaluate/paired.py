"""Two systems' scores compared: the paired base-vs-adapter difference with its interval and p-value, the unpaired
difference it improves on, and the same over several seeds.

The resampling and the intervals are :mod:`culturespa.evaluate.uncertainty`'s (see its docstring for what is
resampled and how the p-values are defined); here both systems share every draw, so what the questions have in
common cancels out of the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from culturespa.evaluate.uncertainty import (
    TIE,
    BootstrapSettings,
    ScoreTable,
    add_sums,
    average_last,
    draws,
    finite_or_none,
    interval,
    jackknife_weights,
    nanmean,
    score_sums,
    scores,
    weighted_sums,
)


# ----------------------------------------------------------------------------------------------- paired comparison
def _check_aligned(base: ScoreTable, tuned: ScoreTable) -> None:
    if base.cultures != tuned.cultures or base.questions != tuned.questions:
        raise ValueError("paired comparison needs both systems' tables over the same cultures and questions")


def _two_sided_bootstrap_p(deltas: np.ndarray) -> float | None:
    values = deltas[np.isfinite(deltas)]
    if values.size == 0:
        return None
    n = values.size
    low = (1 + int(np.sum(values <= TIE))) / (n + 1)
    high = (1 + int(np.sum(values >= -TIE))) / (n + 1)
    return float(min(1.0, 2.0 * min(low, high)))


def _permutation_p(observed: np.ndarray, permuted: np.ndarray) -> list[float | None]:
    """Per column: ``(1 + #{|d*| ≥ |d|}) / (1 + n)`` over the permuted differences (B, K)."""
    out: list[float | None] = []
    for k, obs in enumerate(observed):
        values = permuted[:, k][np.isfinite(permuted[:, k])]
        if not np.isfinite(obs) or values.size == 0:
            out.append(None)
            continue
        extreme = int(np.sum(np.abs(values) >= abs(obs) - TIE))
        out.append((1 + extreme) / (values.size + 1))
    return out


def _permuted_differences(base: ScoreTable, tuned: ScoreTable, rng: np.random.Generator, samples: int) -> np.ndarray:
    """(B, C + 1) score differences (cultures, then the average) with each question's answers swapped between the
    two systems with probability ½ (the same swap for every culture and run)."""
    swap = rng.integers(0, 2, size=(samples, base.shape[2])).astype(float)
    keep = 1.0 - swap
    new_base = score_sums(add_sums(weighted_sums(base, keep), weighted_sums(tuned, swap)), None)
    new_tuned = score_sums(add_sums(weighted_sums(tuned, keep), weighted_sums(base, swap)), None)
    return np.column_stack([new_tuned - new_base, average_last(new_tuned) - average_last(new_base)])


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
    weights, base_picks = draws(rng, n_questions, base.shape[1], settings.samples)
    tuned_picks = base_picks if same_runs else draws(rng, n_questions, tuned.shape[1], settings.samples)[1]

    point = np.stack([scores(base)[0], scores(tuned)[0]])  # (2, C)
    boot = np.stack([scores(base, weights, base_picks), scores(tuned, weights, tuned_picks)])  # (2, B, C)
    jack = None
    if settings.method == "bca":
        jw = jackknife_weights(n_questions)
        jack = np.stack([scores(base, jw), scores(tuned, jw)])
    # a permutation swaps run r of one system with run r of the other, so it needs the same runs
    p_method = settings.p_value if same_runs else "bootstrap"
    permuted = _permuted_differences(base, tuned, rng, settings.samples) if p_method == "permutation" else None

    def block(col: int | None) -> dict[str, Any]:
        pick = (lambda a: a[..., col]) if col is not None else average_last
        est, b = pick(point), pick(boot)
        j = pick(jack) if jack is not None else None
        out: dict[str, Any] = {}
        for k, label in enumerate(labels):
            lo, hi = interval(
                b[k], finite_or_none(est[k]), settings.confidence, settings.method, None if j is None else j[k]
            )
            out.update({label: finite_or_none(est[k]), f"{label}_lo": lo, f"{label}_hi": hi})
        delta = finite_or_none(est[1] - est[0])
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


def unpaired_difference(
    base: ScoreTable, tuned: ScoreTable, settings: BootstrapSettings
) -> dict[str, tuple[float | None, float | None]]:
    """The difference's interval when the two systems are resampled *independently* (what ignoring the pairing
    gives); kept to show, and test, how much the pairing narrows the interval."""
    _check_aligned(base, tuned)
    rng = np.random.default_rng(settings.seed)
    wb, pb = draws(rng, base.shape[2], base.shape[1], settings.samples)
    wt, pt = draws(rng, tuned.shape[2], tuned.shape[1], settings.samples)
    boot_tuned, boot_base = scores(tuned, wt, pt), scores(base, wb, pb)
    point_tuned, point_base = scores(tuned), scores(base)
    point = point_tuned[0] - point_base[0]
    out = {
        code: interval(boot_tuned[:, c] - boot_base[:, c], finite_or_none(point[c]), settings.confidence)
        for c, code in enumerate(base.cultures)
    }
    avg = average_last(boot_tuned) - average_last(boot_base)
    avg_point = average_last(point_tuned)[0] - average_last(point_base)[0]
    out["average"] = interval(avg, finite_or_none(avg_point), settings.confidence)
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
        picks = draws(rng, n_questions, pair[0].shape[1], samples)[1] if pair[0].shape[1] > 1 else None
        tuned_picks = picks if same_runs else (draws(rng, n_questions, pair[1].shape[1], samples)[1])
        for k, (table, pk) in enumerate(zip(pair, (picks, tuned_picks), strict=True)):
            boot[k, s] = scores(table, weights, pk)
            point[k, s] = scores(table)[0]
    # Mean over the drawn seeds: gather (2, B, S, C) and average over the drawn seeds (axis 2).
    drawn = boot[:, seed_picks, np.arange(samples)[:, None], :]  # (2, B, S, C)
    seed_mean = nanmean(drawn, axis=2)  # (2, B, C)
    point_mean = nanmean(point, axis=1)  # (2, C)

    def block(col: int | None) -> dict[str, Any]:
        pick = (lambda a: a[..., col]) if col is not None else average_last
        est, b = pick(point_mean), pick(seed_mean)
        out: dict[str, Any] = {}
        for k, label in enumerate(labels):
            lo, hi = interval(b[k], finite_or_none(est[k]), settings.confidence)
            out.update({label: finite_or_none(est[k]), f"{label}_lo": lo, f"{label}_hi": hi})
        delta = finite_or_none(est[1] - est[0])
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
