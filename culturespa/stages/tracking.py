"""W&B logging shared by the generate stages: one run per stage call, a sample table, summary counts, throughput,
and the stage's artifacts (inputs declared when the run starts, outputs logged when the stage finishes cleanly).

Logging never decides an outcome: with logging off (``logger.wandb=null`` or mode ``disabled``) every call is a no-op.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.stages.lineage import filter_source, generate_inputs, generate_outputs
from culturespa.utils.artifacts import log_output, use_inputs
from culturespa.utils.tracking import finish_run, start_run


class StageRun:
    """Thin wrapper over a W&B run (or nothing)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.started = time.perf_counter()

    def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.run is None or not rows:
            return
        import wandb  # slow to import: only when logging is on

        self.run.log({key: wandb.Table(columns=list(columns), data=[[_cell(v) for v in row] for row in rows])})

    def bar(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], x: str, y: str, title: str) -> None:
        if self.run is None or not rows:
            return
        import wandb  # slow to import: only when logging is on

        table = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self.run.log({key: wandb.plot.bar(table, x, y, title=title)})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        for key, value in values.items():
            self.run.summary[key] = value

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


Tracker = Callable[[], AbstractContextManager[StageRun]]  # opens one stage's W&B run (see ``tracker``)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return value


@contextmanager
def stage_run(cfg: DictConfig, stage: str) -> Iterator[StageRun]:
    """The stage's W&B run (a no-op with logging off): inputs declared first, outputs logged on a clean exit."""
    run = start_run(cfg, job_type=f"generate-{stage}", name_suffix=_label(cfg, stage))
    try:
        use_inputs(run, generate_inputs(cfg, stage), cfg)
        yield StageRun(run)
        for spec in generate_outputs(cfg, stage):
            log_output(run, spec, cfg)
    finally:
        finish_run(run)


def tracker(cfg: DictConfig, stage: str) -> Tracker:
    """``stage_run`` bound to the composed config, built by the entry point: the stage's own code reads typed
    settings only, and opens its W&B run through this."""
    return functools.partial(stage_run, cfg, stage)


def _label(cfg: DictConfig, stage: str) -> str:
    """Stage (answer setting, pool or generated questions): the runs of one pipeline share their overrides, so
    their names need it to differ."""
    if stage == "answers":
        return f"answers-{cfg.answers.setting}"
    if stage == "filter":
        return "filter-pool" if Path(filter_source(cfg)).is_dir() else "filter"
    return stage
