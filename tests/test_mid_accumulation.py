"""Issue 22 item 3: a wall-time checkpoint may fall mid-accumulation (one optimiser step of the paper's global batch
outlasts the clock on a CPU); a run killed after it resumes that step where it stopped and ends with the adapter an
uninterrupted run ends with."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from culturespa.train.checkpoints import GRADS_KEY, LAST, KeepTwoCheckpoint, find_resume, resume_line
from culturespa.train.synthetic import write_pairs

# 40 examples, micro-batch 2, 4 micro-batches per optimiser step: 20 micro-batches, 5 steps an epoch; 3 trained
TRAIN = [
    "model=tiny_random",
    "logger=csv",
    "cultures=[USA]",
    "sft.global_batch_size=8",
    "sft.micro_batch_size=2",
    "sft.max_steps=3",
    "data.val_fraction=0",
    "trainer.enable_progress_bar=false",
    "sft.save_every_n_steps=1000",
    "sft.checkpoint_minutes=60",
]


class DueAt(L.Callback):
    """Makes the wall-time clock due after micro-batch ``batch_idx`` (the checkpoint callback runs after this one)."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if args[-1] == self.batch_idx:
            for callback in trainer.callbacks:
                if isinstance(callback, KeepTwoCheckpoint):
                    callback._saved_at = float("-inf")


class KillBefore(L.Callback):
    """A crash as micro-batch ``batch_idx`` starts: mid-accumulation, after the wall-time checkpoint."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, idx: int) -> None:
        if idx == self.batch_idx:
            raise RuntimeError("simulated kill")


def _cfg(make_cfg, pairs: Path, out: Path):  # noqa: ANN001, ANN202
    return make_cfg("train", [*TRAIN, f"sft.pairs_dir={pairs}", f"sft.output_dir={out}", f"logger.csv.save_dir={out}"])


def _logged_losses(out: Path) -> dict[int, float]:
    """``train/loss`` per optimiser step from the CSV logs under ``out`` (a later (re)start's value wins)."""
    losses: dict[int, float] = {}
    for path in sorted(out.rglob("metrics.csv"), key=lambda p: int(p.parent.name.removeprefix("version_"))):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def _adapter(result: dict) -> dict[str, torch.Tensor]:
    return load_file(Path(result["adapters"]["joint"]) / "adapter_model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize(("due", "kill", "step"), [(1, 3, 0), (5, 7, 1)])
def test_kill_mid_accumulation_resumes_the_step_exactly(
    make_cfg, tmp_path: Path, caplog, due: int, kill: int, step: int
) -> None:
    """Saved after 2 of the 4 micro-batches of step ``step`` + 1 (step 0 included: Lightning alone would skip it as
    "already saved at this step"), killed before the 4th, resumed: the same adapter as a straight run."""
    from culturespa.train.run import train

    pairs = write_pairs(tmp_path / "pairs", {"USA": 40})
    straight = train(_cfg(make_cfg, pairs, tmp_path / "a"))
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(_cfg(make_cfg, pairs, tmp_path / "b"), callbacks=[DueAt(due), KillBefore(kill)])
    folder = tmp_path / "b" / "checkpoints" / "joint"
    found = find_resume(folder, True)
    assert found is not None and found.reason == "wall time"
    assert (found.step, found.micro_batches, found.accumulate) == (step, 2, 4)
    grads = torch.load(folder / LAST, weights_only=False)[GRADS_KEY]
    assert grads and all("lora_" in name for name in grads) and any(g.abs().sum() > 0 for g in grads.values())

    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed = train(_cfg(make_cfg, pairs, tmp_path / "b"))
    written = time.strftime("%H:%M", time.localtime(found.written))
    want = f"resuming from step {step} + 2 of 4 micro-batches of step {step + 1} of 3 (checkpoint written {written}, "
    assert want + "reason: wall time)" in caplog.text
    assert resumed["runs"]["joint"]["train"]["global_step"] == 3
    a, b = _adapter(straight), _adapter(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-6, atol=1e-9), key
    assert (
        resumed["runs"]["joint"]["train"]["samples_per_rank"] == straight["runs"]["joint"]["train"]["samples_per_rank"]
    )
    # the step cut by the kill logs the mean loss of all 4 of its micro-batches, not only of the 2 after the resume
    straight_losses, resumed_losses = _logged_losses(tmp_path / "a"), _logged_losses(tmp_path / "b")
    assert sorted(straight_losses) == sorted(resumed_losses) == [0, 1, 2]
    assert resumed_losses[step] == pytest.approx(straight_losses[step], rel=1e-6)


def test_resume_line_names_the_micro_batches_of_a_step_cut_short(tmp_path: Path) -> None:
    from culturespa.train.checkpoints import WHY_KEY

    why = {"reason": "wall time", "written": time.time(), "micro_batches": 12, "accumulate": 32}
    torch.save({"state_dict": {}, "global_step": 0, WHY_KEY: why, GRADS_KEY: {}}, tmp_path / LAST)
    found = find_resume(tmp_path, True)
    assert found is not None and (found.micro_batches, found.accumulate) == (12, 32)
    line = resume_line(found, 40)
    assert line.startswith("resuming from step 0 + 12 of 32 micro-batches of step 1 of 40 (checkpoint written ")
    assert line.endswith(f", reason: wall time): {tmp_path / LAST}")
    assert resume_line(None, 40) == "no checkpoint yet: starting from step 0"


def test_the_first_job_of_a_command_counts_its_start_up(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """`train.py` killed 70 s after it was typed: the minute counts from the command's start (imports, model load),
    not from the first micro-batch; a composed config (tests, the pipeline's stages) keeps the training clock."""
    from hydra.types import RunMode

    from culturespa.train import checkpoints

    monkeypatch.setitem(checkpoints._clock, "command_counted", False)
    make_cfg("train", [])
    assert checkpoints.command_age() == 0.0  # composed: Hydra's mode is None, no command
    monkeypatch.setattr(checkpoints.HydraConfig, "get", staticmethod(lambda: SimpleNamespace(mode=RunMode.RUN)))
    assert checkpoints.command_age() > 0.0  # this process started before the test
    assert checkpoints.command_age() == 0.0  # a later job of the same command: its own clock
