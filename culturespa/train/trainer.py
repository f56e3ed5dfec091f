"""The Lightning objects of one training job, each built from its config node with ``hydra.utils.instantiate``: the
Trainer (``conf/trainer``, its strategy included), the loggers (``conf/logger``) and the callbacks
(``conf/callbacks``). What the batch plan decides (steps, epochs, accumulation) is passed over the node's values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from culturespa.settings import SFTSettings, build


def check_strategy(trainer_node: DictConfig) -> None:
    """Build the strategy alone, so its one-line errors (``trainer=fsdp`` on CPUs) come before any file is read."""
    strategy = trainer_node.get("strategy")
    if isinstance(strategy, DictConfig) and "_target_" in strategy:
        build(strategy, "trainer.strategy")


def build_trainer(
    trainer_node: DictConfig,
    sft: SFTSettings,
    accumulate: int,
    has_val: bool,
    callbacks: Sequence[Any],
    loggers: Sequence[Any],
    root_dir: str | Path,
) -> Any:
    """The ``lightning.pytorch.Trainer`` of ``trainer_node``; ``sft.max_steps > 0`` caps the steps over the epochs."""
    capped = sft.max_steps > 0
    overrides: dict[str, Any] = {
        "max_steps": sft.max_steps if capped else -1,
        "max_epochs": -1 if capped else sft.epochs,
        "accumulate_grad_batches": accumulate,
        "use_distributed_sampler": False,  # ShardedSampler shards itself (and resumes mid-epoch)
        "val_check_interval": sft.val_check_interval,
        "enable_model_summary": False,
    }
    if not has_val:
        overrides.update(limit_val_batches=0, num_sanity_val_steps=0)
    return build(
        trainer_node,
        "trainer",
        **overrides,
        callbacks=list(callbacks),
        logger=list(loggers) or False,
        default_root_dir=str(root_dir),
    )


def build_loggers(logger_node: DictConfig, wandb_kwargs: dict[str, Any] | None, version: str) -> list[Any]:
    """Every logger node with a ``_target_``. W&B takes its run name, group, job type and config from
    ``wandb_kwargs`` (culturespa.utils.tracking, shared with every stage; None: W&B off); CSV writes one version
    folder per (re)start, so a resumed run never overwrites the metrics of the first part."""
    loggers: list[Any] = []
    for key, node in logger_node.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if key == "wandb":
            if wandb_kwargs is not None:
                kwargs = dict(wandb_kwargs)
                run_config = kwargs.pop("config", None)  # instantiate() takes its own first argument by this name
                kwargs["save_dir"] = kwargs.pop("dir")
                make = build({"_target_": node._target_}, "logger.wandb", _partial_=True, **kwargs)
                loggers.append(make(config=run_config))
        else:
            loggers.append(build(node, f"logger.{key}", name=f"{key}/{version}"))
    return loggers


def build_callbacks(callbacks_node: DictConfig | None, checkpoint_dir: str | Path, progress_bar: bool) -> list[Any]:
    """Every callback node with a ``_target_`` (``null`` ones are off); the checkpoint callback writes into this job's
    ``checkpoint_dir``. Without a progress bar (``trainer.enable_progress_bar=false``) bar callbacks are left out:
    Lightning refuses them."""
    callbacks: list[Any] = []
    for key, node in (callbacks_node or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        extra = {"folder": str(checkpoint_dir)} if key == "checkpoint" else {}
        callback = build(node, f"callbacks.{key}", **extra)
        if progress_bar or not isinstance(callback, ProgressBar):
            callbacks.append(callback)
    return callbacks
