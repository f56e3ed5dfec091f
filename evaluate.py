"""Step 5 of CultureSPA: score a model, adapter or answer files against real WVS answers.

Thin Hydra entry point: all work happens in `culturespa.evaluate.run.evaluate(cfg)`, which tests call directly.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from culturespa.config import CONFIG_DIR, check_override_keys  # importing it registers the cs_* resolvers Hydra needs
from culturespa.entry import check_group_overrides, set_offline_defaults, task_wrapper

set_offline_defaults()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@task_wrapper
def main(cfg: DictConfig) -> Any:
    from culturespa.evaluate.run import evaluate  # after set_offline_defaults: the stage's imports read the env

    return evaluate(cfg)


if __name__ == "__main__":
    check_group_overrides(sys.argv[1:], str(CONFIG_DIR))
    check_override_keys(sys.argv[1:], "evaluate")
    main()
