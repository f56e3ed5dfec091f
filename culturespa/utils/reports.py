"""What every over-seeds summary shares (scores in ``evaluate.seeds``, CRQPC pairs in ``generate.noise_seeds``):
reading each run's JSON summary, the mean and spread over runs, the report options and where the report goes.
It knows no stage (file I/O of JSON summaries and reports), so both summaries, on different floors, can use it."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.utils.jsonl import write_json, write_text


def read_summary_json(file: Path, fields: Sequence[str], missing: str) -> dict[str, Any]:
    """A run's JSON summary with the fields a reader needs, each problem a one-line error naming the file; the
    result records its path as ``_file``."""
    if not file.is_file():
        raise CultureSPAError(f"{file}: {missing}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CultureSPAError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None
    for key in fields:
        if key not in data:
            raise CultureSPAError(f"{file}: field {key!r} is missing")
    data["_file"] = str(file)
    return data


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd (None for one value), min, max and the values themselves, over runs."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def add_report_args(
    parser: argparse.ArgumentParser, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> None:
    """The options every over-seeds summary takes: output files and the bootstrap's settings (defaults: those of
    ``eval.bootstrap``, which ``evaluate.seeds`` passes; a test holds them equal)."""
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write the summary to this JSON file")
    parser.add_argument("--samples", type=int, default=samples, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=confidence)
    parser.add_argument("--seed", type=int, default=seed, help="the bootstrap's seed")


def write_report(args: argparse.Namespace, table: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Print the table and write it (``--markdown``) and the summary (``--json``) where asked."""
    print(table)
    if args.markdown:
        write_text(args.markdown, table + "\n")
    if args.json:
        write_json(args.json, summary)
    return summary
