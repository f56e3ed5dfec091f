"""``eval.adapter=latest``: the newest finished adapter for this base model and mode, so nobody copies run paths
(where training leaves its adapters is :func:`culturespa.stages.lineage.find_latest_adapter`)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf, open_dict

from culturespa.stages.lineage import find_latest_adapter


def resolve_latest(cfg: Any) -> None:
    """Replace ``eval.adapter=latest`` in ``cfg`` by the folder it stands for (and say which one)."""
    if str(OmegaConf.select(cfg, "eval.adapter", default=None)) != "latest":
        return
    folder = find_latest_adapter(cfg)
    with open_dict(cfg):
        cfg.eval.adapter = str(folder)
    print(f"eval.adapter=latest: {folder}")
