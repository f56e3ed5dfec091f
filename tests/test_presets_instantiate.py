"""Every preset composes AND instantiates without running anything: typed settings of every group, the Lightning
Trainer with its strategy, loggers and callbacks, the model spec and the quantisation config (no weights loaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.config import CONFIG_DIR, compose
from culturespa.models.loader import ModelSpec, quantization_config
from culturespa.settings import GROUPS, build
from culturespa.train.run import BatchPlan, TrainSettings
from culturespa.train.trainer import build_callbacks, build_loggers, build_trainer

PRIMARY = ["train", "generate", "evaluate", "pipeline"]


def _options(group: str) -> list[str]:
    return sorted(f.stem for f in (CONFIG_DIR / group).glob("*.yaml"))


PRESETS = [
    (group, option)
    for group in ("experiment", "debug", "trainer", "logger", "peft", "model", "callbacks")
    for option in _options(group)
    if not (group == "trainer" and option == "default")  # the common base of the trainer options, not one itself
]


def _instantiate_train_objects(cfg: DictConfig, tmp_path: Path) -> list[object]:
    """What a training job builds from the config, short of loading weights or fitting."""
    for cls in GROUPS:
        cls.from_config(cfg.get(cls.group))  # every group's typed settings
    spec = ModelSpec.from_config(cfg.model)
    assert spec.name == cfg.model.name
    quantization_config(str(cfg.peft.quantization), str(cfg.peft.get("compute_dtype", "float32")))
    settings = TrainSettings.from_config(cfg)
    plan = BatchPlan.of(settings.sft, settings.trainer)
    trainer_node = settings.trainer
    strategy = trainer_node.get("strategy")
    if isinstance(strategy, DictConfig) and "_target_" in strategy:  # FSDP: built for GPUs, as on a GPU machine
        assert isinstance(build(strategy, "trainer.strategy", accelerator="gpu"), FSDPStrategy)
    if not torch.cuda.is_available():  # the Trainer itself on this machine's CPU, in its own process layout
        trainer_node = trainer_node.copy()
        with open_dict(trainer_node):
            trainer_node.accelerator = "cpu"
            if isinstance(strategy, DictConfig):
                trainer_node.strategy = "ddp"
            if "mixed" in str(trainer_node.precision):
                trainer_node.precision = "32-true"
    loggers = build_loggers(settings.logger, {"dir": str(tmp_path / "wandb"), "mode": "offline"}, "joint")
    callbacks = build_callbacks(settings.callbacks, tmp_path / "ckpt", progress_bar=True)
    trainer = build_trainer(trainer_node, settings.sft, plan.accumulate, True, callbacks, loggers, tmp_path)
    assert trainer.accumulate_grad_batches == plan.accumulate
    return [trainer, *loggers, *callbacks]


@pytest.mark.parametrize(("group", "option"), PRESETS, ids=[f"{g}={o}" for g, o in PRESETS])
def test_every_preset_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"{group}={option}"], output_dir=tmp_path)
    built = _instantiate_train_objects(cfg, tmp_path)
    kinds = {type(obj) for obj in built}
    assert any(issubclass(k, ModelCheckpoint) for k in kinds) and any(issubclass(k, ProgressBar) for k in kinds)
    loggers = OmegaConf.to_container(cfg.logger)
    assert (WandbLogger in kinds) == bool(loggers.get("wandb")) and (CSVLogger in kinds) == bool(loggers.get("csv"))


@pytest.mark.parametrize("primary", PRIMARY)
@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_instantiates_its_settings_under_every_entry_point(
    primary: str, experiment: str, tmp_path: Path
) -> None:
    cfg = compose(primary, [f"experiment={experiment}"], output_dir=tmp_path)
    for cls in GROUPS:
        settings = cls.from_config(cfg.get(cls.group))
        declared = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
        undeclared = set(cfg.get(cls.group)) - declared
        assert not undeclared, f"{cls.group}: keys without a typed field in culturespa/settings.py: {undeclared}"


def test_callbacks_can_be_turned_off(tmp_path: Path) -> None:
    cfg = compose("train", ["callbacks.progress_bar=null"], output_dir=tmp_path)
    assert not any(isinstance(c, ProgressBar) for c in build_callbacks(cfg.callbacks, tmp_path, progress_bar=True))
    bar_off = compose("train", ["trainer.enable_progress_bar=false"], output_dir=tmp_path)
    assert not any(isinstance(c, ProgressBar) for c in build_callbacks(bar_off.callbacks, tmp_path, progress_bar=False))
    checkpoint = next(c for c in build_callbacks(cfg.callbacks, tmp_path / "c", True) if isinstance(c, ModelCheckpoint))
    assert checkpoint.dirpath == str(tmp_path / "c") and checkpoint._every_n_train_steps == 50
