"""Sweeps on one node, one job per device: the Hydra callback behind ``hydra/launcher=devices``.

The joblib launcher runs ``slots`` jobs at once, each in one of ``slots`` long-lived worker processes. On its first
job a worker process takes a free slot ``k`` (an exclusive ``flock`` on ``<sweep dir>/.device-slots/slot-k.lock``)
and keeps it until it exits, so two running jobs never share a slot, whichever job numbers joblib hands to which
process (a job-number-derived device would collide as soon as jobs finish out of order). Slot ``k`` pins the process
before anything touches CUDA: ``CUDA_VISIBLE_DEVICES`` = the k-th visible GPU (the job sees one device, ``cuda:0``;
``engine.device=auto`` and Lightning's ``trainer.devices=1`` both land on it); on CPU it gets
``max(1, cores // slots)`` torch threads. A process that loky replaces frees its slot with its lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from culturespa.errors import CultureSPAError

log = logging.getLogger("culturespa.sweeps")
_held: dict[str, Any] = {}  # this process's slot: {"index": k, "handle": open lock file}


class DeviceSlots(Callback):
    """Pin each sweep job's process to a device slot of its own (see the module docstring)."""

    def __init__(self, slots: int = 1, kind: str = "auto") -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise CultureSPAError(f"hydra.callbacks.device_slots.slots={slots!r} must be a positive integer")
        if kind not in ("auto", "cuda", "cpu"):
            raise CultureSPAError(f"hydra.callbacks.device_slots.kind={kind!r} is not one of auto, cuda, cpu")
        self.slots = slots
        self.kind = kind

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir", default="."))) / ".device-slots"
        index = _held["index"] if "index" in _held else claim(folder, self.slots)
        pin(index, self.slots, self.kind)


def claim(folder: Path, slots: int, poll_s: float = 0.5) -> int:
    """Take the first free slot (waiting while every slot is held) and keep its lock for this process's life."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(slots):
            handle = open(folder / f"slot-{index}.lock", "a+", encoding="utf-8")  # noqa: SIM115 - held for life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _held.update(index=index, handle=handle)
            return index
        time.sleep(poll_s)


def pin(index: int, slots: int, kind: str = "auto") -> str:
    """Pin this process to slot ``index``: its GPU (CUDA_VISIBLE_DEVICES) or its share of the CPU cores."""
    if kind == "cuda" or (kind == "auto" and _has_gpu()):
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if "visible" not in _held:
            _held["visible"] = visible[index] if index < len(visible) else str(index)
        os.environ["CUDA_VISIBLE_DEVICES"] = _held["visible"]
        where = f"GPU {_held['visible']}"
    else:
        import torch  # heavy: the job loads it anyway

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // slots))
        where = f"CPU, {torch.get_num_threads()} threads"
    log.info("sweep job in process %d: device slot %d of %d (%s)", os.getpid(), index, slots, where)
    return where


def _has_gpu() -> bool:
    return any(p.name[len("nvidia") :].isdigit() for p in Path("/dev").glob("nvidia*"))
