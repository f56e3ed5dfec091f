"""Every private third-party API behind ``culturespa.compat``: each test checks that the name still exists with the
arguments we pass, then exercises the call, so an upgrade that breaks one fails here, naming the library."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from culturespa import compat
from culturespa.utils.wandb_records import read_run, run_folders

WAIT = 30.0  # seconds a finished offline run may take to reach its .wandb file


def _tiny_llama():  # noqa: ANN202
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    return LlamaForCausalLM(config).eval()


def _tiny_lightning():  # noqa: ANN202
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
            return self.layer(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def _seven_batches() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(7, 2)), batch_size=1)


def test_wandb_private_log_artifact_declares_an_offline_input(tmp_path: Path, monkeypatch) -> None:
    import wandb
    from wandb.sdk.wandb_run import Run

    params = inspect.signature(Run._log_artifact).parameters
    assert {"artifact_or_path", "aliases", "is_user_created", "use_after_commit"} <= set(params), (
        f"wandb {wandb.__version__}: Run._log_artifact changed: {list(params)}"
    )
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    (tmp_path / "data.txt").write_text("x\n")
    artifact = wandb.Artifact("compat-input", type="dataset")
    artifact.add_file(str(tmp_path / "data.txt"))
    run = wandb.init(mode="offline", project="culturespa-test", dir=str(tmp_path / "r"), reinit="finish_previous")
    try:
        compat.log_input_artifact_offline(run, artifact)
    finally:
        run.finish()
    recorded = read_run(run_folders([tmp_path / "r"])[0], WAIT).artifacts
    assert [(a.name, a.used) for a in recorded] == [("compat-input", True)]


def test_lightning_wandb_logger_private_experiment_tells_whether_a_run_started(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    logger = WandbLogger(project="culturespa-test", save_dir=str(tmp_path), offline=True)
    assert hasattr(logger, "_experiment"), "lightning: WandbLogger has no _experiment attribute any more"
    assert compat.wandb_logger_started(logger) is False  # reading it did not start a run
    try:
        logger.experiment  # noqa: B018 - starts the run
        assert compat.wandb_logger_started(logger) is True
    finally:
        logger.experiment.finish()


def test_transformers_quantizer_marker_blocks_saving_until_forgotten(tmp_path: Path) -> None:
    """``save_pretrained`` still reads the marker (it refuses a non-serialisable quantizer) and clearing it lets the
    plain weights save; if transformers renames the attribute, the refusal below no longer happens."""
    model = _tiny_llama()
    model.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf"))  # as GGUF leaves it
    with pytest.raises(ValueError, match="gguf"):
        model.save_pretrained(tmp_path / "refused")
    compat.forget_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()


def test_transformers_cache_from_layers_continues_a_prefix_exactly() -> None:
    """A cache filled with a prefix's keys and values (expanded to a batch, as the engine's prefix cache does) gives
    the logits of the full prompts; the layers read back are the tensors put in."""
    from transformers import DynamicCache

    model = _tiny_llama()
    prefix, suffix = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10], [11, 12]])
    with torch.inference_mode():
        out = model(input_ids=prefix, past_key_values=DynamicCache(config=model.config), use_cache=True)
        layers = compat.cache_layers(out.past_key_values)
        assert len(layers) == 2 and all(k.shape == (1, 2, 4, 8) and v.shape == k.shape for k, v in layers)
        batch = [(k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1)) for k, v in layers]
        cache = compat.filled_cache(batch, model.config)
        assert cache.get_seq_length() == 4
        assert all(
            torch.equal(k, bk) and torch.equal(v, bv)
            for (k, v), (bk, bv) in zip(compat.cache_layers(cache), batch, strict=True)
        )
        continued = model(input_ids=suffix, past_key_values=cache, use_cache=True).logits
        full = model(input_ids=torch.cat([prefix.expand(2, -1), suffix], dim=1)).logits[:, -2:]
    torch.testing.assert_close(continued, full)


def test_wandb_private_printed_messages_silences_a_console_warning(capsys, monkeypatch) -> None:
    from wandb.errors import term

    monkeypatch.setattr(term, "_silent", False)  # other tests (or WANDB_SILENT) may have silenced W&B's console
    monkeypatch.setattr(term, "_show_warnings", True)
    assert isinstance(term._printed_messages, set), "wandb.errors.term._printed_messages is gone or changed"
    message = "culturespa compat check: this warning must not be printed"
    compat.silence_wandb_warnings([message])
    term.termwarn(message, repeat=False)
    assert message not in capsys.readouterr().err
    term.termwarn(message + " (not silenced)", repeat=False)
    assert "(not silenced)" in capsys.readouterr().err


def test_lightning_private_should_accumulate_follows_the_accumulation_window(tmp_path: Path) -> None:
    import lightning as L
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    assert hasattr(_TrainingEpochLoop, "_should_accumulate"), (
        f"lightning {L.__version__}: _TrainingEpochLoop._should_accumulate is gone"
    )
    seen: list[bool] = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            seen.append(compat.lightning_should_accumulate(trainer))

    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=3, callbacks=[Probe()], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(_tiny_lightning(), _seven_batches())
    assert seen == [True, True, False, True, True, False, False]  # steps after 3, 6 and the epoch's last batch


def test_lightning_private_checkpoint_members_keep_their_arguments() -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    expected = {
        "_should_skip_saving_checkpoint": ["self", "trainer"],
        "_monitor_candidates": ["self", "trainer"],
        "_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
        "_save_checkpoint": ["self", "trainer", "filepath"],  # KeepTwoCheckpoint overrides it
    }
    for name, params in expected.items():
        member = getattr(ModelCheckpoint, name, None)
        assert callable(member), f"lightning {L.__version__}: ModelCheckpoint.{name} is gone"
        found = list(inspect.signature(member).parameters)
        assert found == params, f"lightning {L.__version__}: ModelCheckpoint.{name} now takes {found}, not {params}"
    saved = getattr(ModelCheckpoint(), "_last_global_step_saved", None)
    assert isinstance(saved, int), f"lightning {L.__version__}: ModelCheckpoint._last_global_step_saved is gone"


def test_lightning_private_checkpoint_calls_save_skip_and_write_through_the_override(tmp_path: Path) -> None:
    """A save off Lightning's schedule writes ``last.ckpt`` through the subclass's ``_save_checkpoint`` override (as
    Lightning's own saves do); after it, and after marking a step saved, Lightning skips saving that step."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    seen: list[bool] = []
    written: list[tuple[str, int]] = []

    class Probe(ModelCheckpoint):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
            if trainer.global_step in (2, 3):
                seen.append(compat.checkpoint_should_skip(self, trainer))
                if trainer.global_step == 2:
                    compat.checkpoint_save_last(self, trainer)
                else:
                    compat.checkpoint_mark_saved(self, trainer.global_step)
                seen.append(compat.checkpoint_should_skip(self, trainer))
            super().on_train_batch_end(trainer, *args, **kwargs)

        def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
            written.append((Path(filepath).name, int(trainer.global_step)))
            compat.checkpoint_write(self, trainer, filepath)

    probe = Probe(dirpath=str(tmp_path), save_last=True, save_top_k=0, every_n_train_steps=100,
                  save_on_train_epoch_end=False)  # fmt: skip
    trainer = L.Trainer(max_epochs=1, callbacks=[probe], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(_tiny_lightning(), _seven_batches())
    assert seen == [False, True, False, True], f"lightning {L.__version__}: ModelCheckpoint's skip rules changed"
    assert written == [("last.ckpt", 2)], f"lightning {L.__version__}: saves no longer go through _save_checkpoint"
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
