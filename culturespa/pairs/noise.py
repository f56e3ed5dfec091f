"""CRQPC's noise floor: how often the model disagrees with itself under the same prompt, next to how often naming a
culture makes it disagree, per culture and per topic, with a paired bootstrap interval for the difference.

Sampled answers (``decoding=sample``): every question has k aware samples and k x (1 + R) unaware samples
(``data.samples`` = k, ``data.noise_replicates`` = R), all in the usual answer files as runs 0, 1, ... Per question
with m >= 1 valid aware and n >= 2 valid unaware samples:

* ``aware_vs_unaware`` A_q: the share of (aware, unaware) sample pairs that disagree;
* ``unaware_vs_unaware`` N_q: the share of pairs of distinct unaware samples that disagree (the noise floor);
* ``signal`` A_q - N_q: the disagreement that naming the culture adds beyond sampling.

The figures are means over questions; the interval is a percentile bootstrap over questions (the same resampled
questions for A and N, so the difference is paired), ``data.bootstrap`` resamples at level ``data.ci_level``, seeded
by ``data.seed``. ``null_keep_rate`` is how often the pairs criterion keeps a question when it compares unaware
replicate r with replicate 0 (pure noise); ``expected_noise_share`` = null_keep_rate x questions compared / pairs
kept, the share of kept pairs that noise alone would have produced (capped at 1).

Greedy and logprob decoding have no sampling noise: the floor is reported as ``none (deterministic decoding)``,
never as a fake zero.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from culturespa.pairs.criteria import Counts

DETERMINISTIC = "none (deterministic decoding)"


@dataclass
class Floor:
    """Per-question disagreement rates for one culture (aligned lists)."""

    topics: list[str]
    aware: list[float]
    unaware: list[float]

    def select(self, topic: str | None) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i, t in enumerate(self.topics) if topic is None or t == topic]
        return np.asarray([self.aware[i] for i in keep]), np.asarray([self.unaware[i] for i in keep])


def disagreement(aware: Counts, unaware: Counts) -> tuple[float, float] | None:
    """(A_q, N_q) from option counts; None without one valid aware and two valid unaware samples."""
    m, n = sum(aware.values()), sum(unaware.values())
    if m < 1 or n < 2:
        return None
    a = 1 - sum(c * unaware.get(o, 0) for o, c in aware.items()) / (m * n)
    u = 1 - sum(c * (c - 1) for c in unaware.values()) / (n * (n - 1))
    return a, u


def bootstrap_ci(
    columns: Sequence[np.ndarray], resamples: int, level: float, seed: int, label: str
) -> list[tuple[float, float] | None]:
    """Percentile intervals of the mean of each column, all from the same resampled rows (a paired bootstrap).

    The generator is seeded by (seed, label), so a culture's interval does not depend on which others ran."""
    n = len(columns[0]) if columns else 0
    if n == 0 or resamples < 1:
        return [None for _ in columns]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(label.encode())])
    means = [np.empty(resamples) for _ in columns]
    step = max(1, 2_000_000 // n)
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        for col, out in zip(columns, means, strict=True):
            out[start : start + size] = col[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return [(float(np.percentile(m, tail)), float(np.percentile(m, 100 - tail))) for m in means]


def summarise(
    floor: Floor,
    topic: str | None,
    *,
    deterministic: bool,
    kept: int,
    compared: int,
    null_keep_rate: float | None,
    resamples: int,
    level: float,
    seed: int,
    label: str,
) -> dict[str, Any]:
    """The noise report of one culture (``topic=None``) or one of its topics."""
    a, u = floor.select(topic)
    n = len(a)
    out: dict[str, Any] = {"questions": n}
    if deterministic:
        (ci,) = bootstrap_ci([a], resamples, level, seed, label)
        mean = float(a.mean()) if n else None
        return out | {
            "aware_vs_unaware": mean,
            "unaware_vs_unaware": None,
            "signal": mean,
            "signal_ci": list(ci) if ci else None,
            "null_keep_rate": None,
            "expected_noise_share": None,
            "floor": DETERMINISTIC,
        }
    if n == 0:
        return out | {
            "aware_vs_unaware": None,
            "unaware_vs_unaware": None,
            "signal": None,
            "signal_ci": None,
            "null_keep_rate": null_keep_rate,
            "expected_noise_share": None,
            "floor": "not measured (no question with 1 valid aware and 2 valid unaware samples)",
        }
    d = a - u
    ci_a, ci_u, ci_d = bootstrap_ci([a, u, d], resamples, level, seed, label)
    share = None
    if null_keep_rate is not None and kept > 0:
        share = min(1.0, null_keep_rate * compared / kept)
    return out | {
        "aware_vs_unaware": float(a.mean()),
        "aware_vs_unaware_ci": list(ci_a) if ci_a else None,
        "unaware_vs_unaware": float(u.mean()),
        "unaware_vs_unaware_ci": list(ci_u) if ci_u else None,
        "signal": float(d.mean()),
        "signal_ci": list(ci_d) if ci_d else None,
        "null_keep_rate": null_keep_rate,
        "expected_noise_share": share,
        "floor": "measured",
    }


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _row(label: str, s: dict[str, Any]) -> list[Any]:
    noise = s["noise"]
    ci = noise.get("signal_ci")
    return [
        label,
        s["valid"],
        s["kept"],
        noise.get("aware_vs_unaware"),
        noise.get("unaware_vs_unaware"),
        noise.get("signal"),
        ci[0] if ci else None,
        ci[1] if ci else None,
        noise.get("expected_noise_share"),
    ]


def table_rows(stats: dict[str, Any]) -> list[list[Any]]:
    """One row per culture: valid, kept, A, N, signal [CI], expected noise share (shares in [0, 1])."""
    return [_row(culture, s) for culture, s in stats["cultures"].items()]


def topic_rows(stats: dict[str, Any]) -> list[list[Any]]:
    """The same per (culture, topic): the first column is ``CODE/topic``."""
    return [_row(f"{c}/{t}", ts) for c, s in stats["cultures"].items() for t, ts in s["topics"].items()]


COLUMNS = [
    "culture",
    "valid",
    "kept",
    "aware_vs_unaware",
    "unaware_vs_unaware",
    "signal",
    "signal_ci_low",
    "signal_ci_high",
    "expected_noise_share",
]


def print_table(stats: dict[str, Any]) -> None:
    """The pairs stage's printed summary: pairs kept and how much of them the noise floor explains."""
    from rich.console import Console
    from rich.table import Table

    floor = stats["noise_floor"]
    level = floor.get("ci_level", 0.95)
    table = Table(title=f"CRQPC pairs ({stats['criterion']}, {stats['system']}): culture signal vs noise floor")
    heads = ["culture", "valid", "kept", "aware≠unaware %", "floor %", f"signal % [{level:.0%} CI]", "noise %"]
    for head in heads:
        table.add_column(head, justify="right")
    for culture, valid, kept, a, u, d, lo, hi, share in table_rows(stats):
        ci = f" [{_pct(lo)}, {_pct(hi)}]" if lo is not None else ""
        table.add_row(culture, str(valid), str(kept), _pct(a), _pct(u), _pct(d) + ci, _pct(share))
    console = Console()
    console.print(table)
    console.print(
        "floor = unaware≠unaware (sampling noise); signal = aware≠unaware - floor; "
        "noise = expected share of kept pairs that noise alone would keep"
    )
    console.print(f"noise floor: {floor['status']}; rule: {stats['rule']}")
