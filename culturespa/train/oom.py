"""What a run that ran out of memory says: one line naming the micro-batch setting and what to change.

A CUDA out-of-memory error (``torch.cuda.OutOfMemoryError``) or a host ``MemoryError`` inside the fit is a traceback
of several hundred lines ending in allocator statistics; the fix is nearly always the same config change, so it is
named instead. The global batch (``sft.global_batch_size``) stays: accumulation follows the micro-batch.
"""

from __future__ import annotations

import torch

from culturespa.errors import CultureSPAError

MEMORY_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, MemoryError)


def out_of_memory(err: BaseException, micro_batch: int, accumulate: int, world_size: int) -> CultureSPAError:
    """The one-line error for ``err``; halving ``sft.micro_batch_size`` doubles the accumulation, same global batch."""
    where = "GPU" if isinstance(err, torch.cuda.OutOfMemoryError) else "host"
    plan = f"{micro_batch} x {accumulate} accumulation x {world_size} devices"
    if micro_batch > 1:
        half = micro_batch // 2
        advice = (
            f"halve it: sft.micro_batch_size={half} (gradient accumulation rises to "
            f"{accumulate * micro_batch // half}, the global batch stays the same)"
        )
    else:
        advice = "it is 1 already: set peft.gradient_checkpointing=true, peft=qlora, or data.cutoff_len lower"
    return CultureSPAError(f"out of {where} memory at sft.micro_batch_size={micro_batch} ({plan}); {advice}")
