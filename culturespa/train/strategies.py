"""The FSDP strategy of ``trainer=fsdp`` (its ``_target_``), and what FSDP changes for a LoRA adapter.

A plain ``trainer.strategy`` string (``auto``, ``ddp``, ``ddp_spawn``) goes to Lightning as it is; ``trainer=fsdp``
instantiates ``fsdp_strategy``, an ``FSDPStrategy``: each transformer block (class name ending in ``strategy.wrap``,
e.g. ``LlamaDecoderLayer``) is one FSDP unit and each trainable LoRA leaf is a unit of its own, so every flat parameter holds one dtype (bf16 frozen base
weights next to fp32 LoRA weights would not flatten together) and frozen and trainable weights never share one;
``use_orig_params`` keeps the PEFT parameter names, which the optimiser, checkpoints and the adapter export rely on.

What FSDP never does here: hold the full model per rank in host memory, or gather the frozen base. With
``rank0_loads`` (the default) only rank 0 reads the weights; the other ranks build the model on the meta device and
FSDP materialises their shards empty on the GPU and broadcasts rank 0's values (``sync_module_states``). Checkpoints
(``state_dict_type: full``) and the final adapter gather only the FSDP units whose parameters are all trainable, i.e.
the LoRA leaves (``adapter_state_dict``): a few tens of MB for an 8B base instead of 16 GB.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel
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
    rank0_loads: bool = True,
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
    meta = {"sync_module_states": True, "param_init_fn": materialize} if rank0_loads else {}
    strategy = AdapterFSDPStrategy(
        auto_wrap_policy=fsdp_wrap_policy(str(wrap or "DecoderLayer")),
        sharding_strategy=str(sharding_strategy),
        state_dict_type=state_dict_type,  # type: ignore[arg-type]
        cpu_offload=bool(cpu_offload),
        use_orig_params=bool(use_orig_params),
        **meta,
    )
    strategy.rank0_loads = bool(rank0_loads)
    strategy.adapter_only = str(state_dict_type) == "full"
    return strategy


class AdapterFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP whose full checkpoint state is the adapter alone, gathered unit by unit (never the base)."""

    rank0_loads = False
    adapter_only = False  # state_dict_type full: set by fsdp_strategy

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if not self.adapter_only:  # sharded: every rank writes its own shards, nothing is gathered
            return super().lightning_module_state_dict()
        assert self.model is not None
        return adapter_state_dict(self.model, fsdp_gather)


def materialize(module: nn.Module) -> None:
    """FSDP ``param_init_fn`` for a meta-device module (ranks > 0): empty storage on this rank's device, filled by the
    broadcast from rank 0 (``sync_module_states``); only the module's own tensors, FSDP visits each submodule."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    module.to_empty(device=device, recurse=False)


def builds_on_meta(strategy: Any, global_rank: int) -> bool:
    """Whether this rank builds its model on the meta device: FSDP with ``rank0_loads``, every rank but 0."""
    return is_fsdp(strategy) and bool(getattr(strategy, "rank0_loads", False)) and int(global_rank) > 0


def fsdp_gather(unit: nn.Module) -> AbstractContextManager[Any]:
    """The full tensors of one FSDP unit on rank 0 (a collective over this unit only). Not offloaded: a LoRA unit is
    a few hundred kB, copied to host memory by ``adapter_state_dict``, and FSDP's offload crashes (SIGSEGV) on CPU
    tensors, which the 2-process gloo test uses."""
    return FullyShardedDataParallel.summon_full_params(unit, writeback=False, rank0_only=True, with_grads=False)


def adapter_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The units to gather for the adapter: FSDP units (under FSDP) or modules with parameters of their own (else)
    whose parameters are all trainable. Frozen base weights share no unit with LoRA weights (``fsdp_wrap_policy``),
    so none of them is ever gathered. The order is the module order, the same on every rank."""
    wrapped = any(isinstance(m, FullyShardedDataParallel) for m in model.modules())
    units: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        own = isinstance(module, FullyShardedDataParallel) if wrapped else bool(list(module.parameters(recurse=False)))
        params = list(module.parameters())
        if own and params and all(p.requires_grad for p in params):
            units.append((name, module))
    return units


def adapter_state_dict(
    model: nn.Module, gather: Callable[[nn.Module], AbstractContextManager[Any]] | None = None
) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` under their state-dict names (wrapper prefixes dropped), copied to host
    memory, gathering one adapter unit at a time with ``gather`` (FSDP: ``fsdp_gather``; rank 0's result is the one
    to keep). Every rank must call it under FSDP."""
    gather = gather or (lambda unit: contextlib.nullcontext())
    state: dict[str, torch.Tensor] = {}
    for prefix, unit in adapter_units(model):
        with gather(unit):
            for name, param in unit.named_parameters():
                key = clean_name(f"{prefix}.{name}" if prefix else name)
                state.setdefault(key, param.detach().to("cpu", copy=True))
    return state


def is_fsdp(strategy: Any) -> bool:
    return isinstance(strategy, FSDPStrategy)


def clean_name(name: str) -> str:
    """A parameter name without FSDP / activation-checkpoint wrapper prefixes (as state dicts spell it)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def gathered_model_state(trainer: Any, attribute: str = "model") -> dict[str, Any] | None:
    """Under FSDP, the adapter (trainable) tensors of ``pl_module.<attribute>``, whole on rank 0; the frozen base is
    never gathered. Every rank must call it: it is a collective. ``None`` for other strategies (the module's own
    tensors are whole)."""
    if not is_fsdp(trainer.strategy):
        return None
    full = adapter_state_dict(trainer.strategy.model, fsdp_gather)
    prefix = attribute + "."
    return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}


def clip_gradients(module: Any, value: float | None, algorithm: str | None) -> bool:
    """FSDP clips the norm over all shards through its root module (Lightning's plugin refuses ``norm``); returns
    whether it clipped, so other strategies fall back to Lightning's own clipping."""
    if not value or not is_fsdp(module.trainer.strategy) or (algorithm or "norm") != "norm":
        return False
    module.trainer.strategy.model.clip_grad_norm_(float(value))
    return True
