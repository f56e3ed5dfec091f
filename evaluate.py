"""Step 5 of CultureSPA: score a model, adapter or answer files against real WVS answers.

Thin Hydra entry point: all work happens in `culturespa.evaluate.run.evaluate(cfg)`, which tests call directly.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

import culturespa.config  # noqa: F401  (registers the cs_* resolvers before Hydra composes)
from culturespa.utils.entry import set_offline_defaults, task_wrapper

set_offline_defaults()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@task_wrapper
def main(cfg: DictConfig) -> Any:
    from culturespa.evaluate.run import evaluate

    return evaluate(cfg)


if __name__ == "__main__":
    main()
