"""The evaluate stage's settings: what it reads from the composed config, typed and read once per run.

Its own module so the stage's parts (``run.py``, ``general.py``) take it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.evaluate.uncertainty import BootstrapSettings
from culturespa.settings import EvalSettings


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
        )

    @property
    def output_dir(self) -> Path:
        return Path(str(self.eval.output_dir))
