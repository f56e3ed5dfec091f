"""``generate(cfg)``: steps 1-3 of CultureSPA as stages chosen by ``cfg.stage``.

questions → filter → answers (sharded: merge-answers) → pairs (→ export for other trainers); stages talk only
through files. Every stage validates its inputs and the config before any model is loaded, returns a dict summary
(output paths + headline numbers) and can be called repeatedly in one process (the pipeline does). A stage file it
reads that was made under other settings is named first (:mod:`culturespa.stages.provenance`); the files it writes
record their own provenance. A stage that produces nothing stops there (questions run by hand: a warning), with the key to change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.answers.answers_settings import AnswersStageSettings
from culturespa.answers.stage import run_answers
from culturespa.config import validate_config
from culturespa.errors import CultureSPAError
from culturespa.pairs.stage import PairsSettings, run_pairs
from culturespa.questions.filter import FilterStageSettings, run_filter
from culturespa.questions.settings import QuestionsStageSettings
from culturespa.questions.workers import run_questions_on_devices
from culturespa.stages import provenance
from culturespa.stages.identity import GENERATE_STAGES
from culturespa.stages.lineage import filter_source
from culturespa.stages.runtime import StageRuntime
from culturespa.stages.tracking import tracker
from culturespa.train.export import run_export

log = logging.getLogger("culturespa.generate")


def generate(cfg: DictConfig) -> dict[str, Any]:
    stage = cfg.get("stage")
    if stage not in GENERATE_STAGES:
        raise CultureSPAError(f"stage={stage!r} is not valid; choose one of: {', '.join(GENERATE_STAGES)}")
    cultures = validate_config(cfg, stage=stage)
    inputs = provenance.check_generate(cfg, stage)
    if stage == "questions":
        questions = QuestionsStageSettings.from_config(cfg)  # engine.devices > 1: one worker per device
        summary = run_questions_on_devices(questions, StageRuntime.bind(cfg, "questions"))
    elif stage == "filter":
        summary = run_filter(FilterStageSettings.from_config(cfg), tracker(cfg, "filter"))
    elif stage in ("answers", "merge-answers"):
        answers = AnswersStageSettings.from_config(cfg, merge=stage == "merge-answers")
        summary = run_answers(answers, cultures, StageRuntime.bind(cfg, "answers"))
    elif stage == "export":
        return run_export(cfg, cultures)
    else:
        summary = run_pairs(PairsSettings.from_config(cfg), cultures, tracker(cfg, "pairs"))
    provenance.record(cfg, stage, summary, inputs)
    if str(OmegaConf.select(cfg, "task_name", default="")) == "generate":  # the pipeline checks its own way
        stop_if_empty(cfg, stage, summary)
    return summary


def stop_if_empty(cfg: DictConfig, stage: str, summary: Mapping[str, Any]) -> None:
    """A stage run by hand that made nothing: a one-line error for the filter. Empty questions and pairs are a
    warning only: the questions file is a valid result of its settings (a strict parser, a random model) and the filter
    reads the pool instead (``filter.input=paper``, as under ``debug=``) or stops naming ``filter.input``; the pairs'
    noise floor (``stats.json``) is a result of its own, and training stops on empty pairs."""
    reason = nothing_made(stage, summary, pipeline=False)
    if reason is None:
        return
    if stage == "questions":
        source = filter_source(cfg)
        reads = "the filter reads them next" if source == str(cfg.questions.output) else f"the filter reads {source}"
        log.warning("%s (%s: filter.input)", reason, reads)
        return
    if stage == "pairs":  # stats.json (the noise floor) is still a result; training stops on the empty pairs
        log.warning("%s", reason)
        return
    raise CultureSPAError(reason)


def nothing_made(stage: str, summary: Mapping[str, Any], pipeline: bool) -> str | None:
    """Why a finished stage's output cannot feed the next stage (it holds nothing), with the key to change; None
    when it holds something. ``pipeline``: name the pipeline's switch rather than the stage-by-stage one."""
    pool = "pipeline.questions=pool" if pipeline else "filter.input=paper for the next stage"
    if stage == "questions" and not summary.get("generated"):
        return (
            f"{summary.get('output')}: the questions stage wrote 0 questions ({summary.get('failed', 0)} slots got no "
            f"valid question from the model); raise questions.max_retries or questions.per_topic, pick a larger "
            f"model=, or take the paper's pool ({pool})"
        )
    if stage == "filter" and not summary.get("kept"):
        n = summary.get("n_input", 0)
        why = "its input holds no questions" if not n else f"every one was removed ({summary.get('removed')})"
        return (
            f"{summary.get('output')}: the filter kept 0 of {n} questions ({why}); check filter.input (the paper's "
            f"pool: {pool}) and the filter settings (filter=paper or filter=strict)"
        )
    if stage == "pairs" and not any((summary.get("kept") or {}).values()):
        return (
            f"{summary.get('output_dir')}: no culture kept a pair under data.criterion={summary.get('criterion')}; "
            "collect more answers (answers.limit, data.samples) or set data.criterion=none (every culture-aware "
            "answer kept: a debug run's setting)"
        )
    return None
