"""``evaluate(cfg)``: step 5 of CultureSPA and its analyses, called by ``evaluate.py`` and the pipeline.

Suites (``eval.suite``):
* ``wvs``: answer the WVS questions per culture (or read ``eval.source=predictions`` files) and score them →
  ``alignment.json``, a terminal table and W&B tables/summary.
* ``relations``: the same, plus every steered culture scored against every culture's answers → ``relations.csv`` and
  ``relations.png`` (and W&B).
* ``general``: lm-evaluation-harness on the base model and the adapter(s) → ``general.json`` (and W&B).

Every user error (unknown culture, missing adapter, adapter for another base model, bad predictions file) is raised as
one line before any model is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.config import first_n, validate_config
from culturespa.data.survey import WVSData
from culturespa.utils.tracking import finish_run, start_run

log = logging.getLogger(__name__)


def _questions(cfg: DictConfig, wvs: WVSData) -> list[Any]:
    return first_n(list(wvs.eval_questions), cfg, "eval.limit")


def _predicted_answers(cfg: DictConfig, wvs: WVSData, questions: list[Any], cultures: list[str]) -> dict:
    from culturespa.evaluate.predictions import PLACEHOLDER, load_predictions, prediction_paths

    template = OmegaConf.select(cfg, "eval.predictions.path", default=None)
    paths = prediction_paths(template, cultures)
    # Validate against every WVS question (files may hold unscored ones such as demographics); score the selected.
    known = list(wvs.questions.values())
    scored = {q.id for q in questions}
    if PLACEHOLDER not in str(template):
        records = [r for r in load_predictions(next(iter(paths.values())), known) if r["id"] in scored]
        return {None: records}
    return {code: [r for r in load_predictions(path, known) if r["id"] in scored] for code, path in paths.items()}


def _setting(cfg: DictConfig, source: str, adapter: str | None) -> dict[str, Any]:
    return {
        "source": source,
        "model": str(cfg.model.name) if source == "model" else None,
        "adapter": adapter,
        "prompt": str(cfg.prompt.name) if source == "model" else None,
        "decoding": str(cfg.decoding.mode) if source == "model" else None,
        "runs": None,
        "predictions": OmegaConf.select(cfg, "eval.predictions.path", default=None) if source != "model" else None,
        "limit": OmegaConf.select(cfg, "eval.limit", default=None),
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured suite; returns output paths and headline numbers."""
    cultures = validate_config(cfg)
    from culturespa.evaluate.latest import resolve_latest
    from culturespa.evaluate.uncertainty import BootstrapSettings, ScoreTable, attach_intervals

    bootstrap = BootstrapSettings.from_config(cfg)  # a bad eval.bootstrap value fails before any model work
    resolve_latest(cfg)  # eval.adapter=latest → the newest adapter for this model and mode
    suite = str(cfg.eval.suite)
    out_dir = Path(str(cfg.eval.output_dir))
    if suite == "general":
        from culturespa.evaluate.general import log_general, run_general

        summary = run_general(cfg, cultures)
        run = start_run(cfg, "evaluate", "general")
        try:
            log_general(run, summary)
        finally:
            finish_run(run)
        return summary

    wvs = WVSData.load(cfg.paths.wvs_dir)
    for code in cultures:
        wvs.answer_shares(code, wvs.eval_questions[0].id)  # raises when the survey data lacks the culture
    questions = _questions(cfg, wvs)
    source = str(cfg.eval.source)
    if source == "predictions":
        answers = _predicted_answers(cfg, wvs, questions, cultures)
        setting = _setting(cfg, source, None)
    else:
        from culturespa.evaluate.adapters import resolve_adapters
        from culturespa.evaluate.answering import answer_with_model, effective_runs

        plan = resolve_adapters(OmegaConf.select(cfg, "eval.adapter"), cultures, cfg.model, cfg.paths.cache_dir)
        setting = _setting(cfg, source, plan.describe())
        setting["adapter_kind"] = plan.kind
        setting["runs"] = effective_runs(cfg)
        answers = answer_with_model(cfg, wvs, questions, cultures, plan)

    from culturespa.evaluate.alignment_score import items_by_culture, relation_matrix, score_all
    from culturespa.evaluate.references import averages, reference_scores
    from culturespa.evaluate.report import log_results, print_table, write_results

    results = score_all(answers, questions, wvs, cultures)
    table = ScoreTable.from_items(items_by_culture(answers, questions, wvs, cultures), [q.id for q in questions])
    attach_intervals(results, table, bootstrap)
    results["references"] = reference_scores(wvs, questions, cultures)
    results["setting"] = setting
    for code in results["unscored"]:
        log.warning("%s: no valid answer to any question with survey answers; score reported as null", code)
    path = write_results(out_dir, results)
    print_table(results, title=f"WVS alignment ({setting.get('prompt') or source})")
    print(f"alignment results written to {path}")
    summary: dict[str, Any] = {
        "alignment": str(path),
        "average": results["average"],
        "average_ci": [results["average_lo"], results["average_hi"]],
        "js_similarity_average": results["js_similarity_average"],
        "scores": {c: r["score"] for c, r in results["cultures"].items()},
        "references": averages(results["references"]),
    }
    from culturespa.evaluate.question_table import log_table, model_prompts
    from culturespa.stages import lineage
    from culturespa.utils import artifacts

    run = start_run(cfg, "evaluate", lineage.evaluation_label(cfg))
    try:
        artifacts.use_inputs(run, lineage.evaluation_inputs(cfg), cfg)
        log_results(run, results)
        log_table(run, answers, questions, wvs, cultures, model_prompts(cfg, wvs, plan) if source == "model" else None)
        if suite == "relations":
            from culturespa.evaluate.analyses import log_outputs, relations_outputs

            matrix = relation_matrix(answers, questions, wvs, cultures)
            outputs = relations_outputs(matrix, cultures, out_dir)
            log_outputs(run, "relations", outputs)
            summary["relations"] = {k: str(v) for k, v in outputs.items()}
            summary["relations_matrix"] = matrix
        artifacts.log_output(run, lineage.alignment(out_dir), cfg)
    finally:
        finish_run(run)
    return summary
