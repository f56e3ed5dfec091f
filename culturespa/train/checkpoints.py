"""Checkpoints (adapter + optimiser state, for resuming) and the final adapter folder (what later stages load).

Checkpoints come every ``sft.save_every_n_steps`` optimiser steps and every ``sft.checkpoint_minutes`` of training
(whichever comes first); each records when and why it was written, and a resumed run says which one it continues from.
A wall-time checkpoint may fall mid-accumulation (one optimiser step of the paper's global batch can outlast the
clock on a CPU): it then also holds the gradients accumulated so far, and resuming continues that step exactly. For
the first job of a command the clock counts from the command's start, not from the model's load: a kill a minute and
some seconds after typing ``python train.py ...`` finds a checkpoint.

The final folder is written by rank 0 from inside the training process (so it works with ``ddp_spawn`` too) into a
temporary sibling and renamed into place: a failed or killed run never leaves a half-written adapter behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint

from culturespa import compat
from culturespa.errors import CultureSPAError
from culturespa.prompts.builder import PromptStyle
from culturespa.stages.lineage import ADAPTER_META_FILE as META_FILE
from culturespa.train.datamodule import micro_batches_started
from culturespa.train.strategies import gathered_model_state
from culturespa.utils import chaos
from culturespa.utils.perms import fix_tree

log = logging.getLogger("culturespa.train")
CONFIG_FILE = "config.yaml"
LAST = "last.ckpt"
PREVIOUS = "previous.ckpt"
# {"reason": "steps" | "wall time", "written": unix time, "micro_batches": of the step under way, "accumulate": per
# step}, in every checkpoint; micro_batches > 0 only mid-accumulation, whose gradients then travel under GRADS_KEY
WHY_KEY = "culturespa_checkpoint"
GRADS_KEY = "culturespa_accumulated_grads"  # {parameter name: .grad} of the trainable parameters, mid-accumulation
_clock = {"command_counted": False}  # the command's start-up counts towards the first job's clock only


def command_age() -> float:
    """Seconds since this command's process started (Linux ``/proc``), for the first training job of a ``@hydra.main``
    command (its Hydra mode is set; ``compose`` leaves it None); 0 otherwise (a library call or a test, whose process
    is not the user's command, or a later job)."""
    if _clock["command_counted"] or not HydraConfig.initialized() or HydraConfig.get().mode is None:
        return 0.0
    _clock["command_counted"] = True
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class KeepTwoCheckpoint(ModelCheckpoint):
    """``last.ckpt`` plus the one before it (``previous.ckpt``): Lightning writes ``last.ckpt`` in place, so a kill or a
    full disk mid-write leaves it truncated, and resuming then falls back to ``previous.ckpt``.

    Besides every ``every_n_train_steps`` steps it saves when ``minutes`` of training have passed since the last save
    (None: by steps only). In a single-process run the clock is read after every micro-batch: a save mid-accumulation
    carries the micro-batches of the step consumed so far and their accumulated gradients (:data:`GRADS_KEY`), which
    are put back before the first micro-batch of the resumed run. With several processes each rank holds its own
    accumulated gradients, so there the clock is read only where an optimiser step has just finished, and rank 0's
    decision is broadcast so every rank saves together.
    """

    def __init__(self, *args: Any, minutes: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.minutes = minutes
        self._step_seen = -1
        self._saved_at = time.monotonic()
        self._reason = "steps"
        self._pending_grads: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._step_seen = int(trainer.global_step)
        if self._pending_grads:  # resumed mid-accumulation: no step-labelled save of the step it resumed at
            compat.checkpoint_mark_saved(self, int(trainer.global_step))
        restore_grads(pl_module, self._pending_grads)
        self._pending_grads = {}
        # the clock starts with training, after the model has loaded; the first job of a command counts its start-up
        self._saved_at = time.monotonic() - command_age()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._pending_grads = dict(checkpoint.get(GRADS_KEY) or {})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        stepped = int(trainer.global_step) != self._step_seen
        self._step_seen = int(trainer.global_step)
        single = trainer.world_size == 1  # mid-accumulation saves: one process only (see the class docstring)
        if (stepped or single) and self._wall_time_due(trainer):
            mid = mid_accumulation(trainer)
            if self._may_save_mid(trainer) if mid else not compat.checkpoint_should_skip(self, trainer):
                self._reason = "wall time"
                compat.checkpoint_save_last(self, trainer)
        self._reason = "steps"
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)  # skips a step saved just above

    @staticmethod
    def _may_save_mid(trainer: L.Trainer) -> bool:
        """Lightning's own check minus "already saved at this step": step 0, or a step outlasting two clock periods,
        has its mid-accumulation saves too."""
        return not trainer.fast_dev_run and not trainer.sanity_checking  # mid-accumulation: one process (caller)

    def _wall_time_due(self, trainer: L.Trainer) -> bool:
        if self.minutes is None:
            return False
        due = time.monotonic() - self._saved_at >= self.minutes * 60.0
        return bool(trainer.strategy.broadcast(due))  # ranks' clocks differ: all follow rank 0 (a collective)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        why: dict[str, Any] = {"reason": self._reason, "written": time.time()}
        if mid_accumulation(trainer) and trainer.world_size == 1:  # several ranks: each its own grads (class doc)
            accumulate = int(trainer.accumulate_grad_batches)
            why.update(micro_batches=consumed_micro_batches(trainer), accumulate=accumulate)
            checkpoint[GRADS_KEY] = {
                name: p.grad.detach().cpu() for name, p in pl_module.named_parameters() if p.grad is not None
            }
        checkpoint[WHY_KEY] = why
        return super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Every file Lightning's callback writes: rotate ``last.ckpt`` to ``previous.ckpt`` before, restart the clock
        after. Overrides Lightning's private write (no public hook runs around it; ``tests/test_compat.py`` checks
        that the name, its arguments and its use by every save still hold)."""
        path = Path(filepath)
        if path.name == LAST and trainer.is_global_zero and path.is_file():
            os.replace(path, path.with_name(PREVIOUS))
        compat.checkpoint_write(self, trainer, filepath)
        self._saved_at = time.monotonic()  # any save, by steps or by time, restarts the clock
        if path.name == LAST and trainer.is_global_zero:
            chaos.point("ckpt.saved")
            chaos.point("ckpt.torn", lambda: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]))


def consumed_micro_batches(trainer: L.Trainer) -> int:
    """Micro-batches of the optimiser step under way already trained on (0 on a step boundary), by Lightning's own
    counter: its batch progress within the epoch, whose remainder decides when the optimiser steps."""
    return micro_batches_started(trainer) % max(1, int(trainer.accumulate_grad_batches))


def mid_accumulation(trainer: L.Trainer) -> bool:
    """Whether the micro-batch just ended left gradients waiting for more (Lightning's accumulation test: not after
    the epoch's last batch, which always steps)."""
    return bool(consumed_micro_batches(trainer) and compat.lightning_should_accumulate(trainer))


def restore_grads(pl_module: L.LightningModule, grads: dict[str, torch.Tensor]) -> None:
    """Put a mid-accumulation checkpoint's gradients back into their parameters (none: nothing to do)."""
    if not grads:
        return
    params = dict(pl_module.named_parameters())
    missing = sorted(set(grads) - set(params))
    if missing:
        raise CultureSPAError(
            f"checkpoint holds accumulated gradients of {missing[0]}, which this model lacks; rerun with "
            "sft.resume=false"
        )
    for name, grad in grads.items():
        params[name].grad = grad.to(device=params[name].device, dtype=params[name].dtype)


def checkpoint_callback(folder: str | Path, every_n_steps: int, minutes: float | None = None) -> ModelCheckpoint:
    """Writes ``last.ckpt`` every ``every_n_steps`` optimiser steps and every ``minutes`` of training (``sft.
    checkpoint_minutes``; None = by steps only), keeping the one before (no top-k history)."""
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0):
        raise CultureSPAError(
            f"sft.checkpoint_minutes={minutes!r} must be a positive number of minutes, or null to checkpoint by steps only"
        )
    return KeepTwoCheckpoint(
        dirpath=str(folder),
        filename="step-{step}",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=max(1, int(every_n_steps)),
        save_on_train_epoch_end=False,
        minutes=None if minutes is None else float(minutes),
    )


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run continues from, the optimiser step it holds, when it was written and why (``steps`` or
    ``wall time``; None for checkpoints older than the record)."""

    path: str
    step: int
    written: float | None = None
    reason: str | None = None
    micro_batches: int = 0  # of the step after ``step`` already trained on (a wall-time save mid-accumulation)
    accumulate: int = 0  # micro-batches per optimiser step (recorded with ``micro_batches``)


def _read_resume(path: Path) -> Resume:
    """The :class:`Resume` of a checkpoint, or an exception when it is truncated, empty or not a checkpoint."""
    state = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
    if not isinstance(state, dict) or "state_dict" not in state or "global_step" not in state:
        raise ValueError("not a Lightning checkpoint")
    why = state.get(WHY_KEY) if isinstance(state.get(WHY_KEY), dict) else {}
    written = why.get("written", path.stat().st_mtime)
    micro, per_step = int(why.get("micro_batches", 0) or 0), int(why.get("accumulate", 0) or 0)
    return Resume(str(path), int(state["global_step"]), float(written), why.get("reason"), micro, per_step)


def resume_line(found: Resume | None, total: int, resume: bool = True) -> str:
    """What a starting run says about where it starts: from step 0 (and why) or from which checkpoint."""
    if found is None:
        return "no checkpoint yet: starting from step 0" if resume else "sft.resume=false: starting from step 0"
    details = []
    if found.written is not None:
        stamp = datetime.fromtimestamp(found.written)
        details.append(
            f"checkpoint written {stamp:%H:%M}"
            if stamp.date() == datetime.now().date()
            else f"checkpoint written {stamp:%Y-%m-%d %H:%M}"
        )
    if found.reason:
        details.append(f"reason: {found.reason}")
    about = f" ({', '.join(details)})" if details else ""
    where = f"step {found.step}"
    if found.micro_batches:
        where += f" + {found.micro_batches} of {found.accumulate} micro-batches of step {found.step + 1}"
    return f"resuming from {where} of {total}{about}: {found.path}"


def find_resume(folder: str | Path, resume: bool) -> Resume | None:
    """The newest readable checkpoint in ``folder`` (``last.ckpt``, else ``previous.ckpt`` with a warning).

    An unreadable ``last.ckpt`` is moved aside (``last.ckpt.corrupt``) so the next save cannot rotate it over the good
    ``previous.ckpt``. None when there is nothing to resume; a one-line error when no checkpoint is readable.
    """
    if not resume:
        return None
    folder = Path(folder)
    present = [folder / name for name in (LAST, PREVIOUS) if (folder / name).is_file()]
    bad: list[str] = []
    for path in present:
        try:
            found = _read_resume(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file: truncated zip, empty, pickle garbage
            log.warning("%s: unreadable checkpoint (%s); trying the previous one", path, str(err).splitlines()[0][:120])
            bad.append(path.name)
            continue
        if bad:
            log.warning("resuming from %s (step %d) instead of the unreadable %s", path, found.step, ", ".join(bad))
            if (folder / LAST).is_file() and LAST in bad:
                os.replace(folder / LAST, folder / (LAST + ".corrupt"))
        return found
    if present:
        raise CultureSPAError(
            f"{folder}: no readable checkpoint ({', '.join(bad)} truncated or corrupt); delete the folder to start "
            "over, or rerun with sft.resume=false"
        )
    return None


class ValidationLedger(L.Callback):
    """Makes sure the final weights are validated even when a kill fell between the last checkpoint and validation.

    The last optimiser step at which validation finished travels in every checkpoint. When training ends on an epoch
    boundary (where Lightning validates) and that step was never validated (the run was killed after the epoch's last
    checkpoint, and on resume Lightning treats the epoch as done), the validation set is evaluated here, the same
    batch-size-weighted mean loss as ``val/loss``, so the adapter metadata has it.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.last_validated = -1

    def state_dict(self) -> dict[str, Any]:
        return {"last_validated": self.last_validated}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_validated = int(state_dict.get("last_validated", -1))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            chaos.point("val.start")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last_validated = int(trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = int(trainer.global_step)
        if step == 0 or step % self.steps_per_epoch or step == self.last_validated or not trainer.enable_validation:
            return
        loader = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else None
        if loader is None:
            return
        total = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                size = int(batch["input_ids"].shape[0])
                total += torch.tensor(
                    [float(pl_module.compute_loss(batch)) * size, size], dtype=torch.float64, device=pl_module.device
                )
        pl_module.train(was_training)
        total = pl_module.all_gather(total).reshape(-1, 2).sum(0)  # collective: every rank takes part
        if total[1] <= 0:
            return
        loss = torch.tensor(float(total[0] / total[1]))
        trainer.callback_metrics["val/loss"] = loss
        self.last_validated = step
        if trainer.is_global_zero:
            log.info("validation of step %d was lost to an interruption; val/loss = %.4f", step, float(loss))
            for logger in trainer.loggers:
                logger.log_metrics({"val/loss": float(loss)}, step=step)


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
        check = getattr(pl_module, "check_finite", None)
        if callable(check):  # steps since the last logging step were not checked yet: never export a broken adapter
            check()
        seen = torch.tensor([int(getattr(pl_module, "samples_seen", 0))], device=pl_module.device)
        per_rank = pl_module.all_gather(seen).reshape(-1).tolist()  # collective: every rank takes part
        state = gathered_model_state(trainer)  # FSDP: the adapter's tensors, whole on rank 0 (collective); else None
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
            fix_tree(tmp)  # mkdtemp made it 0700: honour the umask so a shared group can read the adapter
            replace_dir(tmp, self.target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
