"""``train(cfg)``: step 4 of CultureSPA, culture-joint (one adapter) or culture-specific (one adapter per culture).

Order matters: config and pairs files are validated first (one-line errors), then the tokenizer is loaded and the
examples are encoded, and only then does each rank load the model (in ``SFTModule.configure_model``). The config is
read once, into :class:`TrainSettings`; each job is then planned (what to train, where, from which checkpoint), run
(one Lightning fit) and recorded (its summary).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shlex
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from culturespa import compat
from culturespa.config import validate_config
from culturespa.errors import CultureSPAError
from culturespa.models.loader import ModelSpec, load_tokenizer
from culturespa.prompts.builder import PromptStyle
from culturespa.settings import DataSettings, ModeSettings, SFTSettings
from culturespa.stages.identity import fingerprint as digest_of
from culturespa.stages.identity import pairs_digest
from culturespa.stages.lineage import track_training
from culturespa.stages.provenance import adapter_record
from culturespa.stages.run_inputs import TRAIN_OUTPUTS, claim
from culturespa.train.checkpoints import AdapterExport, Resume, ValidationLedger, find_resume, read_meta, resume_line
from culturespa.train.datamodule import SFTDataModule, steps_per_epoch
from culturespa.train.module import SFTModule
from culturespa.train.oom import MEMORY_ERRORS, out_of_memory
from culturespa.train.sft_data import CultureSplit, ExampleEncoder, prepare_splits, shuffled
from culturespa.train.trainer import build_callbacks, build_loggers, build_trainer, check_strategy
from culturespa.utils.logs import single_log_lines
from culturespa.utils.plain import to_plain
from culturespa.utils.tracking import task_overrides, wandb_settings
from culturespa.wvs.survey import WVSData

log = logging.getLogger("culturespa.train")
FINGERPRINT_FILE = "fingerprint.txt"


@dataclass(frozen=True)
class TrainSettings:
    """What the train stage reads from the composed config, typed (LitGPT-style); built once per run.

    ``model`` and ``peft`` stay plain mappings (they travel to each rank and into the adapter's metadata as they are);
    ``trainer``, ``callbacks`` and ``logger`` stay config nodes, instantiated per job (culturespa.train.trainer).
    """

    sft: SFTSettings
    data: DataSettings
    mode: ModeSettings
    model: dict[str, Any]
    peft: dict[str, Any]
    seed: int
    cache_dir: str
    wvs_dir: str
    trainer: DictConfig
    callbacks: DictConfig | None
    logger: DictConfig
    style: PromptStyle  # the SFT examples' (training_style)
    overrides: tuple[str, ...]  # the command line's, for the evaluate command printed at the end
    task_name: str
    identity: dict[str, Any] = field(repr=False)  # what shapes an adapter besides its job and pairs (fingerprint)
    config_yaml: str = field(repr=False)  # the resolved config, saved beside each adapter

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainSettings:
        plain, data = to_plain(cfg), DataSettings.from_config(cfg.data)
        # sft.accelerator/precision: where it runs (the precision counts below, as the Trainer's)
        skip = ("output_dir", "resume", "num_workers", "accelerator", "precision", "checkpoint_minutes")
        return cls(
            sft=SFTSettings.from_config(cfg.sft),
            data=data,
            mode=ModeSettings.from_config(cfg.mode),
            model=plain["model"],
            peft=plain["peft"],
            seed=int(cfg.seed),
            cache_dir=str(cfg.paths.cache_dir),
            wvs_dir=str(cfg.paths.wvs_dir),
            trainer=cfg.trainer,
            callbacks=cfg.get("callbacks"),
            logger=cfg.logger,
            style=training_style(PromptStyle.from_config(cfg.templates, cfg.prompt), data),
            overrides=tuple(task_overrides(cfg)),
            task_name=str(cfg.get("task_name")),
            identity={
                **{key: plain[key] for key in ("model", "peft", "data", "mode", "templates")},
                "sft": {k: v for k, v in plain["sft"].items() if k not in skip},
                "cultures": plain.get("cultures"),
                "seed": plain.get("seed"),
                "precision": plain["trainer"].get("precision"),
            },
            config_yaml=OmegaConf.to_yaml(OmegaConf.create(plain)),
        )


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
    def of(cls, sft: SFTSettings, trainer_node: Any) -> BatchPlan:
        world = world_size(trainer_node)
        gbs, mbs = int(sft.global_batch_size), int(sft.micro_batch_size)
        if gbs % (mbs * world):
            raise CultureSPAError(
                f"sft.global_batch_size={gbs} must be a multiple of sft.micro_batch_size={mbs} x {world} devices "
                f"(= {mbs * world})"
            )
        return cls(gbs, mbs, world)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BatchPlan:
        return cls.of(SFTSettings.from_config(cfg.sft), cfg.trainer)


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
        if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
            return torch.cuda.device_count() * nodes
        return nodes
    raise CultureSPAError(f"trainer.devices={devices!r} is not valid; give a positive count, a list or auto")


def training_style(style: PromptStyle, data: DataSettings) -> PromptStyle:
    """The prompt style of the SFT examples: the configured ``style`` with the system kind of ``data.train_system``
    (null: ``data.system``, whose answers the pairs compare); it is saved beside the adapter so evaluation asks the
    model the way it was trained."""
    return dataclasses.replace(style, system=str(data.train_system or data.system))


def fingerprint(
    settings: TrainSettings, job: str, codes: Sequence[str] | None = None, digests: dict[str, str] | None = None
) -> str:
    """Identity of one training job: what shapes the adapter (not where it is written or whether to resume).
    ``digests``: the pairs files' content hashes when already read (:func:`pairs_digest` of ``sft.pairs_dir``)."""
    # regenerated pairs never resume an old checkpoint; only the job's own cultures' files count (``codes``), so a
    # culture-specific job keeps its checkpoints when another culture's pairs change
    digests = pairs_digest(settings.sft.pairs_dir) if digests is None else digests
    pairs = {name: d for name, d in digests.items() if codes is None or name.removesuffix(".jsonl") in codes}
    return digest_of({"job": job, **settings.identity, "pairs_content": pairs})


def train(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train the adapter(s) of ``cfg.mode``; returns output paths and headline numbers per job."""
    cultures = validate_config(cfg)
    settings = TrainSettings.from_config(cfg)
    plan = BatchPlan.of(settings.sft, settings.trainer)
    check_strategy(settings.trainer)  # strategy errors (trainer=fsdp on CPUs) before any file is read
    digests = pairs_digest(settings.sft.pairs_dir)  # read once: the run folder's inputs and every job's fingerprint
    inputs = {"pairs_content": digests} if settings.task_name == "train" else {}  # pipeline: hashed stage folders
    claim(settings.sft.output_dir, inputs, TRAIN_OUTPUTS, restart=not settings.sft.resume)
    mode = settings.mode.name
    # every pairs file checked before any model is loaded; joint mode leaves out a culture without pairs (warning)
    splits = prepare_splits(settings.sft.pairs_dir, settings.data, cultures, skip_empty=mode == "joint")
    style = settings.style
    trained = [c for c in cultures if c in splits]
    jobs: list[tuple[str, list[str]]] = [("joint", trained)] if mode == "joint" else [(c, [c]) for c in cultures]

    wvs = WVSData.load(settings.wvs_dir) if style.system == "cct" else None
    tokenizer = load_tokenizer(ModelSpec.from_config(settings.model), settings.cache_dir)
    encoder = ExampleEncoder(tokenizer, style, style.system, int(settings.data.cutoff_len), wvs)

    single_log_lines()
    runs: dict[str, dict[str, Any]] = {}
    for name, codes in jobs:
        job = plan_job(settings, plan, name, codes, splits, fingerprint(settings, name, codes, digests))
        if job.done is not None:
            runs[name] = record_job(job, job.done)
            continue
        io = JobIO(
            wandb_kwargs=wandb_settings(cfg, "train", name if name != "joint" else None),
            track=functools.partial(track_training, cfg=cfg, adapter_dir=job.target),
            provenance=adapter_record(cfg, [Path(settings.sft.pairs_dir) / f"{c}.jsonl" for c in codes]),
        )
        run_job(settings, plan, job, encoder, style, tokenizer, io, callbacks)
        runs[name] = record_job(job, None)
    _print_next(settings, runs)
    return {
        "mode": mode,
        "cultures": cultures,
        "skipped_cultures": [c for c in cultures if c not in splits],
        "output_dir": settings.sft.output_dir,
        "adapters": {name: run["adapter"] for name, run in runs.items()},
        "world_size": plan.world_size,
        "accumulate": plan.accumulate,
        "runs": runs,
    }


@dataclass(frozen=True)
class JobPlan:
    """One Lightning fit, decided before anything is encoded or loaded: the joint adapter or one culture's."""

    name: str
    codes: list[str]
    target: Path  # the adapter folder
    checkpoint_dir: Path
    fingerprint: str
    train_pairs: list[Any]
    val_pairs: list[Any]
    steps_per_epoch: int
    total_steps: int
    resume: Resume | None
    done: dict[str, Any] | None  # the finished adapter's metadata when it was trained with this config already


@dataclass(frozen=True)
class JobIO:
    """What a job reports outside itself: its W&B logger's settings (None: off), its lineage record and the
    provenance its adapter's metadata carries (what evaluation compares with its own settings)."""

    wandb_kwargs: dict[str, Any] | None
    track: Callable[[list[Any]], None]
    provenance: dict[str, Any] | None = None


def plan_job(
    settings: TrainSettings,
    plan: BatchPlan,
    name: str,
    codes: list[str],
    splits: dict[str, CultureSplit],
    print_: str,
) -> JobPlan:
    """Where the job writes, what it trains on, how many steps, and whether it is done or resumes."""
    out = Path(settings.sft.output_dir)
    target = out / "adapter" if name == "joint" else out / "adapters" / name
    ckpt_dir = out / "checkpoints" / name
    train_pairs = shuffled([p for c in codes for p in splits[c].train], int(settings.data.seed), name)
    val_pairs = [p for c in codes for p in splits[c].val]
    spe = steps_per_epoch(len(train_pairs), plan.micro_batch_size, plan.world_size, plan.accumulate)
    max_steps = int(settings.sft.max_steps)
    total = max_steps if max_steps > 0 else spe * int(settings.sft.epochs)
    job = JobPlan(name, codes, target, ckpt_dir, print_, train_pairs, val_pairs, spe, total, None, None)

    meta = read_meta(target)
    if settings.sft.resume and meta and meta.get("fingerprint") == print_:
        rank_zero_info(f"train {name}: adapter already trained with this config in {target}; skipping")
        return dataclasses.replace(job, done=meta)
    marker = ckpt_dir / FINGERPRINT_FILE
    has_ckpt = any(ckpt_dir.glob("*.ckpt"))
    if settings.sft.resume and has_ckpt and marker.is_file() and marker.read_text().strip() != print_:
        raise CultureSPAError(f"{ckpt_dir}: checkpoints of a different config; delete them or set sft.resume=false")
    found = find_resume(ckpt_dir, bool(settings.sft.resume))
    rank_zero_info(
        f"train {name}: {len(train_pairs)} train / {len(val_pairs)} val examples, {total} optimiser steps "
        f"(global batch {plan.global_batch_size} = {plan.micro_batch_size} x {plan.accumulate} accumulation x "
        f"{plan.world_size} devices)"
    )
    rank_zero_info(f"train {name}: {resume_line(found, total, bool(settings.sft.resume))}")
    return dataclasses.replace(job, resume=found)


def run_job(
    settings: TrainSettings,
    plan: BatchPlan,
    job: JobPlan,
    encoder: ExampleEncoder,
    style: PromptStyle,
    tokenizer: Any,
    io: JobIO,
    callbacks: Sequence[Any] = (),
) -> None:
    """Encode the job's examples and fit: the module, data, Trainer, loggers and callbacks of one adapter."""
    train_ex, val_ex = encoder.encode_all(job.train_pairs), encoder.encode_all(job.val_pairs)
    sft = settings.sft
    meta = {
        "base_model": str(settings.model["name"]),
        "mode": settings.mode.name,
        "cultures": job.codes,
        "peft": settings.peft,
        "data_system": settings.data.system,
        "fingerprint": job.fingerprint,
        "train_examples": len(job.train_pairs),
        "val_examples": len(job.val_pairs),
        "provenance": io.provenance,
    }
    optim = {"lr": sft.lr, "weight_decay": sft.weight_decay, "warmup_ratio": sft.warmup_ratio}
    optim["scheduler"] = sft.scheduler
    module = SFTModule(
        settings.model,
        settings.peft,
        optim,
        settings.cache_dir,
        job.total_steps,
        str(job.checkpoint_dir),
        settings.seed,
        sft.tf32,
    )
    datamodule = SFTDataModule(
        train_ex,
        val_ex,
        plan.micro_batch_size,
        plan.accumulate,
        tokenizer.pad_token_id,
        int(settings.data.seed),
        int(sft.num_workers),
        sft.packing,
    )
    loggers = build_loggers(settings.logger, io.wandb_kwargs, job.name)
    job_callbacks = [
        *callbacks,
        *build_callbacks(
            settings.callbacks, job.checkpoint_dir, bool(settings.trainer.get("enable_progress_bar", True))
        ),
        ValidationLedger(job.steps_per_epoch),
        AdapterExport(job.target, style, settings.config_yaml, meta),
    ]
    trainer = build_trainer(
        settings.trainer, sft, plan.accumulate, bool(val_ex), job_callbacks, loggers, sft.output_dir
    )
    if trainer.is_global_zero:
        job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (job.checkpoint_dir / FINGERPRINT_FILE).write_text(job.fingerprint + "\n")
    L.seed_everything(settings.seed, workers=True, verbose=False)
    # ShardedSampler skips the micro-batches already trained on, so Lightning's mid-epoch resume warning is moot
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable", category=Warning)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=job.resume.path if job.resume else None)
        if trainer.is_global_zero:
            io.track(loggers)  # pairs in, adapter out (W&B lineage)
    except MEMORY_ERRORS as err:
        raise out_of_memory(err, plan.micro_batch_size, plan.accumulate, plan.world_size) from None
    finally:
        _finish_wandb(loggers)


def record_job(job: JobPlan, done: dict[str, Any] | None) -> dict[str, Any]:
    """The job's summary: its adapter, examples and fingerprint, and the training numbers its metadata holds."""
    meta = done if done is not None else (read_meta(job.target) or {})
    return {
        "adapter": str(job.target),
        "train_examples": len(job.train_pairs),
        "val_examples": len(job.val_pairs),
        "cultures": job.codes,
        "fingerprint": job.fingerprint,
        "skipped": done is not None,
        "train": meta.get("train", {}),
    }


def evaluate_command(overrides: Sequence[str], adapter: str | Path) -> str:
    """The ``evaluate.py`` command for ``adapter``: the model/mode/culture/prompt choices of this run's command-line
    ``overrides``, pasteable as is."""
    keep = ("model", "mode", "cultures", "prompt", "templates", "experiment", "debug", "paths.")
    picked = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").startswith(keep)]
    return " ".join(["python evaluate.py", shlex.quote(f"eval.adapter={adapter}"), *map(shlex.quote, picked)])


def _print_next(settings: TrainSettings, runs: dict[str, dict[str, Any]]) -> None:
    """Where the adapter(s) went and the command that evaluates them."""
    if rank_zero_only.rank != 0:
        return
    for name, run in runs.items():
        print(f"adapter ({name}): {run['adapter']}")
    if settings.task_name != "train":  # the pipeline evaluates it itself
        return
    folder = Path(next(iter(runs.values()))["adapter"])
    target = folder if settings.mode.name == "joint" else folder.parent
    print(f"next: {evaluate_command(settings.overrides, target)}")


def _finish_wandb(loggers: Sequence[Any]) -> None:
    """Close this job's W&B run so the next culture (specific mode) starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and compat.wandb_logger_started(logger):
            logger.experiment.finish()
