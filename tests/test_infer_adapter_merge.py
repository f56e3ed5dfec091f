"""Evaluation merges a LoRA adapter into an unquantised base (same answers, plain layers) and keeps it unmerged over a
quantised base, saying which in one log line; merging into a copy leaves the shared base untouched."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from culturespa.evaluate import adapters
from culturespa.infer.engine import Decoding, Engine, Request


@pytest.fixture
def tiny_adapter(make_cfg: Callable[..., Any], tmp_path: Path) -> tuple[Engine, Path]:
    """The tiny model and a LoRA adapter with random (non-zero) A and B on every projection, saved to a folder."""
    from peft import LoraConfig, get_peft_model

    eng = Engine.from_config(make_cfg("generate", ["model=tiny_random", "model.dtype=float32"]))
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                        init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(copy.deepcopy(eng.model), config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(4.0)  # a visible change of the answers
    peft_model.save_pretrained(tmp_path / "adapter")
    return eng, tmp_path / "adapter"


def _answers(eng: Engine, model: Any) -> dict[str, Any]:
    runner = Engine(model, eng.tokenizer, batch_size=4)
    reqs = [Request(f"q{i}", [{"role": "user", "content": f"Pick an option for item {i}."}], list(range(1, 8 + i)))
            for i in range(6)]  # fmt: skip
    return {r.key: r for batch in runner.answer(reqs, Decoding("logprob")) for r in batch}


def test_merged_adapter_answers_like_the_unmerged_one(
    tiny_adapter: tuple[Engine, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from peft import PeftModel

    eng, folder = tiny_adapter
    base = eng.model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    unmerged = PeftModel.from_pretrained(copy.deepcopy(base), str(folder), adapter_name="joint").eval()
    with caplog.at_level(logging.INFO, logger=adapters.__name__):
        merged = adapters.activate(base, base, folder, "joint", shared_base=True)
    assert "merged into the base weights" in caplog.text
    assert not isinstance(merged, PeftModel) and not any("lora_" in n for n, _ in merged.named_parameters())
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # the shared base is untouched
    want, got, plain = _answers(eng, unmerged), _answers(eng, merged), _answers(eng, base)
    assert any(want[k].distribution != plain[k].distribution for k in want)  # the adapter changes the answers
    for key, ref in want.items():
        assert got[key].answer == ref.answer
        for n, p in ref.distribution.items():  # type: ignore[union-attr]
            assert got[key].distribution[n] == pytest.approx(p, rel=1e-4, abs=1e-6)  # type: ignore[index]


def test_quantised_base_keeps_adapters_unmerged(
    tiny_adapter: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from peft import PeftModel

    eng, folder = tiny_adapter
    monkeypatch.setattr(adapters, "quantised", lambda model: True)  # bitsandbytes needs weights we cannot merge into
    with caplog.at_level(logging.INFO, logger=adapters.__name__):
        first = adapters.activate(eng.model, eng.model, folder, "USA", shared_base=True)
        second = adapters.activate(first, eng.model, folder, "CHN", shared_base=True)
    assert isinstance(first, PeftModel) and second is first and second.active_adapter == "CHN"
    assert set(second.peft_config) == {"USA", "CHN"} and "unmerged over the quantised base" in caplog.text
