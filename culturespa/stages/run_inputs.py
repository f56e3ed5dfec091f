"""What a run reads besides its config (the pairs' contents, the evaluated adapter's files), recorded in the folder it
writes to, so the same command over other inputs is refused before anything there is mixed or overwritten.

Run folders are named from config values alone (``culturespa/utils/rundirs.py``: resolving ``hydra.run.dir`` reads
no file), so regenerated pairs or a retrained adapter at the same path land in the folder of the earlier run. The
stage, not the config resolver, reads those inputs (training: the pairs' content hashes; evaluation: the adapter's
:func:`adapter_identity`, ``latest`` already resolved) and calls :func:`claim` first, which writes ``run_inputs.json``
on a first run, passes a rerun over the same inputs (a crashed run resumes), and stops with one line naming what
changed when the folder already holds outputs made from other inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.utils.jsonl import write_json

LEDGER = "run_inputs.json"
TRAIN_OUTPUTS = ("adapter", "adapters", "checkpoints")
EVALUATE_OUTPUTS = ("answers", "alignment.json", "general.json")


def adapter_identity(adapter: Any) -> Any:
    """An adapter folder as it is now (files, sizes, modification times): retraining it in place changes it."""
    if adapter in (None, "", "null", "none"):
        return None
    root = Path(str(adapter)).expanduser()
    if not root.is_dir():
        return str(adapter)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    stats = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files[:500]]
    return {"path": str(root.resolve()), "files": stats}


def claim(folder: str | Path, inputs: Mapping[str, Any], outputs: Iterable[str], restart: bool = False) -> None:
    """Record ``inputs`` as those of ``folder``'s run, or refuse (one line) when ``folder`` already holds any of
    ``outputs`` made from other inputs. A folder without such outputs, or a ``restart`` (``sft.resume=false``: the
    user starts over there), takes the new inputs."""
    if not inputs:
        return
    root = Path(folder)
    ledger = root / LEDGER
    current = json.loads(json.dumps(dict(inputs), default=str))  # as it reads back from the file
    recorded = _read(ledger)
    if recorded == current:
        return
    if recorded is not None and not restart and any((root / name).exists() for name in outputs):
        changed = ", ".join(sorted(k for k in current.keys() | recorded.keys() if current.get(k) != recorded.get(k)))
        raise CultureSPAError(
            f"{root}: holds outputs made from other inputs ({changed} changed since); to keep them, run this one "
            f"in another folder (hydra.run.dir=<folder>), or delete {root}"
        )
    write_json(ledger, current)


def _read(ledger: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(ledger.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
