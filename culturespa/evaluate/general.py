"""General abilities before and after culture alignment, with lm-evaluation-harness (``eval.suite=general``).

The base model and each adapter (loaded through HFLM's ``peft=``, never merged) run the same tasks with the same seed,
few-shot count, limit and chat-template setting, so the table's deltas show only what the adapter changed. The base is
loaded in ``model.dtype`` without quantisation (a 4-bit base gives other numbers; the dtype is recorded in the output).
Nothing is downloaded: hub datasets must already be in the HF cache (``HF_DATASETS_OFFLINE=1`` is set unless the user
set it); local tasks come from ``eval.general.include_path`` (YAML tasks with ``dataset_path: json`` + ``data_files``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.evaluate.adapters import AdapterPlan
from culturespa.evaluate.evaluate_settings import EvaluateSettings
from culturespa.models.dtype import resolve_dtype
from culturespa.models.loader import ModelSpec, resolve_model_dir
from culturespa.utils.jsonl import write_json

log = logging.getLogger(__name__)
RESULT_FILE = "general.json"


def offline_env() -> None:
    for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _numeric_metrics(task_result: dict[str, Any]) -> dict[str, float]:
    """``acc,none`` → ``acc``; stderr, bookkeeping (``sample_len``) and non-numeric entries are left out."""
    out = {}
    for key, value in task_result.items():
        if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool) or "stderr" in key:
            continue
        out[key.split(",")[0]] = float(value)
    return out


def run_general(settings: EvaluateSettings, plan: AdapterPlan) -> dict[str, Any]:
    """Run the configured lm-eval tasks on the base model and on each adapter of ``plan`` (resolved and checked by
    the caller); write ``general.json``."""
    offline_env()
    g = settings.eval.general
    cultures = list(settings.cultures)
    tasks = [str(t) for t in (g.get("tasks") or [])]
    if not tasks:
        raise CultureSPAError("eval.general.tasks: empty; name at least one lm-eval task")
    include = g.get("include_path")
    if include and not Path(str(include)).is_dir():
        raise CultureSPAError(f"eval.general.include_path: {include}: no such folder")

    # lm-eval is an optional extra (requirements: lm_eval), slow to import: only for this suite
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = None
    if include:  # indexing lm-eval's thousands of built-in YAMLs takes seconds: skip it when the local ones suffice
        manager = TaskManager(include_path=str(include), include_defaults=False)
        if not all(t in manager.all_tasks for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=str(include) if include else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise CultureSPAError(f"eval.general.tasks: unknown lm-eval task(s) {', '.join(unknown)}")

    spec = ModelSpec.from_config(settings.model)
    model_dir = resolve_model_dir(spec, settings.cache_dir)
    dtype = resolve_dtype(spec.dtype, _device(settings.device))
    targets: list[tuple[str, Path | None]] = [("base", None)]
    if plan.kind == "joint":
        targets.append(("adapter", plan.folder_for(None)))
    elif plan.kind == "specific":
        targets += [(f"adapter:{code}", plan.folder_for(code)) for code in cultures]

    scores: dict[str, dict[str, dict[str, float]]] = {}
    for label, adapter in targets:
        log.info("lm-eval %s on %s", ", ".join(tasks), label)
        lm = HFLM(
            pretrained=model_dir,
            peft=str(adapter) if adapter else None,
            device=_device(settings.device),
            dtype=dtype,
            batch_size=int(g["batch_size"]),
            trust_remote_code=spec.trust_remote_code,
        )
        out = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=g.get("num_fewshot"),
            limit=g.get("limit"),
            task_manager=manager,
            log_samples=False,
            apply_chat_template=bool(g.get("apply_chat_template")),
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
            bootstrap_iters=0,
        )
        scores[label] = {task: _numeric_metrics(res) for task, res in (out or {}).get("results", {}).items()}
        del lm

    rows = _rows(scores)
    result = {
        "metric": "general",
        "model": spec.name,
        "dtype": dtype,
        "adapter": plan.describe(),
        "settings": dict(g),
        "scores": scores,
        "rows": rows,
    }
    path = settings.output_dir / RESULT_FILE
    write_json(path, result)
    _print(rows, list(scores))
    return {"general": str(path), "scores": scores, "rows": rows}


def _rows(scores: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per task and metric: each target's value and, for adapters, the change from the base."""
    base = scores.get("base", {})
    rows = []
    for task, metrics in base.items():
        for metric, value in metrics.items():
            row: dict[str, Any] = {"task": task, "metric": metric, "base": value}
            for label, per_task in scores.items():
                if label == "base":
                    continue
                other = per_task.get(task, {}).get(metric)
                row[label] = other
                row[f"{label} Δ"] = None if other is None else other - value
            rows.append(row)
    return rows


def _print(rows: list[dict[str, Any]], labels: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = ["task", "metric", "base"] + [c for label in labels if label != "base" for c in (label, f"{label} Δ")]
    table = Table(title="General abilities (lm-evaluation-harness)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{row.get(c):.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    Console().print(table)


def log_general(run: Any, summary: dict[str, Any]) -> None:
    if run is None or not summary.get("rows"):
        return
    import wandb

    columns = list(summary["rows"][0])
    table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in summary["rows"]])
    run.log({"general/table": table})
    for label, per_task in summary["scores"].items():
        for task, metrics in per_task.items():
            for metric, value in metrics.items():
                run.summary[f"general/{label}/{task}/{metric}"] = value
