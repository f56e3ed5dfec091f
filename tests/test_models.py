"""Model loading: the embedded GGUF → safetensors cache (atomic), the tiny random model, quantised loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from culturespa.config import compose
from culturespa.errors import CultureSPAError
from culturespa.models import loader
from culturespa.models.loader import COMPLETE_MARKER, ModelSpec, load_model, load_tokenizer, resolve_model_dir

REPO = Path(__file__).resolve().parents[1]


def _spec(name: str, tmp_path: Path) -> ModelSpec:
    return ModelSpec.from_config(compose("train", [f"model={name}"], output_dir=tmp_path).model)


@pytest.mark.slow
def test_embedded_model_loads_from_cache_and_answers(tmp_path: Path) -> None:
    spec = _spec("smollm2_135m", tmp_path)
    resolve_model_dir(spec)  # converts once per machine
    start = time.perf_counter()
    tokenizer, model = load_tokenizer(spec), load_model(spec)
    assert time.perf_counter() - start < 15, "a cached load should take seconds, not a GGUF parse"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    messages = [
        {"role": "system", "content": "You are an American participant in a social survey."},
        {
            "role": "user",
            "content": "How important is family in your life?\n1. Very important\n2. Not important\n"
            "Answer with the number of one option only.",
        },
    ]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.strip(), "the model should say something"
    assert any(ch.isdigit() for ch in reply)


def test_tiny_random_is_reproducible(tmp_path: Path) -> None:
    spec = _spec("tiny_random", tmp_path)
    fresh = tmp_path / "cache"
    (fresh / "models").mkdir(parents=True)
    # Reuse the real tokenizer source (the embedded model) from the shared cache, build tiny_random afresh.
    os.symlink(Path(resolve_model_dir(_spec("smollm2_135m", tmp_path))), fresh / "models" / "smollm2_135m")
    model_a = load_model(spec)
    model_b = load_model(spec, cache_dir=fresh)
    assert all(
        torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True)
    )
    assert 2e6 < sum(p.numel() for p in model_a.parameters()) < 5e6


def test_interrupted_build_never_leaves_a_loadable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec("tiny_random", tmp_path)
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(Path(resolve_model_dir(_spec("smollm2_135m", tmp_path))), cache / "models" / "smollm2_135m")
    real_build = loader._build_tiny_random

    def dies_half_way(spec_: ModelSpec, out: Path, cache_: Path) -> None:
        real_build(spec_, out, cache_)
        (out / "model.safetensors").write_bytes(b"truncated")
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(loader, "_build_tiny_random", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_dir(spec, cache)
    target = cache / "models" / "tiny_random"
    assert not target.exists() and not list((cache / "models").glob(".tiny_random.*"))
    # A folder left by a killed process (no completion marker) is rebuilt, not trusted.
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"junk")
    monkeypatch.setattr(loader, "_build_tiny_random", real_build)
    assert resolve_model_dir(spec, cache) == str(target)
    assert (target / COMPLETE_MARKER).exists()
    load_model(spec, cache_dir=cache)


@pytest.mark.slow
def test_gguf_conversion_killed_mid_way_then_completes(tmp_path: Path) -> None:
    """kill -9 a real conversion half-way: no cache folder counts as done, and the next run converts cleanly."""
    cache = tmp_path / "cache"
    code = (
        "from culturespa.config import compose; from culturespa.models.loader import *; "
        f"resolve_model_dir(ModelSpec.from_config(compose('train', [], output_dir={str(tmp_path)!r}).model), "
        f"{str(cache)!r})"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((cache / "models").glob(".smollm2_135m.*/*")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    target = cache / "models" / "smollm2_135m"
    assert not (target / COMPLETE_MARKER).exists()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, timeout=600)
    assert (target / COMPLETE_MARKER).exists() and (target / "model.safetensors").stat().st_size > 400e6
    assert not list((cache / "models").glob(".smollm2_135m.*"))


def test_missing_gguf_package_is_one_line_error(tmp_path: Path) -> None:
    spec = _spec("smollm2_135m", tmp_path)
    spec.gguf_package = "no_such_package_xyz"
    with pytest.raises(CultureSPAError, match="package 'no_such_package_xyz' is not installed"):
        resolve_model_dir(spec, tmp_path / "cache")


def test_4bit_load_is_quantised_and_repack_guarded(tmp_path: Path) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    model = load_model(_spec("tiny_random", tmp_path), quantization="4bit")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)
    assert all(m.weight.dtype == torch.uint8 for m in layers)
