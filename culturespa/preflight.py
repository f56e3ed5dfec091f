"""Check what a run needs before any work: a W&B key when logging online, the model (a local folder, a cached hub id
offline, the embedded wheel), writable output folders, and disk room for the model cache.

Each problem is one ``CultureSPAError`` line naming the setting or folder and the fix, raised at start-up, so a long
GPU job never fails at its end (after all the work) for a reason that was knowable before it began. Nothing is
loaded, built, downloaded or written here (the writability probe creates and removes one empty temp file).
"""

from __future__ import annotations

import configparser
import logging
import netrc
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from culturespa.errors import CultureSPAError
from culturespa.models.loader import (
    COMPLETE_MARKER,
    ModelSpec,
    cache_target,
    default_cache_dir,
    gguf_location,
    resolve_model_dir,
)
from culturespa.stages.identity import MODEL_STAGES, STAGE_OUTPUTS, task_stages
from culturespa.utils.failures import os_error_line

log = logging.getLogger("culturespa")

WANDB_HOST = "https://api.wandb.ai"
DISK_MARGIN = 1.1  # room asked for beyond the estimate (temp files, tokenizer, filesystem overhead)
# bits per weight of common GGUF encodings: converting to fp32 safetensors multiplies the size by 32 / bits
GGUF_BITS = {"Q2": 2.6, "Q3": 3.4, "Q4": 4.5, "Q5": 5.5, "Q6": 6.6, "Q8": 8.5, "BF16": 16.0, "F16": 16.0, "F32": 32.0}


def preflight(cfg: DictConfig) -> None:
    """Every check for the task ``cfg`` describes (train, generate stage, evaluate, pipeline)."""
    check_wandb(cfg)
    for folder in output_folders(cfg):
        check_writable(folder)
    if needs_model(cfg):
        spec = ModelSpec.from_config(cfg.model)
        check_model(spec, OmegaConf.select(cfg, "paths.cache_dir", default=None))


# ---- W&B ---------------------------------------------------------------------------------------------------------
def wandb_credentials() -> str | None:
    """Where ``wandb`` would find credentials, as it looks (environment, ``.netrc``, settings files), or None.

    The same places ``wandb login`` documents: ``WANDB_API_KEY`` (or ``WANDB_IDENTITY_TOKEN_FILE``), the ``.netrc``
    entry for the W&B host (``NETRC``, ``~/.netrc``, ``~/_netrc``), and ``api_key`` in a global
    (``$WANDB_CONFIG_DIR/settings``, ``~/.config/wandb/settings``) or workspace (``wandb/settings``) settings file.
    """
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(key, "").strip():
            return key
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or WANDB_HOST).hostname or "api.wandb.ai"
    candidates = [Path(os.environ["NETRC"]).expanduser()] if os.environ.get("NETRC") else []
    candidates += [Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if entry and entry[2]:
            return str(path)
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path("~/.config/wandb").expanduser())
    workspace = Path(os.environ.get("WANDB_DIR") or ".") / "wandb" / "settings"
    for path in (config_dir / "settings", workspace):
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.get("default", "api_key", fallback="").strip():
            return str(path)
    return None


def check_wandb(cfg: DictConfig) -> None:
    wb = OmegaConf.select(cfg, "logger.wandb", default=None)
    if wb is None or str(wb.get("mode", "offline")) != "online":
        return
    if wandb_credentials() is None:
        raise CultureSPAError(
            "logger.wandb.mode=online but no W&B API key was found (WANDB_API_KEY, ~/.netrc, wandb settings); "
            "run `wandb login` once (or export WANDB_API_KEY=...), or log offline with WANDB_MODE=offline "
            "(upload later with `wandb sync`)"
        )


# ---- output folders ------------------------------------------------------------------------------------------------
def _select(cfg: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here (no Hydra app): not ours to check
        return None
    return str(value) if value not in (None, "") else None


def output_folders(cfg: DictConfig) -> list[Path]:
    """The folders this task will write to (the pipeline: its run folder and its stage store)."""
    if str(cfg.get("task_name", "")) == "pipeline":
        root = _select(cfg, "pipeline.root")
        base = _select(cfg, "paths.root_dir")
        keyed = [("paths.output_dir", _select(cfg, "paths.output_dir"))]
        keyed.append(("pipeline.root", root or (str(Path(base) / "outputs" / "pipeline") if base else None)))
    else:
        keys = ["paths.output_dir"] + [STAGE_OUTPUTS[s] for s in sorted(task_stages(cfg)) if s in STAGE_OUTPUTS]
        keyed = [(key, _select(cfg, key)) for key in keys]
    folders: list[Path] = []
    for key, value in keyed:
        if value is None:
            continue
        path = Path(value).expanduser()
        folder = path.parent if key.endswith(".output") else path  # a stage's output file: its folder
        if folder not in folders:
            folders.append(folder)
    return folders


def _nearest_existing(folder: Path) -> Path:
    """``folder`` itself, or the nearest folder above it that exists (where it would be created)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_writable(folder: Path) -> None:
    """``folder`` (or, if it does not exist yet, the nearest folder above it) accepts a new file."""
    probe = _nearest_existing(folder)
    if not probe.is_dir():
        raise CultureSPAError(f"{probe}: is a file, but {folder} must be a folder; choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".culturespa-write-test.", dir=probe)
    except OSError as err:
        raise CultureSPAError(os_error_line(err, folder) or f"{folder}: cannot write there ({err})") from None
    os.close(fd)
    os.unlink(tmp)


# ---- model ---------------------------------------------------------------------------------------------------------
def needs_model(cfg: DictConfig) -> bool:
    if str(cfg.get("task_name", "")) == "evaluate":
        return str(OmegaConf.select(cfg, "eval.source", default="model")) == "model"
    return bool(task_stages(cfg) & MODEL_STAGES)


def check_model(spec: Any, cache_dir: str | Path | None) -> None:
    """The model can be had without any download (or the hub is online), and its cache has room to be built."""
    if spec.source == "hf":
        resolve_model_dir(spec, cache_dir)  # local folder or cached hub id offline: checked, nothing built
        return
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_target(spec, cache)
    if (target / COMPLETE_MARKER).exists():
        return  # built already (a damaged one is rebuilt, with a warning, when loaded)
    if spec.source == "gguf_wheel":
        folder, file = gguf_location(spec)
        need = int((Path(folder) / file).stat().st_size * 32 / _gguf_bits(file))
    else:
        base = spec.tiny.get("tokenizer_from")
        if not base:
            raise CultureSPAError(f"model {spec.name}: model.tiny.tokenizer_from must describe the tokenizer's model")
        check_model(ModelSpec.from_config(base), cache)
        need = _tiny_bytes(spec.tiny)
    check_disk(target, need, f"building the {spec.name} model cache")


def _gguf_bits(file: str) -> float:
    match = re.search(r"(?i)\b(BF16|F16|F32|Q\d)", file.replace(".", " ").replace("-", " "))
    return GGUF_BITS.get(match.group(1).upper(), 4.0) if match else 4.0  # unknown: assume the largest growth


def _tiny_bytes(tiny: dict[str, Any]) -> int:
    hidden, inter = int(tiny.get("hidden_size", 64)), int(tiny.get("intermediate_size", 128))
    layers, vocab = int(tiny.get("num_hidden_layers", 2)), 49_152  # the SmolLM2 tokenizer
    params = vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter)
    return 4 * params + 8 * 1024 * 1024  # fp32 weights + tokenizer files


def check_disk(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(_nearest_existing(folder)).free
    if free < need * DISK_MARGIN:
        raise CultureSPAError(
            f"{folder}: {_size(free)} free, but {what} needs about {_size(int(need * DISK_MARGIN))}; free space there "
            f"or put the cache on a bigger disk (CULTURESPA_CACHE=... or paths.cache_dir=...)"
        )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
