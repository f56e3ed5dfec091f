"""``train(cfg)``: step 4 of CultureSPA, culture-joint (one adapter) or culture-specific (one adapter per culture).

Order matters: config and pairs files are validated first (one-line errors), then the tokenizer is loaded and the
examples are encoded, and only then does each rank load the model (in ``SFTModule.configure_model``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from culturespa.config import to_plain, validate_config
from culturespa.errors import CultureSPAError
from culturespa.prompts.builder import PromptStyle
from culturespa.train.sft_data import CultureSplit, ExampleEncoder, prepare_splits, shuffled
from culturespa.utils.rundirs import pairs_digest

log = logging.getLogger("culturespa.train")
FINGERPRINT_FILE = "fingerprint.txt"


@dataclass(frozen=True)
class BatchPlan:
    """Global batch = micro batch x accumulation x world size; accumulation follows the device count."""

    global_batch_size: int
    micro_batch_size: int
    world_size: int

    @property
    def accumulate(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.world_size)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BatchPlan:
        world = world_size(cfg.trainer)
        gbs, mbs = int(cfg.sft.global_batch_size), int(cfg.sft.micro_batch_size)
        if gbs % (mbs * world):
            raise CultureSPAError(
                f"sft.global_batch_size={gbs} must be a multiple of sft.micro_batch_size={mbs} x {world} devices "
                f"(= {mbs * world})"
            )
        return cls(gbs, mbs, world)


def world_size(trainer_cfg: Any) -> int:
    """Processes the Trainer will start, from ``devices`` x ``num_nodes`` (``auto`` = every visible GPU, or 1 CPU)."""
    devices = trainer_cfg.get("devices", 1)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices) * nodes
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if devices in ("auto", -1):
        accelerator = str(trainer_cfg.get("accelerator", "auto"))
        if accelerator in ("gpu", "cuda", "auto"):
            import torch

            if torch.cuda.is_available():
                return torch.cuda.device_count() * nodes
        return nodes
    raise CultureSPAError(f"trainer.devices={devices!r} is not valid; give a positive count, a list or auto")


def training_style(cfg: DictConfig) -> PromptStyle:
    """The prompt style of the SFT examples: the configured templates with the system kind of ``data.train_system``
    (null: ``data.system``, whose answers the pairs compare); it is saved beside the adapter so evaluation asks the
    model the way it was trained."""
    style = PromptStyle.from_config(cfg.templates, cfg.prompt)
    style.system = str(OmegaConf.select(cfg, "data.train_system", default=None) or cfg.data.system)
    return style


def fingerprint(cfg: DictConfig, job: str, codes: Sequence[str] | None = None) -> str:
    """Identity of one training job: what shapes the adapter (not where it is written or whether to resume)."""
    plain = to_plain(cfg)
    # sft.accelerator/precision: where it runs (the precision counts below, as the Trainer's)
    skip = ("output_dir", "resume", "num_workers", "accelerator", "precision")
    sft = {k: v for k, v in plain["sft"].items() if k not in skip}
    picked = {
        "job": job,
        "model": plain["model"],
        "peft": plain["peft"],
        "data": plain["data"],
        "sft": sft,
        "mode": plain["mode"],
        "cultures": plain.get("cultures"),
        "templates": plain["templates"],
        "seed": plain.get("seed"),
        "precision": plain["trainer"].get("precision"),
        # regenerated pairs never resume an old checkpoint; only the job's own cultures' files count (``codes``), so
        # a culture-specific job keeps its checkpoints when another culture's pairs change
        "pairs_content": {
            name: digest
            for name, digest in pairs_digest(cfg.sft.pairs_dir).items()
            if codes is None or name.removesuffix(".jsonl") in codes
        },
    }
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:12]


def make_loggers(cfg: DictConfig, version: str, suffix: str | None) -> list[Any]:
    """WandbLogger (settings from culturespa.utils.tracking) and/or CSVLogger; Lightning logs from rank 0 only."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from culturespa.utils.tracking import wandb_settings

    loggers: list[Any] = []
    settings = wandb_settings(cfg, "train", suffix)
    if settings is not None:
        save_dir = settings.pop("dir")
        loggers.append(WandbLogger(save_dir=save_dir, **settings))
    csv = OmegaConf.select(cfg, "logger.csv", default=None)
    if csv:
        # one version folder per (re)start, so a resumed run never overwrites the metrics of the first part
        loggers.append(CSVLogger(save_dir=str(csv.save_dir), name=f"csv/{version}"))
    return loggers


def trainer_kwargs(cfg: DictConfig, plan: BatchPlan, has_val: bool) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.pop("max_epochs", None)
    from culturespa.train.strategies import build_strategy

    quantized = str(OmegaConf.select(cfg, "peft.quantization", default="none")) != "none"
    kwargs["strategy"] = build_strategy(kwargs.get("strategy", "auto"), kwargs.get("accelerator", "auto"), quantized)
    kwargs.pop("max_steps", None)
    max_steps = int(cfg.sft.max_steps)
    kwargs.update(
        max_steps=max_steps if max_steps > 0 else -1,
        max_epochs=-1 if max_steps > 0 else int(cfg.sft.epochs),
        accumulate_grad_batches=plan.accumulate,
        use_distributed_sampler=False,  # ShardedSampler shards itself (and resumes mid-epoch)
        val_check_interval=cfg.sft.val_check_interval,
        enable_model_summary=False,
    )
    if not has_val:
        kwargs.update(limit_val_batches=0, num_sanity_val_steps=0)
    return kwargs


def train(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train the adapter(s) of ``cfg.mode``; returns output paths and headline numbers per job."""
    cultures = validate_config(cfg)
    plan = BatchPlan.from_config(cfg)
    trainer_kwargs(cfg, plan, has_val=True)  # strategy errors (trainer=fsdp on CPUs) before any file is read
    mode = str(cfg.mode.name)
    # every pairs file checked before any model is loaded; joint mode leaves out a culture without pairs (warning)
    splits = prepare_splits(cfg, cultures, skip_empty=mode == "joint")
    style = training_style(cfg)
    trained = [c for c in cultures if c in splits]
    jobs: list[tuple[str, list[str]]] = [("joint", trained)] if mode == "joint" else [(c, [c]) for c in cultures]

    from culturespa.models.loader import ModelSpec, load_tokenizer

    wvs = None
    if style.system == "cct":
        from culturespa.data.survey import WVSData

        wvs = WVSData.load(cfg.paths.wvs_dir)
    tokenizer = load_tokenizer(ModelSpec.from_config(cfg.model), cfg.paths.cache_dir)
    encoder = ExampleEncoder(tokenizer, style, style.system, int(cfg.data.cutoff_len), wvs)

    runs = {name: fit_job(cfg, name, codes, splits, encoder, plan, style, tokenizer, callbacks) for name, codes in jobs}
    _print_next(cfg, mode, runs)
    return {
        "mode": mode,
        "cultures": cultures,
        "skipped_cultures": [c for c in cultures if c not in splits],
        "output_dir": str(cfg.sft.output_dir),
        "adapters": {name: run["adapter"] for name, run in runs.items()},
        "world_size": plan.world_size,
        "accumulate": plan.accumulate,
        "runs": runs,
    }


def fit_job(
    cfg: DictConfig,
    name: str,
    codes: list[str],
    splits: dict[str, CultureSplit],
    encoder: ExampleEncoder,
    plan: BatchPlan,
    style: PromptStyle,
    tokenizer: Any,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """One Lightning fit: the joint adapter or one culture's adapter."""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_info

    from culturespa.train.checkpoints import (
        AdapterExport,
        ValidationLedger,
        checkpoint_callback,
        find_resume,
        read_meta,
    )
    from culturespa.train.datamodule import SFTDataModule, steps_per_epoch
    from culturespa.train.module import SFTModule
    from culturespa.train.progress import progress_callbacks
    from culturespa.utils.logs import single_log_lines

    single_log_lines()

    out = Path(str(cfg.sft.output_dir))
    target = out / "adapter" if name == "joint" else out / "adapters" / name
    ckpt_dir = out / "checkpoints" / name
    print_ = fingerprint(cfg, name, codes)
    train_pairs = shuffled([p for c in codes for p in splits[c].train], int(cfg.data.seed), name)
    val_pairs = [p for c in codes for p in splits[c].val]
    summary: dict[str, Any] = {
        "adapter": str(target),
        "train_examples": len(train_pairs),
        "val_examples": len(val_pairs),
        "cultures": codes,
        "fingerprint": print_,
    }

    done = read_meta(target)
    if cfg.sft.resume and done and done.get("fingerprint") == print_:
        rank_zero_info(f"train {name}: adapter already trained with this config in {target}; skipping")
        return summary | {"skipped": True, "train": done.get("train", {})}
    marker = ckpt_dir / FINGERPRINT_FILE
    has_ckpt = any(ckpt_dir.glob("*.ckpt"))
    if cfg.sft.resume and has_ckpt and marker.is_file() and marker.read_text().strip() != print_:
        raise CultureSPAError(f"{ckpt_dir}: checkpoints of a different config; delete them or set sft.resume=false")
    found = find_resume(ckpt_dir, bool(cfg.sft.resume))
    ckpt_path = found.path if found else None

    spe = steps_per_epoch(len(train_pairs), plan.micro_batch_size, plan.world_size, plan.accumulate)
    total = int(cfg.sft.max_steps) if int(cfg.sft.max_steps) > 0 else spe * int(cfg.sft.epochs)
    rank_zero_info(
        f"train {name}: {len(train_pairs)} train / {len(val_pairs)} val examples, {total} optimiser steps "
        f"(global batch {plan.global_batch_size} = {plan.micro_batch_size} x {plan.accumulate} accumulation x "
        f"{plan.world_size} devices)"
    )
    if found:
        rank_zero_info(f"train {name}: resuming from step {found.step} of {total} ({found.path})")
    train_ex, val_ex = encoder.encode_all(train_pairs), encoder.encode_all(val_pairs)

    plain_peft = OmegaConf.to_container(cfg.peft, resolve=True)
    meta = {
        "base_model": str(cfg.model.name),
        "mode": str(cfg.mode.name),
        "cultures": codes,
        "peft": plain_peft,
        "data_system": str(cfg.data.system),
        "fingerprint": print_,
        "train_examples": len(train_pairs),
        "val_examples": len(val_pairs),
    }
    optim = {k: cfg.sft[k] for k in ("lr", "weight_decay", "warmup_ratio", "scheduler")}
    module = SFTModule(
        OmegaConf.to_container(cfg.model, resolve=True),
        plain_peft,
        optim,
        str(cfg.paths.cache_dir),
        total,
        str(ckpt_dir),
        int(cfg.seed),
    )
    datamodule = SFTDataModule(
        train_ex,
        val_ex,
        plan.micro_batch_size,
        plan.accumulate,
        tokenizer.pad_token_id,
        int(cfg.data.seed),
        int(cfg.sft.num_workers),
    )
    export = AdapterExport(target, style, OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))), meta)
    loggers = make_loggers(cfg, name, name if name != "joint" else None)
    trainer = L.Trainer(
        **trainer_kwargs(cfg, plan, bool(val_ex)),
        callbacks=[
            *callbacks,
            *progress_callbacks(cfg.trainer),
            ValidationLedger(spe),
            export,
            checkpoint_callback(ckpt_dir, int(cfg.sft.save_every_n_steps)),
        ],
        logger=loggers or False,
        default_root_dir=str(out),
    )
    if trainer.is_global_zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(print_ + "\n")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # ShardedSampler skips the micro-batches already trained on, so Lightning's mid-epoch resume warning is moot
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable", category=Warning)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.is_global_zero:
            from culturespa.utils.artifacts import track_training

            track_training(loggers, cfg, target)  # pairs in, adapter out (W&B lineage)
    finally:
        _finish_wandb(loggers)
    result = read_meta(target) or {}
    return summary | {"skipped": False, "train": result.get("train", {})}


def evaluate_command(cfg: DictConfig, adapter: str | Path) -> str:
    """The ``evaluate.py`` command for ``adapter``: this run's model/mode/culture/prompt choices, pasteable as is."""
    import shlex

    keep = ("model", "mode", "cultures", "prompt", "templates", "experiment", "debug", "paths.")
    from culturespa.utils.tracking import task_overrides

    picked = [o for o in task_overrides(cfg) if o.split("=", 1)[0].lstrip("+~").startswith(keep)]
    return " ".join(["python evaluate.py", shlex.quote(f"eval.adapter={adapter}"), *map(shlex.quote, picked)])


def _print_next(cfg: DictConfig, mode: str, runs: dict[str, dict[str, Any]]) -> None:
    """Where the adapter(s) went and the command that evaluates them."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    for name, run in runs.items():
        print(f"adapter ({name}): {run['adapter']}")
    if str(cfg.get("task_name")) != "train":  # the pipeline evaluates it itself
        return
    folder = Path(next(iter(runs.values()))["adapter"])
    target = folder if mode == "joint" else folder.parent
    print(f"next: {evaluate_command(cfg, target)}")


def _finish_wandb(loggers: Sequence[Any]) -> None:
    """Close this job's W&B run so the next culture (specific mode) starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
