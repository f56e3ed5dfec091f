"""Holm's step-down adjustment of per-culture p-values.

A comparison tests one difference per culture; at 18 cultures and a 0.05 level, about one culture "differs" by chance
alone. Holm's adjustment keeps the chance of any false "differs" at the level (family-wise), with no assumption about
how the cultures' tests depend on one another, and is never less powerful than Bonferroni.
"""

from __future__ import annotations

from collections.abc import Sequence


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None (no test) stays None and does not count towards m.

    Sorted ascending, the i-th smallest (i = 1..m) becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``.
    """
    tested = sorted((p, k) for k, p in enumerate(p_values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[k] = running
    return out
