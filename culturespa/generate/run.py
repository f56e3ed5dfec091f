"""``generate(cfg)``: steps 1-3 of CultureSPA as stages chosen by ``cfg.stage``.

questions → filter → answers (sharded: merge-answers) → pairs (→ export for other trainers); stages talk only
through files. Every stage validates its inputs and the config before any model is loaded, returns a dict summary
(output paths + headline numbers) and can be called repeatedly in one process (the pipeline does).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from culturespa.config import validate_config
from culturespa.errors import CultureSPAError
from culturespa.generate.answers import run_answers
from culturespa.generate.export import run_export
from culturespa.generate.filter import run_filter
from culturespa.generate.pairs import run_pairs
from culturespa.generate.question_workers import run_questions_on_devices
from culturespa.stages.identity import GENERATE_STAGES

log = logging.getLogger("culturespa.generate")


def generate(cfg: DictConfig) -> dict[str, Any]:
    stage = cfg.get("stage")
    if stage not in GENERATE_STAGES:
        raise CultureSPAError(f"stage={stage!r} is not valid; choose one of: {', '.join(GENERATE_STAGES)}")
    cultures = validate_config(cfg, stage=stage)
    if stage == "questions":
        return run_questions_on_devices(cfg)  # engine.devices > 1: one worker per device
    if stage == "filter":
        return run_filter(cfg)
    if stage in ("answers", "merge-answers"):
        return run_answers(cfg, cultures, merge=stage == "merge-answers")
    if stage == "export":
        return run_export(cfg, cultures)
    return run_pairs(cfg, cultures)
