"""What every ``@hydra.main`` entry point shares: one-line user errors, always-finished W&B runs, offline defaults."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from culturespa.errors import CultureSPAError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("culturespa")


def set_offline_defaults() -> None:
    """Nothing may download at run time unless the user asks: hub and W&B default to offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")


def task_wrapper(func: F) -> F:
    """Run a task so that a user error prints one line and exits 1, and a W&B run is always finished."""

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CultureSPAError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        finally:
            try:
                import wandb

                if wandb.run is not None:
                    wandb.finish()
            except Exception:  # noqa: BLE001 - finishing must never mask the real outcome
                pass

    return wrapped  # type: ignore[return-value]
