"""When a generate stage may skip, resume or must restart an output, decided the same way for every stage.

Each expensive output ``X.jsonl`` has a sidecar ``X.jsonl.meta.json`` holding the fingerprint of the config that
produced it (model, decoding, templates, inputs...) and whether it finished:

* final file present, sidecar ``complete`` with the same fingerprint, no ``overwrite`` → skip (one log line);
* ``X.jsonl.part`` present with the same fingerprint → resume it;
* ``X.jsonl.part`` present with another fingerprint → one-line error (rerun with ``overwrite=true``): mixing answers
  of two configs in one file would be silently wrong;
* ``overwrite=true`` → the part file is discarded and the stage starts over. The final file is only replaced when
  the new run finishes (atomic rename), so a failing run never destroys earlier output.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.errors import fail
from culturespa.utils.jsonl import write_json

log = logging.getLogger("culturespa.generate")


def overwrite_requested(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "overwrite", default=False))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar of ``path`` (empty when missing or unreadable)."""
    return _read_sidecar(Path(path))


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = _sidecar(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def prepare(path: str | Path, fp: str, overwrite: bool) -> str:
    """Decide what to do with ``path``; returns ``"skip"``, ``"resume"`` or ``"fresh"`` (and clears a part file that
    ``overwrite`` discards). Raises a one-line error for a part file of another config."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    meta = _read_sidecar(path)
    if overwrite:
        part.unlink(missing_ok=True)
        return "fresh"
    if path.is_file() and not part.exists() and meta.get("complete") and meta.get("fingerprint") == fp:
        return "skip"
    if part.exists():
        if meta.get("fingerprint") not in (None, fp):
            raise fail(
                part,
                "an interrupted run with a different config left this part file; rerun with "
                "overwrite=true to discard it, or restore the original config to resume it",
            )
        return "resume"
    return "fresh"


def refuse_shrink(path: str | Path, finished: set[str], wanted: set[str], how: str) -> None:
    """A finished output is never replaced by fewer records: when this run's record set leaves out records that the
    finished ``path`` holds, stop with one line naming the file and the ways forward (``how``)."""
    dropped = finished - wanted
    if dropped:
        raise fail(
            path,
            f"holds {len(finished)} finished records, {len(dropped)} of which this run would drop (it asks for "
            f"{len(wanted)}); {how}",
        )


def mark(path: str | Path, fp: str, complete: bool, **extra: Any) -> None:
    """Record the fingerprint (and completion) of ``path``; written at start and again when the file is final."""
    write_json(_sidecar(Path(path)), {"fingerprint": fp, "complete": complete, **extra})
