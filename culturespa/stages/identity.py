"""What makes two stage outputs the same: the stage names, the settings that decide each output, one fingerprint
function for every config hash, and the done marker of a cached pipeline stage.

Every config hash in the package is :func:`fingerprint` of a JSON payload (sorted keys, ``str`` for anything else);
only the payload and the length differ, so stored outputs keep their folder names and sidecars across versions.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.models.dtype import resolve_dtype
from culturespa.utils.jsonl import write_json

# The stages ``generate.py`` runs (``stage=...``) and those the pipeline caches (``force=[...]``).
GENERATE_STAGES = ("questions", "filter", "answers", "merge-answers", "pairs", "export")
PIPELINE_STAGES = ("questions", "filter", "answers", "pairs", "train", "evaluate")
MODEL_STAGES = {"questions", "answers", "train", "evaluate"}  # the stages that load the model
DONE_FILE = "_SUCCESS.json"
# The setting that names each stage's output (a file for questions/filter, else a folder).
STAGE_OUTPUTS = {
    "questions": "questions.output",
    "filter": "filter.output",
    "answers": "answers.output_dir",
    "pairs": "sft.pairs_dir",
    "train": "sft.output_dir",
    "evaluate": "eval.output_dir",
}
STAGE_HASH_LEN = 10  # pipeline stage folders, config keys, run folders
OUTPUT_HASH_LEN = 12  # sidecars of resumable outputs, training jobs, content digests

# How many answers are sampled per question (AnswersStageSettings.runs in culturespa/answers/answers_settings.py),
# and the pairs' noise statistics.
_SAMPLES = ("data.samples", "data.noise_replicates")
_NOISE = ("data.alpha", "data.null_quantile", "data.bootstrap", "data.ci_level", "data.seed")
# The settings that decide each pipeline stage's output (paths excluded: they are derived from the hashes).
DECIDING_KEYS: dict[str, tuple[str, ...]] = {
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


def task_stages(cfg: DictConfig) -> set[str]:
    """The stages a task runs: a generate stage, ``train``, ``evaluate``, or the pipeline's ``pipeline.stages``."""
    task = str(cfg.get("task_name", ""))
    if task == "pipeline":
        stages = OmegaConf.select(cfg, "pipeline.stages", default=None) or []
        return {str(s) for s in stages}
    if task == "generate":
        return {str(cfg.get("stage"))}
    return {task}


def fingerprint(payload: Any, length: int = OUTPUT_HASH_LEN) -> str:
    """The one digest of the package: SHA-1 of ``payload`` as sorted JSON, cut to ``length`` hex digits."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


def plain(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as plain data (None when absent)."""
    value = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def config_hash(cfg: DictConfig, keys: Sequence[str]) -> str:
    """A short stable hash of the resolved values under ``keys`` (an evaluation's answers fingerprint)."""
    return fingerprint({key: plain(cfg, key) for key in keys}, STAGE_HASH_LEN)


def _identity_value(cfg: DictConfig, key: str) -> Any:
    """The value of ``key`` as it enters a stage hash: nodes without their path keys and non-identity settings."""
    value = plain(cfg, key)
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in _PATH_KEYS and f"{key}.{k}" not in _NOT_IDENTITY}
    return value


def stage_settings(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The settings that decide ``stage``'s output, as recorded in its done marker."""
    return {key: _identity_value(cfg, key) for key in DECIDING_KEYS[stage]}


def stage_hash(cfg: DictConfig, stage: str, upstream: Sequence[str] = ()) -> str:
    """Identity of a pipeline stage's output: its deciding settings plus the hashes of the stages it reads."""
    keys = DECIDING_KEYS[stage]
    if stage in ("answers", "evaluate") and str(cfg.decoding.mode) != "sample":
        # greedy / logprob answers depend neither on the seed nor on the sample counts (one answer per question)
        keys = tuple(k for k in keys if k not in ("seed", *_SAMPLES))
    picked = {key: _identity_value(cfg, key) for key in keys}
    if isinstance(picked.get("model"), dict) and picked["model"].get("dtype") == "auto":
        # the dtype the model actually runs in decides the answers: a store shared by a bf16 and an fp32-only
        # machine must not hand one's outputs to the other
        picked["model"] = {**picked["model"], "dtype": _resolved_dtype(cfg)}
    return fingerprint({"settings": picked, "upstream": list(upstream)}, STAGE_HASH_LEN)


def _resolved_dtype(cfg: DictConfig) -> str:
    return resolve_dtype("auto", str(OmegaConf.select(cfg, "engine.device", default="auto")))


def pairs_digest(folder: Any) -> dict[str, str]:
    """Content hashes of the ``*.jsonl`` pairs files in ``folder``: regenerated pairs are another training input."""
    root = Path(str(folder))
    if not root.is_dir():
        return {}
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest()[:OUTPUT_HASH_LEN] for p in sorted(root.glob("*.jsonl"))}


# Keys that do not decide a run folder's output: where it is written, logging, resume switches, tags.
RUN_EXCLUDED = (
    "hydra",
    "logger",
    "tags",
    "force",
    "overwrite",
    "paths.output_dir",
    "paths.log_dir",
    "paths.debug",  # the debug preset's name, for provenance: the keys the preset sets are hashed themselves
    "sft.output_dir",
    "sft.resume",
    "sft.checkpoint_minutes",
    "engine.devices",  # how many worker processes answer: the same files (tests/test_workers.py)
    "engine.schedule",  # continuous or static decoding: the same replies (tests/test_infer_decode.py)
    "sft.num_workers",
    "eval.output_dir",
    "callbacks",  # how Lightning reports and checkpoints, not what the run computes
    "trainer._target_",  # the class a config builds, named since the Trainer is instantiated; not a setting
)


def _drop(cfg: DictConfig, key: str) -> None:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node:
        node.pop(leaf)


def config_key(root: DictConfig) -> str:
    """A run folder's key: hash of the resolved config minus :data:`RUN_EXCLUDED` (``paths.output_dir`` stands in as
    a placeholder). Config values only, so resolving ``hydra.run.dir`` reads no file; what a run reads from outside its
    config is checked by the stage itself (:mod:`culturespa.stages.run_inputs`)."""
    cfg = copy.deepcopy(root)
    with open_dict(cfg):
        for key in RUN_EXCLUDED:
            if not key.startswith("paths."):  # other paths interpolate these: dropped once resolved
                _drop(cfg, key)
        if OmegaConf.select(cfg, "paths", default=None) is not None:
            cfg.paths.output_dir = "<run>"
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(plain, dict)
    for key in RUN_EXCLUDED:
        if key.startswith("paths."):
            plain.get("paths", {}).pop(key.removeprefix("paths."), None)
    return fingerprint(plain, STAGE_HASH_LEN)


@dataclass(frozen=True)
class DoneRecord:
    """What a finished pipeline stage left in its done marker."""

    stage: str
    hash: str
    upstream: list[str]
    settings: dict[str, Any]
    seconds: float
    summary: Any
    artifacts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "hash": self.hash,
            "upstream": list(self.upstream),
            "settings": self.settings,
            "seconds": self.seconds,
            "summary": json.loads(json.dumps(self.summary, default=str)),
            "artifacts": self.artifacts,
        }


def write_done(folder: Path, record: DoneRecord) -> None:
    """Mark ``folder`` as a finished stage (written last: a crash leaves no marker)."""
    write_json(Path(folder) / DONE_FILE, record.to_dict())


def is_done(folder: Path) -> bool:
    return (Path(folder) / DONE_FILE).exists()


def read_done(folder: Path) -> dict[str, Any] | None:
    """The done marker of ``folder`` as written, or None while the stage is unfinished."""
    marker = Path(folder) / DONE_FILE
    return json.loads(marker.read_text()) if marker.exists() else None
