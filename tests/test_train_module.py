"""The LightningModule's per-step contract: padding-free packing gives the padded batch's loss, a training step never
syncs the host, non-finite values are caught at logging steps and before checkpoints, the token count is exposed for
throughput callbacks, and running out of memory is one line naming the micro-batch setting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from culturespa.config import compose
from culturespa.errors import CultureSPAError
from culturespa.train.datamodule import Collator, PackingCollator
from culturespa.train.module import SFTModule
from culturespa.train.oom import out_of_memory
from culturespa.train.peft_model import build_peft_model
from culturespa.utils.plain import to_plain


def _examples(lengths: list[tuple[int, int]], seed: int = 0) -> list[dict[str, list[int]]]:
    """Examples of (prompt, answer) token counts: the prompt is masked (-100), the answer is trained on."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for prompt, answer in lengths:
        ids = torch.randint(3, 2000, (prompt + answer,), generator=generator).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> SFTModule:
    out = tmp_path_factory.mktemp("module")
    cfg = compose("train", ["model=tiny_random", "model.dtype=float32"], output_dir=out)
    plain = to_plain(cfg)
    mod = SFTModule(plain["model"], plain["peft"], {"lr": 1e-4}, str(cfg.paths.cache_dir), 1)
    mod.model = build_peft_model(plain["model"], plain["peft"], str(cfg.paths.cache_dir))
    with torch.no_grad():  # a non-zero adapter, so its gradients are not trivially equal
        for p in mod.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return mod


def test_packed_loss_and_gradients_equal_the_padded_batch(module: SFTModule) -> None:
    """Same examples, same per-token mean loss, same LoRA gradients; no token attends across examples."""
    examples = _examples([(7, 3), (12, 1), (4, 6), (9, 2)])
    padded, packed = Collator(pad_id=2)(examples), PackingCollator()(examples)
    assert packed["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples)) and packed["examples"] == 4
    assert "attention_mask" not in packed and packed["position_ids"][0, 10].item() == 0  # restarts per example

    def loss_and_grads(batch: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module.model.zero_grad()
        loss = module.compute_loss(batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in module.model.parameters() if p.requires_grad]

    want, want_grads = loss_and_grads(padded)
    got, got_grads = loss_and_grads(packed)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the last example's logits in the packed row are its logits alone
        alone = module.model(input_ids=torch.tensor([examples[-1]["input_ids"]]), use_cache=False).logits[0]
        row = module.model(**{k: v for k, v in packed.items() if k != "examples"}, use_cache=False).logits[0]
    torch.testing.assert_close(row[-alone.shape[0] :], alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="masked"):  # an unmasked first token would be trained across a boundary
        PackingCollator()([{"input_ids": [5, 6], "labels": [5, 6]}])


class _NoSync:
    """Makes every device-to-host read of a tensor fail while it is active."""

    READS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __enter__(self) -> None:
        self.saved = {name: getattr(torch.Tensor, name) for name in self.READS}

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("host sync")

        for name in self.READS:
            setattr(torch.Tensor, name, refuse)

    def __exit__(self, *exc: object) -> None:
        for name, value in self.saved.items():
            setattr(torch.Tensor, name, value)


def test_training_step_never_reads_the_device_and_exposes_its_token_count(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = SFTModule({}, {}, {"lr": 1e-4}, None, 1)
    weight = torch.nn.Parameter(torch.ones(()))
    monkeypatch.setattr(SFTModule, "compute_loss", lambda self, batch: weight * batch["input_ids"].float().mean())
    batches = [Collator(pad_id=2)(_examples([(3, 2), (5, 1)])), PackingCollator()(_examples([(2, 2)] * 3))]
    with _NoSync():
        for index, batch in enumerate(batches):
            mod.training_step(batch, index)
            assert isinstance(mod.last_batch_tokens, torch.Tensor)  # no int(): a sync
    assert int(mod.last_batch_tokens) == 12  # the packed row: every position is a real token
    assert mod.samples_seen == 2 + 3  # examples, not rows
    assert float(mod._window["tokens"]) == 5 + 6 + 12 and float(mod._window["micro_batches"]) == 2


def _steps(mod: SFTModule, every: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Optimiser steps 0..5 with ``log_every_n_steps=every``: the steps at which the module read the device."""
    checked: list[int] = []
    logged: list[dict] = []
    trainer = SimpleNamespace(log_every_n_steps=every, world_size=1, global_step=0)
    monkeypatch.setattr(SFTModule, "trainer", property(lambda self: trainer))
    monkeypatch.setattr(SFTModule, "global_step", property(lambda self: trainer.global_step))
    monkeypatch.setattr(SFTModule, "log_dict", lambda self, metrics, **kw: logged.append(metrics))
    monkeypatch.setattr(SFTModule, "log", lambda self, *a, **kw: None)
    original = SFTModule.check_finite
    monkeypatch.setattr(SFTModule, "check_finite", lambda self: (checked.append(trainer.global_step), original(self)))
    weight = torch.nn.Parameter(torch.ones(()))
    mod.parameters = lambda recurse=True: iter([weight])  # type: ignore[method-assign]
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.1}])
    for step in range(6):
        trainer.global_step = step
        mod._add("loss", torch.tensor(2.0))
        mod._add("micro_batches", torch.tensor(1.0))
        mod._add("tokens", torch.tensor(5.0))
        weight.grad = torch.ones(())
        mod.on_before_optimizer_step(optimizer)
    assert all("train/grad_norm" in m for m in logged) and len(logged) == len(checked)
    return checked


def test_device_is_read_only_at_logging_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _steps(SFTModule({}, {}, {"lr": 1e-4}, None, 1), 3, monkeypatch) == [2, 5]


def test_non_finite_values_stop_at_the_next_check_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = SFTModule({}, {}, {"lr": 1e-4}, None, 1, checkpoint_dir="/ckpt")
    mod._add("loss", torch.tensor(float("nan")))
    with pytest.raises(
        CultureSPAError, match=r"loss is nan at optimiser step 0; the last good checkpoint is kept in /ckpt"
    ):
        mod.check_finite()
    mod._window = {"loss": torch.tensor(1.0), "grad_norm": torch.tensor(1.0), "bad_norm": torch.tensor(1.0)}
    with pytest.raises(CultureSPAError, match=r"gradient norm"):  # an earlier step's norm was not finite
        mod.check_finite()
    checkpoint: dict[str, Any] = {"state_dict": {}}
    with pytest.raises(CultureSPAError, match=r"gradient norm"):  # nor is a checkpoint written
        mod.on_save_checkpoint(checkpoint)
    mod._window = {"loss": torch.tensor(1.0)}
    mod.check_finite()


def test_out_of_memory_names_the_micro_batch_setting() -> None:
    cuda = out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 4, 8, 4)
    assert str(cuda).startswith("out of GPU memory at sft.micro_batch_size=4 (4 x 8 accumulation x 4 devices)")
    assert "sft.micro_batch_size=2" in str(cuda) and "accumulation rises to 16" in str(cuda)
    host = out_of_memory(MemoryError(), 1, 128, 1)
    assert "out of host memory at sft.micro_batch_size=1" in str(host) and "peft.gradient_checkpointing=true" in str(
        host
    )


@pytest.mark.slow
def test_a_run_out_of_memory_stops_with_one_line(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from culturespa.train.run import train
    from culturespa.train.synthetic import write_pairs

    pairs = write_pairs(tmp_path / "pairs", {"USA": 8})

    def oom(self: SFTModule, batch: dict) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total)")

    monkeypatch.setattr(SFTModule, "compute_loss", oom)
    cfg = make_cfg(
        "train",
        [
            "model=tiny_random",
            "logger=csv",
            "cultures=[USA]",
            f"sft.pairs_dir={pairs}",
            f"sft.output_dir={tmp_path / 'out'}",
            f"logger.csv.save_dir={tmp_path / 'out'}",
            "sft.global_batch_size=4",
            "sft.micro_batch_size=2",
            "sft.max_steps=1",
            "trainer.enable_progress_bar=false",
        ],
    )
    with pytest.raises(CultureSPAError, match=r"out of GPU memory at sft.micro_batch_size=2 .*sft.micro_batch_size=1"):
        train(cfg)
