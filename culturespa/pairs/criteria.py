"""Noise-robust CRQPC criteria on k sampled answers per setting: an exact test and a calibrated divergence.

With sampled answers one culture-aware and one culture-unaware sample disagree about as often as two unaware samples
do (docs/results.md), so "the answers differ" mostly keeps sampling noise. The criteria here compare the *counts* of
k samples per setting instead (``data.samples``):

* ``majority``: keep a question when the culture-aware majority option is not among the unaware majority options
  **and** the Freeman-Halton exact test (Fisher's exact test generalised to 2 x K) rejects, at ``data.alpha``, the
  null hypothesis that the aware and the unaware samples are draws from one and the same option distribution
  (naming the culture changes nothing). Conditional on the per-option totals the aware row is multivariate
  hypergeometric; the p-value is the total probability of the tables no more probable than the observed one.
* ``distribution`` (sampled answers): keep a question when the Jensen-Shannon distance between the aware and the
  unaware option frequencies exceeds a threshold read off the *null*: the ``data.null_quantile`` quantile of the
  same distance between two independent replicates of the unaware samples (``data.noise_replicates``).

Both are applied to the unaware replicates too (replicate r against replicate 0), which measures how often the
criterion keeps a question when there is only noise (the ``null_keep_rate`` of the pairs stage's noise report).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

Counts = dict[int, int]


def counts(answers: Sequence[int | None]) -> Counts:
    """Option counts of the valid answers (``None`` = invalid sample, left out)."""
    return dict(Counter(a for a in answers if a is not None))


@lru_cache(maxsize=65536)
def _exact_p(columns: tuple[int, ...], first_row: int, observed: tuple[int, ...]) -> float:
    total = sum(columns)
    denominator = math.comb(total, first_row)
    p_obs = math.prod(math.comb(c, x) for c, x in zip(columns, observed, strict=True))
    tolerance = p_obs * (1 + 1e-9)
    extreme = 0

    def walk(j: int, left: int, weight: int) -> None:
        nonlocal extreme
        if j == len(columns) - 1:
            if left <= columns[j]:
                w = weight * math.comb(columns[j], left)
                if w <= tolerance:
                    extreme += w
            return
        rest = sum(columns[j + 1 :])
        for x in range(max(0, left - rest), min(columns[j], left) + 1):
            walk(j + 1, left - x, weight * math.comb(columns[j], x))

    walk(0, first_row, 1)
    return min(1.0, extreme / denominator)


def exact_test(aware: Counts, unaware: Counts) -> float:
    """Freeman-Halton exact p-value of the 2 x K table (aware counts, unaware counts) over the options either chose.

    Null: both rows are samples of one option distribution. 1.0 when a row is empty (no evidence either way)."""
    options = sorted(set(aware) | set(unaware))
    row = tuple(aware.get(o, 0) for o in options)
    columns = tuple(aware.get(o, 0) + unaware.get(o, 0) for o in options)
    if sum(row) == 0 or sum(row) == sum(columns) or len(options) < 2:
        return 1.0
    return _exact_p(columns, sum(row), row)


def top_options(c: Counts) -> set[int]:
    if not c:
        return set()
    best = max(c.values())
    return {o for o, n in c.items() if n == best}


def majority(aware: Counts, unaware: Counts) -> int | None:
    """The aware majority option; a tie goes to the option that gained most over the unaware frequencies, then to
    the lowest number. None without a valid aware sample."""
    if not aware:
        return None
    n_u = sum(unaware.values()) or 1
    n_a = sum(aware.values())
    return min(top_options(aware), key=lambda o: (-(aware[o] / n_a - unaware.get(o, 0) / n_u), o))


def unaware_answer(unaware: Counts) -> int | None:
    """The unaware majority option (lowest number on a tie), as stored in a pair record."""
    tops = top_options(unaware)
    return min(tops) if tops else None


def keep_majority(aware: Counts, unaware: Counts, alpha: float) -> tuple[bool, float]:
    """(keep, p): the aware majority is not an unaware majority option and the exact test rejects at ``alpha``."""
    if not aware or not unaware:
        return False, 1.0
    p = exact_test(aware, unaware)
    return majority(aware, unaware) not in top_options(unaware) and p <= alpha, p


def js_over(p: Mapping[int, float], q: Mapping[int, float], numbers: Sequence[int]) -> float | None:
    """Jensen-Shannon distance (base 2) between two option weightings (counts or probabilities, normalised here)
    over the question's option numbers; None when either puts no weight on them."""
    a = [float(p.get(n, 0.0)) for n in numbers]
    b = [float(q.get(n, 0.0)) for n in numbers]
    if sum(a) <= 0 or sum(b) <= 0:
        return None
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(a, b, base=2))


def count_js(aware: Counts, unaware: Counts, numbers: Sequence[int]) -> float | None:
    """JS distance between the aware and unaware option frequencies of the samples; None without samples."""
    return js_over(aware, unaware, numbers)


def null_threshold(null: Sequence[float], quantile: float) -> float | None:
    """The ``quantile`` of the null divergences (linear interpolation); a question is kept only strictly above it.
    None when there is no null to calibrate against."""
    if not null:
        return None
    import numpy as np

    return float(np.quantile(np.asarray(null, dtype=float), quantile))


def describe(criterion: str, settings: dict[str, Any]) -> str:
    """One line naming the rule actually applied (for logs and stats.json)."""
    if criterion == "majority":
        return (
            f"majority of k={settings['samples']} samples differs and Freeman-Halton exact p <= {settings['alpha']} "
            "(null: aware and unaware samples share one option distribution)"
        )
    if criterion == "distribution":
        if settings.get("calibrated"):
            return (
                f"JS distance of k={settings['samples']} sample frequencies > {settings['threshold']} "
                f"(the {settings['quantile']} quantile of the unaware-vs-unaware distance)"
            )
        return f"JS distance of the logprob distributions >= data.js_threshold={settings['threshold']} (fixed)"
    if criterion == "answer":
        return "the aware answer (sample 0) differs from the unaware answer (sample 0): the paper's rule"
    return "every valid aware answer (no selection)"
