"""The FSDP strategy of ``trainer=fsdp`` (its ``_target_``), and what FSDP changes for a LoRA adapter.

A plain ``trainer.strategy`` string (``auto``, ``ddp``, ``ddp_spawn``) goes to Lightning as it is; ``trainer=fsdp``
instantiates ``fsdp_strategy``, an ``FSDPStrategy``: each transformer block (class name ending in ``strategy.wrap``,
e.g. ``LlamaDecoderLayer``) is one FSDP unit and each trainable LoRA leaf is a unit of its own, so every flat parameter holds one dtype (bf16 frozen base
weights next to fp32 LoRA weights would not flatten together) and frozen and trainable weights never share one;
``use_orig_params`` keeps the PEFT parameter names, which the optimiser, checkpoints and the adapter export rely on.
Under FSDP the adapter export and the checkpoint gather full (unsharded) tensors on every rank first (a collective),
then rank 0 keeps only the adapter weights.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

from culturespa.errors import CultureSPAError

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def _is_block(module: nn.Module, suffix: str) -> bool:
    return type(module).__name__.endswith(suffix)


def _is_trainable_leaf(module: nn.Module) -> bool:
    """A LoRA ``lora_A`` / ``lora_B`` Linear: no children, and its weight is trained."""
    weight = getattr(module, "weight", None)
    return not list(module.children()) and isinstance(weight, nn.Parameter) and weight.requires_grad


def _wrap_rule(module: nn.Module, suffix: str) -> bool:
    return _is_block(module, suffix) or _is_trainable_leaf(module)


def fsdp_wrap_policy(suffix: str) -> Any:
    """Auto-wrap policy: transformer blocks (class name ends with ``suffix``) and trainable LoRA leaves."""
    return functools.partial(lambda_auto_wrap_policy, lambda_fn=functools.partial(_wrap_rule, suffix=suffix))


def fsdp_strategy(
    accelerator: str = "gpu",
    quantization: str = "none",
    wrap: str = "DecoderLayer",
    sharding_strategy: str = "FULL_SHARD",
    state_dict_type: str = "full",
    cpu_offload: bool = False,
    use_orig_params: bool = True,
    **unknown: Any,
) -> Any:
    """The ``_target_`` of ``trainer=fsdp``: an ``FSDPStrategy`` that suits a LoRA adapter (see the module docstring).

    FSDP needs GPUs: Lightning 2.6 refuses it on the CPU (Lightning-AI/pytorch-lightning#21812) and so does PyTorch's
    FSDP itself ("FSDP needs a non-CPU accelerator device"), hence a one-line error instead of their tracebacks.
    """
    if str(accelerator) == "cpu":
        raise CultureSPAError(
            "trainer=fsdp needs GPUs (sft.accelerator=cpu): Lightning and PyTorch FSDP do not run on the CPU; "
            "use trainer=ddp (gloo) on CPUs"
        )
    if str(quantization) != "none":
        raise CultureSPAError(
            "trainer=fsdp with a quantised base (peft=qlora) is not supported: 4-bit weights do not shard with "
            "FSDP here; use trainer=ddp (one 4-bit copy per rank)"
        )
    if unknown:
        valid = ", ".join(sorted(set(inspect.signature(fsdp_strategy).parameters) - {"unknown"}))
        raise CultureSPAError(f"trainer.strategy: unknown key(s) {sorted(unknown)}; valid: {valid}")
    if str(state_dict_type) not in ("full", "sharded"):
        raise CultureSPAError(f"trainer.strategy.state_dict_type={state_dict_type!r}; choose one of: full, sharded")
    return FSDPStrategy(
        auto_wrap_policy=fsdp_wrap_policy(str(wrap or "DecoderLayer")),
        sharding_strategy=str(sharding_strategy),
        state_dict_type=state_dict_type,  # type: ignore[arg-type]
        cpu_offload=bool(cpu_offload),
        use_orig_params=bool(use_orig_params),
    )


def is_fsdp(strategy: Any) -> bool:
    return isinstance(strategy, FSDPStrategy)


def clean_name(name: str) -> str:
    """A parameter name without FSDP / activation-checkpoint wrapper prefixes (as state dicts spell it)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def gathered_model_state(trainer: Any, attribute: str = "model") -> dict[str, Any] | None:
    """Under FSDP, the full state dict of ``pl_module.<attribute>`` (rank 0; other ranks get an empty dict). Every
    rank must call it: it is a collective. ``None`` for other strategies (the module's own tensors are whole)."""
    if not is_fsdp(trainer.strategy):
        return None
    full = trainer.strategy.lightning_module_state_dict()
    prefix = attribute + "."
    return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}


def clip_gradients(module: Any, value: float | None, algorithm: str | None) -> bool:
    """FSDP clips the norm over all shards through its root module (Lightning's plugin refuses ``norm``); returns
    whether it clipped, so other strategies fall back to Lightning's own clipping."""
    if not value or not is_fsdp(module.trainer.strategy) or (algorithm or "norm") != "norm":
        return False
    module.trainer.strategy.model.clip_grad_norm_(float(value))
    return True
