"""Step (b): LoRA and QLoRA SFT through the project's own training code (``train.run.train`` on a composed config:
``SFTModule``, the batch plan, the Trainer, the adapter-only checkpoints and the adapter export), with the throughput
callback's figures; and the pieces step (c), FSDP, shares with its subprocess (``fsdp_step``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch

from culturespa.acceptance.models import Setup
from culturespa.acceptance.record import StepResult
from culturespa.config import compose
from culturespa.train.run import train
from culturespa.train.synthetic import write_pairs
from culturespa.train.throughput import ThroughputMonitor

MICRO_BATCH = 4
PROBE_IDS = torch.arange(5, 37).reshape(2, 16)  # fixed token ids for the save/reload logits check


class LossProbe(L.Callback):
    """Keeps each step's loss on the device (read once at the end) and the trained model's logits on ``PROBE_IDS``."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.logits: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        pl_module.model.eval()
        with torch.no_grad():
            self.logits = pl_module.model(input_ids=PROBE_IDS.to(pl_module.device)).logits.float().cpu()

    def curve(self) -> list[float]:
        return [float(x) for x in torch.stack(self.losses).float().cpu()] if self.losses else []


def train_overrides(setup: Setup, peft: str, out: Path, steps: int, pairs: Path) -> list[str]:
    """The composed ``train`` config's overrides: the saved model, ``peft``, one culture, ``steps`` optimiser steps."""
    node = setup.model_node()
    gpu = setup.device.startswith("cuda")
    overrides = [
        "model=llama3_8b_instruct",  # an hf-source model node, re-pointed at the saved folder below
        f"model.name={node['name']}",
        f"model.path={node['path']}",
        f"model.dtype={setup.dtype}",
        "model.chat_template=chatml",
        f"peft={peft}",
        "logger=csv",
        f"logger.csv.save_dir={out}",
        "cultures=[USA]",
        f"paths.wvs_dir={setup.wvs_dir}",
        f"paths.cache_dir={setup.cache_dir}",
        f"paths.log_dir={out}/logs",
        f"paths.work_dir={out}/work",
        f"sft.pairs_dir={pairs}",
        f"sft.output_dir={out}",
        f"sft.global_batch_size={MICRO_BATCH}",
        f"sft.micro_batch_size={MICRO_BATCH}",
        f"sft.max_steps={steps}",
        "sft.lr=1e-3",  # a quick learner, so a 20-step run shows the loss falling
        f"sft.save_every_n_steps={max(1, steps // 2)}",
        "data.val_fraction=0",
        f"sft.accelerator={'gpu' if gpu else 'cpu'}",
        f"sft.precision={'bf16-mixed' if gpu else '32-true'}",
        f"trainer.log_every_n_steps={max(1, steps // 4)}",
        "trainer.enable_progress_bar=false",
        "callbacks.throughput=null",  # the run passes its own monitor, to read its figures
    ]
    if peft == "qlora":
        overrides.append(f"peft.compute_dtype={setup.dtype}")
    return overrides


def synthetic_pairs(setup: Setup, steps: int) -> Path:
    """Enough hand-made USA pairs for ``steps`` micro-batches (the generate stage is not part of this run)."""
    return write_pairs(setup.out / "pairs", {"USA": MICRO_BATCH * steps + MICRO_BATCH})


def checkpoint_figures(folder: Path, base_count: int) -> dict[str, Any]:
    """Size and contents of the newest checkpoint: adapter-only means every weight in it is a LoRA weight."""
    path = folder / "last.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    weights = sum(v.numel() for v in state.values())
    return {
        "ckpt_mib": path.stat().st_size / 2**20,
        "ckpt_tensors": len(state),
        "adapter_only": bool(state) and all("lora_" in k for k in state) and weights < 0.1 * base_count,
    }


def sft_step(setup: Setup, peft: str, row: StepResult, keep: dict[str, Any]) -> None:
    """One SFT run of ``setup.train_steps`` steps; its figures go to ``row``, the adapter and probe logits to
    ``keep`` (for the evaluation step's reload check)."""
    out = setup.out / f"sft_{peft}"
    pairs = synthetic_pairs(setup, setup.train_steps)
    cfg = compose("train", train_overrides(setup, peft, out, setup.train_steps, pairs), output_dir=out / "run")
    monitor, probe = ThroughputMonitor(), LossProbe()
    result = train(cfg, callbacks=[monitor, probe])
    curve = probe.curve()
    last = monitor.history[-1] if monitor.history else {}
    row.figures.update({k.split("/", 1)[1]: v for k, v in last.items() if k != "step"})
    row.figures["peak"] = monitor.peak.label if monitor.peak else None
    row.figures["steps"] = len(curve)
    row.figures["loss_first_last"] = [round(curve[0], 4), round(curve[-1], 4)] if curve else None
    row.checks["loss falls"] = len(curve) >= 4 and sum(curve[-3:]) < sum(curve[:3])
    row.checks["figures logged"] = bool(last) and all(v > 0 for v in last.values())
    row.figures.update(checkpoint_figures(out / "checkpoints" / "joint", base_params(setup)))
    row.checks["adapter-only checkpoint"] = bool(row.figures["adapter_only"])
    adapter = Path(result["adapters"]["joint"])
    row.checks["adapter exported"] = (adapter / "adapter_config.json").is_file()
    keep[peft] = {"adapter": adapter, "logits": probe.logits, "cfg": cfg}


def base_params(setup: Setup) -> int:
    """Parameters of the saved model, from its config (no load)."""
    config = json.loads((Path(str(setup.model_dir)) / "config.json").read_text())
    hidden, layers, inner = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inner
    return layers * per_layer + 2 * config["vocab_size"] * hidden
