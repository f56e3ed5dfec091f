"""Show results: ``alignment.json`` on disk, a table on the terminal, tables and summary metrics in W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from culturespa.data.jsonl import write_json

RESULT_FILE = "alignment.json"


def write_results(output_dir: str | Path, results: dict[str, Any]) -> Path:
    path = Path(output_dir) / RESULT_FILE
    write_json(path, results)
    return path


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_table(results: dict[str, Any], title: str = "WVS alignment") -> None:
    """A per-culture table: score (%), valid/total answers, JS similarity; the average last."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("culture", "score %", "valid/total", "JS similarity"):
        table.add_column(column, justify="left" if column == "culture" else "right")
    for code, row in results["cultures"].items():
        table.add_row(code, _fmt(row["score"]), f"{row['valid']}/{row['total']}", _fmt(row["js_similarity"], 4))
    table.add_section()
    table.add_row("average", _fmt(results["average"]), "", _fmt(results.get("js_similarity_average"), 4))
    console = Console()
    console.print(table)
    if results.get("references"):
        from culturespa.evaluate.references import averages, describe

        console.print(describe(averages(results["references"])))


def log_results(run: Any, results: dict[str, Any], prefix: str = "alignment") -> None:
    """Per-culture and per-topic W&B tables plus the headline numbers as summary metrics."""
    if run is None:
        return
    import wandb

    cultures = wandb.Table(columns=["culture", "score", "valid", "total", "invalid", "js_similarity"])
    topics = wandb.Table(columns=["culture", "topic", "score", "valid", "total"])
    for code, row in results["cultures"].items():
        cultures.add_data(code, row["score"], row["valid"], row["total"], row["invalid"], row["js_similarity"])
        for topic, t in row["topics"].items():
            topics.add_data(code, topic, t["score"], t["valid"], t["total"])
        run.summary[f"{prefix}/{code}"] = row["score"]
        run.summary[f"{prefix}/{code}/js_similarity"] = row["js_similarity"]
    run.log({f"{prefix}/cultures": cultures, f"{prefix}/topics": topics})
    run.summary[f"{prefix}/average"] = results["average"]
    run.summary[f"{prefix}/js_similarity_average"] = results.get("js_similarity_average")
    from culturespa.evaluate.references import averages

    for name, average in averages(results.get("references")).items():
        run.summary[f"{prefix}/reference/{name}"] = average
