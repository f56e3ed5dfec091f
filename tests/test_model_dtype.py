"""``model.dtype=auto``: bf16 where the hardware has native bf16 (CUDA, AVX512-BF16/AMX CPUs), fp32 elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from culturespa.config import compose
from culturespa.errors import CultureSPAError
from culturespa.models import dtype as dtypes
from culturespa.models import loader
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
    monkeypatch.setattr(dtypes, "cpuinfo", lambda: ({"fpu", "avx2", "fma"}, 0.0))
    assert dtypes.cpu_bf16_features() == () and "no native bf16" in dtypes.cpu_capability()
    dtypes.cpu_bf16_features.cache_clear()
    monkeypatch.setattr(dtypes, "cpuinfo", lambda: ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, 0.0))
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


def _cuda(monkeypatch: pytest.MonkeyPatch, bf16: bool = True) -> None:
    """Pretend to run where CUDA is available (device 0 current), with or without bf16 support; no GPU needed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    dtypes._logged.clear()


def test_qlora_compute_dtype_follows_the_resolved_model_dtype(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The paper preset with peft=qlora asks for ``compute_dtype: auto``: bf16 on a CUDA GPU (fp16 without bf16),
    never fp32 there; fp32 on a CPU without native bf16; an explicit value always wins."""
    cfg = compose("train", ["experiment=paper_joint", "peft=qlora"], output_dir=tmp_path)
    assert cfg.peft.compute_dtype == "auto" and cfg.model.dtype == "auto"
    _cuda(monkeypatch)
    for device in (None, "auto", "cuda", "cuda:3"):
        assert dtypes.resolve_compute_dtype("auto", cfg.model.dtype, device) == "bfloat16"
    assert dtypes.resolve_compute_dtype(None, "float32", "cuda") == "float32"  # follows an explicit model.dtype
    assert dtypes.resolve_compute_dtype("float32", "auto", "cuda") == "float32"  # an explicit override wins
    _cuda(monkeypatch, bf16=False)
    assert dtypes.resolve_compute_dtype("auto", "auto", "cuda") == "float16"
    _cpu(monkeypatch, ())
    assert dtypes.resolve_compute_dtype("auto", "auto", "cpu") == "float32"
    assert dtypes.resolve_compute_dtype("bfloat16", "auto", "cpu") == "bfloat16"


class _Captured(Exception):
    """Raised by a stand-in ``from_pretrained`` once it has the arguments a GPU load would get."""


def _capture_load(monkeypatch: pytest.MonkeyPatch) -> dict:
    from transformers import AutoModelForCausalLM

    seen: dict = {}

    def fake(path: str, **kwargs: object) -> None:
        seen.update(kwargs)
        raise _Captured

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    return seen


@pytest.mark.parametrize(
    ("device", "device_map"), [("cuda", {"": 0}), ("auto", {"": 0}), (None, {"": 0}), ("cuda:1", {"": 1})]
)
def test_quantised_load_goes_to_the_cuda_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device, device_map
) -> None:  # noqa: ANN001
    """A 4-bit base is placed on the device it runs on at load time (nothing moves it later), computing in bf16."""
    _cuda(monkeypatch)
    spec = ModelSpec.from_config(compose("train", ["model=tiny_random"], output_dir=tmp_path).model)
    seen = _capture_load(monkeypatch)
    with pytest.raises(_Captured):
        load_model(spec, quantization="4bit", device=device)
    assert seen["device_map"] == device_map and seen["dtype"] == torch.bfloat16
    assert seen["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert seen["attn_implementation"] == "sdpa"
    assert loader.quantized_device_map("cpu") == "cpu"


def test_evaluating_a_qlora_run_loads_the_base_on_the_engine_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """evaluate: the quantised base goes where ``engine.device`` says (the paper preset: cuda), not to the CPU."""
    from culturespa.evaluate import answering
    from culturespa.evaluate.evaluate_settings import AnsweringSettings

    _cuda(monkeypatch)
    cfg = compose("evaluate", ["experiment=paper_joint", "peft=qlora", "model=tiny_random"], output_dir=tmp_path)
    assert cfg.engine.device == "cuda"
    seen = _capture_load(monkeypatch)
    with pytest.raises(_Captured):
        answering._load_model(AnsweringSettings.from_config(cfg))
    assert seen["device_map"] == {"": 0}
    assert seen["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16


def test_attention_implementation_is_a_model_key(tmp_path: Path) -> None:
    import importlib.util

    spec = ModelSpec.from_config(compose("train", ["model=tiny_random"], output_dir=tmp_path).model)
    assert spec.attn_implementation == "sdpa"
    assert loader.attention_kwargs("eager") == {"attn_implementation": "eager"}
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(
            CultureSPAError, match=r"model.attn_implementation=flash_attention_2 needs the flash_attn"
        ) as err:
            loader.attention_kwargs("flash_attention_2")
        assert "\n" not in str(err.value)
    with pytest.raises(CultureSPAError, match="model.attn_implementation='flash'"):
        loader.attention_kwargs("flash")


def test_tf32_is_a_switch() -> None:
    """``sft.tf32`` (default on) sets the fp32 matmul precision CUDA runs use; off means exact fp32 matmuls."""
    from culturespa.settings import SFTSettings

    before = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    try:
        assert SFTSettings().tf32 is True
        assert dtypes.set_cuda_tf32(True) == "high" == torch.get_float32_matmul_precision()
        assert torch.backends.cuda.matmul.allow_tf32 is True
        assert dtypes.set_cuda_tf32(False) == "highest" == torch.get_float32_matmul_precision()
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.set_float32_matmul_precision(before)
        torch.backends.cudnn.allow_tf32 = cudnn
