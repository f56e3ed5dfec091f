"""QLoRA gradients equal a dequantised full-precision reference, also after an eval/no-grad forward.

bitsandbytes >=0.49 on AVX512-BF16 CPUs repacks 4-bit weights on the first no-grad forward, after which LoRA
gradients through the base silently vanish (stack-notes). ``build_peft_model`` guards that; this test proves it, and
on such CPUs also shows that the same comparison fails without the guard (so it can fail).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from culturespa.config import compose
from culturespa.train.peft_model import build_peft_model

PEFT = {
    "quantization": "4bit",
    "compute_dtype": "float32",
    "double_quant": True,
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gradient_checkpointing": True,
}


def _cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _qlora_and_reference(model_cfg: dict, cache_dir: str):
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    qlora = build_peft_model(model_cfg, PEFT, cache_dir, "cpu", seed=0)
    reference = build_peft_model(model_cfg, PEFT, cache_dir, "cpu", seed=0)
    swapped = 0
    for module in reference.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, bnb.nn.Linear4bit):
            assert base.weight.quant_state.nested and base.weight.quant_state.quant_type == "nf4"  # NF4 + double quant
            weight = F.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
            linear = torch.nn.Linear(base.in_features, base.out_features, bias=False)
            linear.weight = torch.nn.Parameter(weight, requires_grad=False)
            module.base_layer = linear
            swapped += 1
    assert swapped == 14  # 2 layers x 7 projections
    generator = torch.Generator().manual_seed(1)
    for (name, p), (ref_name, ref_p) in zip(qlora.named_parameters(), reference.named_parameters(), strict=True):
        assert name == ref_name
        if "lora_B" in name:  # non-zero B so that lora_A gets a gradient too
            value = torch.randn(p.shape, generator=generator) * 0.1
            with torch.no_grad():
                p.copy_(value)
                ref_p.copy_(value)
    return qlora, reference


def _lora_grads(model, batch) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():  # what Lightning's sanity check / val loop does before training
        model(**batch)
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_qlora_grads_match_dequantised_reference_after_eval_forward() -> None:
    cfg = compose("train", ["model=tiny_random", "model.dtype=float32"])  # an fp32 reference, whatever the CPU
    model_cfg = dict(cfg.model)
    model_cfg["tiny"] = dict(cfg.model.tiny)
    qlora, reference = _qlora_and_reference(model_cfg, str(cfg.paths.cache_dir))
    ids = torch.randint(3, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    got, want = _lora_grads(qlora, batch), _lora_grads(reference, batch)
    assert set(got) == set(want) and len(got) == 28
    for name in want:
        assert want[name].abs().sum() > 0, name
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)

    if _cpu_has_avx512_bf16():  # the same check catches the bug when the guard is off
        import bitsandbytes as bnb

        broken, _ = _qlora_and_reference(model_cfg, str(cfg.paths.cache_dir))
        for module in broken.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = True
        with warnings.catch_warnings():  # bnb warns that gemv_4bit has no autograd kernel: the bug itself
            warnings.simplefilter("ignore", UserWarning)
            bad = _lora_grads(broken, batch)
        errors = [((bad[n] - want[n]).norm() / want[n].norm()).item() for n in want]
        assert max(errors) > 0.1
