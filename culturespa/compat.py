"""One home for every private or internal third-party API the package relies on.

Each function wraps one such call, says why no public API does the job, and has a test in ``tests/test_compat.py``
that fails loudly (naming the library) when an upgrade removes or changes it. Nothing else in the package touches a
third-party name that starts with an underscore. The module imports nothing from the package (lowest floor), and its
third-party imports are made where used: each library is heavy and only some commands need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

KV = tuple[Any, Any]  # one layer's (keys, values) tensors, [batch, heads, positions, head_dim]


def log_input_artifact_offline(run: Any, artifact: Any) -> None:
    """W&B: declare a draft ``artifact`` as an input of an offline ``run``. ``run.use_artifact`` refuses drafts while
    offline; this is what it does online, through the private ``Run._log_artifact``."""
    run._log_artifact(artifact, aliases=[], is_user_created=True, use_after_commit=True)


def wandb_logger_started(logger: Any) -> bool:
    """Lightning ``WandbLogger``: whether its W&B run exists. The public ``logger.experiment`` would start one, so the
    private ``_experiment`` is read instead."""
    return logger._experiment is not None


def forget_quantizer(model: Any) -> None:
    """transformers: a model loaded from GGUF holds plain dequantised weights but keeps its ``hf_quantizer`` marker,
    which makes ``save_pretrained`` refuse; there is no public way to clear it."""
    model.hf_quantizer = None


def filled_cache(layers: Sequence[KV], config: Any) -> Any:
    """transformers: a ``DynamicCache`` (built for ``config``) already holding ``layers``, through the public
    ``Cache.update`` (what the internal ``DynamicCache(ddp_cache_data=...)`` does)."""
    from transformers import DynamicCache  # heavy: only the engine builds caches

    cache = DynamicCache(config=config)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def cache_layers(cache: Any) -> list[KV]:
    """transformers: the (keys, values) tensors of every layer of a ``DynamicCache`` (its ``layers[i].keys`` and
    ``.values``; the cache has no public accessor that returns them without copying)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def lightning_should_accumulate(trainer: Any) -> bool:
    """Lightning: whether the training loop will hold back the optimiser step after the micro-batch just ended
    (gradient accumulation under way, not the epoch's last batch). The decision lives in the private
    ``_TrainingEpochLoop._should_accumulate``; recomputing it would copy its rules (last batch, strategy hooks)."""
    return bool(trainer.fit_loop.epoch_loop._should_accumulate())


def silence_wandb_warnings(messages: Sequence[str]) -> None:
    """W&B: never print these ``termwarn`` messages. W&B prints a warning given ``repeat=False`` once per process and
    records it in the private ``wandb.errors.term._printed_messages``; marking a message there as printed is the only
    way to drop one that W&B writes straight to the console (no logger, no warnings category)."""
    from wandb.errors import term  # heavy: only commands that log to W&B need it

    term._printed_messages.update(f"{term.WARN_STRING} {message}" for message in messages)


def checkpoint_mark_saved(callback: Any, step: int) -> None:
    """Lightning ``ModelCheckpoint``: record ``step`` as already saved, so its step-labelled save is skipped (a run
    resumed mid-accumulation must not save the step it resumed at). The record is the private
    ``_last_global_step_saved``; no public setter exists."""
    callback._last_global_step_saved = int(step)


def checkpoint_should_skip(callback: Any, trainer: Any) -> bool:
    """Lightning ``ModelCheckpoint``: whether a save now would be refused (fast_dev_run, not fitting, sanity check,
    this step already saved). The private ``_should_skip_saving_checkpoint`` holds the rules; copying them would
    drift."""
    return bool(callback._should_skip_saving_checkpoint(trainer))


def checkpoint_save_last(callback: Any, trainer: Any) -> None:
    """Lightning ``ModelCheckpoint``: write ``last.ckpt`` now, off Lightning's schedule (a wall-time save). The
    private ``_save_last_checkpoint`` with the private ``_monitor_candidates`` is what Lightning itself calls;
    ``trainer.save_checkpoint`` would skip the callback's bookkeeping (last path, saved step, logger notice)."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def checkpoint_write(callback: Any, trainer: Any, filepath: str) -> None:
    """Lightning ``ModelCheckpoint``: its own write of one checkpoint file (the private ``_save_checkpoint``), for a
    subclass that overrides that method to act around the write: every save Lightning makes goes through it, and no
    public hook runs after the file is written."""
    from lightning.pytorch.callbacks import ModelCheckpoint  # heavy: only training needs it

    ModelCheckpoint._save_checkpoint(callback, trainer, filepath)
