"""GPU presets keep their device and precision whatever the trainer option, and the FSDP preset builds a sharding
strategy that suits LoRA (FSDP itself needs GPUs: Lightning and PyTorch refuse it on the CPU)."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from culturespa.config import CONFIG_DIR, compose
from culturespa.errors import CultureSPAError
from culturespa.settings import SFTSettings, build
from culturespa.train.run import BatchPlan, TrainSettings, train
from culturespa.train.strategies import clean_name, fsdp_strategy, fsdp_wrap_policy
from culturespa.train.trainer import build_trainer, check_strategy
from culturespa.utils.plain import to_plain

EXPERIMENTS = sorted(f.stem for f in (CONFIG_DIR / "experiment").glob("*.yaml"))
TRAINERS = sorted(f.stem for f in (CONFIG_DIR / "trainer").glob("*.yaml") if f.stem != "default")


def device(cfg: object) -> tuple[str, str]:
    trainer = to_plain(cfg)["trainer"]  # type: ignore[arg-type]
    return trainer["accelerator"], trainer["precision"]


@functools.cache
def preset_device(experiment: str) -> tuple[str, str]:
    return device(compose("train", [f"experiment={experiment}"]))


def test_fsdp_is_a_trainer_option() -> None:
    assert {"cpu", "gpu", "ddp", "ddp_spawn", "fsdp"} <= set(TRAINERS)


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_preset_device_and_precision_survive_every_trainer_option(
    experiment: str, trainer: str, tmp_path: Path
) -> None:
    preset = preset_device(experiment)
    cfg = compose("train", [f"experiment={experiment}", f"trainer={trainer}", "trainer.devices=8"], output_dir=tmp_path)
    assert device(cfg) == preset
    assert cfg.trainer.devices == 8


def test_paper_joint_on_eight_gpus_keeps_bf16(tmp_path: Path) -> None:
    """The issue's command: `experiment=paper_joint trainer=ddp trainer.devices=8` printed precision 32-true."""
    for trainer in ("ddp", "ddp_spawn", "fsdp"):
        cfg = compose(
            "train", ["experiment=paper_joint", f"trainer={trainer}", "trainer.devices=8"], output_dir=tmp_path
        )
        assert device(cfg) == ("gpu", "bf16-mixed"), trainer
    smoke = compose("train", ["experiment=smoke", "trainer=gpu"], output_dir=tmp_path)
    assert device(smoke) == ("cpu", "32-true")


def test_trainer_option_decides_without_a_preset_and_overrides_still_win(tmp_path: Path) -> None:
    assert device(compose("train", [], output_dir=tmp_path)) == ("cpu", "32-true")
    assert device(compose("train", ["trainer=gpu"], output_dir=tmp_path)) == ("gpu", "bf16-mixed")
    assert device(compose("train", ["trainer=ddp"], output_dir=tmp_path)) == ("auto", "32-true")
    cfg = compose("train", ["experiment=paper_joint", "trainer=ddp", "sft.precision=16-mixed"], output_dir=tmp_path)
    assert device(cfg) == ("gpu", "16-mixed")
    cfg = compose("train", ["experiment=paper_joint", "trainer=ddp", "trainer.accelerator=cpu"], output_dir=tmp_path)
    assert device(cfg) == ("cpu", "bf16-mixed")
    assert device(compose("train", ["experiment=paper_joint", "debug=default"], output_dir=tmp_path)) == (
        "cpu",
        "32-true",
    )


def _trainer(cfg: object, has_val: bool = True) -> object:
    plan = BatchPlan.from_config(cfg)  # type: ignore[arg-type]
    sft = SFTSettings.from_config(cfg.sft)  # type: ignore[attr-defined]
    return build_trainer(cfg.trainer, sft, plan.accumulate, has_val, [], [], "unused")  # type: ignore[attr-defined]


def test_fsdp_preset_builds_a_lora_ready_strategy(tmp_path: Path) -> None:
    from lightning.pytorch.strategies import FSDPStrategy

    cfg = compose("train", ["experiment=paper_joint", "trainer=fsdp", "trainer.devices=8"], output_dir=tmp_path)
    strategy = build(cfg.trainer.strategy, "trainer.strategy")
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True  # LoRA: frozen and trainable weights keep their own flags
    assert strategy._state_dict_type == "full"
    assert str(strategy.sharding_strategy).endswith("FULL_SHARD")
    plain = to_plain(cfg)["trainer"]
    assert plain["precision"] == "bf16-mixed" and plain["accelerator"] == "gpu" and plain["devices"] == 8
    assert BatchPlan.from_config(cfg).accumulate == 128 // (4 * 8)


def test_cpu_trainer_is_instantiated_with_the_batch_plan(tmp_path: Path) -> None:
    cfg = compose(
        "train", ["sft.max_steps=3", "sft.global_batch_size=8", "sft.micro_batch_size=2"], output_dir=tmp_path
    )
    trainer = _trainer(cfg)
    assert trainer.max_steps == 3 and trainer.max_epochs == -1 and trainer.accumulate_grad_batches == 4
    assert trainer.num_sanity_val_steps == 2 and trainer.gradient_clip_val == 1.0
    no_val = _trainer(compose("train", ["sft.epochs=2"], output_dir=tmp_path), has_val=False)
    assert no_val.max_epochs == 2 and no_val.max_steps == -1 and no_val.limit_val_batches == 0


def test_fsdp_on_cpu_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = compose("train", ["trainer=fsdp", "sft.accelerator=cpu"], output_dir=tmp_path)
    with pytest.raises(CultureSPAError, match="trainer=fsdp needs GPUs"):
        check_strategy(cfg.trainer)
    with pytest.raises(CultureSPAError, match="trainer=fsdp needs GPUs"):  # at start-up, before the pairs files
        train(compose("train", ["trainer=fsdp", "sft.accelerator=cpu", f"sft.pairs_dir={tmp_path}/none"]))
    cfg = compose("train", ["experiment=paper_joint", "trainer=fsdp", "peft=qlora"], output_dir=tmp_path)
    with pytest.raises(CultureSPAError, match="peft=qlora"):
        check_strategy(cfg.trainer)
    with pytest.raises(CultureSPAError, match=r"unknown key\(s\) \['shard'\]; valid: .*wrap"):
        fsdp_strategy(shard=True)
    cfg = compose("train", ["trainer=fsdp", "sft.accelerator=gpu", "trainer.strategy.sharding_strategy=HALF"])
    with pytest.raises(CultureSPAError) as err:  # Lightning's own refusal, as one line naming the key
        check_strategy(cfg.trainer)
    assert str(err.value).startswith("trainer.strategy._target_='culturespa.train.strategies.fsdp_strategy'")
    assert "\n" not in str(err.value)


def test_fsdp_wraps_decoder_layers_and_lora_leaves_in_uniform_dtype_units(tmp_path: Path) -> None:
    """Each FSDP unit must flatten tensors of one dtype: decoder blocks are units, and so is every trainable LoRA
    leaf (fp32 next to a bf16 base); frozen base projections stay inside their block's unit."""
    import torch

    from culturespa.train.peft_model import build_peft_model

    cfg = compose("train", ["model=tiny_random", "model.dtype=bfloat16"], output_dir=tmp_path)
    plain = to_plain(cfg)
    model = build_peft_model(plain["model"], plain["peft"], str(cfg.paths.cache_dir))
    policy = fsdp_wrap_policy(str(OmegaConf.select(compose("train", ["trainer=fsdp"]), "trainer.strategy.wrap")))
    wrapped = {
        name for name, m in model.named_modules() if name and policy(module=m, recurse=False, nonwrapped_numel=0)
    }
    blocks = {n for n in wrapped if type(model.get_submodule(n)).__name__ == "LlamaDecoderLayer"}
    leaves = wrapped - blocks
    assert len(blocks) == cfg.model.tiny.num_hidden_layers
    assert leaves and all(".lora_A." in n or ".lora_B." in n for n in leaves)
    trainable = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == leaves
    for name in leaves:  # one dtype per unit
        assert {p.dtype for p in model.get_submodule(name).parameters()} == {torch.float32}
    for name in blocks:
        block = model.get_submodule(name)
        inner = {
            id(p) for leaf in leaves if leaf.startswith(name + ".") for p in model.get_submodule(leaf).parameters()
        }
        assert {p.dtype for p in block.parameters() if id(p) not in inner} == {torch.bfloat16}


def test_checkpoint_names_drop_fsdp_wrapper_prefixes() -> None:
    name = "model._fsdp_wrapped_module.base_model.model.model.layers.0._fsdp_wrapped_module.self_attn.q_proj.lora_A"
    assert clean_name(name + ".default._fsdp_wrapped_module.weight") == (
        "model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    )


def test_device_keys_leave_training_identity_unchanged(tmp_path: Path) -> None:
    """Moving SFT between devices does not retrain a finished adapter; its precision does."""
    from culturespa.stages.identity import stage_hash
    from culturespa.train.run import fingerprint

    cpu = compose("train", ["trainer=ddp", "sft.accelerator=cpu"], output_dir=tmp_path)
    gpu = compose("train", ["trainer=ddp", "sft.accelerator=gpu"], output_dir=tmp_path)
    bf16 = compose("train", ["trainer=ddp", "sft.precision=bf16-mixed"], output_dir=tmp_path)
    prints = [fingerprint(TrainSettings.from_config(cfg), "joint") for cfg in (cpu, gpu, bf16)]
    assert prints[0] == prints[1] != prints[2]
    assert stage_hash(cpu, "train") == stage_hash(gpu, "train") != stage_hash(bf16, "train")


def _trained_module(tmp_path: Path) -> Any:
    """An SFTModule holding the tiny model with a non-trivial LoRA adapter (B starts at zero)."""
    import torch

    from culturespa.train.module import SFTModule
    from culturespa.train.peft_model import build_peft_model

    cfg = compose("train", ["model=tiny_random"], output_dir=tmp_path)
    plain = to_plain(cfg)
    module = SFTModule(plain["model"], plain["peft"], {"lr": 1e-4}, str(cfg.paths.cache_dir), 1)
    module.model = build_peft_model(plain["model"], plain["peft"], str(cfg.paths.cache_dir))
    with torch.no_grad():
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    return module


def test_fsdp_adapter_export_gathers_the_adapter_units_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under FSDP rank 0 saves the adapter from tensors gathered unit by unit: only units whose parameters are all
    trainable (the LoRA leaves) are gathered, never a frozen base weight, and the result is exactly what PEFT saves
    from an unsharded model. Other strategies gather nothing."""
    from types import SimpleNamespace

    import torch
    from lightning.pytorch.strategies import FSDPStrategy
    from safetensors.torch import load_file

    from culturespa.train import strategies
    from culturespa.train.strategies import gathered_model_state

    module = _trained_module(tmp_path)
    gathered: list[int] = []

    def recording_gather(unit: torch.nn.Module) -> Any:
        assert all(p.requires_grad for p in unit.parameters())  # never a frozen (base) tensor
        gathered.append(sum(p.numel() for p in unit.parameters()))
        return contextlib.nullcontext()

    monkeypatch.setattr(strategies, "fsdp_gather", recording_gather)

    class ShardedFSDP(FSDPStrategy):  # stands in for a set-up FSDPStrategy (FSDP itself needs GPUs)
        def __init__(self) -> None:
            pass

        model = module

    assert gathered_model_state(SimpleNamespace(strategy="ddp")) is None
    state = gathered_model_state(SimpleNamespace(strategy=ShardedFSDP()))
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.model.parameters())
    assert sum(gathered) == trainable < total / 10 and len(gathered) == 2 * 2 * 7  # A and B, 2 layers x 7 projections
    assert state is not None and all(not k.startswith("model.") for k in state)
    module.model.save_pretrained(str(tmp_path / "plain"))
    module.model.save_pretrained(str(tmp_path / "gathered"), state_dict=state)
    plain_t = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    gathered_t = load_file(str(tmp_path / "gathered" / "adapter_model.safetensors"))
    assert plain_t.keys() == gathered_t.keys() and len(plain_t) > 0
    assert all(torch.equal(plain_t[k], gathered_t[k]) for k in plain_t)


def test_fsdp_checkpoint_state_is_the_adapter_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trainer=fsdp`` checkpoints (state_dict_type full) hold the trainable tensors under the LightningModule's own
    names, gathered without the base; ``sharded`` leaves Lightning's per-rank shards alone."""
    import torch

    from culturespa.train import strategies

    module = _trained_module(tmp_path)
    monkeypatch.setattr(strategies, "fsdp_gather", lambda unit: contextlib.nullcontext())
    strategy = fsdp_strategy(accelerator="gpu")
    assert isinstance(strategy, strategies.AdapterFSDPStrategy)
    strategy.model = module
    state = strategy.lightning_module_state_dict()
    want = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k].detach()) for k in want)
    sharded = fsdp_strategy(accelerator="gpu", state_dict_type="sharded")
    sharded.model = module
    monkeypatch.setattr(strategies.FSDPStrategy, "lightning_module_state_dict", lambda self: {"lightning": 1})
    assert sharded.lightning_module_state_dict() == {"lightning": 1}


def test_fsdp_rank0_loads_and_other_ranks_build_on_meta(tmp_path: Path) -> None:
    """``rank0_loads``: ranks > 0 build the same PEFT model (names, shapes, dtypes, trainable flags) on the meta
    device without reading weights; FSDP gets ``sync_module_states`` and an init that gives meta modules empty
    storage on the rank's device (the CPU here), to be filled by rank 0's broadcast."""

    from culturespa.train.peft_model import build_peft_model
    from culturespa.train.strategies import builds_on_meta, materialize

    strategy = fsdp_strategy(accelerator="gpu")
    assert strategy.kwargs["sync_module_states"] is True and strategy.kwargs["param_init_fn"] is materialize
    assert not builds_on_meta(strategy, 0) and builds_on_meta(strategy, 3)
    assert not builds_on_meta(fsdp_strategy(accelerator="gpu", rank0_loads=False), 3)
    assert "sync_module_states" not in fsdp_strategy(accelerator="gpu", rank0_loads=False).kwargs
    assert not builds_on_meta("ddp", 3)

    plain = to_plain(compose("train", ["model=tiny_random", "model.dtype=bfloat16"], output_dir=tmp_path))
    cache = str(compose("train", [], output_dir=tmp_path).paths.cache_dir)
    real = build_peft_model(plain["model"], plain["peft"], cache, "cpu")
    empty = build_peft_model(plain["model"], plain["peft"], cache, "cpu", empty=True)
    shape = {n: (p.shape, p.dtype, p.requires_grad) for n, p in real.named_parameters()}
    assert shape == {n: (p.shape, p.dtype, p.requires_grad) for n, p in empty.named_parameters()}
    assert {p.device.type for p in empty.parameters()} == {"meta"}
    layer = empty.get_submodule("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default")
    materialize(layer)
    assert (
        layer.weight.device.type == "cpu"
        and layer.weight.shape == shape["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"][0]
    )
