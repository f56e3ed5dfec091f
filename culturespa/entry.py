"""What every ``@hydra.main`` entry point shares: one-line user errors, always-finished W&B runs, offline defaults,
no third-party start-up noise, and (training) a clear line when its pairs are missing or were made elsewhere."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from culturespa.config import validate_config
from culturespa.errors import CultureSPAError
from culturespa.preflight import preflight
from culturespa.stages.provenance import check_training_pairs
from culturespa.utils.failures import os_error_line
from culturespa.utils.logs import quiet_third_party

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("culturespa")


def set_offline_defaults() -> None:
    """Nothing may download at run time unless the user asks: hub and W&B default to offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")


def task_wrapper(func: F) -> F:
    """Run a task after its pre-flight checks, so that a user error (or a full disk, an unwritable folder) prints one
    line and exits 1, and a W&B run is always finished."""

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            if args and isinstance(args[0], DictConfig):  # check what the run needs before any work
                before_work(args[0])
            return func(*args, **kwargs)
        except CultureSPAError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except OSError as err:  # a full disk or an unwritable folder the stages did not name: still one line
            line = os_error_line(err)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(1)
        finally:
            try:
                import wandb  # loaded by any run that logged; importing it is slow otherwise

                if wandb.run is not None:
                    wandb.finish()
            except Exception:  # noqa: BLE001 - finishing must never mask the real outcome
                pass

    return wrapped  # type: ignore[return-value]


def before_work(cfg: DictConfig) -> None:
    """Before any library loads: drop the known third-party noise; then the pre-flight checks and, for training,
    the pairs' presence and provenance (train/run.py reads them later, after the model has loaded)."""
    quiet_third_party(wandb=OmegaConf.select(cfg, "logger.wandb", default=None) is not None)
    preflight(cfg)
    if str(cfg.get("task_name", "")) == "train":
        validate_config(cfg)  # a bad value is named before missing pairs (train validates again: cheap)
        check_training_pairs(cfg)


def check_group_overrides(argv: list[str], config_dir: str) -> None:
    """Reject an unknown config-group option (``mode=jiont``, ``cultures=[XYZ]``, sweeps too) with one line that lists
    the valid options, before Hydra composes anything (Hydra's own message omits them for list selections)."""
    root = Path(config_dir)
    groups = {p.name for p in root.iterdir() if p.is_dir()}
    args = [a for a in argv if "=" in a and not a.startswith(("-", "hydra.", "hydra/", "+hydra", "~"))]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - malformed overrides: Hydra reports them itself
        return
    roots = [root, *_search_dirs(argv)]
    for override in overrides:
        key = override.key_or_group.lstrip("/")
        if key not in groups or override.is_delete():
            continue
        valid = sorted({p.stem for folder in roots for p in (folder / key).glob("*.yaml")})
        for value in _override_values(override):
            if value not in valid:
                print(
                    f"error: {key}={value} is not a valid option; valid {key} options: {', '.join(valid)}",
                    file=sys.stderr,
                )
                sys.exit(1)


def _search_dirs(argv: list[str]) -> list[Path]:
    """The local folders of ``hydra.searchpath=[file://DIR, ...]`` (config files of one's own, e.g. templates)."""

    found: list[Path] = []
    for arg in argv:
        if not arg.startswith("hydra.searchpath="):
            continue
        try:
            value = OverridesParser.create().parse_overrides([arg])[0].value()
        except Exception:  # noqa: BLE001 - malformed: Hydra reports it itself
            continue
        entries = value if isinstance(value, list) else [value]
        found += [Path(str(e).removeprefix("file://")) for e in entries if str(e).startswith("file://")]
    return found


def _override_values(override: Any) -> list[str]:
    """Flatten an override's value (plain, list selection, or sweep) into option names."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif hasattr(value, "list"):  # ChoiceSweep / GlobSweep
            walk(value.list)
        elif value is not None:
            out.append(str(value))

    if override.is_sweep_override():
        for value in override.sweep_iterator():
            walk(value)
    else:
        walk(override.value())
    return out
