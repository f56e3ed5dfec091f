"""CPU weight prepacking for inference: fp32 ``nn.Linear`` weights reordered once into oneDNN's blocked layout.

Why: on CPU, ``F.linear`` hands the weight to the GEMM in its stored layout on every call; a weight prepacked for
oneDNN runs the fp32 projections of this model family 1.3-2.4x faster (64 -> 154 GFLOP/s at 32 rows, the decode
steps; 141 -> 198 at 400 rows, a prefill batch), which is what ``torch.compile`` does on CPU with frozen weights —
without the compile. Measured end to end in docs/benchmarks.md. bf16 layers are left alone: packed, they ran slower
end to end. The packed copies cost one more copy of the fp32 weights while the packer lives.

Below ``MIN_ROWS`` rows (a decode step with one or a few rows left, the paper loop's batch of one) the packed kernel
is slower than the plain GEMM (1.5-1.8x at 1-2 rows, same-process micro-benchmark of this model's projections), so
those calls take the plain path.

Inference only: packed forwards are installed inside :meth:`LinearPacker.active` and removed on exit, and a packed
copy is rebuilt when its weight was replaced or changed in place (an optimiser step moves the tensor's version).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

MIN_ROWS = 4  # fewer rows than this: the plain GEMM (packed ran 1.5-1.8x slower at 1-2 rows)


def available() -> bool:
    """Whether this torch build can prepack linear weights (oneDNN on CPU)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(
        torch.backends.mkldnn.is_available()
        and ops is not None
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def eligible(module: nn.Module) -> bool:
    """A plain fp32 CPU ``nn.Linear`` whose forward nobody else replaced (accelerate hooks, quantised subclasses
    such as bitsandbytes' ``Linear4bit`` and PEFT wrappers are not plain; PEFT's base layers are)."""
    return (
        type(module) is nn.Linear
        and module.weight.device.type == "cpu"
        and module.weight.dtype == torch.float32
        and "forward" not in module.__dict__
        and not hasattr(module, "_hf_hook")
    )


class LinearPacker:
    """Keeps a packed copy of every eligible layer of ``model`` and installs packed forwards while active."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        # id(layer) -> (the weight it was packed from, that weight's version then, the packed copy)
        self._packed: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}

    def _weight(self, layer: nn.Linear) -> torch.Tensor:
        weight = layer.weight
        cached = self._packed.get(id(layer))
        if cached is not None and cached[0]() is weight and cached[1] == weight._version:
            return cached[2]
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        self._packed[id(layer)] = (weakref.ref(weight), weight._version, packed)
        return packed

    @contextmanager
    def active(self) -> Iterator[int]:
        """Packed forwards on every eligible layer inside the block (yields how many); the original ones after."""
        patched: list[nn.Linear] = []
        try:
            if available():
                for layer in self.model.modules():
                    if eligible(layer):
                        layer.forward = _packed_forward(layer, self._weight(layer))  # type: ignore[method-assign]
                        patched.append(layer)  # type: ignore[arg-type]
            yield len(patched)
        finally:
            for layer in patched:
                del layer.forward


def _packed_forward(layer: nn.Linear, packed: torch.Tensor) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        plain = x.dtype != torch.float32 or x.device.type != "cpu"  # e.g. an autocast region
        if plain or x.numel() < MIN_ROWS * x.shape[-1]:
            return nn.functional.linear(x, layer.weight, layer.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, layer.bias, "none", [], "")

    return forward
