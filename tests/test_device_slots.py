"""hydra/launcher=devices: each sweep-job process holds a device slot of its own (a file lock) for its whole life,
and a CPU multirun on two slots runs both jobs, pinned to different slots, at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.utils import device_slots
from culturespa.utils.device_slots import DeviceSlots, claim, pin

REPO = Path(__file__).resolve().parents[1]
OTHER = "import sys; from pathlib import Path; from culturespa.utils.device_slots import claim; "


def test_slots_are_exclusive_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_slots, "_held", {})
    assert claim(tmp_path, 2) == 0
    env = os.environ | {"PYTHONPATH": str(REPO)}
    code = OTHER + f"print(claim(Path({str(tmp_path)!r}), 2))"
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "1"  # slot 0 is held by this process; its lock died with the other process
    code = OTHER + f"print(claim(Path({str(tmp_path)!r}), 1, 0.1))"
    waiting = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):  # the only slot is taken: it waits
        waiting.wait(timeout=2)
    waiting.kill()
    waiting.wait()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert pin(1, 2, "cuda") == "GPU 5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    with pytest.raises(CultureSPAError, match=r"^hydra.callbacks.device_slots.slots=0 must be a positive integer"):
        DeviceSlots(slots=0)


def test_cpu_multirun_runs_one_job_per_slot(tmp_path: Path) -> None:
    out = tmp_path / "answers"
    cmd = [sys.executable, "generate.py", "-m", "hydra/launcher=devices", "hydra.callbacks.device_slots.kind=cpu"]
    cmd += ["stage=answers", "model=tiny_random", "answers.input=wvs", "logger=csv", "answers.limit=3"]
    cmd += ["decoding=logprob", "answers.setting=unaware", "answers.resume_chunk=2", f"answers.output_dir={out}"]
    cmd += ["answers.shard=0/2,1/2", f"hydra.sweep.dir={tmp_path / 'multirun'}", f"paths.log_dir={tmp_path / 'logs'}"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=os.environ | {"WANDB_MODE": "offline"}, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.shard-*.jsonl")) == [
        "unaware.shard-0-of-2.jsonl",
        "unaware.shard-1-of-2.jsonl",
    ]
    logs = "\n".join(p.read_text() for p in (tmp_path / "multirun").rglob("*.log"))
    found = re.findall(r"process (\d+): device slot (\d) of 2 \(CPU, (\d+) threads\)", logs)
    assert len(found) == 2 and {slot for _, slot, _ in found} == {"0", "1"}, logs[-2000:]
    assert len({pid for pid, _, _ in found}) == 2  # two processes at once, one slot each
    cores = len(os.sched_getaffinity(0))
    assert {int(t) for _, _, t in found} == {max(1, cores // 2)}
