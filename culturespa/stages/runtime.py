"""What a model stage still needs the composed config itself for, bound to it once at the stage's entry.

The questions and answers stages read typed settings only (``questions/settings.py``, ``answers/answers_settings.py``);
three things take the whole config by design, so the entry point binds them here and the stage calls them: the W&B run
(``stage_run`` declares the config's inputs and outputs), the engine (``Engine.from_config`` reads the model, engine
and cache settings) and a worker's config (a copy with its shard's values, re-entered by a worker process).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.stages.tracking import Tracker, tracker

if TYPE_CHECKING:  # the engine pulls in torch; it is imported when a stage loads its model
    from culturespa.infer.engine import Engine


@dataclass(frozen=True)
class StageRuntime:
    """The config-bound parts of one stage run: ``track`` opens its W&B run, ``engine`` loads the model,
    ``worker_config`` is a copy of the config with some keys set (a worker's shard)."""

    track: Tracker
    engine: Callable[[], Engine]
    worker_config: Callable[[dict[str, Any]], DictConfig]

    @classmethod
    def bind(cls, cfg: DictConfig, stage: str) -> StageRuntime:
        return cls(tracker(cfg, stage), functools.partial(load_engine, cfg), functools.partial(config_with, cfg))


def load_engine(cfg: DictConfig) -> Engine:
    """``Engine.from_config(cfg)``, imported only when a stage has something to ask the model."""
    from culturespa.infer.engine import Engine  # heavy: torch and transformers

    return Engine.from_config(cfg)


def config_with(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with ``values`` set (dotted keys; a worker's shard)."""
    copied = copy.deepcopy(cfg)
    with open_dict(copied):
        for key, value in values.items():
            OmegaConf.update(copied, key, value, force_add=True)
    return copied
