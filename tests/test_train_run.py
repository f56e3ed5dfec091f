"""End-to-end SFT runs on tiny_random (and one on the embedded model): adapter files and round-trip, exact resume,
NaN stop, culture-specific runs, DDP with 2 CPU processes, and one-line CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from culturespa.errors import CultureSPAError
from culturespa.train.module import SFTModule
from culturespa.train.run import train
from culturespa.train.synthetic import write_pairs

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "model=tiny_random",
    "logger=csv",
    "cultures=[USA,CHN]",
    "sft.global_batch_size=4",
    "sft.micro_batch_size=2",
    "sft.save_every_n_steps=2",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"), {"USA": 24, "CHN": 24, "KEN": 6})


def overrides(pairs: Path, out: Path, *extra: str) -> list[str]:
    csv = [] if "logger=wandb" in extra else [f"logger.csv.save_dir={out}"]
    return [*COMMON, f"sft.pairs_dir={pairs}", f"sft.output_dir={out}", *csv, *extra]


class Probe(L.Callback):
    """Logits of the trained PEFT model at the end of training, for the save/load round-trip."""

    ids = torch.randint(3, 2000, (2, 9), generator=torch.Generator().manual_seed(0))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.model.eval()
        with torch.no_grad():
            self.logits = pl_module.model(input_ids=self.ids).logits.clone()


class KillAt(L.Callback):
    """Simulates a crash right after the checkpoint of optimiser step ``step`` was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")


@pytest.mark.slow
def test_joint_run_roundtrip_and_exact_resume(make_cfg, tmp_path: Path, pairs: Path) -> None:
    from peft import PeftModel

    from culturespa.models.loader import ModelSpec, load_model

    probe = Probe()
    straight_cfg = make_cfg("train", overrides(pairs, tmp_path / "straight", "sft.max_steps=4"))
    result = train(straight_cfg, callbacks=[probe])
    adapter = Path(result["adapters"]["joint"])
    names = {p.name for p in adapter.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "prompt_style.yaml",
        "config.yaml",
        "culturespa.json",
    } <= names
    meta = json.loads((adapter / "culturespa.json").read_text())
    assert meta["base_model"] == "tiny_random" and meta["mode"] == "joint" and meta["cultures"] == ["USA", "CHN"]
    assert meta["peft"]["r"] == 8 and meta["train"]["global_step"] == 4 and meta["train"]["samples_per_rank"] == [16]
    assert result["runs"]["joint"]["train_examples"] == 46 and result["runs"]["joint"]["val_examples"] == 2
    header = (
        (tmp_path / "straight" / "csv" / "joint" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    )
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"} <= set(header)

    # plain PEFT loading on the base gives the trained model's logits exactly
    base = load_model(ModelSpec.from_config(straight_cfg.model), straight_cfg.paths.cache_dir)
    loaded = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=Probe.ids).logits, probe.logits)

    # 2 steps, crash, resume from last.ckpt for the last 2 steps: the same adapter as 4 steps straight
    killed_cfg = make_cfg("train", overrides(pairs, tmp_path / "killed", "sft.max_steps=4"))
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(killed_cfg, callbacks=[KillAt(2)])
    ckpt = torch.load(tmp_path / "killed" / "checkpoints" / "joint" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["state_dict"]
    assert all("lora_" in key for key in ckpt["state_dict"])  # never the frozen base
    assert not (tmp_path / "killed" / "adapter").exists()
    resumed = train(killed_cfg)
    assert resumed["runs"]["joint"]["train"]["global_step"] == 4
    want = load_file(adapter / "adapter_model.safetensors")
    got = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    # a finished job is not trained again
    assert train(killed_cfg)["runs"]["joint"]["skipped"] is True


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(make_cfg, tmp_path: Path, pairs: Path, monkeypatch) -> None:
    calls = {"n": 0}
    original = SFTModule.compute_loss

    def poisoned(self: SFTModule, batch: dict) -> torch.Tensor:
        loss = original(self, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:  # first micro-batch of optimiser step 3 (2 micro-batches per step)
                return loss * float("nan")
        return loss

    monkeypatch.setattr(SFTModule, "compute_loss", poisoned)
    cfg = make_cfg("train", overrides(pairs, tmp_path, "sft.max_steps=6", "data.val_fraction=0"))
    with pytest.raises(
        CultureSPAError, match=r"loss is nan at optimiser step 2\b.* last good checkpoint is kept in"
    ) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    ckpt = torch.load(tmp_path / "checkpoints" / "joint" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert not (tmp_path / "adapter").exists()


@pytest.mark.slow
def test_specific_mode_one_adapter_and_wandb_run_per_culture(make_cfg, tmp_path: Path, pairs: Path) -> None:
    extra = [
        "mode=specific",
        "cultures=[USA,KEN]",
        "logger=wandb",
        f"logger.wandb.save_dir={tmp_path}",
        "sft.max_steps=1",
        "data.val_fraction=0",
    ]
    cfg = make_cfg("train", overrides(pairs, tmp_path, *extra))
    result = train(cfg)
    assert set(result["adapters"]) == {"USA", "KEN"}
    for code, count in (("USA", 24), ("KEN", 6)):
        meta = json.loads((tmp_path / "adapters" / code / "culturespa.json").read_text())
        assert meta["mode"] == "specific" and meta["cultures"] == [code] and meta["train_examples"] == count
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2


@pytest.mark.slow
def test_ddp_two_cpu_processes_single_run(tmp_path: Path, pairs: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "train.py",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "model=tiny_random",
        "logger=csv",
        "cultures=[USA,CHN]",
        f"sft.pairs_dir={pairs}",
        f"sft.output_dir={out}",
        "sft.max_steps=2",
        "sft.global_batch_size=4",
        "sft.micro_batch_size=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = os.environ | {"WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "adapter" / "culturespa.json").read_text())
    # both ranks trained: world size 2, accumulation 4 / (1 x 2) = 2, so 2 steps x 2 micro-batches each
    assert meta["train"]["world_size"] == 2 and meta["train"]["samples_per_rank"] == [4, 4]
    assert [p.name for p in out.iterdir() if "adapter" in p.name] == ["adapter"]  # saved once, no leftovers


def test_cli_missing_pairs_is_one_line_error(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", {"USA": 3})
    cmd = [
        sys.executable,
        "train.py",
        "model=tiny_random",
        "logger=none",
        "cultures=[USA,CHN]",
        f"sft.pairs_dir={tmp_path / 'pairs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "CHN.jsonl: pairs file for culture CHN not found" in lines[-1]
    assert "Loading weights" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_embedded_model_short_run(make_cfg, tmp_path: Path, pairs: Path) -> None:
    cfg = make_cfg(
        "train",
        [
            "model=smollm2_135m",
            "logger=none",
            "cultures=[USA]",
            f"sft.pairs_dir={pairs}",
            f"sft.output_dir={tmp_path}",
            "sft.max_steps=2",
            "sft.global_batch_size=1",
            "sft.micro_batch_size=1",
            "data.val_fraction=0",
            "data.cutoff_len=160",
            "trainer.enable_progress_bar=false",
        ],
    )
    result = train(cfg)
    train_info = result["runs"]["joint"]["train"]
    assert train_info["global_step"] == 2
    loss = train_info["metrics"]["train/loss"]
    assert 0 < loss < 20
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 1_000_000  # r=8 on 30 layers x 7
