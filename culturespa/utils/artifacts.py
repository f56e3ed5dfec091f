"""W&B Artifacts with lineage from questions to score, online and offline.

Every stage logs what it wrote as an artifact and declares what it read as an input, so the lineage graph runs
questions → filtered-questions → answers-* → pairs → adapter → alignment → comparison.

How the two ends find each other without a server: an artifact is a deterministic function of files on disk (a
:class:`Spec`: a name per role, canonical entry names, the files). The producer logs it; a consumer builds the same
spec from the files it reads and declares it as input. W&B identifies a version by the manifest digest, which hashes
only entry names and file checksums (MD5), so both ends compute the same digest and the server resolves the input to
the version the producer logged: the link holds whatever order the runs are synced in, and a cached pipeline stage
reused by a later run links the very same version (:func:`link_cached`).

* Producers add files (copied to W&B's staging folder, so a file changed later cannot corrupt the upload); a file
  larger than ``logger.wandb.artifacts.reference_mb`` is added as a checksummed ``file://`` reference instead
  (same digest, nothing uploaded: only this machine can open it).
* Consumers add ``file://`` references: declaring an input copies nothing.
* ``run.use_artifact`` refuses to work offline (``TypeError: Cannot use artifact when in offline mode``), so offline
  runs write the same record it writes online for a draft artifact: an artifact marked user-created and
  used-after-commit, which ``wandb sync`` turns into a "used by" edge.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa import compat

log = logging.getLogger("culturespa.artifacts")

# Artifact names per role (versions of a role are told apart by digest, and by run/group in the lineage graph).
QUESTIONS = "questions"
POOL = "question-pool"
FILTERED = "filtered-questions"
PAIRS = "pairs"
ADAPTER = "adapter"
ALIGNMENT = "alignment"
COMPARISON = "comparison"
WVS = "wvs-survey"
DEFAULT_REFERENCE_MB = 100.0

# Every artifact this process logged as an output, in order (the pipeline stores a stage's share in _SUCCESS.json).
PRODUCED: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Spec:
    """An artifact as files: ``files`` maps the entry name inside the artifact to the file on disk."""

    name: str
    type: str
    files: Mapping[str, str]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "files": dict(self.files)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        return cls(str(data["name"]), str(data["type"]), dict(data["files"]))

    def missing(self) -> list[str]:
        return [path for path in self.files.values() if not Path(path).is_file()]


def _tree(folder: Path, patterns: Sequence[str] = ("**/*",)) -> dict[str, str]:
    """Files under ``folder`` matching ``patterns`` by path relative to it, sorted (no partial files)."""
    found: dict[str, str] = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and not rel.endswith((".part", ".tmp")) and "/wandb/" not in f"/{rel}":
                found[rel] = str(path.resolve())
    return dict(sorted(found.items()))


def _one(entry: str, path: str | Path) -> dict[str, str]:
    path = Path(path)
    return {entry: str(path.resolve())} if path.is_file() else {}


def questions(path: str | Path) -> Spec:
    """Generated questions (one JSONL file, whatever its name on disk)."""
    return Spec(QUESTIONS, "questions", _one("questions.jsonl", path))


def pool(folder: str | Path) -> Spec:
    """The paper's question pool (a folder of per-topic files)."""
    return Spec(POOL, "questions", _tree(Path(folder), ("*.json", "*.jsonl")))


def filter_input(path: str | Path) -> Spec:
    """What the filter reads: the pool when it is a folder, generated questions when it is a file."""
    return pool(path) if Path(path).is_dir() else questions(path)


def filtered(path: str | Path, report: Mapping[str, Any] | None = None) -> Spec:
    """Filtered questions; the filter report rides along as metadata (metadata does not enter the digest)."""
    return Spec(FILTERED, "dataset", _one("filtered.jsonl", path), dict(report or {}))


def answer_inputs(source: str | Path, wvs_dir: str | Path) -> list[Spec]:
    """What the answers stage reads: the WVS questions, one filtered file, or a folder of filtered files."""
    if str(source) == "wvs":
        return [wvs(wvs_dir)]
    source = Path(source)
    if source.is_dir():
        return [filtered(p) for p in sorted(source.glob("*.jsonl"))]
    return [filtered(source)]


def answers(folder: str | Path, setting: str) -> Spec:
    """One setting's answer files: ``unaware.jsonl``, or every ``{setting}_{CODE}.jsonl`` in the folder."""
    pattern = "unaware.jsonl" if setting == "unaware" else f"{setting}_*.jsonl"
    files = {rel: path for rel, path in _tree(Path(folder), (pattern,)).items() if ".shard-" not in rel}
    return Spec(f"answers-{setting}", "answers", files)  # shard files (answers.shard=i/n) are not the stage's output


def pairs(folder: str | Path) -> Spec:
    """Culture-related QA pairs: every ``{CODE}.jsonl`` plus ``stats.json``."""
    return Spec(PAIRS, "pairs", _tree(Path(folder), ("*.jsonl", "stats.json")))


def adapter(folder: str | Path) -> Spec:
    """One LoRA adapter folder, every file in it: ``adapter`` (joint) or ``adapter-{CODE}`` (``adapters/{CODE}``)."""
    folder = Path(folder)
    name = f"{ADAPTER}-{folder.name}" if folder.parent.name == "adapters" else ADAPTER
    return Spec(name, "model", _tree(folder))


def adapter_inputs(folder: str | Path) -> list[Spec]:
    """The adapters an evaluation reads: the folder itself, or each culture's adapter in ``adapters/``."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        return [adapter(folder)]
    return [adapter(sub) for sub in sorted(folder.iterdir()) if (sub / "adapter_config.json").is_file()]


def wvs(folder: str | Path) -> Spec:
    """The WVS survey files: questions and every culture's answer shares (the gold of the score)."""
    return Spec(WVS, "dataset", _tree(Path(folder), ("*.json", "*.jsonl", "*.csv")))


def alignment(folder: str | Path) -> Spec:
    """An evaluation's results: ``alignment.json``, the answers it scored, relation matrix and heatmap if any."""
    folder = Path(folder)
    return Spec(
        ALIGNMENT, "results", _tree(folder, ("alignment.json", "answers/*.jsonl", "relations.*", "general.json"))
    )


def comparison_spec(files: Iterable[str | Path]) -> Spec:
    """The pipeline's base-vs-CultureSPA comparison (JSON, plot, CSV)."""
    found: dict[str, str] = {}
    for path in files:
        found.update(_one(Path(path).name, path))
    return Spec(COMPARISON, "results", found)


# ---------------------------------------------------------------- logging


def reference_bytes(cfg: DictConfig | None) -> float:
    """Files above this size go in by reference (``logger.wandb.artifacts.reference_mb``)."""
    mb = OmegaConf.select(cfg, "logger.wandb.artifacts.reference_mb", default=None) if cfg is not None else None
    return float(DEFAULT_REFERENCE_MB if mb is None else mb) * 1024 * 1024


def enabled(cfg: DictConfig | None) -> bool:
    """Artifacts are on unless ``logger.wandb.artifacts.enabled=false``."""
    if cfg is None:
        return True
    return bool(OmegaConf.select(cfg, "logger.wandb.artifacts.enabled", default=True))


def build(spec: Spec, copy_up_to: float, metadata: bool = True) -> Any:
    """A draft ``wandb.Artifact``: files up to ``copy_up_to`` bytes added (checksummed, staged), larger ones and all
    files when ``copy_up_to`` is 0 added as checksummed ``file://`` references. Both give the same digest."""
    import wandb

    art = wandb.Artifact(spec.name, type=spec.type, metadata=dict(spec.metadata) if metadata else None)
    for entry, path in spec.files.items():
        if copy_up_to > 0 and os.path.getsize(path) <= copy_up_to:
            art.add_file(path, name=entry)
        else:
            art.add_reference(Path(path).resolve().as_uri(), name=entry, checksum=True)
    return art


def _usable(run: Any, spec: Spec, role: str) -> bool:
    if run is None:
        return False
    if not spec.files:
        log.debug("artifact %s: no files, not logged as %s", spec.name, role)
        return False
    missing = spec.missing()
    if missing:
        log.warning("artifact %s: %s missing; not logged as %s", spec.name, missing[0], role)
        return False
    return True


def log_output(run: Any, spec: Spec, cfg: DictConfig | None = None) -> str | None:
    """Log ``spec`` as an output of ``run``; returns its digest (None when nothing was logged)."""
    if not enabled(cfg) or not _usable(run, spec, "output"):
        return None
    art = build(spec, reference_bytes(cfg))
    digest = art.manifest.digest()
    run.log_artifact(art)
    PRODUCED.append({**spec.to_dict(), "digest": digest})
    return digest


def use_input(run: Any, spec: Spec, cfg: DictConfig | None = None) -> str | None:
    """Declare ``spec`` as an input of ``run`` (works offline too); returns its digest."""
    if not enabled(cfg) or not _usable(run, spec, "input"):
        return None
    art = build(spec, copy_up_to=0, metadata=False)
    digest = art.manifest.digest()
    if bool(getattr(run, "offline", False)):
        # what run.use_artifact does for a draft artifact online, minus its offline refusal
        compat.log_input_artifact_offline(run, art)
    else:
        run.use_artifact(art)
    return digest


def use_inputs(run: Any, specs: Iterable[Spec], cfg: DictConfig | None = None) -> list[str | None]:
    return [use_input(run, spec, cfg) for spec in specs]


def produced_since(mark: int) -> list[dict[str, Any]]:
    """The outputs logged since ``len(PRODUCED)`` was ``mark`` (the pipeline stores them with the stage)."""
    return [dict(item) for item in PRODUCED[mark:]]


def link_cached(cfg: DictConfig, stage: str, folder: Path, produced: Sequence[Mapping[str, Any]] | None) -> None:
    """A reused pipeline stage: a small run in this pipeline's group (job_type ``cached``) that uses the stage's
    artifacts, so the group's lineage graph stays whole although nothing was recomputed."""
    from culturespa.utils.tracking import finish_run, start_run

    if not enabled(cfg):
        return
    specs = [Spec.from_dict(item) for item in produced or ()] or pipeline_stage_outputs(cfg, stage, folder)
    if not specs:
        log.info("[%s] no artifact files in %s: no lineage link", stage, folder)
        return
    run = start_run(cfg, "cached", f"{stage}-cached")
    if run is None:
        return
    try:
        run.summary["cached_folder"] = str(folder)
        use_inputs(run, specs, cfg)
    finally:
        finish_run(run)


def pipeline_stage_outputs(cfg: DictConfig, stage: str, folder: Path) -> list[Spec]:
    """A pipeline stage's outputs from its folder, for stages cached before their ``_SUCCESS.json`` listed them (or
    while W&B was off): the same files give the same digests, so the link still finds the logged version."""
    folder = Path(folder)
    if stage == "questions":
        specs = [questions(folder / "generated.jsonl")]
    elif stage.startswith("filter"):
        specs = [filtered(folder / "filtered.jsonl")]
    elif stage == "answers":
        specs = [answers(folder, "unaware"), answers(folder, str(cfg.data.system))]
    elif stage == "pairs":
        specs = [pairs(folder)]
    elif stage == "train":
        specs = adapter_inputs(folder / "adapter") if (folder / "adapter").is_dir() else []
        specs += adapter_inputs(folder / "adapters") if (folder / "adapters").is_dir() else []
    elif stage.startswith("eval"):
        specs = [alignment(folder)]
    else:
        specs = []
    return [s for s in specs if s.files]


# ---------------------------------------------------------------- per-stage wiring


def generate_inputs(cfg: DictConfig, stage: str) -> list[Spec]:
    """What a generate stage reads, from its config (called before the stage writes anything)."""
    if stage == "questions":
        return [wvs(cfg.paths.wvs_dir)]  # the seed questions the prompts show
    if stage == "filter":
        from culturespa.generate.filter import resolve_input

        return [filter_input(resolve_input(cfg)), wvs(cfg.paths.wvs_dir)]
    if stage == "answers":
        return answer_inputs(str(cfg.answers.input), cfg.paths.wvs_dir)
    if stage == "pairs":
        folder = Path(str(cfg.answers.output_dir))
        return [answers(folder, "unaware"), answers(folder, str(cfg.data.system))]
    return []


def generate_outputs(cfg: DictConfig, stage: str) -> list[Spec]:
    """What a generate stage wrote, from its config (called after the stage finished)."""
    if stage == "questions":
        return [questions(str(cfg.questions.output))]
    if stage == "filter":
        import json

        from culturespa.generate.filter import report_path

        out = Path(str(cfg.filter.output))
        report_file = report_path(out)
        report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else {}
        return [filtered(out, {k: v for k, v in report.items() if k in ("n_input", "kept", "removed", "modified")})]
    if stage == "answers":
        return [answers(str(cfg.answers.output_dir), str(cfg.answers.setting))]
    if stage == "pairs":
        return [pairs(str(cfg.sft.pairs_dir))]
    return []


def track_training(loggers: Sequence[Any], cfg: DictConfig, adapter_dir: str | Path) -> None:
    """Training run (Lightning's W&B logger): pairs in, the adapter out."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            use_input(run, pairs(str(cfg.sft.pairs_dir)), cfg)
            log_output(run, adapter(adapter_dir), cfg)


def evaluation_inputs(cfg: DictConfig) -> list[Spec]:
    """What an evaluation reads: the survey (gold), and the adapter or the prediction files."""
    specs = [wvs(cfg.paths.wvs_dir)]
    source = str(OmegaConf.select(cfg, "eval.source", default="model"))
    adapter_dir = OmegaConf.select(cfg, "eval.adapter", default=None)
    if source == "model" and adapter_dir and Path(str(adapter_dir)).is_dir():
        specs.extend(adapter_inputs(str(adapter_dir)))
    if source == "predictions":
        template = str(OmegaConf.select(cfg, "eval.predictions.path", default=""))
        files = sorted(Path(template).parent.glob(Path(template).name.replace("{culture}", "*")))
        if files:
            specs.append(Spec("predictions", "answers", {p.name: str(p.resolve()) for p in files}))
    return specs


def evaluation_label(cfg: DictConfig) -> str:
    """Tells an evaluation's runs apart: ``base``, ``adapter`` or ``predictions`` (plus the suite when not wvs)."""
    source = str(OmegaConf.select(cfg, "eval.source", default="model"))
    label = "predictions" if source != "model" else ("adapter" if OmegaConf.select(cfg, "eval.adapter") else "base")
    suite = str(OmegaConf.select(cfg, "eval.suite", default="wvs"))
    return label if suite == "wvs" else f"{label}-{suite}"


def track_comparison(run: Any, cfg: DictConfig, comparison: Mapping[str, Any]) -> None:
    """The pipeline's last run: both evaluations' results in, the comparison (JSON, bar plot, CSV) out; the plot
    is also logged as an image."""
    if run is None:
        return
    from culturespa.evaluate.analyses import compare, log_outputs

    folders = comparison.get("files") or {}
    results = [Path(folders[name]) / "alignment.json" for name in ("eval-base", "eval-culturespa") if name in folders]
    use_inputs(run, (alignment(path.parent) for path in results), cfg)
    target = Path(str(comparison["comparison_file"]))
    plot = compare(results, ["base", "CultureSPA"][: len(results)], target.with_suffix(".png")) if results else {}
    log_outputs(run, "comparison", plot)
    log_output(run, comparison_spec([target, *plot.values()]), cfg)
