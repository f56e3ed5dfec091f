"""Run folders keyed by the config that decides a run's output, so the identical command finds its crashed run.

``hydra.run.dir`` is ``logs/<task>/runs/<readable>-<key>`` (``hydra.sweep.subdir`` likewise under ``multirun/``):

* ``<readable>`` comes from the command-line overrides, spelled with characters a Hydra override accepts unquoted
  (``[A-Za-z0-9_.+-]``: ``=`` becomes ``-``, ``,`` becomes ``+``), so ``eval.adapter=<folder>/adapter`` pastes as is;
* ``<key>`` is the registered ``key_of`` of the resolved config (:func:`culturespa.stages.identity.config_key`).

The name is a function of the config alone: resolving it reads and lists no file, so printing or composing a config
never touches the disk. What a run reads from outside its config (pairs, an adapter) is checked by the stage when it
starts (:mod:`culturespa.stages.run_inputs`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

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


def run_dir_name(root: DictConfig, key_of: KeyOf) -> str:
    """``<readable>-<key>`` of the config ``root``."""
    overrides = str(OmegaConf.select(root, "hydra.job.override_dirname", default="") or "")
    return f"{readable(overrides)}-{key_of(root)}"


def register(key_of: KeyOf) -> None:
    """The ``${cs_run_dir:}`` resolver; ``key_of`` names the run's identity (the config's own hash). Not cached:
    OmegaConf caches by the resolver's arguments, and the name depends on the whole config instead."""

    def resolve(_kind: str = "", *, _root_: DictConfig) -> str:  # older saved configs: ${cs_run_dir:runs}
        return run_dir_name(_root_, key_of)

    if not OmegaConf.has_resolver("cs_run_dir"):
        OmegaConf.register_new_resolver("cs_run_dir", resolve, use_cache=False)
