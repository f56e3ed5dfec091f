"""Step (c): one FSDP optimiser step of LoRA through the project's ``trainer=fsdp`` (its strategy, its adapter-only
checkpoint and export), in a subprocess of its own.

Why a subprocess: Lightning starts ranks > 0 by re-running the command line of the process that calls ``fit``; run
from the acceptance process itself, every rank would rerun the whole acceptance run. Here the command line is
``python -m culturespa.acceptance.fsdp SPEC.json``, so each rank runs this one step. On the CPU the project's strategy
refuses FSDP (Lightning and PyTorch FSDP need GPUs), and that refusal is the recorded reason for the skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from culturespa.acceptance.models import Setup
from culturespa.acceptance.record import Skip, StepResult
from culturespa.acceptance.training import base_params, checkpoint_figures, synthetic_pairs, train_overrides
from culturespa.config import compose
from culturespa.errors import CultureSPAError
from culturespa.train.trainer import check_strategy

RESULT_FILE = "fsdp_result.json"


def fsdp_overrides(setup: Setup, out: Path, devices: int) -> list[str]:
    pairs = synthetic_pairs(setup, 2 * devices)
    return [*train_overrides(setup, "lora", out, 1, pairs), "trainer=fsdp", f"trainer.devices={devices}"]


def fsdp_step(setup: Setup, row: StepResult, timeout_s: float) -> None:
    """Run the FSDP step in a subprocess (every visible GPU, at most 2); skip with the stack's reason on the CPU."""
    out = setup.out / "sft_fsdp"
    devices = min(2, torch.cuda.device_count()) if setup.device.startswith("cuda") else 1
    cfg = compose("train", fsdp_overrides(setup, out, devices), output_dir=out / "run")
    try:
        check_strategy(cfg.trainer)  # the project's refusal on CPUs comes from here
    except CultureSPAError as err:
        raise Skip(f"{err} ({'dry run, CPU' if setup.dry else 'no CUDA'})") from None
    row.figures["processes"] = devices
    if devices == 1:
        row.figures["note"] = "one GPU: a 1-process FSDP run (wrap, gathered state dict, checkpoint), no sharding"
    spec = {"setup": {k: str(v) for k, v in vars(setup).items()}, "out": str(out), "devices": devices}
    spec_file = out / "fsdp_spec.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path[1:]])}
    done = subprocess.run(
        [sys.executable, "-m", "culturespa.acceptance.fsdp", str(spec_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    result_file = out / RESULT_FILE
    if done.returncode != 0 or not result_file.is_file():
        raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
    row.figures.update(json.loads(result_file.read_text(encoding="utf-8")))
    row.checks["adapter-only checkpoint"] = bool(row.figures.get("adapter_only"))
    row.checks["adapter exported"] = bool(row.figures.get("adapter_exported"))


def _setup_from(spec: dict[str, Any]) -> Setup:
    raw = spec["setup"]
    ints = ("prompts", "loop_prompts", "max_new_tokens", "train_steps", "eval_questions")
    values: dict[str, Any] = {k: int(raw[k]) for k in ints}
    values.update({k: raw[k] for k in ("device", "dtype", "cache_dir", "wvs_dir")})
    values["tokenizer_dir"] = None if raw["tokenizer_dir"] == "None" else raw["tokenizer_dir"]
    return Setup(out=Path(raw["out"]), dry=raw["dry"] == "True", model_dir=Path(raw["model_dir"]), **values)


def main(spec_file: str) -> None:
    """The subprocess (every rank): one FSDP step through ``train``, then rank 0 writes what it found."""
    from culturespa.train.run import train  # imports Lightning's FSDP pieces: only in the subprocess

    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    setup, out = _setup_from(spec), Path(spec["out"])
    cfg = compose("train", fsdp_overrides(setup, out, int(spec["devices"])), output_dir=out / "run")
    result = train(cfg)
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    figures = checkpoint_figures(out / "checkpoints" / "joint", base_params(setup))
    figures["adapter_exported"] = (Path(result["adapters"]["joint"]) / "adapter_config.json").is_file()
    figures["world_size"] = result["world_size"]
    (out / RESULT_FILE).write_text(json.dumps(figures), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
