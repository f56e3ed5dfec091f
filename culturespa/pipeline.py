"""The whole of CultureSPA in one command, with every stage cached by the config that produced it.

    python -m culturespa.pipeline experiment=smoke

questions (and/or a sample of the paper's pool) → filter → answers (unaware + aware/cct) → pairs → train → evaluate base and CultureSPA → comparison.
Each stage writes under ``outputs/pipeline/<stage>/<hash>/``, where the hash covers exactly the settings that decide
that stage's output plus the hashes of the stages it reads (:mod:`culturespa.stages.identity`). A second run reuses
every finished stage; changing a training knob reruns only training and the evaluation of the adapter;
``force=[train]`` (or ``force=[all]``) reruns stages on purpose. All stages of one pipeline run share one W&B group.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from culturespa.answers.merge import fan_out
from culturespa.config import CONFIG_DIR, check_override_keys, validate_config
from culturespa.entry import check_group_overrides, set_offline_defaults, task_wrapper
from culturespa.errors import CultureSPAError
from culturespa.evaluate.analyses import compare, log_outputs
from culturespa.evaluate.comparison import ADDED_KEYS, attach_comparison, log_uncertainty, print_comparison
from culturespa.evaluate.references import averages
from culturespa.evaluate.run import evaluate
from culturespa.evaluate.uncertainty import BootstrapSettings
from culturespa.generate.run import generate, nothing_made
from culturespa.questions.pool import files_digest, pipeline_pool
from culturespa.stages import lineage
from culturespa.stages.identity import (
    PIPELINE_STAGES,
    DoneRecord,
    is_done,
    read_done,
    stage_hash,
    stage_settings,
    write_done,
)
from culturespa.stages.runtime import config_with
from culturespa.train.run import train
from culturespa.utils import artifacts
from culturespa.utils.jsonl import write_json
from culturespa.utils.plain import slug, to_plain
from culturespa.utils.tracking import GROUP_ENV, finish_run, pin_wandb_dir, run_name, start_run
from culturespa.wvs.survey import WVSData

log = logging.getLogger("culturespa.pipeline")
QUESTION_SOURCES = ("generate", "pool", "both")
Work = Callable[[Path], dict[str, Any]]


@dataclass(frozen=True)
class StagePlan:
    """Where one cached step goes and whether its finished output can be reused: decided before any work."""

    name: str  # the folder group and the label in reports: ``filter-pool``, ``eval-base``...
    key: str  # the stage whose deciding settings hash it (one of PIPELINE_STAGES)
    upstream: tuple[str, ...]  # the hashes (or identities) of what it reads
    digest: str
    folder: Path
    reuse: bool


@dataclass
class Stage:
    """One cached step: its folder, and whether this run computed it or found it done."""

    name: str
    folder: Path
    ran: bool = False
    seconds: float = 0.0
    summary: dict[str, Any] | None = None


def plan_stage(
    cfg: DictConfig, root: Path, force: set[str], name: str, key: str, after: Sequence[Stage | str]
) -> StagePlan:
    """The stage's folder from its settings and inputs; reusable when done, not forced and no input was recomputed."""
    upstream = tuple(a.folder.name if isinstance(a, Stage) else a for a in after)
    digest = stage_hash(cfg, key, upstream)
    folder = root / name / digest
    stale = any(isinstance(a, Stage) and a.ran for a in after)
    reuse = is_done(folder) and key not in force and not stale
    return StagePlan(name, key, upstream, digest, folder, reuse)


def reuse_stage(cfg: DictConfig, plan: StagePlan) -> Stage:
    """A finished stage as it was recorded; its artifacts are linked into this run's W&B group."""
    record = read_done(plan.folder) or {}
    log.info("[%s] reusing %s", plan.name, plan.folder)
    link_cached(cfg, plan.name, plan.folder, record.get("artifacts"))  # keeps this group's lineage
    return Stage(plan.name, plan.folder, summary=record["summary"])


def run_stage(cfg: DictConfig, plan: StagePlan, work: Work) -> Stage:
    """Run ``work`` into the stage's folder and mark it done with what decided it and what it logged."""
    log.info("[%s] running → %s", plan.name, plan.folder)
    plan.folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with artifacts.recording() as produced:
        summary = work(plan.folder)
    stage = Stage(plan.name, plan.folder, ran=True, seconds=time.perf_counter() - start, summary=summary)
    record = DoneRecord(
        plan.name, plan.digest, list(plan.upstream), stage_settings(cfg, plan.key), stage.seconds, summary, produced
    )
    write_done(plan.folder, record)
    return stage


def link_cached(cfg: DictConfig, stage: str, folder: Path, produced: Sequence[Mapping[str, Any]] | None) -> None:
    """A reused pipeline stage: a small run in this pipeline's group (job_type ``cached``) that uses the stage's
    artifacts, so the group's lineage graph stays whole although nothing was recomputed."""
    if not artifacts.enabled(cfg):
        return
    specs = [artifacts.Spec.from_dict(item) for item in produced or ()] or lineage.stage_outputs(cfg, stage, folder)
    if not specs:
        log.info("[%s] no artifact files in %s: no lineage link", stage, folder)
        return
    run = start_run(cfg, "cached", f"{stage}-cached")
    if run is None:
        return
    try:
        run.summary["cached_folder"] = str(folder)
        artifacts.use_inputs(run, specs, cfg)
    finally:
        finish_run(run)


def stage_cfg(cfg: DictConfig, folder: Path, values: dict[str, Any]) -> DictConfig:
    """A copy of the pipeline config whose paths point into ``folder`` (plus the stage-specific ``values``)."""
    return config_with(cfg, {"paths.output_dir": str(folder), **values})


class Pipeline:
    """Runs the stages in order, skipping those whose output already exists for the same settings."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.cultures = validate_config(cfg)
        self.root = Path(str(cfg.paths.root_dir)) / "outputs" / "pipeline"
        if OmegaConf.select(cfg, "pipeline.root", default=None):
            self.root = Path(str(cfg.pipeline.root))
        force = [str(s) for s in (cfg.get("force") or [])]
        unknown = sorted(set(force) - set(PIPELINE_STAGES) - {"all"})
        if unknown:
            raise CultureSPAError(f"force={unknown}: unknown stage; valid: all, {', '.join(PIPELINE_STAGES)}")
        self.force = set(PIPELINE_STAGES) if "all" in force else set(force)
        self.stages: list[Stage] = []
        pin_wandb_dir(cfg, self.root / "runs" / slug(run_name(cfg), 100))  # every stage's W&B run beside comparison

    def _step(self, name: str, key: str, after: Sequence[Stage | str], work: Work) -> Stage:
        """Plan the stage, then reuse or run it; ``after`` are the stages (or extra identities) it reads."""
        plan = plan_stage(self.cfg, self.root, self.force, name, key, after)
        stage = reuse_stage(self.cfg, plan) if plan.reuse else run_stage(self.cfg, plan, work)
        self.stages.append(stage)
        return stage

    def _filter(self, name: str, source_file: str, after: Stage | str, limit: Any) -> Stage:
        def work(d: Path) -> dict[str, Any]:
            values = {"filter.input": source_file, "filter.output": str(d / "filtered.jsonl")}
            return generate(stage_cfg(self.cfg, d, {"stage": "filter", **values, "filter.limit_per_topic": limit}))

        return self._step(name, "filter", [after, f"limit={limit}"], work)

    def questions(self) -> list[Stage]:
        """Step 1: generate questions and/or take a sample of the paper's pool; each source is filtered on its own."""
        cfg = self.cfg
        mode = str(cfg.pipeline.questions)
        if mode not in QUESTION_SOURCES:
            raise CultureSPAError(
                f"pipeline.questions={mode!r} is not valid; choose one of: {', '.join(QUESTION_SOURCES)}"
            )
        filtered: list[Stage] = []
        if mode in ("generate", "both"):

            def ask(d: Path) -> dict[str, Any]:
                return generate(
                    stage_cfg(cfg, d, {"stage": "questions", "questions.output": str(d / "generated.jsonl")})
                )

            made = self._step("questions", "questions", [], ask)
            if mode == "generate":  # ``both``: the pool's sample may still carry the run
                stop_when_all_empty([made], "questions")
            limit = None if mode == "both" else cfg.filter.limit_per_topic  # keep every generated question
            filtered.append(self._filter("filter", str(made.folder / "generated.jsonl"), made, limit))
        if mode in ("pool", "both"):
            pool = pipeline_pool(cfg, mode)
            source = "pool:" + files_digest(pool)  # the content decides the cached stage, not the path
            filtered.append(self._filter("filter-pool", pool, source, cfg.filter.limit_per_topic))
        stop_when_all_empty(filtered, "filter")
        return filtered

    def answers(self, filtered: list[Stage]) -> Stage:
        """Step 2: answers, unaware once and culture-aware (or CCT) per culture, into one folder per settings."""
        cfg = self.cfg
        shards = OmegaConf.select(cfg, "pipeline.answer_shards", default=1)

        def answer(d: Path) -> dict[str, Any]:
            inputs = d / "questions"  # the filtered question files this stage answered, side by side
            inputs.mkdir(exist_ok=True)
            for stage in filtered:
                shutil.copyfile(stage.folder / "filtered.jsonl", inputs / f"{stage.name}.jsonl")
            out: dict[str, Any] = {}
            for setting in ("unaware", str(cfg.data.system)):
                values = {"stage": "answers", "answers.setting": setting}
                values |= {"answers.input": str(inputs), "answers.output_dir": str(d)}
                # pipeline.answer_shards=n: n shards (at once with engine.devices > 1), then merged (the same files)
                out[setting] = fan_out(generate, lambda extra, v=values: stage_cfg(cfg, d, {**v, **extra}), shards)
            return out

        return self._step("answers", "answers", [*filtered, *self.cultures], answer)

    def pairs_and_train(self, answers: Stage) -> tuple[Stage, Path]:
        """Steps 3 and 4: CRQPC, then SFT; returns the training stage and its adapter (``adapters/`` when specific)."""
        cfg = self.cfg

        def select(d: Path) -> dict[str, Any]:
            values = {"stage": "pairs", "answers.output_dir": str(answers.folder), "sft.pairs_dir": str(d)}
            return generate(stage_cfg(cfg, d, values))

        pairs = self._step("pairs", "pairs", [answers], select)
        stop_when_all_empty([pairs], "pairs")

        def fit(d: Path) -> dict[str, Any]:
            return train(stage_cfg(cfg, d, {"sft.pairs_dir": str(pairs.folder), "sft.output_dir": str(d)}))

        trained = self._step("train", "train", [pairs], fit)
        return trained, trained.folder / ("adapter" if str(cfg.mode.name) == "joint" else "adapters")

    def evaluations(self, trained: Stage, adapter: Path) -> tuple[Stage, Stage]:
        """Step 5: the base model and CultureSPA, same cultures, same prompt."""

        def scorer(adapter_dir: str | None) -> Work:
            def score(d: Path) -> dict[str, Any]:
                values = {"eval.adapter": adapter_dir, "eval.output_dir": str(d)}
                return evaluate(stage_cfg(self.cfg, d, {**values, "eval.suite": "wvs", "eval.source": "model"}))

            return score

        base = self._step("eval-base", "evaluate", ["base"], scorer(None))
        tuned = self._step("eval-culturespa", "evaluate", [trained], scorer(str(adapter)))
        return base, tuned

    def run(self) -> dict[str, Any]:
        filtered = self.questions()
        answers = self.answers(filtered)
        trained, adapter = self.pairs_and_train(answers)
        base, tuned = self.evaluations(trained, adapter)
        out = self.root / "runs" / slug(run_name(self.cfg), 100) / "comparison.json"
        comparison = self.compare(base.folder / "alignment.json", tuned.folder / "alignment.json", out)
        _print_report(comparison, self.stages)
        _log_comparison(self.cfg, comparison)
        return comparison

    def compare(self, base_file: Path, tuned_file: Path, out: Path) -> dict[str, Any]:
        """Base vs CultureSPA per culture, with paired intervals, written to ``out``."""
        base = json.loads(base_file.read_text())
        tuned = json.loads(tuned_file.read_text())
        rows = []
        for code in self.cultures:
            b = base["cultures"].get(code, {})
            t = tuned["cultures"].get(code, {})
            rows.append(
                {
                    "culture": code,
                    "base": b.get("score"),
                    "culturespa": t.get("score"),
                    "base_valid": b.get("valid"),
                    "culturespa_valid": t.get("valid"),
                    "total": b.get("total"),
                }
            )
        comparison = {
            "prompt": str(self.cfg.prompt.name),
            "model": str(self.cfg.model.name),
            "average": {"base": base.get("average"), "culturespa": tuned.get("average")},
            "cultures": rows,
            "references": averages(base.get("references")),
            "files": {s.name: str(s.folder) for s in self.stages},
            "recomputed": [s.name for s in self.stages if s.ran],
        }
        wvs = WVSData.load(self.cfg.paths.wvs_dir)
        attach_comparison(comparison, base_file.parent, tuned_file.parent, wvs, BootstrapSettings.from_config(self.cfg))
        write_json(out, comparison)
        comparison["comparison_file"] = str(out)
        return comparison


def stop_when_all_empty(stages: Sequence[Stage], stage: str) -> None:
    """Stop at the stage that made nothing (every one of ``stages`` empty), not at the next one with a puzzling
    message: one line saying why and which key to change (``culturespa.generate.run.nothing_made``)."""
    reasons = [nothing_made(stage, s.summary or {}, pipeline=True) for s in stages]
    if stages and all(reasons):
        raise CultureSPAError(f"[{stages[0].name}] {reasons[0]}")


def _print_report(comparison: dict[str, Any], stages: list[Stage]) -> None:
    console = Console()
    files = Table(title="Pipeline stages", show_lines=False)
    for column in ("stage", "status", "seconds"):
        files.add_column(column)
    files.add_column("folder", overflow="fold")
    for stage in stages:
        files.add_row(stage.name, "ran" if stage.ran else "reused", f"{stage.seconds:.1f}", str(stage.folder))
    console.print(files)
    print_comparison(comparison, console)
    console.print(f"comparison written to {comparison['comparison_file']}")
    print_comparison(comparison, console)  # the table, the references and, last, the verdict paragraph


def _log_comparison(cfg: DictConfig, comparison: dict[str, Any]) -> None:
    run = start_run(cfg, "pipeline")
    if run is None:
        return
    try:
        import wandb  # only when W&B logging is on

        columns = ["culture", "base", "culturespa", "base_valid", "culturespa_valid", "total", *ADDED_KEYS]
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in comparison["cultures"]])
        run.log({"comparison": table})
        run.summary.update(
            {"average/base": comparison["average"]["base"], "average/culturespa": comparison["average"]["culturespa"]}
        )
        log_uncertainty(run, comparison)
        run.summary.update({f"reference/{k}": v for k, v in (comparison.get("references") or {}).items()})
        track_comparison(run, cfg, comparison)  # both results in, comparison + plot out
    finally:
        finish_run(run)


def track_comparison(run: Any, cfg: DictConfig, comparison: Mapping[str, Any]) -> None:
    """The pipeline's last run: both evaluations' results in, the comparison (JSON, bar plot, CSV) out; the plot
    is also logged as an image."""
    if run is None:
        return
    folders = comparison.get("files") or {}
    results = [Path(folders[name]) / "alignment.json" for name in ("eval-base", "eval-culturespa") if name in folders]
    artifacts.use_inputs(run, (lineage.alignment(path.parent) for path in results), cfg)
    target = Path(str(comparison["comparison_file"]))
    plot = compare(results, ["base", "CultureSPA"][: len(results)], target.with_suffix(".png")) if results else {}
    log_outputs(run, "comparison", plot)
    artifacts.log_output(run, lineage.comparison_spec([target, *plot.values()]), cfg)


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Run every stage (reusing finished ones); all W&B runs share one group."""
    group = OmegaConf.select(cfg, "logger.wandb.group", default=None) or f"pipeline-{slug(run_name(cfg), 60)}"
    previous = os.environ.get(GROUP_ENV)
    os.environ[GROUP_ENV] = str(group)
    try:
        return Pipeline(cfg).run()
    finally:
        if previous is None:
            os.environ.pop(GROUP_ENV, None)
        else:
            os.environ[GROUP_ENV] = previous


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pipeline")
@task_wrapper
def main(cfg: DictConfig) -> Any:
    log.debug("config: %s", to_plain(cfg))
    return run_pipeline(cfg)


if __name__ == "__main__":
    set_offline_defaults()
    check_group_overrides(sys.argv[1:], str(CONFIG_DIR))
    check_override_keys(sys.argv[1:], "pipeline")
    main()
