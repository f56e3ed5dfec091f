"""What ``model.dtype=auto`` means: bf16 where the hardware computes it natively, fp32 where bf16 would be emulated.

On a CPU without native bf16 (AVX2 only) bf16 matmuls are emulated and run at a few GFLOP/s, so bf16 logprob answering
was measured 7x slower than fp32 there; with AVX512-BF16 or AMX, bf16 is the faster choice. CUDA GPUs get bf16 (fp16
on the few without bf16 support). The choice is logged once per process, with the CPU capability that decided it.
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

log = logging.getLogger("culturespa.models")

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags with native bf16 dot products
ARM_BF16_FLAGS = ("bf16",)  # aarch64 /proc/cpuinfo "Features" (BFDOT/BFMMLA)
_logged: set[tuple[str, str]] = set()


def cpuinfo() -> tuple[set[str], float]:
    """CPU flags (x86 ``flags``, aarch64 ``Features``) and the highest ``cpu MHz`` in /proc/cpuinfo, in GHz (nothing
    and 0 when unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set(), 0.0
    flags: set[str] = set()
    mhz = 0.0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu mhz":
            try:
                mhz = max(mhz, float(value))
            except ValueError:
                pass
    return flags, mhz / 1000.0


@functools.lru_cache(maxsize=1)
def cpu_bf16_features() -> tuple[str, ...]:
    """The native-bf16 features this CPU has (empty: bf16 would be emulated)."""
    found: set[str] = set()
    try:
        import torch

        caps = torch.cpu.get_capabilities()  # cpuinfo's view, the same one PyTorch's kernels dispatch on
        found.update(flag for flag in CPU_BF16_FLAGS if caps.get(flag))
    except Exception:  # noqa: BLE001 - older torch: fall back to the kernel's flags
        pass
    flags, _ = cpuinfo()
    found.update(flag for flag in CPU_BF16_FLAGS if flag in flags)
    if platform.machine().lower() in ("aarch64", "arm64"):
        found.update(flag for flag in ARM_BF16_FLAGS if flag in flags)
    return tuple(sorted(found))


def cpu_has_native_bf16() -> bool:
    return bool(cpu_bf16_features())


def cpu_capability() -> str:
    """One short phrase for logs and bench lines, e.g. ``AVX512 (bf16: avx512_bf16)`` or ``AVX2 (no native bf16)``."""
    try:
        import torch

        isa = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001
        isa = platform.machine() or "unknown CPU"
    features = cpu_bf16_features()
    return f"{isa} (bf16: {', '.join(features)})" if features else f"{isa} (no native bf16)"


def resolve_dtype(name: str, device: str | None = None) -> str:
    """The dtype to load in: ``name`` itself unless it is ``auto``. ``device`` is where the model will run
    (``cuda``, ``cuda:1``, ``cpu``; None or ``auto``: CUDA when available)."""
    if name != "auto":
        return name
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind == "cuda":
        chosen = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        why = "CUDA"
    else:
        chosen = "bfloat16" if cpu_has_native_bf16() else "float32"
        why = f"CPU {cpu_capability()}"
    if (chosen, why) not in _logged:
        _logged.add((chosen, why))
        log.info("model.dtype=auto: %s on %s", chosen, why)
    return chosen


def resolve_compute_dtype(compute: str | None, model_dtype: str, device: str | None = None) -> str:
    """The dtype bitsandbytes computes a 4-bit layer in (``peft.compute_dtype``): ``compute`` itself unless it is
    ``auto`` (or unset), which follows ``model.dtype`` as resolved for ``device``: bf16 on CUDA (fp16 without bf16
    support), so a QLoRA run never computes in fp32 on a GPU by default; on a CPU fp32 unless it has native bf16, as
    for the model itself. ``peft.compute_dtype=float32`` keeps exact fp32 LoRA gradients anywhere (bf16 compute put
    them about 5 % off on the CPU, stack notes)."""
    if compute not in (None, "auto"):
        return str(compute)
    chosen = resolve_dtype(model_dtype, device)
    if ("compute:" + chosen, str(device)) not in _logged:
        _logged.add(("compute:" + chosen, str(device)))
        log.info("peft.compute_dtype=auto: %s (model.dtype=%s on %s)", chosen, model_dtype, device or "auto")
    return chosen


def set_cuda_tf32(enabled: bool) -> str:
    """``sft.tf32``: let fp32 matmuls (LoRA weights, fp32 runs) use TF32 tensor cores on CUDA, about 8x the fp32 rate on
    Ampere and later at a 10-bit mantissa, or keep them exact. Call only when running on CUDA (the setting is process
    wide; CPU runs never change it). Returns the precision now in force."""
    import torch  # heavy: resolved only where a model is trained

    precision = "high" if enabled else "highest"
    torch.set_float32_matmul_precision(precision)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return precision
