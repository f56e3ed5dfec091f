"""Checkpoints (adapter + optimiser state, for resuming) and the final adapter folder (what later stages load).

The final folder is written by rank 0 from inside the training process (so it works with ``ddp_spawn`` too) into a
temporary sibling and renamed into place: a failed or killed run never leaves a half-written adapter behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from culturespa.prompts.builder import PromptStyle
from culturespa.train.strategies import gathered_model_state

META_FILE = "culturespa.json"
CONFIG_FILE = "config.yaml"
LAST = "last.ckpt"


def checkpoint_callback(folder: str | Path, every_n_steps: int) -> ModelCheckpoint:
    """Writes ``last.ckpt`` every ``every_n_steps`` optimiser steps (no top-k history: adapters are small but many)."""
    return ModelCheckpoint(
        dirpath=str(folder),
        filename="step-{step}",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=max(1, int(every_n_steps)),
        save_on_train_epoch_end=False,
    )


def resume_path(folder: str | Path, resume: bool) -> str | None:
    last = Path(folder) / LAST
    return str(last) if resume and last.is_file() else None


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def replace_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing target is swapped out first and removed only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class AdapterExport(L.Callback):
    """At the end of a successful fit: gather per-rank sample counts, then rank 0 saves the adapter folder."""

    def __init__(self, target: str | Path, style: PromptStyle, config_yaml: str, meta: dict[str, Any]) -> None:
        self.target = Path(target)
        self.style = style
        self.config_yaml = config_yaml
        self.meta = meta

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seen = torch.tensor([int(getattr(pl_module, "samples_seen", 0))], device=pl_module.device)
        per_rank = pl_module.all_gather(seen).reshape(-1).tolist()  # collective: every rank takes part
        state = gathered_model_state(trainer)  # FSDP: full tensors of the sharded model (collective); else None
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        meta = dict(self.meta)
        meta["train"] = {
            "global_step": int(trainer.global_step),
            "epochs_completed": int(trainer.current_epoch),
            "world_size": int(trainer.world_size),
            "samples_per_rank": [int(x) for x in per_rank],
            "metrics": metrics,
        }
        self.target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        try:
            pl_module.model.save_pretrained(str(tmp), **({} if state is None else {"state_dict": state}))
            self.style.save(tmp)
            (tmp / CONFIG_FILE).write_text(self.config_yaml, encoding="utf-8")
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            replace_dir(tmp, self.target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
