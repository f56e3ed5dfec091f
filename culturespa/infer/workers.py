"""``engine.devices``: every local device busy, one spawned worker process per device, each on its own shard.

The answers stage, evaluation answering and question generation split their work into shards (``shards.py``: whole
resume chunks; questions: topics) and hand them here as :class:`Job`\\ s. :func:`run_jobs` starts one process per
device (``torch.multiprocessing`` spawn context), pins it (``CUDA_VISIBLE_DEVICES`` = that GPU and
``engine.device=cuda``; on CPU ``torch.set_num_threads(max(1, cores // N))``), sends its output to its own log file
and waits. Each job writes its own shard file with the usual resume chunks, so killing a worker (or the parent, whose
workers then stop too) and rerunning the same command resumes to the same files. A failed job is reported in one line
naming it and its log; the others finish, and nothing written is removed.

``engine.devices``: ``1`` (default: today's one process), ``auto`` (every CUDA device, 1 on CPU), ``N`` (cuda:0..N-1,
or N CPU workers without CUDA or with ``engine.device=cpu``) or a list such as ``[cuda:0,cuda:2]`` / ``[cpu,cpu]``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from culturespa.errors import CultureSPAError
from culturespa.settings import DEVICE_NAME, DEVICES_HINT

log = logging.getLogger("culturespa.workers")
KEY = "engine.devices"
CHAOS_JOB_ENV = "CULTURESPA_CHAOS_JOB"  # tests: only the job of this label keeps CULTURESPA_CHAOS (utils/chaos.py)


def _cuda_count() -> int:
    import torch  # heavy: asked only when engine.devices needs the device count

    return torch.cuda.device_count()


def parse_devices(value: Any, device: str = "auto", cuda_count: Callable[[], int] = _cuda_count) -> list[str]:
    """The devices ``engine.devices=value`` names (``device``: ``engine.device``); one device means one process."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, (list, tuple, ListConfig)):
        return _listed([str(v).strip() for v in value], cuda_count)
    if value == "auto":
        count = 0 if str(device) == "cpu" else cuda_count()
        return [f"cuda:{i}" for i in range(count)] if count > 1 else [str(device)]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CultureSPAError(f"{KEY}={value!r} {DEVICES_HINT}")
    if value == 1:
        return [str(device)]
    count = 0 if str(device) == "cpu" else cuda_count()
    if count == 0:
        return ["cpu"] * value
    if value > count:
        raise CultureSPAError(f"{KEY}={value} but only {count} CUDA device(s) are visible")
    return [f"cuda:{i}" for i in range(value)]


def _listed(names: list[str], cuda_count: Callable[[], int]) -> list[str]:
    shown = "[" + ",".join(names) + "]"
    bad = [n for n in names if not DEVICE_NAME.fullmatch(n)]
    if not names or bad:
        raise CultureSPAError(f"{KEY}={shown} {DEVICES_HINT} ({bad[0] if bad else 'empty list'} is not a device)")
    names = ["cuda:0" if n == "cuda" else n for n in names]
    if any(n.startswith("cuda") for n in names):
        count = cuda_count()
        missing = [n for n in names if n.startswith("cuda") and int(n.split(":")[1]) >= count]
        if missing:
            raise CultureSPAError(f"{KEY}={shown}: {missing[0]} is not one of the {count} visible CUDA device(s)")
    taken = [n for n in names if n != "cpu"]
    if len(set(taken)) != len(taken):
        raise CultureSPAError(f"{KEY}={shown} names a CUDA device twice; one worker per device")
    return names


def devices_of(cfg: Any) -> list[str]:
    """``engine.devices`` of a composed config, checked."""
    value = OmegaConf.select(cfg, KEY, default=1)
    return parse_devices(value, str(OmegaConf.select(cfg, "engine.device", default="auto")))


def worker_devices(cfg: Any) -> list[str]:
    """The devices to spread a stage over: empty when ``engine.devices`` asks for one process (today's behaviour)."""
    devices = devices_of(cfg)
    return devices if len(devices) > 1 else []


@dataclass(frozen=True)
class Job:
    """One shard to run in a worker: ``target(cfg, *args)`` (a module-level function, so it can be pickled) with
    ``cfg`` pinned to the worker's device; its result must be JSON-able."""

    label: str  # names the shard in messages: "answers shard 1/2"
    target: Callable[..., Any]
    cfg: DictConfig
    log: Path
    args: tuple[Any, ...] = ()


def run_jobs(jobs: Sequence[Job], devices: Sequence[str]) -> list[Any]:
    """Run ``jobs`` at most one per device at a time; their results in job order. One line and non-zero exit (a
    :class:`CultureSPAError`) when a job fails: the running ones finish first, nothing is started after it."""
    import torch.multiprocessing as mp  # heavy: torch, only once there is work for workers

    context = mp.get_context("spawn")
    threads = max(1, _cores() // max(1, len(devices)))
    free, running, failed = list(devices), {}, []
    queue = list(enumerate(jobs))
    try:
        while queue or running:
            while queue and free and not failed:
                index, job = queue.pop(0)
                process = _start(context, job, free.pop(0), threads)
                running[process.sentinel] = (index, job, process)
            if not running:
                break
            for sentinel in wait(list(running)):
                index, job, process = running.pop(sentinel)
                process.join()
                free.append(process.device)  # type: ignore[attr-defined]
                if process.exitcode != 0:
                    failed.append((job, process.exitcode))
                    log.info("%s failed (exit code %s); see %s", job.label, process.exitcode, job.log)
    finally:
        for _, _, process in running.values():  # the parent is stopping: so do its workers
            process.terminate()
            process.join()
    if failed:
        job, code = failed[0]
        more = f" ({len(failed) - 1} more failed)" if len(failed) > 1 else ""
        raise CultureSPAError(f"{job.label} failed (exit code {code}); see its log {job.log}{more}")
    return [_result(job) for job in jobs]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start(context: Any, job: Job, device: str, threads: int) -> Any:
    """Spawn the worker of ``job`` on ``device``; its config travels resolved (the child has no Hydra context)."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    _result_path(job).unlink(missing_ok=True)
    plain = OmegaConf.to_container(job.cfg, resolve=True)
    visible = _visible(device)
    spec = (job.target, plain, job.args, device, visible, threads, str(job.log), str(_result_path(job)), job.label)
    process = context.Process(target=_worker_main, args=spec, name=job.label, daemon=False)
    process.start()
    process.device = device  # type: ignore[attr-defined]
    log.info("%s: worker %d on %s (log %s)", job.label, process.pid, device, job.log)
    return process


def _visible(device: str) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` of a worker on ``device`` (the parent's own list mapped), None on CPU."""
    if not device.startswith("cuda"):
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    parent = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return parent[index] if index < len(parent) else str(index)


def _result_path(job: Job) -> Path:
    return job.log.with_name(job.log.name + ".result.json")


def _result(job: Job) -> Any:
    path = _result_path(job)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _worker_main(
    target: Callable[..., Any],
    plain: dict[str, Any],
    args: tuple[Any, ...],
    device: str,
    visible: str | None,
    threads: int,
    log_file: str,
    result_file: str,
    label: str,
) -> None:
    """In the spawned worker: pin the device, log to its file, run the target and store its result."""
    if os.environ.get(CHAOS_JOB_ENV, label) != label:
        os.environ.pop("CULTURESPA_CHAOS", None)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible  # before torch touches CUDA: the worker sees only its GPU
    stream = open(log_file, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - the worker's stdout/stderr
    os.dup2(stream.fileno(), 1)
    os.dup2(stream.fileno(), 2)
    sys.stdout = sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    threading.Thread(target=_follow_parent, args=(os.getppid(),), daemon=True).start()
    import torch  # heavy: the worker loads the model anyway

    torch.set_num_threads(threads)
    cfg = OmegaConf.create(plain)
    with open_dict(cfg):
        cfg.engine.device = "cuda" if visible is not None else device
        cfg.engine.devices = 1  # the worker is one process on one device
    OmegaConf.set_struct(cfg, True)
    log.info("worker %d: %s with %d torch threads", os.getpid(), cfg.engine.device, torch.get_num_threads())
    try:
        result = target(cfg, *args)
    except CultureSPAError as err:
        log.error("%s", err)
        sys.exit(1)
    tmp = Path(result_file + ".tmp")
    tmp.write_text(json.dumps(result, default=str), encoding="utf-8")
    tmp.replace(result_file)


def _follow_parent(parent: int) -> None:
    """A worker whose parent died stops at once: a rerun would otherwise write the same shard files beside it."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
