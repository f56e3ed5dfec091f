"""Step 4 of CultureSPA: LoRA/QLoRA SFT on culture-related QA pairs (culture-joint or culture-specific).

Thin Hydra entry point: all work happens in `culturespa.train.run.train(cfg)`, which tests call directly.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from culturespa.config import CONFIG_DIR, check_override_keys  # importing it registers the cs_* resolvers Hydra needs
from culturespa.entry import check_group_overrides, set_offline_defaults, task_wrapper

set_offline_defaults()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@task_wrapper
def main(cfg: DictConfig) -> Any:
    from culturespa.train.run import train

    return train(cfg)


if __name__ == "__main__":
    check_group_overrides(sys.argv[1:], str(CONFIG_DIR))
    check_override_keys(sys.argv[1:], "train")
    main()
