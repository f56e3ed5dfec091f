"""The whole of CultureSPA in one command, with every stage cached by the config that produced it.

    python -m culturespa.pipeline experiment=smoke

questions (and/or a sample of the paper's pool) → filter → answers (unaware + aware/cct) → pairs → train → evaluate base and CultureSPA → comparison.
Each stage writes under ``outputs/pipeline/<stage>/<hash>/``, where the hash covers exactly the settings that decide
that stage's output plus the hashes of the stages it reads. A second run reuses every finished stage; changing a
training knob reruns only training and the evaluation of the adapter; ``force=[train]`` (or ``force=[all]``) reruns
stages on purpose. All stages of one pipeline run share one W&B group.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.config import CONFIG_DIR, slug, to_plain, validate_config
from culturespa.data.jsonl import write_json
from culturespa.errors import CultureSPAError
from culturespa.generate.pool import files_digest, pipeline_pool
from culturespa.utils import artifacts
from culturespa.utils.entry import check_group_overrides, set_offline_defaults, task_wrapper
from culturespa.utils.tracking import GROUP_ENV, pin_wandb_dir, run_name

log = logging.getLogger("culturespa.pipeline")
DONE = "_SUCCESS.json"
STAGES = ("questions", "filter", "answers", "pairs", "train", "evaluate")
QUESTION_SOURCES = ("generate", "pool", "both")

# How many answers are sampled per question (culturespa.generate.noise.sample_runs), and the pairs' noise statistics.
_SAMPLES = ("data.samples", "data.noise_replicates")
_NOISE = ("data.alpha", "data.null_quantile", "data.bootstrap", "data.ci_level", "data.seed")
# The settings that decide each stage's output (paths excluded: they are derived from the hashes).
_KEYS: dict[str, tuple[str, ...]] = {
    "questions": ("model", "questions", "templates.question_generation", "seed"),
    "filter": ("filter",),  # filter.seed (default ${seed}) is resolved inside the node: pinning it shares the pool
    "answers": ("model", "decoding", "templates.answer", "answers", "seed", *_SAMPLES),
    "pairs": ("data.criterion", "data.js_threshold", "data.system", "cultures", *_SAMPLES, *_NOISE),
    "train": ("model", "peft", "mode", "data", "sft", "trainer.precision", "templates.answer", "cultures", "seed"),
    "evaluate": ("model", "prompt", "decoding", "templates.answer", "eval", "cultures", "seed"),
}
# Keys inside those nodes that name files or pick a sub-task: they are set by the pipeline, not part of the identity.
_PATH_KEYS = {
    "output",
    "input",
    "output_dir",
    "pairs_dir",
    "adapter",
    "predictions",
    "suite",
    "source",
    "setting",
    "general",
}
# Single settings inside hashed nodes that do not decide the node's stage output (dotted: a leaf name alone would also
# drop a same-named key of another node).
_NOT_IDENTITY = {
    "answers.shard",  # how the answers were split over jobs: the merged files are the same
    "sft.accelerator",  # where training runs, not what it trains
    "sft.precision",  # hashed as trainer.precision
    "sft.checkpoint_minutes",  # when training checkpoints, not what it trains
    "eval.bootstrap",  # intervals only: the comparison recomputes them from the stored answers
    "data.bootstrap",  # the pairs' noise statistics (hashed by the pairs stage itself), not the training data
    "data.ci_level",
}


@dataclass
class Stage:
    """One cached step: its folder, and whether this run computed it or found it done."""

    name: str
    folder: Path
    ran: bool = False
    seconds: float = 0.0
    summary: dict[str, Any] | None = None


def _pick(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=None)
    if OmegaConf.is_config(node):
        value = OmegaConf.to_container(node, resolve=True)
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in _PATH_KEYS and f"{key}.{k}" not in _NOT_IDENTITY}
        return value
    return node


def stage_hash(cfg: DictConfig, stage: str, upstream: Sequence[str] = ()) -> str:
    """Identity of a stage's output: its deciding settings plus the hashes of the stages it reads."""
    keys = _KEYS[stage]
    if stage in ("answers", "evaluate") and str(cfg.decoding.mode) != "sample":
        # greedy / logprob answers depend neither on the seed nor on the sample counts (one answer per question)
        keys = tuple(k for k in keys if k not in ("seed", *_SAMPLES))
    picked = {key: _pick(cfg, key) for key in keys}
    if isinstance(picked.get("model"), dict) and picked["model"].get("dtype") == "auto":
        # the dtype the model actually runs in decides the answers: a store shared by a bf16 and an fp32-only
        # machine must not hand one's outputs to the other
        from culturespa.models.dtype import resolve_dtype

        device = str(OmegaConf.select(cfg, "engine.device", default="auto"))
        picked["model"] = {**picked["model"], "dtype": resolve_dtype("auto", device)}
    blob = json.dumps({"settings": picked, "upstream": list(upstream)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _stage_cfg(cfg: DictConfig, folder: Path, values: dict[str, Any]) -> DictConfig:
    """A copy of the pipeline config whose paths point into ``folder`` (plus the stage-specific ``values``)."""
    stage_cfg = copy.deepcopy(cfg)
    with open_dict(stage_cfg):
        stage_cfg.paths.output_dir = str(folder)
        for key, value in values.items():
            OmegaConf.update(stage_cfg, key, value, force_add=True)
    return stage_cfg


class Pipeline:
    """Runs the stages in order, skipping those whose output already exists for the same settings."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.cultures = validate_config(cfg)
        self.root = Path(str(cfg.paths.root_dir)) / "outputs" / "pipeline"
        if OmegaConf.select(cfg, "pipeline.root", default=None):
            self.root = Path(str(cfg.pipeline.root))
        force = [str(s) for s in (cfg.get("force") or [])]
        unknown = sorted(set(force) - set(STAGES) - {"all"})
        if unknown:
            raise CultureSPAError(f"force={unknown}: unknown stage; valid: all, {', '.join(STAGES)}")
        self.force = set(STAGES) if "all" in force else set(force)
        self.stages: list[Stage] = []
        pin_wandb_dir(cfg, self.root / "runs" / slug(run_name(cfg), 100))  # every stage's W&B run beside comparison

    def _run(self, name: str, key: str, after: Sequence[Stage | str], work: Callable[[Path], dict[str, Any]]) -> Stage:
        """Run ``work`` into the stage's folder unless it is done for these settings; ``after`` are the stages (or
        extra identities) it reads. A stage whose input was recomputed in this run is recomputed too."""
        upstream = [a.folder.name if isinstance(a, Stage) else a for a in after]
        digest = stage_hash(self.cfg, key, upstream)
        folder = self.root / name / digest
        stage = Stage(name, folder)
        done = folder / DONE
        stale = any(isinstance(a, Stage) and a.ran for a in after)
        if done.exists() and key not in self.force and not stale:
            record = json.loads(done.read_text())
            stage.summary = record["summary"]
            log.info("[%s] reusing %s", name, folder)
            artifacts.link_cached(self.cfg, name, folder, record.get("artifacts"))  # keeps this group's lineage
        else:
            log.info("[%s] running → %s", name, folder)
            folder.mkdir(parents=True, exist_ok=True)
            start, produced = time.perf_counter(), len(artifacts.PRODUCED)
            stage.summary = work(folder)
            stage.seconds = time.perf_counter() - start
            stage.ran = True
            settings = {k: _pick(self.cfg, k) for k in _KEYS[key]}
            write_json(
                done,
                {
                    "stage": name,
                    "hash": digest,
                    "upstream": list(upstream),
                    "settings": settings,
                    "seconds": stage.seconds,
                    "summary": _jsonable(stage.summary),
                    "artifacts": artifacts.produced_since(produced),
                },
            )
        self.stages.append(stage)
        return stage

    def _filter(self, name: str, source_file: str, after: Stage | str, limit: Any) -> Stage:
        from culturespa.generate.run import generate

        def work(d: Path) -> dict[str, Any]:
            return generate(
                _stage_cfg(
                    self.cfg,
                    d,
                    {
                        "stage": "filter",
                        "filter.input": source_file,
                        "filter.output": str(d / "filtered.jsonl"),
                        "filter.limit_per_topic": limit,
                    },
                )
            )

        return self._run(name, "filter", [after, f"limit={limit}"], work)

    def run(self) -> dict[str, Any]:
        from culturespa.evaluate.run import evaluate
        from culturespa.generate.run import generate
        from culturespa.generate.shards import fan_out
        from culturespa.train.run import train

        cfg = self.cfg
        mode = str(cfg.pipeline.questions)
        if mode not in QUESTION_SOURCES:
            raise CultureSPAError(
                f"pipeline.questions={mode!r} is not valid; choose one of: {', '.join(QUESTION_SOURCES)}"
            )
        # Step 1: generate questions and/or take a sample of the paper's pool; each source is filtered on its own.
        filtered: list[Stage] = []
        if mode in ("generate", "both"):
            questions = self._run(
                "questions",
                "questions",
                [],
                lambda d: generate(
                    _stage_cfg(cfg, d, {"stage": "questions", "questions.output": str(d / "generated.jsonl")})
                ),
            )
            limit = None if mode == "both" else cfg.filter.limit_per_topic  # keep every generated question
            filtered.append(self._filter("filter", str(questions.folder / "generated.jsonl"), questions, limit))
        if mode in ("pool", "both"):
            pool = pipeline_pool(cfg, mode)
            source = "pool:" + files_digest(pool)  # the content decides the cached stage, not the path
            filtered.append(self._filter("filter-pool", pool, source, cfg.filter.limit_per_topic))

        # Step 2: answers, unaware once and culture-aware (or CCT) per culture, into one folder per settings.
        system = str(cfg.data.system)
        shards = OmegaConf.select(cfg, "pipeline.answer_shards", default=1)

        def answer(d: Path) -> dict[str, Any]:
            inputs = d / "questions"  # the filtered question files this stage answered, side by side
            inputs.mkdir(exist_ok=True)
            for stage in filtered:
                shutil.copyfile(stage.folder / "filtered.jsonl", inputs / f"{stage.name}.jsonl")
            out: dict[str, Any] = {}
            for setting in ("unaware", system):
                values = {
                    "stage": "answers",
                    "answers.setting": setting,
                    "answers.input": str(inputs),
                    "answers.output_dir": str(d),
                }
                # pipeline.answer_shards=n: n shards in turn, then merged (the same files as one run)
                out[setting] = fan_out(generate, lambda extra, v=values: _stage_cfg(cfg, d, {**v, **extra}), shards)
            return out

        answers = self._run("answers", "answers", [*filtered, *self.cultures], answer)
        # Step 3: CRQPC.
        pairs = self._run(
            "pairs",
            "pairs",
            [answers],
            lambda d: generate(
                _stage_cfg(
                    cfg, d, {"stage": "pairs", "answers.output_dir": str(answers.folder), "sft.pairs_dir": str(d)}
                )
            ),
        )
        # Step 4: SFT.
        trained = self._run(
            "train",
            "train",
            [pairs],
            lambda d: train(_stage_cfg(cfg, d, {"sft.pairs_dir": str(pairs.folder), "sft.output_dir": str(d)})),
        )
        adapter = trained.folder / ("adapter" if str(cfg.mode.name) == "joint" else "adapters")
        # Step 5: the base model and CultureSPA, same cultures, same prompt.
        base = self._run(
            "eval-base",
            "evaluate",
            ["base"],
            lambda d: evaluate(
                _stage_cfg(
                    cfg,
                    d,
                    {"eval.adapter": None, "eval.output_dir": str(d), "eval.suite": "wvs", "eval.source": "model"},
                )
            ),
        )
        tuned = self._run(
            "eval-culturespa",
            "evaluate",
            [trained],
            lambda d: evaluate(
                _stage_cfg(
                    cfg,
                    d,
                    {
                        "eval.adapter": str(adapter),
                        "eval.output_dir": str(d),
                        "eval.suite": "wvs",
                        "eval.source": "model",
                    },
                )
            ),
        )
        return self._report(base.folder / "alignment.json", tuned.folder / "alignment.json")

    def _report(self, base_file: Path, tuned_file: Path) -> dict[str, Any]:
        from culturespa.evaluate.references import averages

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
        from culturespa.data.survey import WVSData
        from culturespa.evaluate.comparison import attach_comparison
        from culturespa.evaluate.uncertainty import BootstrapSettings

        wvs = WVSData.load(self.cfg.paths.wvs_dir)
        attach_comparison(comparison, base_file.parent, tuned_file.parent, wvs, BootstrapSettings.from_config(self.cfg))
        out = self.root / "runs" / slug(run_name(self.cfg), 100) / "comparison.json"
        write_json(out, comparison)
        comparison["comparison_file"] = str(out)
        _print_report(comparison, self.stages)
        _log_comparison(self.cfg, comparison)
        return comparison


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _print_report(comparison: dict[str, Any], stages: list[Stage]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    files = Table(title="Pipeline stages", show_lines=False)
    for column in ("stage", "status", "seconds"):
        files.add_column(column)
    files.add_column("folder", overflow="fold")
    for stage in stages:
        files.add_row(stage.name, "ran" if stage.ran else "reused", f"{stage.seconds:.1f}", str(stage.folder))
    console.print(files)
    from culturespa.evaluate.comparison import print_comparison

    console.print(f"comparison written to {comparison['comparison_file']}")
    print_comparison(comparison, console)  # the table, the references and, last, the verdict paragraph


def _log_comparison(cfg: DictConfig, comparison: dict[str, Any]) -> None:
    from culturespa.utils.tracking import finish_run, start_run

    run = start_run(cfg, "pipeline")
    if run is None:
        return
    try:
        import wandb

        from culturespa.evaluate.comparison import ADDED_KEYS, log_uncertainty

        columns = ["culture", "base", "culturespa", "base_valid", "culturespa_valid", "total", *ADDED_KEYS]
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in comparison["cultures"]])
        run.log({"comparison": table})
        run.summary.update(
            {"average/base": comparison["average"]["base"], "average/culturespa": comparison["average"]["culturespa"]}
        )
        log_uncertainty(run, comparison)
        run.summary.update({f"reference/{k}": v for k, v in (comparison.get("references") or {}).items()})
        artifacts.track_comparison(run, cfg, comparison)  # both results in, comparison + plot out
    finally:
        finish_run(run)


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
    main()
