"""A real 2-process FSDP (gloo, CPU) over the tiny PEFT model: the adapter is gathered unit by unit, LoRA leaves only,
and equals the unsharded model's trainable tensors; a meta-device build (ranks > 0) is materialised by our
``param_init_fn``. PyTorch's FSDP runs on the CPU with ``device_id=cpu``; what it refuses there is
``sync_module_states`` (CPU modules), so rank 0's broadcast into the meta ranks is a GPU-only check."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from culturespa.config import compose
from culturespa.train import strategies
from culturespa.train.peft_model import build_peft_model
from culturespa.utils.plain import to_plain


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, out: str, port: int) -> None:
    """One rank: wrap the tiny PEFT model in FSDP (FULL_SHARD over 2 ranks), gather the adapter, build on meta."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        plain = to_plain(compose("train", ["model=tiny_random", "model.dtype=float32"], output_dir=Path(out)))
        cache = str(compose("train", [], output_dir=Path(out)).paths.cache_dir)
        model = build_peft_model(plain["model"], plain["peft"], cache, "cpu")
        with torch.no_grad():  # the same non-trivial adapter on both ranks
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01)
        want = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        total = sum(p.numel() for p in model.parameters())
        policy = strategies.fsdp_wrap_policy("DecoderLayer")
        wrapped = FSDP(model, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"))
        gathered: list[tuple[int, bool]] = []

        def recording(unit: torch.nn.Module) -> object:
            gathered.append(
                (sum(p.numel() for p in unit.parameters()), all(p.requires_grad for p in unit.parameters()))
            )
            return strategies.fsdp_gather(unit)

        state = strategies.adapter_state_dict(wrapped, recording)
        empty = build_peft_model(plain["model"], plain["peft"], cache, "cpu", empty=True)
        meta = FSDP(empty, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"),
                    param_init_fn=strategies.materialize)  # fmt: skip
        if rank == 0:
            result = {
                "same_keys": sorted(state) == sorted(want),
                "equal": all(torch.equal(state[k], want[k]) for k in want),
                "units": len(gathered),
                "all_trainable": all(ok for _, ok in gathered),
                "gathered_fraction": sum(n for n, _ in gathered) / total,
                "meta_left": sorted({p.device.type for p in meta.parameters()}),
            }
            Path(out, "result.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_two_ranks_gather_only_the_adapter(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path), _free_port()), nprocs=2)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["same_keys"] and result["equal"]
    assert (
        result["units"] == 2 * 2 * 7 and result["all_trainable"]
    )  # A and B of 7 projections in 2 layers, nothing else
    assert result["gathered_fraction"] < 0.1
    assert result["meta_left"] == ["cpu"]
