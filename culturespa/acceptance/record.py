"""Steps of the acceptance run: each one timed against its budget, its figures and checks kept, a failure recorded
(with the end of its traceback) without stopping the steps after it; then one JSON and one markdown table.

Why a budget per step: the run must finish within its wall-clock limit on a lent GPU, so a step that would not fit in
what is left is skipped with that reason rather than cut off half-way (nothing comes back from a killed command).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class Skip(Exception):
    """Raised by a step that cannot run here (one device only, no CUDA, refused by the stack): recorded, not failed."""


@dataclass
class StepResult:
    """One row of the report."""

    id: str
    name: str
    checklist: str  # the gpu-checklist item this row settles
    status: str = "pending"  # ok | check failed | failed | skipped
    seconds: float = 0.0
    budget_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    reason: str | None = None


@dataclass
class Run:
    """The steps run so far, within ``total_s`` seconds of wall time from ``started``."""

    total_s: float
    started: float = field(default_factory=time.perf_counter)
    steps: list[StepResult] = field(default_factory=list)

    def left(self) -> float:
        return self.total_s - (time.perf_counter() - self.started)

    def step(
        self, id_: str, name: str, checklist: str, budget_s: float, work: Callable[[StepResult], None]
    ) -> StepResult:
        """Run ``work`` (which fills the row's figures and checks) unless its budget exceeds the time left."""
        row = StepResult(id_, name, checklist, budget_s=budget_s)
        self.steps.append(row)
        if budget_s > self.left():
            row.status, row.reason = "skipped", f"time: needs ~{budget_s:.0f} s, {max(0.0, self.left()):.0f} s left"
            return row
        start = time.perf_counter()
        try:
            work(row)
            row.status = "ok" if all(row.checks.values()) else "check failed"
        except Skip as why:
            row.status, row.reason = "skipped", str(why)
        except Exception as err:  # noqa: BLE001 - every failure is recorded and the next step still runs
            row.status = "failed"
            tail = traceback.format_exc().strip().splitlines()[-6:]
            row.reason = f"{type(err).__name__}: {err}"[:500] + " | " + " / ".join(s.strip() for s in tail)[:700]
        row.seconds = time.perf_counter() - start
        print(f"[acceptance] {row.id} {row.name}: {row.status} in {row.seconds:.1f} s", flush=True)
        return row

    def find(self, id_: str) -> StepResult | None:
        return next((s for s in self.steps if s.id == id_), None)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def markdown(run: Run, header: dict[str, Any]) -> str:
    """The report table: one row per step, with the checklist item it settles."""
    lines = [f"# GPU acceptance run ({header.get('mode')})", ""]
    lines += [f"- {k}: {_short(v)}" for k, v in header.items()]
    lines += [
        "",
        "| step | checklist item | status | s (budget) | figures | checks / reason |",
        "|---|---|---|---|---|---|",
    ]
    for s in run.steps:
        figures = "; ".join(f"{k} {_short(v)}" for k, v in s.figures.items())
        checks = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in s.checks.items())
        note = "; ".join(x for x in (checks, s.reason or "") if x).replace("|", "/")
        lines.append(
            f"| {s.id} {s.name} | {s.checklist} | {s.status} | {s.seconds:.1f} ({s.budget_s:.0f}) | "
            f"{figures.replace('|', '/')} | {note} |"
        )
    return "\n".join(lines) + "\n"


def write_report(out: Path, run: Run, header: dict[str, Any]) -> tuple[Path, Path]:
    """``acceptance.json`` and ``acceptance.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    body = {**header, "total_s": time.perf_counter() - run.started, "steps": [asdict(s) for s in run.steps]}
    json_path, md_path = out / "acceptance.json", out / "acceptance.md"
    json_path.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown(run, {**header, "total_s": body["total_s"]}), encoding="utf-8")
    return json_path, md_path
