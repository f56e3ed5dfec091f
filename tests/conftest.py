"""Shared fixtures: composed configs in a temp folder, the WVS data, the tiny and embedded models (cached once)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")

from omegaconf import DictConfig, open_dict  # noqa: E402

from culturespa.config import compose  # noqa: E402
from culturespa.wvs.survey import WVSData, default_data_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def wvs() -> WVSData:
    return WVSData.load(default_data_dir())


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a primary config with all outputs (run dir, stage files, W&B) under ``tmp_path``.

    The model cache stays the shared repo cache, so models are converted once per machine.
    """

    def _make(config_name: str = "train", overrides: Sequence[str] = (), wandb_mode: str = "offline") -> DictConfig:
        out = tmp_path / "run"
        # model.dtype=auto picks bf16 or fp32 by CPU: tests that compare answers pin fp32 unless they ask otherwise
        pin = [] if any(o.startswith("model.dtype=") for o in overrides) else ["model.dtype=float32"]
        cfg = compose(config_name, [*overrides, *pin], output_dir=out)
        with open_dict(cfg):
            cfg.paths.work_dir = str(tmp_path / "work")
            cfg.paths.log_dir = str(tmp_path / "logs")
            if cfg.logger.get("wandb") is not None:
                cfg.logger.wandb.mode = wandb_mode
        return cfg

    return _make


# The answers stage on the tiny random model, small enough for a test (shards, workers).
TINY_ANSWERS = [
    "stage=answers",
    "model=tiny_random",
    "answers.input=wvs",
    "logger=csv",
    "answers.limit=7",
    "engine.batch_size=2",
    "answers.resume_chunk=2",
    "decoding.max_new_tokens=3",
]


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> object:
    """Configs whose paths do not depend on the checkout: digests and run-folder names hold on any machine."""
    monkeypatch.setenv("CULTURESPA_ROOT", "/pinned-root")
    monkeypatch.delenv("CULTURESPA_DATA_DIR", raising=False)
    monkeypatch.delenv("CULTURESPA_CACHE", raising=False)

    def make(name: str, *overrides: str) -> DictConfig:
        return compose(name, ["model.dtype=float32", *overrides], output_dir="/pinned-out")

    return make
