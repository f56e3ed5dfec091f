"""Run folders keyed by the config that decides a run's output, so the identical command finds its crashed run.

``hydra.run.dir`` is ``logs/<task>/runs/<readable>-<hash>`` (``hydra.sweep.subdir`` likewise under ``multirun/``):

* ``<readable>`` comes from the command-line overrides, spelled with characters a Hydra override accepts unquoted
  (``[A-Za-z0-9_.+-]``: ``=`` becomes ``-``, ``,`` becomes ``+``), so ``eval.adapter=<folder>/adapter`` pastes as is;
* ``<key>`` is the run's identity, given by the registered ``key_of`` (:func:`culturespa.stages.identity.run_key`:
  the deciding config plus what the run reads from outside it). Two commands that resolve to the same config
  share the key: the folder that already holds it is reused even when the overrides were spelled differently, so
  rerunning after a crash resumes (``last.ckpt``, answer part files). A config that differs in any deciding value
  gets a folder of its own.

The key reads files (the pairs' contents, the evaluated adapter's files, the newest adapter for ``latest``) while
Hydra resolves ``hydra.run.dir``, i.e. before any stage code runs: a key made of config values alone would give the
same command over other pairs one folder (``tests/test_run_dirs.py`` pins the names).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
KeyOf = Callable[[DictConfig], str]


def readable(overrides: str, max_len: int = 60) -> str:
    """``mode=specific,cultures=[USA,IND]`` → ``mode-specific+cultures-USA-IND``: safe unquoted in an override."""
    items = [s for s in re.split(r",(?![^\[\]{}()]*[\]})])", overrides or "") if s]
    parts = [_UNSAFE.sub("-", item.lstrip("+~").replace("=", "-", 1)).strip("-.") for item in items]
    text = "+".join(p for p in parts if p) or "default"
    text = re.sub(r"-{2,}", "-", text)
    return text[:max_len].rstrip("-.+") or "default"


def existing_folder(base: Path, key: str) -> str | None:
    """The most recently modified folder in ``base`` that already holds the run with hash ``key``."""
    if not base.is_dir():
        return None
    same = sorted((p for p in base.glob(f"*-{key}") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return same[0].name if same else None


def run_dir_name(kind: str, root: DictConfig, key_of: KeyOf) -> str:
    """``<readable>-<key>``, or the existing folder with the same key (``kind``: ``runs`` or ``multirun``)."""
    overrides = str(OmegaConf.select(root, "hydra.job.override_dirname", default="") or "")
    key = key_of(root)
    base = Path(str(OmegaConf.select(root, "paths.log_dir"))) / str(OmegaConf.select(root, "task_name")) / kind
    return existing_folder(base, key) or f"{readable(overrides)}-{key}"


def register(key_of: KeyOf) -> None:
    """The ``${cs_run_dir:runs|multirun}`` resolver; ``key_of`` names the run's identity (the config's own hash)."""

    def resolve(kind: str = "runs", *, _root_: DictConfig) -> str:
        return run_dir_name(kind, _root_, key_of)

    if not OmegaConf.has_resolver("cs_run_dir"):
        OmegaConf.register_new_resolver("cs_run_dir", resolve, use_cache=False)
