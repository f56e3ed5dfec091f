"""Mean and spread of base-vs-CultureSPA comparisons over repeated pipeline runs (seeds).

One pipeline run writes ``outputs/pipeline/runs/<name>/comparison.json``; a seed sweep writes one per seed. A single
seed says little at this scale (sampled answers, a few hundred pairs), so results are reported over seeds: per culture
and for the WVS average, base and CultureSPA scores and their difference as mean ± sample standard deviation, plus how
many seeds improved.

Run: ``python -m culturespa.evaluate.seeds outputs/pipeline/runs/*small_cpu,seed=* [--markdown FILE] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culturespa.data.jsonl import write_json, write_text
from culturespa.errors import CultureSPAError
from culturespa.evaluate.references import describe

COMPARISON_FILE = "comparison.json"


def load_comparison(path: str | Path) -> dict[str, Any]:
    """A run's comparison (a run folder or the file itself), checked for the fields the summary reads."""
    file = Path(path)
    if file.is_dir():
        file = file / COMPARISON_FILE
    if not file.is_file():
        raise CultureSPAError(f"{file}: no such comparison file (run the pipeline first)")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CultureSPAError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None
    for key in ("average", "cultures", "prompt", "model"):
        if key not in data:
            raise CultureSPAError(f"{file}: field {key!r} is missing")
    for i, row in enumerate(data["cultures"]):
        for key in ("culture", "base", "culturespa"):
            if key not in row:
                raise CultureSPAError(f"{file}: cultures[{i}] has no field {key!r}")
    data["_file"] = str(file)
    return data


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


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
            "base": _spread(base),
            "culturespa": _spread(tuned),
            "delta": _spread(delta),
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


def _pm(spread: dict[str, Any], signed: bool = False) -> str:
    mean = f"{spread['mean']:+.2f}" if signed else f"{spread['mean']:.2f}"
    return mean if spread["sd"] is None else f"{mean} ± {spread['sd']:.2f}"


def markdown(summary: dict[str, Any]) -> str:
    """A table: culture, base, CultureSPA, difference (mean ± sd over runs), runs improved, per-run differences."""
    n = len(summary["runs"])
    lines = [
        f"| culture | base {summary['prompt'].upper()} | CultureSPA | difference | improved | per run |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def row(name: str, block: dict[str, Any]) -> str:
        per_run = ", ".join(f"{d:+.2f}" for d in block["delta"]["values"])
        return (
            f"| {name} | {_pm(block['base'])} | {_pm(block['culturespa'])} | {_pm(block['delta'], signed=True)} "
            f"| {block['improved']}/{n} | {per_run} |"
        )

    lines += [row(code, block) for code, block in summary["cultures"].items()]
    lines.append(row("**average**", summary["average"]))
    if summary.get("references"):
        lines += ["", describe(summary["references"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="culturespa.evaluate.seeds", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (outputs/pipeline/runs/<name>) or comparison.json files")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write the summary to this JSON file")
    args = parser.parse_args(list(argv) if argv is not None else None)
    summary = summarise([load_comparison(p) for p in args.runs])
    table = markdown(summary)
    print(f"{summary['model']}, prompt {summary['prompt']}, {len(summary['runs'])} runs (mean ± sd)\n{table}")
    if args.markdown:
        write_text(args.markdown, table + "\n")
    if args.json:
        write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    try:
        main()
    except CultureSPAError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
