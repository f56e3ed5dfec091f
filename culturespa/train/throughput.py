"""Training throughput figures (tokens/s, MFU, peak memory), logged at logging steps only.

Why a callback of its own: the figures need the device's peak FLOP/s and the model's shape, which the training method
does not care about; and they must not slow training down. Tokens are summed as a device tensor per micro-batch (no
host sync) and read once per logging step, where Lightning's own loss logging syncs anyway.

MFU is model FLOPs (6 × non-embedding parameters per token, plus the attention term 12 × layers × hidden × sequence,
as in the PaLM paper) over the device's dense peak. GPU peaks come from a table keyed on the device name; a CPU's peak
is an *estimate* from its ISA (AMX / AVX512-BF16 / AVX512 / AVX2) × cores × clock, and is logged under its own key
(``perf/mfu_cpu_est``) so it is never mistaken for a measured figure. An unknown GPU gets no MFU at all.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from culturespa.models.dtype import cpuinfo

log = logging.getLogger("culturespa.train")

# Dense (no sparsity) peak TFLOP/s per GPU: (substring of torch.cuda.get_device_name, bf16 tensor core, fp32 non-tensor).
# First match wins, so the more specific names come first. Sources: NVIDIA data sheets.
GPU_PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("GH200", 989.0, 67.0),
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.0, 67.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0, 67.0),
    ("B200", 2250.0, 80.0),
    ("A100", 312.0, 19.5),
    ("A800", 312.0, 19.5),
    ("L40S", 362.0, 91.6),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 30.3),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
)

# FLOPs per cycle per core of the widest matmul unit an x86 CPU has for each dtype (two FMA ports assumed).
CPU_FLOPS_PER_CYCLE: dict[str, tuple[tuple[str, int], ...]] = {
    "bf16": (("amx_bf16", 2048), ("avx512_bf16", 128), ("avx512f", 64), ("avx2", 32)),
    "fp32": (("avx512f", 64), ("avx2", 32)),
}


@dataclass(frozen=True)
class DevicePeak:
    """The peak FLOP/s MFU is measured against; ``estimate`` marks a CPU figure derived from its ISA."""

    flops: float | None
    label: str
    estimate: bool


def precision_kind(precision: Any) -> str:
    """``bf16`` for bf16/fp16 Trainer precisions (tensor cores), else ``fp32``."""
    text = str(precision)
    return "bf16" if ("bf16" in text or text.startswith("16")) else "fp32"


def gpu_peak(name: str, kind: str) -> DevicePeak:
    """Peak of a GPU from the table, or ``flops=None`` when the name is not in it."""
    for key, bf16, fp32 in GPU_PEAK_TFLOPS:
        if key.lower() in name.lower():
            tflops = bf16 if kind == "bf16" else fp32
            return DevicePeak(tflops * 1e12, f"{name}: {tflops:g} TFLOP/s {kind} dense (table)", False)
    return DevicePeak(None, f"{name}: not in the peak table, MFU unknown", False)


def cpu_peak(flags: set[str], cores: int, ghz: float, kind: str) -> DevicePeak:
    """Estimated peak of a CPU: FLOPs per cycle of its best unit for ``kind`` × cores × clock."""
    for flag, per_cycle in CPU_FLOPS_PER_CYCLE[kind]:
        if flag in flags and ghz > 0 and cores > 0:
            flops = per_cycle * cores * ghz * 1e9
            label = f"CPU estimate: {flag} {per_cycle} FLOP/cycle x {cores} cores x {ghz:.2f} GHz ({kind})"
            return DevicePeak(flops, label, True)
    return DevicePeak(None, f"CPU without a known {kind} unit (or clock): MFU unknown", True)


def device_peak(device: torch.device, precision: Any) -> DevicePeak:
    """The peak of the device this rank trains on, in the Trainer's precision."""
    kind = precision_kind(precision)
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), kind)
    flags, ghz = cpuinfo()  # aarch64 features never name an x86 unit of CPU_FLOPS_PER_CYCLE
    cores = min(torch.get_num_threads(), len(os.sched_getaffinity(0)))
    return cpu_peak(flags, cores, ghz, kind)


def logical_numel(param: torch.Tensor) -> int:
    """Elements a parameter stands for: a bitsandbytes 4-bit weight is stored packed, its shape is in quant_state."""
    state = getattr(param, "quant_state", None)
    shape = getattr(state, "shape", None)
    return int(math.prod(shape)) if shape is not None else int(param.numel())


def matmul_params(model: Any) -> int:
    """Parameters that take part in matmuls: all of them but the input embedding (a lookup), unless it is tied to
    the output head."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += logical_numel(param)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embed is not None and (head is None or head.weight is not embed.weight):
        total -= int(embed.weight.numel())
    return total


def train_flops_per_token(params: int, layers: int = 0, hidden: int = 0, seq_len: float = 0.0) -> float:
    """Model FLOPs per trained token: 6N for the matmuls, plus 12·L·d·T for attention scores and values."""
    return 6.0 * params + 12.0 * layers * hidden * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation of one device (None when its peak is unknown)."""
    if not peak_flops or peak_flops <= 0:
        return None
    return tokens_per_s * flops_per_token / peak_flops


def peak_memory(device: torch.device) -> tuple[str, float]:
    """(metric name, GiB): CUDA max allocated on ``device``, else this process's peak RSS (host memory)."""
    if device.type == "cuda":
        return "perf/peak_mem_gib", torch.cuda.max_memory_allocated(device) / 2**30
    return "perf/peak_rss_gib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux: KiB


class ThroughputMonitor(L.Callback):
    """Logs ``perf/tokens_per_s`` (non-pad tokens, all ranks), MFU and peak memory at logging steps."""

    def __init__(self, attention_flops: bool = True) -> None:
        self.attention_flops = attention_flops
        self.history: list[dict[str, float]] = []
        self.peak: DevicePeak | None = None
        self._tokens: torch.Tensor | None = None
        self._widths = 0  # sum of padded lengths in the window (host ints: shapes need no sync)
        self._rows = 0
        self._start: float | None = None
        self._last_step = 0
        self._params = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None) or pl_module
        self._params = matmul_params(model)
        self.peak = device_peak(pl_module.device, trainer.precision)
        self._last_step = trainer.global_step
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        log.info("throughput: %d matmul parameters; peak %s", self._params, self.peak.label)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        count = getattr(pl_module, "last_batch_tokens", None)
        if count is None:
            count = batch["attention_mask"].sum()
        count = count.detach() if torch.is_tensor(count) else torch.tensor(int(count))
        self._tokens = count if self._tokens is None else self._tokens + count
        self._widths += int(batch["input_ids"].shape[0]) * int(batch["input_ids"].shape[1])
        self._rows += int(batch["input_ids"].shape[0])
        step = trainer.global_step
        if step != self._last_step and step % max(1, trainer.log_every_n_steps) == 0:
            self._log(trainer, pl_module)
        self._last_step = step

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One logging step: the only place the token count goes to the host (and across ranks)."""
        tokens = self._tokens if self._tokens is not None else torch.zeros(())
        if trainer.world_size > 1:
            tokens = trainer.strategy.reduce(tokens.to(pl_module.device).float(), reduce_op="sum")
        total = float(tokens.item())
        now = time.perf_counter()
        elapsed = now - (self._start or now)
        seq = self._widths / max(1, self._rows)
        self._tokens, self._widths, self._rows, self._start = None, 0, 0, now
        if elapsed <= 0 or total <= 0:
            return
        metrics = self.figures(pl_module, total / elapsed, seq, trainer.world_size)
        self.history.append({"step": float(trainer.global_step), **metrics})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def figures(self, pl_module: L.LightningModule, tokens_per_s: float, seq: float, world: int) -> dict[str, float]:
        """tokens/s of all ranks, this rank's MFU against its device peak (under the key that says what it is)."""
        config = getattr(getattr(pl_module, "model", None), "config", None)
        layers = int(getattr(config, "num_hidden_layers", 0) or 0) if self.attention_flops else 0
        hidden = int(getattr(config, "hidden_size", 0) or 0)
        per_token = train_flops_per_token(self._params, layers, hidden, seq)
        metrics = {"perf/tokens_per_s": tokens_per_s}
        peak = self.peak or device_peak(pl_module.device, "32")
        utilisation = mfu(tokens_per_s / max(1, world), per_token, peak.flops)
        if utilisation is not None:
            metrics["perf/mfu_cpu_est" if peak.estimate else "perf/mfu"] = utilisation
        name, gib = peak_memory(pl_module.device)
        metrics[name] = gib
        return metrics
