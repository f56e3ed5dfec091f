"""Build the trainable model: a causal LM (full precision or bitsandbytes 4/8-bit) with PEFT LoRA adapters.

Used by the LightningModule (in ``configure_model``, so each rank loads its own copy on its own device), the benchmark
and the tests, so all three train exactly the same thing.
"""

from __future__ import annotations

import contextlib
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.models.loader import ModelSpec, device_of, disable_bnb_cpu_repack, empty_model, load_model


def device_map_for(local_rank: int, on_gpu: bool) -> Any:
    """Quantised bases must be placed at load time: this rank's GPU, else the CPU."""
    return {"": local_rank} if on_gpu else "cpu"


def lora_config(peft_cfg: dict[str, Any]) -> Any:
    from peft import LoraConfig

    targets = peft_cfg.get("target_modules") or "all-linear"
    return LoraConfig(
        r=int(peft_cfg["r"]),
        lora_alpha=int(peft_cfg["alpha"]),
        lora_dropout=float(peft_cfg.get("dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_peft_model(
    model_cfg: dict[str, Any],
    peft_cfg: dict[str, Any],
    cache_dir: str | None,
    device_map: Any = None,
    seed: int = 0,
    empty: bool = False,
) -> Any:
    """Load the base, guard the bnb CPU repack bug, prepare k-bit training, wrap with LoRA, switch to train mode.
    ``empty``: the same model with every tensor on the meta device and no file read (FSDP ranks > 0, whose weights
    FSDP broadcasts from rank 0)."""
    import torch  # heavy (as peft): only where a model is trained
    from peft import get_peft_model, prepare_model_for_kbit_training

    spec = ModelSpec.from_config(model_cfg)
    quantization = str(peft_cfg.get("quantization", "none"))
    compute_dtype = peft_cfg.get("compute_dtype")
    if empty and quantization != "none":
        raise CultureSPAError("an empty (meta-device) model cannot be quantised: bitsandbytes quantises real weights")
    if empty:
        model = empty_model(spec, cache_dir, device=device_of(device_map))
    else:
        model = load_model(
            spec,
            cache_dir=cache_dir,
            quantization=quantization,
            device_map=device_map if quantization != "none" else None,
            compute_dtype=str(compute_dtype) if compute_dtype else None,
            double_quant=bool(peft_cfg.get("double_quant", True)),
            device=device_of(device_map),
        )
    checkpointing = bool(peft_cfg.get("gradient_checkpointing", False))
    ckpt_kwargs = {"use_reentrant": False}
    if quantization != "none":
        # Before any forward: a single eval/no-grad pass would otherwise repack the 4-bit weights for good.
        patched = disable_bnb_cpu_repack(model)
        if quantization == "4bit" and patched == 0:
            raise CultureSPAError(f"peft.quantization=4bit: model {spec.name} loaded without any 4-bit layer")
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=ckpt_kwargs
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
        model.enable_input_require_grads()
    if checkpointing:
        model.config.use_cache = False
    torch.manual_seed(seed)  # LoRA init is the only randomness here: the same on every rank and every run
    with torch.device("meta") if empty else contextlib.nullcontext():
        model = get_peft_model(model, lora_config(peft_cfg))
    model.train()
    return model
