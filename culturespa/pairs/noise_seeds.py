"""CRQPC's noise floor and kept pairs over repeated pipeline runs (seeds).

One pipeline run's pairs stage writes ``stats.json`` (``culturespa.pairs.noise``): per culture the kept pairs, the
aware-vs-unaware disagreement A, the unaware-vs-unaware disagreement N (the noise floor) and the signal A − N with an
interval over that run's questions. Over seeds, a researcher needs the same figures with one interval that covers both
sources of variation, so this module re-reads each run's sampled answers (found through its ``comparison.json``
``files.answers``), builds the per-question A_q and N_q of every (seed, culture), and bootstraps seeds and questions
together (the same resampled questions for every culture and for A and N, so the difference is paired). Kept-pair
counts and the expected noise share come from the stats files as they are (they depend on the criterion; A and N do
not, so runs of different criteria on the same answers show the same A and N).

Used by ``python -m culturespa.evaluate.seeds`` (the "CRQPC pairs" table under the scores), and on its own before any
training: ``python -m culturespa.pairs.noise_seeds outputs/pipeline/pairs/<hash> ...`` (pipeline pairs folders, whose
``_SUCCESS.json`` names the answers stage they read) or run folders holding ``comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from culturespa.answers.stage import answers_file
from culturespa.errors import CultureSPAError, run_cli
from culturespa.pairs import criteria, noise
from culturespa.pairs.stage import read_answer_runs
from culturespa.stages.identity import read_done
from culturespa.utils.reports import add_report_args, read_summary_json, spread, write_report

STATS_FILE = "stats.json"
MEASURES = ("aware_vs_unaware", "unaware_vs_unaware", "signal")


def load_stats(comparison: dict[str, Any]) -> dict[str, Any]:
    """The pairs stage's ``stats.json`` of one run, found through its comparison's ``files.pairs``."""
    folder = (comparison.get("files") or {}).get("pairs")
    if not folder:
        raise CultureSPAError(f"{comparison.get('_file', 'comparison')}: no 'files.pairs' entry (pairs stage folder)")
    fields = ("criterion", "system", "cultures", "noise_floor")
    return read_summary_json(Path(folder) / STATS_FILE, fields, "no such pairs stats file (moved or deleted?)")


def question_rates(
    answers_dir: str | Path, system: str, cultures: list[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """(A_q, N_q) per culture and question id of one run, from its sampled answer files (see ``noise``); the
    unaware file is read once for all cultures."""
    folder = Path(answers_dir)
    _, unaware = read_answer_runs(answers_file(folder, "unaware", None))
    rates: dict[str, dict[str, tuple[float, float]]] = {}
    for culture in cultures:
        _, aware = read_answer_runs(answers_file(folder, system, culture))
        rates[culture] = {}
        for q_id, runs in aware.items():
            pair = noise.disagreement(criteria.counts(runs), criteria.counts(unaware.get(q_id, [])))
            if pair is not None:
                rates[culture][q_id] = pair
    return rates


def rate_matrix(runs: Sequence[dict[str, dict[str, tuple[float, float]]]], cultures: list[str]) -> np.ndarray:
    """[2, seeds, cultures, questions] of A_q and N_q (NaN where a seed has no comparable samples for a question)."""
    ids = sorted({q for run in runs for c in cultures for q in run.get(c, {})})
    index = {q: i for i, q in enumerate(ids)}
    out = np.full((2, len(runs), len(cultures), len(ids)), np.nan)
    for s, run in enumerate(runs):
        for c, code in enumerate(cultures):
            for q_id, (a, u) in run.get(code, {}).items():
                out[0, s, c, index[q_id]] = a
                out[1, s, c, index[q_id]] = u
    return out


def _sums(rates: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Question-weighted sums of A, N, A − N and of the weights over the present questions of every (seed, culture):
    [3, B, S, C] and [B, S, C] for ``weights`` [B, Q] (one matrix product each, so paper-scale runs stay cheap)."""
    present = ~np.isnan(rates[0]) & ~np.isnan(rates[1])  # [S, C, Q]
    values = np.where(present, np.stack([rates[0], rates[1], rates[0] - rates[1]]), 0.0)  # [3, S, C, Q]
    sums = np.einsum("bq,mscq->mbsc", weights, values, optimize=True)
    counts = np.einsum("bq,scq->bsc", weights, present.astype(float), optimize=True)
    return sums, counts


def crossed_bootstrap(rates: np.ndarray, resamples: int, level: float, seed: int) -> dict[str, Any]:
    """Point estimates and percentile intervals of A, N and A − N per culture and averaged over cultures, resampling
    seeds and questions together (one draw of questions shared by all cultures, A and N). A culture's estimate is the
    mean over all its (seed, question) entries with valid samples."""
    n_seeds, n_cultures, n_questions = rates.shape[1:]
    sums, counts = _sums(rates, np.ones((1, n_questions)))
    with np.errstate(invalid="ignore", divide="ignore"):
        point = sums.sum(axis=2)[:, 0] / counts.sum(axis=1)[0]  # [3, C]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(b"noise-over-seeds")])
    seed_picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    weights = rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=resamples).astype(float)
    sums, counts = _sums(rates, weights)
    rows = np.arange(resamples)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = sums[:, rows, seed_picks].sum(axis=2) / counts[rows, seed_picks].sum(axis=1)  # [3, B, C]
    tail = (1 - level) / 2 * 100

    def block(est: np.ndarray, dist: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m, name in enumerate(MEASURES):
            finite = dist[m][np.isfinite(dist[m])]
            ci = [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))] if finite.size else None
            out[name] = None if not np.isfinite(est[m]) else float(est[m])
            out[f"{name}_ci"] = ci
        return out

    per_culture = [block(point[:, c], boot[:, :, c]) for c in range(n_cultures)]
    with np.errstate(invalid="ignore"):
        average = block(np.nanmean(point, axis=1), np.nanmean(boot, axis=2))
    return {"cultures": per_culture, "average": average, "questions": n_questions, "seeds": n_seeds}


def _pooled_share(stats: dict[str, Any], cultures: list[str]) -> float | None:
    """One run's expected noise share over all cultures: the cultures' shares weighted by their kept pairs."""
    kept = share = 0.0
    for code in cultures:
        row = stats["cultures"][code]
        if row["kept"]:
            value = row["noise"].get("expected_noise_share")
            if value is None:
                return None
            kept, share = kept + row["kept"], share + value * row["kept"]
    return share / kept if kept else None


def summarise_pairs(
    comparisons: Sequence[dict[str, Any]], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Kept pairs (mean ± sd and per run), expected noise share, and A / N / signal with a crossed seeds × questions
    interval, per culture and in total. The runs must share criterion and system; the interval is None (with the
    reason) when some run's answers cannot be read or were not sampled."""
    if not comparisons:
        raise CultureSPAError("pairs summary: no runs given")
    if resamples < 1:
        raise CultureSPAError(f"bootstrap resamples: {resamples} must be >= 1")
    if not 0 < level < 1:
        raise CultureSPAError(f"confidence: {level} must be in (0, 1)")
    stats = [load_stats(c) for c in comparisons]
    first = stats[0]
    cultures = list(first["cultures"])
    for other in stats[1:]:
        for key in ("criterion", "system"):
            if other[key] != first[key]:
                raise CultureSPAError(f"{other['_file']}: {key} {other[key]!r} differs from {first['_file']}")
        if list(other["cultures"]) != cultures:
            raise CultureSPAError(f"{other['_file']}: cultures {list(other['cultures'])} differ from {first['_file']}")
    rows: dict[str, dict[str, Any]] = {}
    for code in cultures:
        per_run = [s["cultures"][code] for s in stats]
        shares = [float(x) for r in per_run if (x := r["noise"].get("expected_noise_share")) is not None]
        rows[code] = {
            "valid": spread([float(r["valid"]) for r in per_run]),
            "kept": spread([float(r["kept"]) for r in per_run]),
            "expected_noise_share": spread(shares) if shares else None,  # over the runs that kept pairs
        }
    totals = [float(sum(s["cultures"][c]["kept"] for c in cultures)) for s in stats]
    pooled_shares = [share for s in stats if (share := _pooled_share(s, cultures)) is not None]
    null_rates = [s["noise_floor"].get("null_keep_rate") for s in stats]
    summary: dict[str, Any] = {
        "criterion": first["criterion"],
        "system": first["system"],
        "rule": first.get("rule"),
        "criterion_settings": [s.get("criterion_settings") for s in stats],
        "floor_status": [s["noise_floor"].get("status") for s in stats],
        "runs": [s["_file"] for s in stats],
        "cultures": rows,
        "total_kept": spread(totals),
        "expected_noise_share": spread(pooled_shares) if pooled_shares else None,
        "null_keep_rate": spread([float(x) for x in null_rates]) if None not in null_rates else None,
    }
    try:
        if any(s["noise_floor"].get("decoding") != "sample" for s in stats):
            raise CultureSPAError("not every run sampled its answers (no noise floor to pool)")
        rates = [question_rates(c["files"]["answers"], first["system"], cultures) for c in comparisons]
    except (CultureSPAError, KeyError, OSError) as err:
        summary["interval"] = {"method": None, "reason": " ".join(str(err).split())}
        return summary
    found = crossed_bootstrap(rate_matrix(rates, cultures), resamples, level, seed)
    for code, block in zip(cultures, found["cultures"], strict=True):
        rows[code].update(block)
    summary["average"] = found["average"]
    summary["interval"] = {
        "method": "percentile bootstrap over seeds and questions together (paired: A and N share the draws)",
        "resamples": resamples,
        "confidence": level,
        "seed": seed,
        "seeds": found["seeds"],
        "questions": found["questions"],
    }
    return summary


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}"


def _pm(spread: dict[str, Any] | None, scale: float = 1.0, digits: int = 0) -> str:
    if spread is None:
        return "—"
    mean = f"{spread['mean'] * scale:.{digits}f}"
    return mean if spread["sd"] is None else f"{mean} ± {spread['sd'] * scale:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """One row per culture and the total: kept pairs, per-run counts, A, N, signal [CI] (%), expected noise share
    (mean ± sd over the runs that kept pairs; the total weights cultures by their kept pairs)."""
    about = summary["interval"]
    level = f"{about['confidence'] * 100:g}% CI" if about.get("method") else "CI"
    lines = [
        f"CRQPC pairs, criterion `{summary['criterion']}` ({summary['system']}), {len(summary['runs'])} runs "
        "(mean ± sd over runs)",
        "",
        f"| culture | kept | per run | aware≠unaware % | floor % | signal % [{level}] | noise share % |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]

    def row(name: str, kept: dict[str, Any], block: dict[str, Any], share: dict[str, Any] | None) -> str:
        per_run = ", ".join(f"{v:g}" for v in kept["values"])
        ci = block.get("signal_ci")
        signal = _pct(block.get("signal")) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
        return (
            f"| {name} | {_pm(kept, digits=1)} | {per_run} | {_pct(block.get('aware_vs_unaware'))} | "
            f"{_pct(block.get('unaware_vs_unaware'))} | {signal} | {_pm(share, 100, 1)} |"
        )

    for code, block in summary["cultures"].items():
        lines.append(row(code, block["kept"], block, block["expected_noise_share"]))
    lines.append(row("**all**", summary["total_kept"], summary.get("average", {}), summary["expected_noise_share"]))
    lines.append("")
    if about.get("method"):
        lines.append(
            f"{level}: {about['method']} ({about['resamples']} resamples, {about['seeds']} seeds × "
            f"{about['questions']} questions, seed {about['seed']}); floor = unaware≠unaware, signal = aware≠unaware "
            "− floor; noise share = expected share of the kept pairs that noise alone would keep"
        )
    else:
        lines.append(f"A / floor / signal over runs unavailable: {about['reason']}")
    return "\n".join(lines)


def run_files(path: str | Path) -> dict[str, Any]:
    """What :func:`summarise_pairs` needs of one run: ``files.pairs`` and ``files.answers``, from a run folder (its
    ``comparison.json``) or from a pipeline pairs folder (``outputs/pipeline/pairs/<hash>``: the answers stage is the
    sibling ``answers/<upstream hash>`` that its ``_SUCCESS.json`` names)."""
    folder = Path(path)
    comparison = folder / "comparison.json" if folder.is_dir() else folder
    if comparison.name == "comparison.json" and comparison.is_file():
        data = read_summary_json(comparison, ("files",), "no such comparison file")
        return {"files": data["files"] or {}, "_file": data["_file"]}
    if not (folder / STATS_FILE).is_file():
        raise CultureSPAError(f"{folder}: neither a run folder (comparison.json) nor a pairs folder (stats.json)")
    files: dict[str, str] = {"pairs": str(folder)}
    try:
        upstream = (read_done(folder) or {}).get("upstream") or []
    except (OSError, json.JSONDecodeError):
        upstream = []
    for digest in upstream:
        candidate = folder.parent.parent / "answers" / str(digest)
        if candidate.is_dir():
            files["answers"] = str(candidate)
    return {"files": files, "_file": str(folder)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="culturespa.pairs.noise_seeds", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="pipeline pairs folders or run folders (comparison.json)")
    add_report_args(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    summary = summarise_pairs([run_files(p) for p in args.runs], args.samples, args.confidence, args.seed)
    return write_report(args, markdown(summary), summary)


if __name__ == "__main__":
    run_cli(main)
