"""The lineage catalogue: which stage makes and reads which files, as W&B artifact specs.

The lineage graph runs questions → filtered-questions → answers-* → pairs → adapter → alignment → comparison. A spec
is a deterministic function of files on disk (a name per role, canonical entry names, the files), so a producer and
a later consumer of the same files build the same artifact digest (:mod:`culturespa.utils.artifacts`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.errors import CultureSPAError
from culturespa.utils.artifacts import Spec, files_under, log_output, one_file, use_input
from culturespa.wvs.cultures import resolve_cultures

# Artifact names per role (versions of a role are told apart by digest, and by run/group in the lineage graph).
QUESTIONS = "questions"
POOL = "question-pool"
FILTERED = "filtered-questions"
PAIRS = "pairs"
ADAPTER = "adapter"
ALIGNMENT = "alignment"
COMPARISON = "comparison"
WVS = "wvs-survey"
ADAPTER_META_FILE = "culturespa.json"  # written last beside a trained adapter: base model, mode, culture


def report_path(output: str | Path) -> Path:
    """The filter's report beside its output: ``filtered.jsonl`` → ``filtered.report.json``."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".report.json")


def filter_source(cfg: DictConfig) -> str:
    """``filter.input``; the literal ``paper`` means the paper's pool (``paths.question_pool_dir``)."""
    value = str(cfg.filter.input)
    return str(cfg.paths.question_pool_dir) if value == "paper" else value


def questions(path: str | Path) -> Spec:
    """Generated questions (one JSONL file, whatever its name on disk)."""
    return Spec(QUESTIONS, "questions", one_file("questions.jsonl", path))


def pool(folder: str | Path) -> Spec:
    """The paper's question pool (a folder of per-topic files)."""
    return Spec(POOL, "questions", files_under(Path(folder), ("*.json", "*.jsonl")))


def filter_input(path: str | Path) -> Spec:
    """What the filter reads: the pool when it is a folder, generated questions when it is a file."""
    return pool(path) if Path(path).is_dir() else questions(path)


def filtered(path: str | Path, report: Mapping[str, Any] | None = None) -> Spec:
    """Filtered questions; the filter report rides along as metadata (metadata does not enter the digest)."""
    return Spec(FILTERED, "dataset", one_file("filtered.jsonl", path), dict(report or {}))


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
    files = {rel: path for rel, path in files_under(Path(folder), (pattern,)).items() if ".shard-" not in rel}
    return Spec(f"answers-{setting}", "answers", files)  # shard files (answers.shard=i/n) are not the stage's output


def pairs(folder: str | Path) -> Spec:
    """Culture-related QA pairs: every ``{CODE}.jsonl`` plus ``stats.json``."""
    return Spec(PAIRS, "pairs", files_under(Path(folder), ("*.jsonl", "stats.json")))


def adapter(folder: str | Path) -> Spec:
    """One LoRA adapter folder, every file in it: ``adapter`` (joint) or ``adapter-{CODE}`` (``adapters/{CODE}``)."""
    folder = Path(folder)
    name = f"{ADAPTER}-{folder.name}" if folder.parent.name == "adapters" else ADAPTER
    return Spec(name, "model", files_under(folder))


def adapter_inputs(folder: str | Path) -> list[Spec]:
    """The adapters an evaluation reads: the folder itself, or each culture's adapter in ``adapters/``."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        return [adapter(folder)]
    return [adapter(sub) for sub in sorted(folder.iterdir()) if (sub / "adapter_config.json").is_file()]


def wvs(folder: str | Path) -> Spec:
    """The WVS survey files: questions and every culture's answer shares (the gold of the score)."""
    return Spec(WVS, "dataset", files_under(Path(folder), ("*.json", "*.jsonl", "*.csv")))


def alignment(folder: str | Path) -> Spec:
    """An evaluation's results: ``alignment.json``, the answers it scored, relation matrix and heatmap if any."""
    folder = Path(folder)
    return Spec(
        ALIGNMENT, "results", files_under(folder, ("alignment.json", "answers/*.jsonl", "relations.*", "general.json"))
    )


def comparison_spec(files: Iterable[str | Path]) -> Spec:
    """The pipeline's base-vs-CultureSPA comparison (JSON, plot, CSV)."""
    found: dict[str, str] = {}
    for path in files:
        found.update(one_file(Path(path).name, path))
    return Spec(COMPARISON, "results", found)


def stage_outputs(cfg: DictConfig, stage: str, folder: Path) -> list[Spec]:
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


def generate_inputs(cfg: DictConfig, stage: str) -> list[Spec]:
    """What a generate stage reads, from its config (called before the stage writes anything)."""
    if stage == "questions":
        return [wvs(cfg.paths.wvs_dir)]  # the seed questions the prompts show
    if stage == "filter":
        return [filter_input(filter_source(cfg)), wvs(cfg.paths.wvs_dir)]
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
    from lightning.pytorch.loggers import WandbLogger  # Lightning: heavy, only the training entry point has it loaded

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


# ---- eval.adapter=latest: the newest finished adapter for this base model and mode ----------------------------------
# Looked for where ``train.py`` writes (``logs/train/runs/*/``, ``logs/train/multirun/*/``) and where the pipeline
# trains (``outputs/pipeline/train/*/``): a joint run's ``adapter/`` or a specific run's ``adapters/`` whose metadata
# names ``model.name`` as base model and ``mode.name`` as mode (specific: every selected culture has its adapter).
# Newest = most recently finished (the adapter's metadata file is written last).


def _meta(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / ADAPTER_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _search_roots(cfg: Any) -> list[Path]:
    log_dir = Path(str(OmegaConf.select(cfg, "paths.log_dir")))
    root_dir = Path(str(OmegaConf.select(cfg, "paths.root_dir")))
    return [log_dir / "train" / "runs", log_dir / "train" / "multirun", root_dir / "outputs" / "pipeline" / "train"]


def adapter_candidates(cfg: Any) -> list[tuple[float, Path]]:
    """(finish time, folder) of every adapter that fits ``cfg``'s model, mode and cultures."""
    model = str(OmegaConf.select(cfg, "model.name"))
    mode = str(OmegaConf.select(cfg, "mode.name", default="joint"))
    cultures = resolve_cultures(OmegaConf.select(cfg, "cultures"))
    found: list[tuple[float, Path]] = []
    for root in _search_roots(cfg):
        if not root.is_dir():
            continue
        for run in root.iterdir():
            if mode == "joint":
                meta = _meta(run / "adapter")
                if meta and meta.get("base_model") == model and meta.get("mode", "joint") == "joint":
                    found.append(((run / "adapter" / ADAPTER_META_FILE).stat().st_mtime, run / "adapter"))
                continue
            folder = run / "adapters"
            metas = {code: _meta(folder / code) for code in cultures}
            if all(m and m.get("base_model") == model for m in metas.values()):
                newest = max((folder / code / ADAPTER_META_FILE).stat().st_mtime for code in cultures)
                found.append((newest, folder))
    return sorted(found, key=lambda item: item[0], reverse=True)


def find_latest_adapter(cfg: Any, required: bool = True) -> Path | None:
    """The newest matching adapter folder; a one-line error (or None) when there is none."""
    found = adapter_candidates(cfg)
    if found:
        return found[0][1]
    if not required:
        return None
    roots = ", ".join(str(r) for r in _search_roots(cfg))
    raise CultureSPAError(
        f"eval.adapter=latest: no finished {OmegaConf.select(cfg, 'mode.name')} adapter for model="
        f"{OmegaConf.select(cfg, 'model.name')} in {roots}; train one first or give eval.adapter=<folder>"
    )
