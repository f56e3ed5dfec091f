"""``model.dtype=auto``: bf16 where the hardware has native bf16 (CUDA, AVX512-BF16/AMX CPUs), fp32 elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from culturespa.config import compose
from culturespa.models import dtype as dtypes
from culturespa.models.loader import ModelSpec, load_model

MODELS = ("smollm2_135m", "tiny_random", "llama3_8b_instruct", "qwen2_5_7b_instruct", "mistral_7b_instruct")


def _cpu(monkeypatch: pytest.MonkeyPatch, features: tuple[str, ...]) -> None:
    """Pretend to run on a CPU with (or, with ``()``, without) native bf16, and no CUDA."""
    monkeypatch.setattr(dtypes, "cpu_bf16_features", lambda: features)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dtypes._logged.clear()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_defaults_to_auto(name: str, tmp_path: Path) -> None:
    assert compose("train", [f"model={name}"], output_dir=tmp_path).model.dtype == "auto"


def test_auto_is_fp32_on_avx2_and_bf16_with_native_bf16(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    _cpu(monkeypatch, ())
    with caplog.at_level(logging.INFO, logger="culturespa.models"):
        assert dtypes.resolve_dtype("auto") == "float32"
    assert "model.dtype=auto: float32 on CPU" in caplog.text and "no native bf16" in caplog.text
    _cpu(monkeypatch, ("avx512_bf16",))
    assert dtypes.resolve_dtype("auto", "cpu") == "bfloat16"
    _cpu(monkeypatch, ("amx_bf16",))
    assert dtypes.resolve_dtype("auto") == "bfloat16"
    for explicit in ("float32", "bfloat16", "float16"):  # an explicit choice is never second-guessed
        assert dtypes.resolve_dtype(explicit, "cpu") == explicit


def test_auto_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dtypes.resolve_dtype("auto", "cuda:1") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. V100
    assert dtypes.resolve_dtype("auto", "cuda") == "float16"


def test_cpu_features_from_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    dtypes.cpu_bf16_features.cache_clear()
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    monkeypatch.setattr(dtypes, "_cpuinfo_flags", lambda: {"fpu", "avx2", "fma"})
    assert dtypes.cpu_bf16_features() == () and "no native bf16" in dtypes.cpu_capability()
    dtypes.cpu_bf16_features.cache_clear()
    monkeypatch.setattr(dtypes, "_cpuinfo_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    assert dtypes.cpu_bf16_features() == ("amx_bf16", "avx512_bf16")
    assert "bf16: amx_bf16, avx512_bf16" in dtypes.cpu_capability()
    dtypes.cpu_bf16_features.cache_clear()


@pytest.mark.parametrize(("features", "expected"), [((), torch.float32), (("avx512_bf16",), torch.bfloat16)])
def test_load_model_resolves_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, features, expected) -> None:  # noqa: ANN001
    _cpu(monkeypatch, features)
    spec = ModelSpec.from_config(compose("train", ["model=tiny_random"], output_dir=tmp_path).model)
    assert spec.dtype == "auto"
    assert load_model(spec).dtype == expected
    # QLoRA without an explicit compute dtype computes in the resolved dtype, never in HF's checkpoint "auto"
    model = load_model(spec, quantization="4bit")
    layer = next(m for m in model.modules() if type(m).__name__ == "Linear4bit")
    assert layer.compute_dtype == expected
