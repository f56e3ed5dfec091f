"""Step 4 of CultureSPA: LoRA/QLoRA SFT on culture-related QA pairs (culture-joint or culture-specific).

Thin Hydra entry point: all work happens in `culturespa.train.run.train(cfg)`, which tests call directly.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

import culturespa.config  # noqa: F401  (registers the cs_* resolvers before Hydra composes)
from culturespa.utils.entry import set_offline_defaults, task_wrapper

set_offline_defaults()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@task_wrapper
def main(cfg: DictConfig) -> Any:
    from culturespa.train.run import train

    return train(cfg)


if __name__ == "__main__":
    main()
