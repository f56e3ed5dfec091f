"""Issue 22 item 4: ``kill -9`` after the first wall-time checkpoint, then the same command again: the rerun says it
resumes from that checkpoint's step (reason: wall time) and finishes from there, not from step 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from culturespa.config import compose
from culturespa.train.checkpoints import find_resume
from culturespa.train.synthetic import write_pairs

REPO = Path(__file__).resolve().parents[1]
STEPS = 60  # far more than run before the kill: the kill always lands mid-training


def test_default_checkpoints_come_within_a_minute() -> None:
    """A kill 70 s into `train.py mode=joint cultures=all` must find a checkpoint: the wall-time default is at most
    one minute (an adapter-only checkpoint of the 135M model's LoRA is a few MB, written in well under a second)."""
    minutes = compose("train", []).sft.checkpoint_minutes
    assert minutes is not None and 0 < minutes <= 1


def _command(tmp_path: Path) -> list[str]:
    args = ["model=tiny_random", "logger=csv", "cultures=[USA]", f"sft.pairs_dir={tmp_path / 'pairs'}"]
    args += [f"sft.max_steps={STEPS}", "sft.global_batch_size=2", "sft.micro_batch_size=2", "data.val_fraction=0"]
    args += ["sft.save_every_n_steps=100000", "sft.checkpoint_minutes=0.05", "trainer.enable_progress_bar=false"]
    return [sys.executable, str(REPO / "train.py"), *args, f"sft.output_dir={tmp_path / 'x'}", "hydra.run.dir=run"]


@pytest.mark.slow
def test_kill_after_a_wall_time_checkpoint_resumes_from_it(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", {"USA": 40})
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    folder = tmp_path / "x" / "checkpoints" / "joint"
    proc = subprocess.Popen(
        _command(tmp_path), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (folder / "last.ckpt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # mid-write or not: the rerun takes the newest readable checkpoint
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished (or failed) before its first wall-time checkpoint"
    found = find_resume(folder, resume=True)
    assert found is not None and found.reason == "wall time" and 0 < found.step < STEPS

    again = subprocess.run(_command(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    console = again.stdout + again.stderr
    assert again.returncode == 0, console[-3000:]
    line = re.search(
        rf"resuming from step (\d+) of {STEPS} \(checkpoint written \d\d:\d\d, reason: wall time\)", console
    )
    assert line and int(line.group(1)) == found.step, console[-3000:]
    assert "starting from step 0" not in console
    assert (tmp_path / "x" / "adapter" / "adapter_model.safetensors").is_file()
