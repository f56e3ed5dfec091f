"""Show results: ``alignment.json`` on disk, a table on the terminal, tables and summary metrics in W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from culturespa.evaluate.references import averages, describe
from culturespa.evaluate.verdict import Estimate, evaluation_verdict
from culturespa.utils.jsonl import write_json

RESULT_FILE = "alignment.json"


def write_results(output_dir: str | Path, results: dict[str, Any]) -> Path:
    path = Path(output_dir) / RESULT_FILE
    write_json(path, results)
    return path


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def with_interval(value: Any, lo: Any, hi: Any, digits: int = 2, signed: bool = False) -> str:
    """``40.07 [38.90, 41.20]`` (the bracket left out when there is no interval)."""
    if value is None:
        return "—"
    shown = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return shown if lo is None or hi is None else f"{shown} [{lo:.{digits}f}, {hi:.{digits}f}]"


def print_table(results: dict[str, Any], title: str = "WVS alignment") -> None:
    """A per-culture table: score (%) with its bootstrap interval, valid/total answers, JS similarity; the average
    last."""
    from rich.console import Console
    from rich.table import Table

    level = (results.get("uncertainty") or {}).get("confidence")
    score_column = f"score % [{level * 100:g}% CI]" if level else "score %"
    table = Table(title=title)
    for column in ("culture", score_column, "valid/total", "JS similarity"):
        table.add_column(column, justify="left" if column == "culture" else "right")
    for code, row in results["cultures"].items():
        score = with_interval(row["score"], row.get("score_lo"), row.get("score_hi"))
        table.add_row(code, score, f"{row['valid']}/{row['total']}", _fmt(row["js_similarity"], 4))
    table.add_section()
    average = with_interval(results["average"], results.get("average_lo"), results.get("average_hi"))
    table.add_row("average", average, "", _fmt(results.get("js_similarity_average"), 4))
    console = Console()
    console.print(table)
    if results.get("references"):
        console.print(describe(averages(results["references"])), markup=False)
    console.print(verdict(results), markup=False)


def verdict(results: dict[str, Any]) -> str:
    """The paragraph under the table (:mod:`culturespa.evaluate.verdict`), from an ``alignment.json`` body."""
    average = Estimate(results["average"], results.get("average_lo"), results.get("average_hi"))
    scores = {code: row["score"] for code, row in results["cultures"].items()}
    model = (results.get("setting") or {}).get("model")
    return evaluation_verdict(model, average, scores, results.get("references"))


def log_results(run: Any, results: dict[str, Any], prefix: str = "alignment") -> None:
    """Per-culture and per-topic W&B tables plus the headline numbers as summary metrics."""
    if run is None:
        return
    import wandb

    columns = ["culture", "score", "score_lo", "score_hi", "valid", "total", "invalid", "js_similarity"]
    cultures = wandb.Table(columns=columns)
    topics = wandb.Table(columns=["culture", "topic", "score", "valid", "total"])
    for code, row in results["cultures"].items():
        cultures.add_data(code, *(row.get(c) for c in columns[1:]))
        for topic, t in row["topics"].items():
            topics.add_data(code, topic, t["score"], t["valid"], t["total"])
        run.summary[f"{prefix}/{code}"] = row["score"]
        run.summary[f"{prefix}/{code}_lo"] = row.get("score_lo")  # error bars: {code}_lo ≤ {code} ≤ {code}_hi
        run.summary[f"{prefix}/{code}_hi"] = row.get("score_hi")
        run.summary[f"{prefix}/{code}/js_similarity"] = row["js_similarity"]
    run.log({f"{prefix}/cultures": cultures, f"{prefix}/topics": topics})
    run.summary[f"{prefix}/average"] = results["average"]
    run.summary[f"{prefix}/average_lo"] = results.get("average_lo")
    run.summary[f"{prefix}/average_hi"] = results.get("average_hi")
    run.summary[f"{prefix}/js_similarity_average"] = results.get("js_similarity_average")
    for name, average in averages(results.get("references")).items():
        run.summary[f"{prefix}/reference/{name}"] = average
