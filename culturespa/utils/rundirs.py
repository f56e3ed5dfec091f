"""Run folders keyed by the config that decides a run's output, so the identical command finds its crashed run.

``hydra.run.dir`` is ``logs/<task>/runs/<readable>-<hash>`` (``hydra.sweep.subdir`` likewise under ``multirun/``):

* ``<readable>`` comes from the command-line overrides, spelled with characters a Hydra override accepts unquoted
  (``[A-Za-z0-9_.+-]``: ``=`` becomes ``-``, ``,`` becomes ``+``), so ``eval.adapter=<folder>/adapter`` pastes as is;
* ``<hash>`` covers the whole resolved config except what only says where things are written, whether to resume, or
  how to log (see :data:`EXCLUDED`). Two commands that resolve to the same config share the hash: the folder that
  already holds it is reused even when the overrides were spelled differently, so rerunning after a crash resumes
  (``last.ckpt``, answer part files). A config that differs in any deciding value gets a folder of its own.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

# Keys that do not decide a run's output: where it is written, logging, resume switches, tags.
EXCLUDED = (
    "hydra",
    "logger",
    "tags",
    "force",
    "overwrite",
    "paths.output_dir",
    "paths.log_dir",
    "sft.output_dir",
    "sft.resume",
    "sft.checkpoint_minutes",
    "sft.num_workers",
    "eval.output_dir",
)
PLACEHOLDER = "<run>"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
HASH_LEN = 10


def readable(overrides: str, max_len: int = 60) -> str:
    """``mode=specific,cultures=[USA,IND]`` → ``mode-specific+cultures-USA-IND``: safe unquoted in an override."""
    items = [s for s in re.split(r",(?![^\[\]{}()]*[\]})])", overrides or "") if s]
    parts = [_UNSAFE.sub("-", item.lstrip("+~").replace("=", "-", 1)).strip("-.") for item in items]
    text = "+".join(p for p in parts if p) or "default"
    text = re.sub(r"-{2,}", "-", text)
    return text[:max_len].rstrip("-.+") or "default"


def _drop(cfg: DictConfig, key: str) -> None:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node:
        node.pop(leaf)


def adapter_identity(adapter: Any) -> Any:
    """An adapter folder as it is now (files, sizes, modification times): retraining it in place changes the key."""
    if adapter in (None, "", "null", "none"):
        return None
    root = Path(str(adapter)).expanduser()
    if not root.is_dir():
        return str(adapter)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files[:500]]
    return {"path": str(root.resolve()), "files": stats}


def pairs_digest(folder: Any) -> dict[str, str]:
    """Content hashes of the ``*.jsonl`` pairs files in ``folder``: regenerated pairs are another training input."""
    root = Path(str(folder))
    if not root.is_dir():
        return {}
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest()[:12] for p in sorted(root.glob("*.jsonl"))}


def config_key(root: DictConfig) -> str:
    """Hash of the resolved config minus :data:`EXCLUDED` (``paths.output_dir`` stands in as a placeholder)."""
    cfg = copy.deepcopy(root)
    with open_dict(cfg):
        for key in EXCLUDED:
            if key != "paths.output_dir":
                _drop(cfg, key)
        if OmegaConf.select(cfg, "paths", default=None) is not None:
            cfg.paths.output_dir = PLACEHOLDER
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(plain, dict)
    plain.get("paths", {}).pop("output_dir", None)
    adapter = OmegaConf.select(root, "eval.adapter", default=None)
    if adapter is not None and isinstance(plain.get("eval"), dict):
        plain["eval"]["adapter"] = adapter_identity(_latest_or(adapter, root))
    if str(OmegaConf.select(root, "task_name", default="")) == "train":
        plain["pairs_content"] = pairs_digest(OmegaConf.select(root, "sft.pairs_dir", default=""))
    blob = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:HASH_LEN]


def _latest_or(adapter: Any, root: DictConfig) -> Any:
    if str(adapter) != "latest":
        return adapter
    from culturespa.evaluate.latest import find_latest_adapter

    found = find_latest_adapter(root, required=False)
    return str(found) if found else adapter


def run_dir_name(kind: str = "runs", *, _root_: DictConfig) -> str:
    """Resolver ``${cs_run_dir:runs|multirun}``: ``<readable>-<hash>``, or the existing folder with the same hash."""
    overrides = str(OmegaConf.select(_root_, "hydra.job.override_dirname", default="") or "")
    key = config_key(_root_)
    base = Path(str(OmegaConf.select(_root_, "paths.log_dir"))) / str(OmegaConf.select(_root_, "task_name")) / kind
    if base.is_dir():
        same = sorted(
            (p for p in base.glob(f"*-{key}") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if same:
            return same[0].name
    return f"{readable(overrides)}-{key}"


def register() -> None:
    if not OmegaConf.has_resolver("cs_run_dir"):
        OmegaConf.register_new_resolver("cs_run_dir", run_dir_name, use_cache=False)
