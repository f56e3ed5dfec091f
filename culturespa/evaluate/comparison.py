"""Base vs CultureSPA from two evaluation folders: the paired bootstrap of :mod:`culturespa.evaluate.uncertainty`
on the per-question answers each evaluation stored (``<folder>/answers/{prompt}_{CODE}.jsonl``, or
``{prompt}.jsonl`` when the prompt names no culture), rescored against the survey exactly as ``alignment.json`` was.

Used by the pipeline (``comparison.json``) and by the over-seeds summary (:mod:`culturespa.evaluate.seeds`), which
finds the folders through ``comparison.json``'s ``files``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.evaluate.alignment_score import items_by_culture
from culturespa.evaluate.multiplicity import holm
from culturespa.evaluate.paired import paired_comparison
from culturespa.evaluate.references import describe
from culturespa.evaluate.report import with_interval
from culturespa.evaluate.uncertainty import BootstrapSettings, ScoreTable
from culturespa.evaluate.verdict import Estimate, comparison_verdict
from culturespa.utils.jsonl import read_jsonl
from culturespa.wvs.survey import WVSData

log = logging.getLogger(__name__)

ANSWERS_DIR = "answers"
# The keys a comparison row (and its average) gains; "base"/"culturespa" themselves stay the alignment.json scores.
ADDED_KEYS = ("base_lo", "base_hi", "culturespa_lo", "culturespa_hi", "delta", "delta_lo", "delta_hi", "p")
HOLM_KEY = "p_holm"  # per culture only: the p-value after Holm's adjustment over the cultures


def load_answers(folder: str | Path, prompt: str, cultures: Sequence[str]) -> dict[str | None, list[dict[str, Any]]]:
    """The answer records an evaluation left in ``folder``: one file per culture, else one shared file (under None)."""
    answers_dir = Path(folder) / ANSWERS_DIR
    per_culture = {code: answers_dir / f"{prompt}_{code}.jsonl" for code in cultures}
    if all(path.is_file() for path in per_culture.values()):
        return {code: read_jsonl(path) for code, path in per_culture.items()}
    shared = answers_dir / f"{prompt}.jsonl"
    if shared.is_file():
        return {None: read_jsonl(shared)}
    missing = [p.name for p in per_culture.values() if not p.is_file()]
    raise CultureSPAError(f"{answers_dir}: no per-question answers ({', '.join(missing)} or {shared.name} missing)")


def paired_tables(
    base_dir: str | Path, tuned_dir: str | Path, prompt: str, cultures: Sequence[str], wvs: WVSData
) -> tuple[ScoreTable, ScoreTable]:
    """Both systems' :class:`ScoreTable` over the same questions (those either one answered, in survey order)."""
    answers = [load_answers(d, prompt, cultures) for d in (base_dir, tuned_dir)]
    asked = {str(r["id"]) for a in answers for records in a.values() for r in records}
    questions = [q for q in wvs.eval_questions if q.id in asked]
    order = [q.id for q in questions]
    base, tuned = (ScoreTable.from_items(items_by_culture(a, questions, wvs, cultures), order) for a in answers)
    return base, tuned


def compare_folders(
    base_dir: str | Path,
    tuned_dir: str | Path,
    prompt: str,
    cultures: Sequence[str],
    wvs: WVSData,
    settings: BootstrapSettings,
) -> dict[str, Any]:
    """:func:`paired_comparison` of the two evaluations (per culture, average, ``p_method``)."""
    return paired_comparison(*paired_tables(base_dir, tuned_dir, prompt, cultures, wvs), settings)


def attach_comparison(
    comparison: dict[str, Any], base_dir: str | Path, tuned_dir: str | Path, wvs: WVSData, settings: BootstrapSettings
) -> dict[str, Any]:
    """Add intervals, the paired difference and its p-value to a pipeline ``comparison`` (its ``cultures`` rows and
    ``average``) plus an ``uncertainty`` block; when the answers cannot be read, say so there and add nothing else."""
    cultures = [row["culture"] for row in comparison["cultures"]]
    try:
        found = compare_folders(base_dir, tuned_dir, comparison["prompt"], cultures, wvs, settings)
    except CultureSPAError as err:
        log.warning("comparison without intervals: %s", err)
        comparison["uncertainty"] = {"error": str(err)}
        return comparison
    for row in comparison["cultures"]:
        row.update({k: found["cultures"][row["culture"]][k] for k in ADDED_KEYS})
    for row, adjusted in zip(comparison["cultures"], holm([r["p"] for r in comparison["cultures"]]), strict=True):
        row[HOLM_KEY] = adjusted
    comparison["average"].update({k: found["average"][k] for k in ADDED_KEYS})
    comparison["uncertainty"] = {
        **settings.describe(),
        "p_value": found["p_method"],
        "resampled": "questions and runs, the same for both systems (paired)",
        "per_culture_p": "p_holm: Holm-adjusted over the cultures (family-wise); p: unadjusted",
    }
    comparison["verdict"] = verdict(comparison)
    return comparison


def verdict(comparison: dict[str, Any]) -> str:
    """The paragraph under the table (:mod:`culturespa.evaluate.verdict`), from a ``comparison.json`` body."""
    average, about = comparison["average"], comparison.get("uncertainty") or {}
    delta = (
        None if average["base"] is None or average["culturespa"] is None else average["culturespa"] - average["base"]
    )
    return comparison_verdict(
        comparison.get("model"),
        Estimate(average["base"], average.get("base_lo"), average.get("base_hi")),
        Estimate(average["culturespa"], average.get("culturespa_lo"), average.get("culturespa_hi")),
        Estimate(delta, average.get("delta_lo"), average.get("delta_hi")),
        average.get("p"),
        {row["culture"]: row.get("p") for row in comparison["cultures"]},
        comparison.get("references") or {},
        float(about.get("confidence") or 0.95),
        about.get("p_value"),
    )


def print_comparison(comparison: dict[str, Any], console: Any) -> None:
    """The terminal table: base, CultureSPA and Δ each as ``40.07 [38.90, 41.20]``, the p-value unadjusted and
    Holm-adjusted, valid answers; then the references and, last, the verdict paragraph."""
    from rich.console import Console
    from rich.table import Table

    about = comparison.get("uncertainty") or {}
    level = about.get("confidence")
    table = Table(
        title=f"WVS alignment ({comparison['model']}, prompt {comparison['prompt']}): base vs CultureSPA",
        caption=f"[{level * 100:g}% CI], paired: same questions and runs for both" if level else None,
    )
    for column in ("culture", "base", "CultureSPA", "Δ", "p", "p Holm", "valid (base/CSPA)"):
        table.add_column(column, justify="right", no_wrap=column != "valid (base/CSPA)")
    holm_adjusted = holm([row.get("p") for row in comparison["cultures"]])  # as attach_comparison stores it

    def cells(row: dict[str, Any]) -> list[str]:
        delta = None if row["base"] is None or row["culturespa"] is None else row["culturespa"] - row["base"]
        return [
            with_interval(row["base"], row.get("base_lo"), row.get("base_hi")),
            with_interval(row["culturespa"], row.get("culturespa_lo"), row.get("culturespa_hi")),
            with_interval(delta, row.get("delta_lo"), row.get("delta_hi"), signed=True),
            "-" if row.get("p") is None else f"{row['p']:.3f}",
        ]

    for row, adjusted in zip(comparison["cultures"], holm_adjusted, strict=True):
        valid = f"{row['base_valid']}/{row['culturespa_valid']} of {row['total']}"
        table.add_row(row["culture"], *cells(row), "-" if adjusted is None else f"{adjusted:.3f}", valid)
    table.add_row("average", *cells(comparison["average"]), "", "")
    Console(width=max(console.width, 124)).print(table)  # intervals unwrapped even in an 80-column log
    if about.get("p_value"):
        console.print(
            f"p: {about['p_value']} test of no difference; p Holm: per culture, Holm-adjusted over the "
            f"{len(comparison['cultures'])} cultures (culturespa/evaluate/README.md)",
            markup=False,
        )
    elif about.get("error"):
        console.print(f"no intervals: {about['error']}", markup=False)
    if comparison.get("references"):
        console.print(describe(comparison["references"]), markup=False)
    console.print(verdict(comparison), markup=False)


def log_uncertainty(run: Any, comparison: dict[str, Any]) -> None:
    """W&B summary keys for error bars: ``average/{base,culturespa,delta}_{lo,hi}``, ``average/delta``,
    ``average/p``, and per culture ``delta/{CODE}``, ``delta/{CODE}_lo``, ``delta/{CODE}_hi``, ``p/{CODE}``,
    ``p_holm/{CODE}`` (Holm-adjusted over the cultures)."""
    run.summary.update({f"average/{k}": comparison["average"].get(k) for k in ADDED_KEYS})
    for row in comparison["cultures"]:
        run.summary.update({f"delta/{row['culture']}{s}": row.get(f"delta{s}") for s in ("", "_lo", "_hi")})
        run.summary[f"p/{row['culture']}"] = row.get("p")
        run.summary[f"p_holm/{row['culture']}"] = row.get(HOLM_KEY)
