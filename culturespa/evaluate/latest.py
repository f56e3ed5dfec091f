"""``eval.adapter=latest``: the newest finished adapter for this base model and mode, so nobody copies run paths.

Looked for where ``train.py`` writes (``logs/train/runs/*/``, ``logs/train/multirun/*/``) and where the pipeline
trains (``outputs/pipeline/train/*/``): a joint run's ``adapter/`` or a specific run's ``adapters/`` whose
``culturespa.json`` names ``model.name`` as base model and ``mode.name`` as mode (specific: every selected culture
has its adapter). Newest = most recently finished (the adapter's metadata file is written last).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from culturespa.errors import CultureSPAError
from culturespa.evaluate.adapters import META_FILE


def _meta(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _search_roots(cfg: Any) -> list[Path]:
    log_dir = Path(str(OmegaConf.select(cfg, "paths.log_dir")))
    root_dir = Path(str(OmegaConf.select(cfg, "paths.root_dir")))
    return [log_dir / "train" / "runs", log_dir / "train" / "multirun", root_dir / "outputs" / "pipeline" / "train"]


def candidates(cfg: Any) -> list[tuple[float, Path]]:
    """(finish time, folder) of every adapter that fits ``cfg``'s model, mode and cultures."""
    from culturespa.data.cultures import resolve_cultures

    model = str(OmegaConf.select(cfg, "model.name"))
    mode = str(OmegaConf.select(cfg, "mode.name", default="joint"))
    cultures = resolve_cultures(OmegaConf.select(cfg, "cultures"))
    found: list[tuple[float, Path]] = []
    for root in _search_roots(cfg):
        if not root.is_dir():
            continue
        for run in root.iterdir():
            if mode == "joint":
                meta = _meta(run / "adapter")
                if meta and meta.get("base_model") == model and meta.get("mode", "joint") == "joint":
                    found.append(((run / "adapter" / META_FILE).stat().st_mtime, run / "adapter"))
                continue
            folder = run / "adapters"
            metas = {code: _meta(folder / code) for code in cultures}
            if all(m and m.get("base_model") == model for m in metas.values()):
                newest = max((folder / code / META_FILE).stat().st_mtime for code in cultures)
                found.append((newest, folder))
    return sorted(found, key=lambda item: item[0], reverse=True)


def find_latest_adapter(cfg: Any, required: bool = True) -> Path | None:
    """The newest matching adapter folder; a one-line error (or None) when there is none."""
    found = candidates(cfg)
    if found:
        return found[0][1]
    if not required:
        return None
    roots = ", ".join(str(r) for r in _search_roots(cfg))
    raise CultureSPAError(
        f"eval.adapter=latest: no finished {OmegaConf.select(cfg, 'mode.name')} adapter for model="
        f"{OmegaConf.select(cfg, 'model.name')} in {roots}; train one first or give eval.adapter=<folder>"
    )


def resolve_latest(cfg: Any) -> None:
    """Replace ``eval.adapter=latest`` in ``cfg`` by the folder it stands for (and say which one)."""
    if str(OmegaConf.select(cfg, "eval.adapter", default=None)) != "latest":
        return
    from omegaconf import open_dict

    folder = find_latest_adapter(cfg)
    with open_dict(cfg):
        cfg.eval.adapter = str(folder)
    print(f"eval.adapter=latest: {folder}")
