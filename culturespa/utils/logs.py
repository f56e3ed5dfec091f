"""The console: one line per log record, and no third-party start-up noise.

``import lightning`` gives the ``lightning`` logger its own console handler and leaves it propagating to the root.
Under Hydra, whose job logging gives the root a console and a file handler, every Lightning INFO line was then printed
twice (once as ``INFO: ...``, once in Hydra's format). Where the root logs already, Lightning's own console handlers
are dropped and its records go to the root only (so they also reach the run's log file).

Some libraries print, on every run, messages that say nothing about the user's run (a kernel hub lookup for a 4-bit
CPU kernel even under plain LoRA, an advert, deprecations inside other libraries). :func:`quiet_third_party` drops
exactly those messages (by logger and message start, or by warning category and message), nothing else.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

from culturespa import compat

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")
# logger -> starts of the messages it logs that do not concern the run
QUIET_LOG_MESSAGES: dict[str, tuple[str, ...]] = {
    # bitsandbytes looks up a 4-bit CPU kernel on the hub at import, for every run (plain LoRA too), and fails offline
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # Lightning advertises its cloud logger at every Trainer start
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip: For seamless cloud logging",),
}
# (category, message regex) of warnings raised inside libraries, about their own internals
QUIET_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # transformers 5, called by PEFT/Lightning
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # torch, called by Lightning's _pytree
)
# W&B warnings printed straight to stderr: Lightning's WandbLogger always passes ``anonymous=None``
QUIET_WANDB = ("The anonymous setting has no effect and will be removed in a future version.",)


class _DropMessages(logging.Filter):
    """Rejects the records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet_third_party(wandb: bool = True) -> None:
    """Drop the messages of :data:`QUIET_LOG_MESSAGES`, :data:`QUIET_WARNINGS` and :data:`QUIET_WANDB` (idempotent).
    Every entry point calls it before its libraries load; ``wandb=False`` skips W&B's (importing it takes a second)."""
    for name, starts in QUIET_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if wandb and importlib.util.find_spec("wandb") is not None:
        compat.silence_wandb_warnings(QUIET_WANDB)


def single_log_lines() -> None:
    """One console line per record (see the module's docstring), without :func:`quiet_third_party`'s noise."""
    quiet_third_party()
    root = logging.getLogger()
    if not root.handlers:
        return  # nobody else prints: Lightning's own handlers are the only console output
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for handler in own:
            logger.removeHandler(handler)
        if own or not logger.handlers:
            logger.propagate = True
