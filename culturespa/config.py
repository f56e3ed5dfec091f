"""Hydra/OmegaConf glue shared by every entry point: resolvers, start-up validation and config composition.

Validation runs before any model or data is loaded, so ``mode=jiont``, ``cultures=[XYZ]`` or ``data.fraction=1.5``
fail at once with a one-line message that lists the valid values.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.data.cultures import resolve_cultures
from culturespa.errors import CultureSPAError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def repo_root() -> str:
    """``$CULTURESPA_ROOT``, else the checkout that holds this package (it has ``conf/``), else the working dir."""
    env = os.environ.get("CULTURESPA_ROOT")
    if env:
        return env
    root = Path(__file__).resolve().parents[1]
    return str(root) if (root / "conf").is_dir() else os.getcwd()


def slug(text: str, max_len: int = 80) -> str:
    """A folder-safe name for a set of overrides; long ones are cut and made unique with a short hash."""
    clean = re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", text or "default").strip("-") or "default"
    if len(clean) <= max_len:
        return clean
    digest = hashlib.sha1(clean.encode()).hexdigest()[:8]
    return f"{clean[: max_len - 9]}-{digest}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cs_root"):
        OmegaConf.register_new_resolver("cs_root", repo_root)
    if not OmegaConf.has_resolver("cs_slug"):
        OmegaConf.register_new_resolver("cs_slug", lambda text="": slug(str(text)))
    from culturespa.utils.rundirs import register

    register()


register_resolvers()

_CHOICES = {
    "mode.name": ("joint", "specific"),
    "peft.quantization": ("none", "4bit", "8bit"),
    "prompt.system": ("unaware", "aware", "cct"),
    "decoding.mode": ("sample", "greedy", "logprob"),
    "data.criterion": ("answer", "majority", "distribution", "none"),
    "data.system": ("aware", "cct"),
    "data.train_system": ("aware", "cct"),
    "answers.setting": ("unaware", "aware", "cct"),
    "eval.source": ("model", "predictions"),
    "eval.suite": ("wvs", "general", "relations"),
    "model.source": ("hf", "gguf_wheel", "tiny_random"),
    "model.dtype": ("float32", "bfloat16", "float16", "auto"),
}
_RANGES = {
    # key: (low, high, low inclusive)
    "data.fraction": (0.0, 1.0, False),
    "data.val_fraction": (0.0, 0.5, True),
    "data.js_threshold": (0.0, 1.0, True),
    "data.alpha": (0.0, 1.0, False),
    "data.null_quantile": (0.0, 1.0, False),
    "data.ci_level": (0.0, 1.0, False),
    "decoding.temperature": (0.0, 10.0, False),
    "decoding.top_p": (0.0, 1.0, False),
    "sft.lr": (0.0, 1.0, False),
    "sft.warmup_ratio": (0.0, 1.0, True),
}
_POSITIVE_INTS = ("sft.global_batch_size", "sft.micro_batch_size", "engine.batch_size", "peft.r", "eval.runs")
_NON_NEGATIVE_INTS = ("decoding.top_k", "questions.top_k")  # 0 = off


def validate_config(cfg: DictConfig, stage: str | None = None) -> list[str]:
    """Check the values every stage relies on; returns the resolved culture codes.

    ``stage`` adds the checks specific to one generate stage.
    """
    errors: list[str] = []
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in choices:
            errors.append(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    for key, (low, high, inclusive) in _RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and (low <= value if inclusive else low < value) and value <= high
        if not ok:
            bracket = "[" if inclusive else "("
            errors.append(f"{key}={value!r} is out of range; valid: {bracket}{low}, {high}]")
    for key in _POSITIVE_INTS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (not isinstance(value, int) or value < 1):
            errors.append(f"{key}={value!r} must be a positive integer")
    for key in _NON_NEGATIVE_INTS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            errors.append(f"{key}={value!r} must be an integer >= 0")
    stages = ("questions", "filter", "answers", "merge-answers", "pairs", "export")
    if stage is not None and stage not in stages:
        errors.append(f"stage={stage!r} is not valid; choose one of: {', '.join(stages)}")
    gbs = OmegaConf.select(cfg, "sft.global_batch_size", default=None)
    mbs = OmegaConf.select(cfg, "sft.micro_batch_size", default=None)
    if isinstance(gbs, int) and isinstance(mbs, int) and mbs > 0 and gbs % mbs:
        errors.append(f"sft.global_batch_size={gbs} must be a multiple of sft.micro_batch_size={mbs}")
    from culturespa.generate.criteria import config_errors

    errors += config_errors(cfg)  # data.samples / noise_replicates / majority's reachable significance
    if errors:
        raise CultureSPAError("; ".join(errors))
    return resolve_cultures(cfg.get("cultures"))


def compose(config_name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose a primary config outside ``@hydra.main`` (tests, the pipeline), with ``hydra:`` interpolations set.

    ``output_dir`` becomes ``hydra.runtime.output_dir`` (and so ``paths.output_dir``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def open_dict(cfg: DictConfig) -> Any:
    from omegaconf import open_dict as _open_dict

    return _open_dict(cfg)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data without the ``hydra`` node (for W&B and files beside outputs)."""
    copy = cfg.copy()
    with open_dict(copy):
        copy.pop("hydra", None)
    container = OmegaConf.to_container(copy, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    return container


def config_hash(cfg: DictConfig, keys: Sequence[str]) -> str:
    """A short stable hash of the resolved values under ``keys``: the identity of a stage's output."""
    import json

    picked = {
        k: OmegaConf.to_container(OmegaConf.select(cfg, k), resolve=True)
        if OmegaConf.is_config(OmegaConf.select(cfg, k))
        else OmegaConf.select(cfg, k)
        for k in keys
    }
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:10]


def first_n(items: list[Any], cfg: DictConfig, key: str) -> list[Any]:
    """``items`` cut to the positive-int-or-null limit at ``key`` (``eval.limit``, ``answers.limit``…)."""
    limit = OmegaConf.select(cfg, key, default=None)
    if limit is None:
        return items
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise CultureSPAError(f"{key}={limit!r} must be a positive integer or null")
    return items[:limit]
