"""CPU weight prepacking: packed layers compute what the plain ones do, are removed after the run, follow weight
changes, skip what they must not touch (bf16, PEFT wrappers, patched forwards), and leave engine answers unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from culturespa.infer import prepack
from culturespa.infer.engine import Decoding, Engine, Request
from culturespa.infer.prepack import LinearPacker, eligible
from culturespa.prompts.builder import PromptBuilder, PromptStyle
from culturespa.wvs.survey import WVSData

pytestmark = pytest.mark.skipif(not prepack.available(), reason="this torch build has no oneDNN linear prepacking")


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.SiLU(), nn.Linear(40, 8, bias=False)).to(dtype)


def test_packed_layers_match_plain_and_are_removed_after() -> None:
    model = _mlp()
    x = torch.randn(3, 5, 24)
    plain = model(x)
    packer = LinearPacker(model)
    with packer.active() as n, torch.inference_mode():
        assert n == 2 and all("forward" in layer.__dict__ for layer in model if isinstance(layer, nn.Linear))
        packed = model(x)
        assert model(x[:, ::2]).shape == (3, 3, 8)  # non-contiguous rows
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    assert not any("forward" in layer.__dict__ for layer in model)
    with pytest.raises(RuntimeError):
        with packer.active():
            raise RuntimeError("a failing batch")
    assert not any("forward" in layer.__dict__ for layer in model)  # restored on errors too


def test_packed_copy_follows_weight_changes() -> None:
    model = _mlp()
    x = torch.randn(4, 24)
    packer = LinearPacker(model)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            plain = model(x)
            with packer.active():
                return model(x), plain

    first, _ = both()
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # in place, as an optimiser step does
    changed, plain = both()
    assert not torch.allclose(first, changed)
    torch.testing.assert_close(changed, plain, rtol=1e-5, atol=1e-5)
    model[2].weight = nn.Parameter(torch.zeros_like(model[2].weight))  # replaced by a new tensor
    replaced, plain = both()
    assert torch.count_nonzero(replaced) == 0
    torch.testing.assert_close(replaced, plain)


def test_only_plain_fp32_linears_are_packed() -> None:
    assert not eligible(_mlp(torch.bfloat16)[0])
    hooked = _mlp()
    hooked[0].forward = lambda x: x  # type: ignore[method-assign]  # someone else's patch (accelerate-style)
    assert not eligible(hooked[0]) and eligible(hooked[2])

    class Scaled(nn.Linear):  # a subclass (bitsandbytes' Linear4bit is one) may compute something else
        pass

    assert not eligible(Scaled(4, 4))


def test_peft_base_layers_are_packed_and_lora_still_applies() -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(24, 40), nn.SiLU(), nn.Linear(40, 8))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["0", "2"], init_lora_weights=False))
    x = torch.randn(6, 24)
    with torch.no_grad():
        plain = model(x)
        with LinearPacker(model).active() as n:
            packed = model(x)
    assert n == 6  # two base layers and an A and a B projection per adapted layer; not the PEFT wrappers
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)


def test_engine_answers_equal_with_and_without_prepack(make_cfg: Callable[..., Any], wvs: WVSData) -> None:
    cfg = make_cfg("generate", ["model=tiny_random"])
    eng = Engine.from_config(cfg)
    assert eng.model.dtype == torch.float32 and eng.prepack
    builder = PromptBuilder(PromptStyle.from_config(cfg.templates, cfg.prompt))
    qs = [wvs.questions[i] for i in ("Q1", "Q27", "Q164", "Q241")]
    reqs = [
        Request(f"{q.id}|{c}", builder.answer_messages(q, "aware", c), q.numbers) for c in ("USA", "CHN") for q in qs
    ]
    for decoding in (Decoding("logprob"), Decoding("greedy", max_new_tokens=5)):
        eng.prepack = True
        packed = [r for batch in eng.answer(reqs, decoding) for r in batch]
        assert not any("forward" in m.__dict__ for m in eng.model.modules())
        eng.prepack = False
        plain = [r for batch in eng.answer(reqs, decoding) for r in batch]
        for a, b in zip(packed, plain, strict=True):
            assert (a.key, a.text, a.answer) == (b.key, b.text, b.answer)
            for n, p in (b.distribution or {}).items():
                assert a.distribution[n] == pytest.approx(p, rel=1e-4, abs=1e-7)  # type: ignore[index]
