"""The evaluate stage's settings: what it reads from the composed config, typed and read once per run.

Its own module so the stage's parts (``run.py``, ``general.py``, ``answering.py``) take it without importing one
another. :class:`AnsweringSettings` is built apart, where answering a model starts (the run, or a worker from its
shard's config): evaluations that read prediction files never check the keys only answering reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.answers.chunks import resume_chunk
from culturespa.evaluate.uncertainty import BootstrapSettings
from culturespa.infer.workers import worker_devices
from culturespa.prompts.builder import PromptStyle
from culturespa.settings import EvalSettings
from culturespa.stages.identity import config_hash, plain

log = logging.getLogger(__name__)

# what shapes the answers: a folder's fingerprint of them refuses answers made under other values
FINGERPRINT_KEYS = ("model", "eval.adapter", "prompt", "templates.answer", "decoding", "seed", "peft.quantization")


@dataclass(frozen=True)
class EvaluateSettings:
    """What the evaluate stage reads from the composed config, typed; built once per run, after
    ``eval.adapter=latest`` has been replaced by the folder it stands for."""

    eval: EvalSettings
    bootstrap: BootstrapSettings
    cultures: tuple[str, ...]
    model: dict[str, Any]  # plain: the adapters' base-model check and lm-eval's model spec read it as it is
    prompt_name: str
    decoding_mode: str
    seed: int
    wvs_dir: str | None  # null: the package's own data
    cache_dir: str | None
    device: str
    style: PromptStyle  # the config's prompt variant (an adapter's saved templates replace its own)

    @classmethod
    def from_config(cls, cfg: DictConfig, cultures: list[str], bootstrap: BootstrapSettings) -> EvaluateSettings:
        return cls(
            eval=EvalSettings.from_config(cfg.eval),
            bootstrap=bootstrap,
            cultures=tuple(cultures),
            model=OmegaConf.to_container(cfg.model, resolve=True),  # type: ignore[arg-type]
            prompt_name=str(cfg.prompt.name),
            decoding_mode=str(cfg.decoding.mode),
            seed=int(cfg.seed),
            wvs_dir=cfg.paths.wvs_dir,
            cache_dir=cfg.paths.cache_dir,
            device=str(cfg.engine.device),
            style=PromptStyle.from_config(cfg.templates, cfg.prompt),
        )

    @property
    def output_dir(self) -> Path:
        return Path(str(self.eval.output_dir))


@dataclass(frozen=True)
class AnsweringSettings:
    """What evaluation answering reads from the composed config, typed; ``Engine.from_config`` and the workers'
    shard configs still take the config itself (see ``answering.py``)."""

    output_dir: Path  # eval.output_dir
    runs: int  # eval.runs as answered (:func:`effective_runs`)
    decoding: dict[str, Any]  # resolved ``decoding`` node: ``Decoding.from_config`` checks and reads it
    style: PromptStyle  # the config's prompt variant (an adapter's saved templates replace its own)
    prompt_name: str
    seed: int
    seed_step: int  # run r samples with seed + r * seed_step
    chunk: int  # answers.resume_chunk
    devices: tuple[str, ...]  # engine.devices > 1: one worker per device (empty: this process; always in a worker)
    model: dict[str, Any]
    quantization: str  # peft.quantization of the base ("none": unquantised)
    compute_dtype: str | None
    double_quant: bool
    device: str  # engine.device: a quantised base is placed at load time
    cache_dir: str | None
    wvs_dir: str | None
    fingerprint: dict[str, Any]  # what ``fingerprint.json`` holds: {"hash", "settings"}

    @classmethod
    def from_config(cls, cfg: DictConfig, worker: bool = False) -> AnsweringSettings:
        """``worker``: built by a worker from its shard's config (it answers its shard itself)."""
        return cls(
            output_dir=Path(str(cfg.eval.output_dir)),
            runs=effective_runs(cfg),
            decoding=plain(cfg, "decoding"),
            style=PromptStyle.from_config(cfg.templates, cfg.prompt),
            prompt_name=str(cfg.prompt.name),
            seed=int(cfg.seed),
            seed_step=int(OmegaConf.select(cfg, "decoding.seed_step", default=1)),
            chunk=resume_chunk(OmegaConf.select(cfg, "answers.resume_chunk", default=256)),
            devices=() if worker else tuple(worker_devices(cfg)),
            model=plain(cfg, "model"),
            quantization=str(OmegaConf.select(cfg, "peft.quantization", default="none") or "none"),
            compute_dtype=OmegaConf.select(cfg, "peft.compute_dtype", default=None),
            double_quant=bool(OmegaConf.select(cfg, "peft.double_quant", default=True)),
            device=str(OmegaConf.select(cfg, "engine.device", default="auto")),
            cache_dir=cfg.paths.cache_dir,
            wvs_dir=cfg.paths.wvs_dir,
            fingerprint=answers_fingerprint(cfg),
        )


def effective_runs(cfg: DictConfig) -> int:
    """``eval.runs`` in sample mode; greedy and log-prob answers are deterministic, so one run is enough."""
    runs = int(cfg.eval.runs)
    if cfg.decoding.mode != "sample" and runs > 1:
        log.warning("eval.runs=%d ignored: decoding.mode=%s is deterministic, using 1 run", runs, cfg.decoding.mode)
        return 1
    return runs


def answers_fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The hash of the settings that shape the answers, and those settings as they resolve (``fingerprint.json``;
    its format and hash stay as they are: answer folders made earlier must still resume)."""
    return {"hash": config_hash(cfg, FINGERPRINT_KEYS), "settings": {k: plain(cfg, k) for k in FINGERPRINT_KEYS}}
