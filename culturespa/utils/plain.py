"""Plain forms of a config: its resolved data without the ``hydra`` node, and folder-safe names for overrides."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


def slug(text: str, max_len: int = 80) -> str:
    """A folder-safe name for a set of overrides; long ones are cut and made unique with a short hash.

    Spelled as run folders are (``utils.rundirs.readable``): ``=`` becomes ``-`` and ``,`` becomes ``+``, so a path
    pastes unquoted into an override (``mode=specific,cultures=all`` → ``mode-specific+cultures-all``). Folders named
    before this (with ``=``) are left as they were; the same command now writes to the new name.
    """
    spelled = (text or "default").replace("=", "-").replace(",", "+")
    clean = re.sub(r"[^A-Za-z0-9_.+-]+", "-", spelled).strip("-") or "default"
    if len(clean) <= max_len:
        return clean
    digest = hashlib.sha1(clean.encode()).hexdigest()[:8]
    return f"{clean[: max_len - 9]}-{digest}"


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data without the ``hydra`` node (for W&B and files beside outputs)."""
    copy = cfg.copy()
    with open_dict(copy):
        copy.pop("hydra", None)
    container = OmegaConf.to_container(copy, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    return container
