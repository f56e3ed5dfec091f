"""Hydra/OmegaConf glue shared by every entry point: resolvers, start-up validation and config composition.

Validation runs before any model or data is loaded, so ``mode=jiont``, ``cultures=[XYZ]`` or ``data.fraction=1.5``
fail at once with a one-line message that lists the valid values.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.errors import CultureSPAError
from culturespa.settings import check_values
from culturespa.stages.checks import sampling_errors
from culturespa.stages.identity import GENERATE_STAGES, config_key
from culturespa.utils import rundirs
from culturespa.utils.plain import slug
from culturespa.wvs.cultures import resolve_cultures

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def repo_root() -> str:
    """``$CULTURESPA_ROOT``, else the checkout that holds this package (it has ``conf/``), else the working dir."""
    env = os.environ.get("CULTURESPA_ROOT")
    if env:
        return env
    root = Path(__file__).resolve().parents[1]
    return str(root) if (root / "conf").is_dir() else os.getcwd()


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cs_root"):
        OmegaConf.register_new_resolver("cs_root", repo_root)
    if not OmegaConf.has_resolver("cs_slug"):
        OmegaConf.register_new_resolver("cs_slug", lambda text="": slug(str(text)))
    rundirs.register(config_key)


register_resolvers()


def validate_config(cfg: DictConfig, stage: str | None = None) -> list[str]:
    """Check the values every stage relies on; returns the resolved culture codes.

    ``stage`` adds the checks specific to one generate stage.
    """
    errors = check_values(cfg)
    if stage is not None and stage not in GENERATE_STAGES:
        errors.append(f"stage={stage!r} is not valid; choose one of: {', '.join(GENERATE_STAGES)}")
    errors += sampling_errors(cfg)  # data.samples / noise_replicates / majority's reachable significance
    if errors:
        raise CultureSPAError("; ".join(errors))
    return resolve_cultures(cfg.get("cultures"))


def check_override_keys(argv: Sequence[str], config_name: str) -> None:
    """Reject a command-line key the config does not have (``sft.learning_rate=1e-4``) with one line naming the nearest
    valid keys, before Hydra composes anything (its own message spans many lines and suggests nothing)."""
    keys = [o.key_or_group for o in _plain_key_overrides(argv)]
    if not keys:
        return
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    selections = [a for a in argv if "=" in a and a.split("=", 1)[0].lstrip("+~") in groups and "," not in a]
    try:
        known = set(_dotted_keys(OmegaConf.to_container(compose(config_name, selections), resolve=False)))
    except Exception:  # noqa: BLE001 - a bad group selection: check_group_overrides and Hydra report it
        return
    for key in keys:
        if key not in known:
            near = nearest_keys(key, known)
            hint = f"; nearest valid keys: {', '.join(near)}" if near else ""
            print(f"error: {key} is not a config key{hint} (+{key}=VALUE adds a new key)", file=sys.stderr)
            sys.exit(1)


def nearest_keys(key: str, known: set[str], count: int = 3) -> list[str]:
    """The valid keys closest to ``key``: siblings first (``sft.lr`` for ``sft.learning_rate``: its initials count as
    a match), else the closest keys anywhere."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in known if k.rpartition(".")[0] == parent]
    if not siblings:
        return difflib.get_close_matches(key, sorted(known), n=count, cutoff=0.6)
    initials = "".join(part[:1] for part in leaf.split("_") if part)

    def score(candidate: str) -> float:
        name = candidate.rpartition(".")[2]
        return 1.0 if name == initials else difflib.SequenceMatcher(None, leaf, name).ratio()

    ranked = sorted(siblings, key=lambda k: (-score(k), k))
    return [k for k in ranked[:count] if score(k) >= 0.3]


def _plain_key_overrides(argv: Sequence[str]) -> list[Any]:
    """The overrides that set an existing config value (not ``+``/``++``/``~``, not groups or ``hydra.*``)."""
    args = [a for a in argv if "=" in a and not a.startswith(("-", "hydra.", "hydra/", "+", "~"))]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - malformed overrides: Hydra reports them itself
        return []
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    return [o for o in overrides if o.key_or_group.split("/")[0] not in groups and "@" not in o.key_or_group]


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a plain config tree, dotted (nodes and leaves; list items are not keys)."""
    if not isinstance(node, dict):
        return []
    out: list[str] = []
    for name, value in node.items():
        if name == "hydra" and not prefix:
            continue
        out.append(prefix + str(name))
        out += _dotted_keys(value, f"{prefix}{name}.")
    return out


def compose(config_name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose a primary config outside ``@hydra.main`` (tests, the pipeline), with ``hydra:`` interpolations set.

    ``output_dir`` becomes ``hydra.runtime.output_dir`` (and so ``paths.output_dir``).
    """
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
