"""Throughput callback: the MFU arithmetic and peak tables, and a short CPU fit where the figures are finite, positive
and logged at logging steps only."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from culturespa.config import compose
from culturespa.train.synthetic import write_pairs
from culturespa.train.throughput import (
    ThroughputMonitor,
    cpu_peak,
    gpu_peak,
    matmul_params,
    mfu,
    precision_kind,
    train_flops_per_token,
)
from culturespa.train.trainer import build_callbacks


def test_mfu_arithmetic() -> None:
    # an 8B-class model (7.5e9 matmul parameters) at 2,000 tokens/s on one H100 in bf16
    per_token = train_flops_per_token(7_500_000_000)
    assert per_token == 4.5e10
    assert mfu(2000.0, per_token, gpu_peak("NVIDIA H100 80GB HBM3", "bf16").flops) == pytest.approx(9e13 / 989e12)
    # attention term: 12 x layers x hidden x sequence
    assert train_flops_per_token(10, layers=2, hidden=4, seq_len=8.0) == 60 + 12 * 2 * 4 * 8
    assert mfu(1.0, 1.0, None) is None


def test_peak_tables() -> None:
    assert gpu_peak("NVIDIA H200", "bf16").flops == 989e12
    assert gpu_peak("NVIDIA A100-SXM4-80GB", "fp32").flops == 19.5e12
    assert gpu_peak("NVIDIA H100 PCIe", "bf16").flops == 756e12  # the specific entry wins over "H100"
    assert gpu_peak("NVIDIA Mystery 9000", "bf16").flops is None
    amx = cpu_peak({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, 2, 2.0, "bf16")
    assert amx.estimate and amx.flops == 2048 * 2 * 2.0e9 and "estimate" in amx.label
    assert cpu_peak({"avx2", "avx512f", "amx_bf16"}, 2, 2.0, "fp32").flops == 64 * 2 * 2.0e9
    assert cpu_peak({"sse2"}, 4, 3.0, "fp32").flops is None
    assert precision_kind("bf16-mixed") == "bf16" and precision_kind("32-true") == "fp32"


def test_matmul_params_leave_out_untied_embedding() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)
    tied = LlamaForCausalLM(LlamaConfig(**arch, tie_word_embeddings=True))
    untied = LlamaForCausalLM(LlamaConfig(**arch, tie_word_embeddings=False))
    every = sum(p.numel() for p in untied.parameters())
    assert matmul_params(untied) == every - 50 * 16
    assert matmul_params(tied) == every - 50 * 16  # the shared weight is counted once, as the head


def test_default_callbacks_include_the_monitor(tmp_path: Path) -> None:
    cfg = compose("train", ["model=tiny_random"], output_dir=tmp_path)
    built = build_callbacks(cfg.callbacks, tmp_path / "ckpt", progress_bar=False)
    assert any(isinstance(c, ThroughputMonitor) for c in built)


@pytest.mark.slow
def test_figures_logged_at_log_steps_only(tmp_path: Path) -> None:
    from culturespa.train.run import train

    pairs = write_pairs(tmp_path / "pairs", {"USA": 24})
    out = tmp_path / "out"
    cfg = compose(
        "train",
        [
            "model=tiny_random",
            "model.dtype=float32",
            "logger=csv",
            f"logger.csv.save_dir={out}",
            "cultures=[USA]",
            f"sft.pairs_dir={pairs}",
            f"sft.output_dir={out}",
            "sft.global_batch_size=2",
            "sft.micro_batch_size=1",
            "sft.max_steps=4",
            "data.val_fraction=0",
            "trainer.log_every_n_steps=2",
            "trainer.enable_progress_bar=false",
            "callbacks.throughput=null",
        ],
        output_dir=tmp_path / "run",
    )
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "logs")
    monitor = ThroughputMonitor()
    train(cfg, callbacks=[monitor])
    assert [row["step"] for row in monitor.history] == [2.0, 4.0]
    for row in monitor.history:
        for key in ("perf/tokens_per_s", "perf/mfu_cpu_est", "perf/peak_rss_gib"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert "perf/mfu" not in row  # a CPU figure is an estimate and says so
        assert row["perf/mfu_cpu_est"] < 1.0
    rows = list(csv.DictReader(next(out.rglob("metrics.csv")).open()))
    logged_steps = sorted({int(r["step"]) for r in rows if r.get("perf/tokens_per_s")})
    assert logged_steps == [2, 4]


def test_tokens_summed_on_device_until_a_log_step() -> None:
    class FakeTrainer:
        global_step = 0
        log_every_n_steps = 10

    monitor = ThroughputMonitor()
    monitor._start = 0.0
    batch = {
        "input_ids": torch.zeros(2, 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 5, [0, 0, 1, 1, 1]]),
    }
    for step in (1, 2, 3):
        FakeTrainer.global_step = step
        monitor.on_train_batch_end(FakeTrainer(), torch.nn.Module(), None, batch, step)  # type: ignore[arg-type]
    assert torch.is_tensor(monitor._tokens) and int(monitor._tokens) == 24 and monitor.history == []
