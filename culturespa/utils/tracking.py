"""W&B conventions shared by every stage: project, group per sweep or pipeline, job_type per stage, run name from
the overrides, offline by default, no API key needed, always finished."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.utils.plain import slug, to_plain

GROUP_ENV = "CULTURESPA_WANDB_GROUP"


def _hydra(cfg: DictConfig, key: str) -> object:
    """A ``hydra.*`` value from the config, or from the running Hydra app (``@hydra.main`` strips the node)."""
    value = OmegaConf.select(cfg, f"hydra.{key}", default=None)
    if value is not None:
        return value
    try:
        return OmegaConf.select(HydraConfig.get(), key, default=None)
    except ValueError:  # no Hydra app running (plain function call)
        return None


def task_overrides(cfg: DictConfig) -> list[str]:
    """This job's command-line overrides (``hydra.overrides.task``), or none outside a Hydra app."""
    return [str(o) for o in (_hydra(cfg, "overrides.task") or [])]


def run_name(cfg: DictConfig) -> str:
    """The overrides of this job (``mode=joint,cultures=all``) or the task name."""
    name = OmegaConf.select(cfg, "logger.wandb.name", default=None)
    if name:
        return str(name)
    overrides = str(_hydra(cfg, "job.override_dirname") or "")
    return slug(f"{cfg.task_name}-{overrides}" if overrides else str(cfg.task_name), 120)


def run_group(cfg: DictConfig) -> str:
    """Explicit ``logger.wandb.group``, else the pipeline's group, else the sweep folder, else the run name."""
    group = OmegaConf.select(cfg, "logger.wandb.group", default=None)
    if group:
        return str(group)
    if os.environ.get(GROUP_ENV):
        return os.environ[GROUP_ENV]
    mode = str(_hydra(cfg, "mode") or "")
    if mode.endswith("MULTIRUN"):
        return sweep_group(cfg)
    return run_name(cfg)


def sweep_group(cfg: DictConfig) -> str:
    """One W&B group per sweep, named by the task and the overridden keys (``train-sweep-data.fraction+mode``): the
    jobs of a sweep differ only in those keys' values. Sweep folders carry no launch time (the same sweep command
    resumes its jobs), so two launches over the same keys share a group; ``logger.wandb.group=NAME`` separates them."""
    keys = sorted({o.split("=", 1)[0].lstrip("+~") for o in task_overrides(cfg) if "=" in o})
    return f"{cfg.task_name}-sweep-{'+'.join(keys) or 'default'}"[:120]


def wandb_settings(cfg: DictConfig, job_type: str, name_suffix: str | None = None) -> dict[str, Any] | None:
    """Keyword arguments for ``wandb.init`` / ``WandbLogger``, or None when W&B logging is off."""
    wb = OmegaConf.select(cfg, "logger.wandb", default=None)
    if wb is None or wb.get("mode") == "disabled":
        return None
    if name_suffix is None and os.environ.get(GROUP_ENV):
        name_suffix = job_type  # inside a pipeline every run shares the overrides: the job type tells them apart
    name = run_name(cfg) + (f"-{name_suffix}" if name_suffix else "")
    save_dir = Path(str(wb.get("save_dir") or "."))
    save_dir.mkdir(parents=True, exist_ok=True)
    return {
        "project": wb.get("project", "culturespa"),
        "entity": wb.get("entity"),
        "mode": wb.get("mode", "offline"),
        "group": run_group(cfg),
        "job_type": job_type,
        "name": name,
        "tags": list(wb.get("tags") or []),
        "dir": str(save_dir),
        "config": to_plain(cfg),
    }


def pin_wandb_dir(cfg: DictConfig, folder: str | Path) -> None:
    """Put every W&B run made from ``cfg`` (and copies of it) under ``folder/wandb/`` instead of each job's output
    folder: the pipeline keeps all runs of one pipeline run beside its ``comparison.json``. An explicit
    ``logger.wandb.save_dir=...`` on the command line wins."""
    wb = OmegaConf.select(cfg, "logger.wandb", default=None)
    if wb is None:
        return
    if any(o.lstrip("+~").startswith("logger.wandb.save_dir=") for o in task_overrides(cfg)):
        return
    with open_dict(cfg):
        cfg.logger.wandb.save_dir = str(folder)


def start_run(cfg: DictConfig, job_type: str, name_suffix: str | None = None) -> Any:
    """Start a W&B run for a generate/evaluate stage; returns None when logging is off. Callers log with the run and
    call ``finish_run`` (entry points also finish any run left open)."""
    settings = wandb_settings(cfg, job_type, name_suffix)
    if settings is None:
        return None
    import wandb  # slow to import: only when logging is on

    return wandb.init(reinit="finish_previous", **settings)


def finish_run(run: Any) -> None:
    if run is not None:
        run.finish()
