"""Mean and spread of base-vs-CultureSPA comparisons over repeated pipeline runs (seeds).

One pipeline run writes ``outputs/pipeline/runs/<name>/comparison.json``; a seed sweep writes one per seed. A single
seed says little at this scale (sampled answers, a few hundred pairs), so results are reported over seeds: per culture
and for the WVS average, base and CultureSPA scores and their difference as mean ± sample standard deviation, how
many seeds improved, and the difference's confidence interval and p-value from a bootstrap that resamples seeds and
questions together (:func:`culturespa.evaluate.uncertainty.over_seeds`), on the per-question answers found through
each comparison's ``files`` (``eval-base``, ``eval-culturespa``). When those answers are missing (folders moved or
deleted), the interval falls back to a t interval over the per-seed differences and says so.

Under the scores it prints the runs' CRQPC pairs over seeds (``culturespa.pairs.noise_seeds``): kept pairs, the
noise floor and the culture signal with a seeds × questions interval (``--no-pairs`` leaves them out).

Run: ``python -m culturespa.evaluate.seeds outputs/pipeline/runs/*small_cpu,seed=* [--markdown FILE] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from culturespa.errors import CultureSPAError, run_cli
from culturespa.evaluate.comparison import paired_tables
from culturespa.evaluate.paired import over_seeds
from culturespa.evaluate.references import describe
from culturespa.evaluate.uncertainty import BootstrapSettings, t_interval
from culturespa.evaluate.verdict import Estimate, comparison_verdict
from culturespa.pairs import noise_seeds
from culturespa.utils.reports import add_report_args, read_summary_json, spread, write_report
from culturespa.wvs.survey import WVSData

log = logging.getLogger(__name__)

COMPARISON_FILE = "comparison.json"


def load_comparison(path: str | Path) -> dict[str, Any]:
    """A run's comparison (a run folder or the file itself), checked for the fields the summary reads."""
    file = Path(path)
    if file.is_dir():
        file = file / COMPARISON_FILE
    data = read_summary_json(
        file, ("average", "cultures", "prompt", "model"), "no such comparison file (run the pipeline first)"
    )
    for i, row in enumerate(data["cultures"]):
        for key in ("culture", "base", "culturespa"):
            if key not in row:
                raise CultureSPAError(f"{file}: cultures[{i}] has no field {key!r}")
    return data


def summarise(comparisons: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per culture and on average: base, CultureSPA and CultureSPA − base over the runs, and the number of runs in
    which CultureSPA beat the base. The runs must share model, prompt and cultures."""
    if not comparisons:
        raise CultureSPAError("seeds summary: no comparison files given")
    first = comparisons[0]
    cultures = [row["culture"] for row in first["cultures"]]
    for other in comparisons[1:]:
        for key in ("model", "prompt"):
            if other[key] != first[key]:
                raise CultureSPAError(
                    f"{other['_file']}: {key} {other[key]!r} differs from {first['_file']} ({first[key]!r})"
                )
        theirs = [row["culture"] for row in other["cultures"]]
        if theirs != cultures:
            raise CultureSPAError(f"{other['_file']}: cultures {theirs} differ from {first['_file']} ({cultures})")

    def block(base: list[float], tuned: list[float]) -> dict[str, Any]:
        delta = [t - b for b, t in zip(base, tuned, strict=True)]
        return {
            "base": spread(base),
            "culturespa": spread(tuned),
            "delta": spread(delta),
            "improved": sum(d > 0 for d in delta),
        }

    rows = {}
    for i, code in enumerate(cultures):
        rows[code] = block(
            [float(c["cultures"][i]["base"]) for c in comparisons],
            [float(c["cultures"][i]["culturespa"]) for c in comparisons],
        )
        valid = [c["cultures"][i].get("base_valid") for c in comparisons]
        tuned_valid = [c["cultures"][i].get("culturespa_valid") for c in comparisons]
        total = [c["cultures"][i].get("total") for c in comparisons]
        if None not in valid + tuned_valid + total:
            rows[code]["base_valid_rate"] = sum(valid) / sum(total)
            rows[code]["culturespa_valid_rate"] = sum(tuned_valid) / sum(total)
    average = block(
        [float(c["average"]["base"]) for c in comparisons], [float(c["average"]["culturespa"]) for c in comparisons]
    )
    return {
        "model": first["model"],
        "prompt": first["prompt"],
        "runs": [c["_file"] for c in comparisons],
        "cultures": rows,
        "average": average,
        "references": first.get("references") or {},  # prompt-free strategies: the same for every run
    }


def _uncertainty(
    comparisons: Sequence[dict[str, Any]], cultures: list[str], settings: BootstrapSettings, data_dir: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The crossed seeds × questions bootstrap (``found``, per culture and average) and how it was made; ``found`` is
    None, with the reason in the description, when some run's per-question answers cannot be read."""
    try:
        wvs = WVSData.load(data_dir)
        pairs = []
        for c in comparisons:
            files = c.get("files") or {}
            if "eval-base" not in files or "eval-culturespa" not in files:
                raise CultureSPAError(f"{c['_file']}: no 'files' entry for eval-base / eval-culturespa")
            pairs.append(paired_tables(files["eval-base"], files["eval-culturespa"], c["prompt"], cultures, wvs))
        questions = {p[0].questions for p in pairs}
        if len(questions) > 1:
            raise CultureSPAError("the runs were evaluated on different questions (eval.limit?)")
    except (CultureSPAError, OSError) as err:
        reason = " ".join(str(err).split())
        log.warning("per-question answers unavailable (%s): t interval over seeds instead", reason)
        about = {"method": "t interval over seeds (questions not resampled)", "confidence": settings.confidence}
        return {**about, "p_value": "one-sample t-test over seeds", "fallback_reason": reason}, None
    found = over_seeds(pairs, settings)
    about = {
        **settings.describe(),
        "method": "percentile",
        "p_value": "bootstrap",
        "resampled": found["resampled"],
        "questions": len(next(iter(questions))),
    }
    return about, found


def _t_fallback(values: list[float], confidence: float) -> dict[str, Any]:
    """Fallback without per-question answers: the t interval over the seeds, and the one-sample t-test's p."""
    if len(values) < 2 or statistics.stdev(values) == 0.0:
        return {"lo": None, "hi": None, "p": None}
    lo, hi = t_interval(values, confidence) or (None, None)
    return {"lo": lo, "hi": hi, "p": float(stats.ttest_1samp(values, 0.0).pvalue)}


def add_uncertainty(
    summary: dict[str, Any],
    comparisons: Sequence[dict[str, Any]],
    settings: BootstrapSettings | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Add ``lo``/``hi`` to each ``base``/``culturespa``/``delta`` spread and a ``p`` to each block of a
    :func:`summarise` result, plus the ``uncertainty`` block naming the method (bootstrap or the t fallback)."""
    settings = settings or BootstrapSettings()
    about, found = _uncertainty(comparisons, list(summary["cultures"]), settings, data_dir)
    summary["uncertainty"] = about
    blocks = {**summary["cultures"], "average": summary["average"]}
    for name, block in blocks.items():
        if found is not None:
            ci = found["average"] if name == "average" else found["cultures"][name]
            for key in ("base", "culturespa", "delta"):
                block[key]["lo"], block[key]["hi"] = ci[f"{key}_lo"], ci[f"{key}_hi"]
            block["p"] = ci["p"]
        else:
            for key in ("base", "culturespa"):
                block[key]["lo"] = block[key]["hi"] = None
            t = _t_fallback(block["delta"]["values"], settings.confidence)
            block["delta"]["lo"], block["delta"]["hi"], block["p"] = t["lo"], t["hi"], t["p"]
    return summary


def _pm(spread: dict[str, Any], signed: bool = False) -> str:
    mean = f"{spread['mean']:+.2f}" if signed else f"{spread['mean']:.2f}"
    return mean if spread["sd"] is None else f"{mean} ± {spread['sd']:.2f}"


def markdown(summary: dict[str, Any]) -> str:
    """A table: culture, base, CultureSPA, difference (mean ± sd over runs), the difference's interval and p-value
    (when :func:`add_uncertainty` ran), runs improved, per-run differences."""
    n = len(summary["runs"])
    about = summary.get("uncertainty")
    level = f"{about['confidence'] * 100:g}% CI" if about else ""
    lines = [
        f"| culture | base {summary['prompt'].upper()} | CultureSPA | difference |"
        + (f" {level} | p |" if about else "")
        + " improved | per run |",
        "| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if about else "") + " ---: | --- |",
    ]

    def row(name: str, block: dict[str, Any]) -> str:
        per_run = ", ".join(f"{d:+.2f}" for d in block["delta"]["values"])
        extra = ""
        if about:
            lo, hi, p = block["delta"].get("lo"), block["delta"].get("hi"), block.get("p")
            extra = " — |" if lo is None else f" [{lo:+.2f}, {hi:+.2f}] |"
            extra += " — |" if p is None else f" {p:.3f} |"
        return (
            f"| {name} | {_pm(block['base'])} | {_pm(block['culturespa'])} | {_pm(block['delta'], signed=True)} |"
            f"{extra} {block['improved']}/{n} | {per_run} |"
        )

    lines += [row(code, block) for code, block in summary["cultures"].items()]
    lines.append(row("**average**", summary["average"]))
    if about:
        lines += ["", _describe_uncertainty(about, n)]
    if summary.get("references"):
        lines += ["", describe(summary["references"])]
    lines += ["", verdict(summary)]
    return "\n".join(lines)


def verdict(summary: dict[str, Any]) -> str:
    """The paragraph under the table (:mod:`culturespa.evaluate.verdict`): means over the seeds and their intervals."""

    def estimate(spread: dict[str, Any]) -> Estimate:
        return Estimate(spread["mean"], spread.get("lo"), spread.get("hi"))

    average, about = summary["average"], summary.get("uncertainty") or {}
    return comparison_verdict(
        summary["model"],
        estimate(average["base"]),
        estimate(average["culturespa"]),
        estimate(average["delta"]),
        average.get("p"),
        {code: block.get("p") for code, block in summary["cultures"].items()},
        summary.get("references") or {},
        float(about.get("confidence") or 0.95),
        about.get("p_value"),
    )


def _describe_uncertainty(about: dict[str, Any], n: int) -> str:
    if "fallback_reason" in about:
        return (
            f"{about['confidence'] * 100:g}% CI: {about['method']}; p: {about['p_value']} "
            f"(per-question answers unavailable: {about['fallback_reason']})"
        )
    return (
        f"{about['confidence'] * 100:g}% CI: {about['method']} bootstrap over {about['resampled']} "
        f"({about['samples']} resamples, {n} seeds × {about['questions']} questions, seed {about['seed']}); "
        "p: two-sided bootstrap test of no difference"
    )


def _with_pairs(
    table: str, summary: dict[str, Any], comparisons: Sequence[dict[str, Any]], settings: BootstrapSettings
) -> str:
    """The scores table followed by the pairs table (``summary["pairs"]``); a run without readable pairs stats
    leaves the pairs table out with a warning rather than failing the scores."""
    try:
        pairs = noise_seeds.summarise_pairs(comparisons, settings.samples, settings.confidence, settings.seed)
    except CultureSPAError as err:
        log.warning("no CRQPC pairs table: %s", err)
        return table
    summary["pairs"] = pairs
    return f"{table}\n\n{noise_seeds.markdown(pairs)}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="culturespa.evaluate.seeds", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (outputs/pipeline/runs/<name>) or comparison.json files")
    defaults = BootstrapSettings()
    add_report_args(parser, defaults.samples, defaults.confidence, defaults.seed)
    parser.add_argument("--data-dir", help="reference data (default: data/), to rescore the stored answers")
    parser.add_argument("--no-pairs", action="store_true", help="leave out the CRQPC pairs / noise floor table")
    args = parser.parse_args(list(argv) if argv is not None else None)
    comparisons = [load_comparison(p) for p in args.runs]
    summary = summarise(comparisons)
    settings = BootstrapSettings(samples=args.samples, confidence=args.confidence, seed=args.seed)
    add_uncertainty(summary, comparisons, settings, args.data_dir)
    table = markdown(summary)
    if not args.no_pairs:
        table = _with_pairs(table, summary, comparisons, settings)
    print(f"{summary['model']}, prompt {summary['prompt']}, {len(summary['runs'])} runs (mean ± sd)")
    return write_report(args, table, summary)


if __name__ == "__main__":
    run_cli(main)
