"""The answers stage's settings: what it reads from the composed config, typed and read once per run.

Its own module so the stage (``stage.py``) and the tests that count samples take it without the stage's imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.answers.chunks import resume_chunk
from culturespa.answers.shards import Shard
from culturespa.infer.workers import worker_devices
from culturespa.settings import AnswersSettings
from culturespa.stages import outputs
from culturespa.stages.identity import plain


@dataclass(frozen=True)
class AnswersStageSettings:
    """What the answers stage reads from the composed config, typed; built once by the entry point (values checked
    with the config: ``settings.AnswersSettings``, ``settings.DecodingSettings``)."""

    answers: AnswersSettings
    decoding: dict[str, Any]  # resolved ``decoding`` node: ``Decoding.from_config`` checks and reads it
    identity: dict[str, Any]  # what every file's fingerprint hashes besides its setting and culture
    templates: dict[str, Any]  # resolved ``templates`` and ``prompt`` nodes: ``PromptStyle.from_config`` reads them
    prompt: dict[str, Any]
    samples: int  # data.samples: k sampled answers per question
    replicates: int  # data.noise_replicates: extra unaware replicates for the noise floor
    seed: int
    wvs_dir: str | None
    shard: Shard | None  # answers.shard=i/n
    chunk: int  # answers.resume_chunk
    overwrite: bool
    devices: tuple[str, ...]  # engine.devices > 1: one worker per device (empty: this process; always when merging)
    workers_dir: Path | None  # paths.output_dir: where worker logs go (None: next to the answers)
    merge: bool = False  # stage=merge-answers: join the finished shards instead of answering

    @classmethod
    def from_config(cls, cfg: DictConfig, merge: bool = False) -> AnswersStageSettings:
        """``merge`` (``stage=merge-answers``): no workers; the shard is checked in merge mode too."""
        shard = Shard.parse(OmegaConf.select(cfg, "answers.shard", default=None))
        devices = () if merge else tuple(worker_devices(cfg))
        decoding = plain(cfg, "decoding")
        workers_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
        return cls(
            answers=AnswersSettings.from_config(cfg.answers),
            decoding=decoding,
            identity={
                "model": plain(cfg, "model"),
                "decoding": decoding,
                "templates": plain(cfg, "templates.answer"),
                "seed": int(cfg.seed),
            },
            templates=plain(cfg, "templates"),
            prompt=plain(cfg, "prompt"),
            samples=int(OmegaConf.select(cfg, "data.samples", default=1) or 1),
            replicates=int(OmegaConf.select(cfg, "data.noise_replicates", default=0) or 0),
            seed=int(cfg.seed),
            wvs_dir=cfg.paths.wvs_dir,
            shard=shard,
            chunk=resume_chunk(OmegaConf.select(cfg, "answers.resume_chunk", default=256)),
            overwrite=outputs.overwrite_requested(cfg),
            devices=devices,
            workers_dir=Path(str(workers_dir)) if workers_dir else None,
            merge=merge,
        )

    @property
    def setting(self) -> str:
        return str(self.answers.setting)

    def runs(self, setting: str) -> int:
        """How many samples (runs 0..n-1) the stage writes per question for ``setting``: 1 with greedy/logprob
        decoding (samples would be identical); else k for aware/cct and k x (1 + R) for unaware."""
        if str((self.decoding or {}).get("mode", "greedy")) != "sample":
            return 1
        return self.samples * (1 + self.replicates) if setting == "unaware" else self.samples
