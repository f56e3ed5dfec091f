"""``evaluate(cfg)``: step 5 of CultureSPA and its analyses, called by ``evaluate.py`` and the pipeline.

Suites (``eval.suite``):
* ``wvs``: answer the WVS questions per culture (or read ``eval.source=predictions`` files) and score them →
  ``alignment.json``, a terminal table and W&B tables/summary.
* ``relations``: the same, plus every steered culture scored against every culture's answers → ``relations.csv`` and
  ``relations.png`` (and W&B).
* ``general``: lm-evaluation-harness on the base model and the adapter(s) → ``general.json`` (and W&B).

Plan → run → record: the config is read once into :class:`EvaluateSettings` (every user error — unknown culture,
missing adapter, adapter for another base model, bad predictions file — is raised as one line before any model is
loaded), the answers are made or read and scored into a :class:`Scored`, and the results are written and logged. What
reads the composed config by design (W&B and its lineage, the adapters' provenance check, the model's answer loop) is
bound to it once, in an :class:`EvaluateRuntime`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.config import validate_config
from culturespa.evaluate.adapters import AdapterPlan, resolve_adapters
from culturespa.evaluate.alignment_score import items_by_culture, relation_matrix, score_all
from culturespa.evaluate.analyses import log_outputs, relations_outputs
from culturespa.evaluate.answering import answer_with_model
from culturespa.evaluate.evaluate_settings import AnsweringSettings, EvaluateSettings
from culturespa.evaluate.general import log_general, run_general
from culturespa.evaluate.latest import resolve_latest
from culturespa.evaluate.predictions import PLACEHOLDER, load_predictions, prediction_paths
from culturespa.evaluate.question_table import log_table, model_prompts
from culturespa.evaluate.references import averages, reference_scores
from culturespa.evaluate.report import log_results, print_table, write_results
from culturespa.evaluate.uncertainty import BootstrapSettings, ScoreTable, attach_intervals
from culturespa.stages import lineage, provenance
from culturespa.stages.run_inputs import EVALUATE_OUTPUTS, adapter_identity, claim
from culturespa.utils import artifacts
from culturespa.utils.tracking import finish_run, start_run
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One WVS evaluation's answers and their scores, ready to be written and logged."""

    wvs: WVSData
    questions: list[Question]
    answers: dict[str | None, list[dict[str, Any]]]
    plan: AdapterPlan | None  # None: answers read from prediction files
    results: dict[str, Any]


@dataclass(frozen=True)
class EvaluateRuntime:
    """The config-bound parts of one evaluation (as ``stages/runtime.StageRuntime`` for the generate stages):
    ``check_adapters`` compares the adapters' provenance with this run's settings, ``track`` opens the W&B run (a WVS
    evaluation's with its lineage: pass its output folder), ``answer`` asks the model (engine and workers' configs)."""

    check_adapters: Callable[[Iterable[Path]], None]
    track: Callable[[Path | None], AbstractContextManager[Any]]
    answer: Callable[[WVSData, list[Question], list[str], AdapterPlan], tuple[int, dict]]

    @classmethod
    def bind(cls, cfg: DictConfig) -> EvaluateRuntime:
        bound = functools.partial
        return cls(bound(provenance.check_adapters, cfg), bound(evaluation_run, cfg), bound(answer_from_model, cfg))


@contextmanager
def evaluation_run(cfg: DictConfig, out_dir: Path | None) -> Iterator[Any]:
    """The W&B run (None with logging off): the general suite's, or with ``out_dir`` a WVS evaluation's, which
    declares its inputs first and logs its results on a clean exit."""
    run = start_run(cfg, "evaluate", "general" if out_dir is None else lineage.evaluation_label(cfg))
    try:
        if out_dir is not None:
            artifacts.use_inputs(run, lineage.evaluation_inputs(cfg), cfg)
        yield run
        if out_dir is not None:
            artifacts.log_output(run, lineage.alignment(out_dir), cfg)
    finally:
        finish_run(run)


def answer_from_model(
    cfg: DictConfig, wvs: WVSData, questions: list[Question], cultures: list[str], plan: AdapterPlan
) -> tuple[int, dict]:
    """The runs answered and the answers; answering's settings are read only here (prediction files never need
    them), and ``Engine.from_config`` and the workers take ``cfg`` itself."""
    answering = AnsweringSettings.from_config(cfg)
    return answering.runs, answer_with_model(answering, cfg, wvs, questions, cultures, plan)


def plan_evaluation(cfg: DictConfig) -> EvaluateSettings:
    """Check the config and read it once (every user error before any model work)."""
    cultures = validate_config(cfg)
    bootstrap = BootstrapSettings.from_config(cfg)  # a bad eval.bootstrap value fails before the adapter search
    resolve_latest(cfg)  # eval.adapter=latest → the newest adapter for this model and mode
    settings = EvaluateSettings.from_config(cfg, cultures, bootstrap)
    adapter = adapter_identity(settings.eval.adapter)  # ``latest`` resolved above; None: the base model
    standalone = cfg.get("task_name") == "evaluate"  # the pipeline's stage folders are hashed by what they read
    claim(settings.output_dir, {"eval.adapter": adapter} if adapter and standalone else {}, EVALUATE_OUTPUTS)
    return settings


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured suite; returns output paths and headline numbers."""
    settings = plan_evaluation(cfg)
    runtime = EvaluateRuntime.bind(cfg)
    if settings.eval.suite == "general":
        return evaluate_general(settings, runtime)
    return record(settings, score_wvs(settings, runtime), runtime)


def evaluate_general(settings: EvaluateSettings, runtime: EvaluateRuntime) -> dict[str, Any]:
    """lm-evaluation-harness on the base model and the adapter(s): the WVS suite's adapter checks, its own W&B run."""
    plan = resolve_adapters(settings.eval.adapter, list(settings.cultures), settings.model, settings.cache_dir)
    runtime.check_adapters(plan.folders.values())  # as the WVS suite, before lm-eval loads anything
    summary = run_general(settings, plan)
    with runtime.track(None) as run:
        log_general(run, summary)
    return summary


def _predicted_answers(settings: EvaluateSettings, wvs: WVSData, questions: list[Question]) -> dict:
    template = settings.eval.predictions.get("path")
    paths = prediction_paths(template, settings.cultures)
    # Validate against every WVS question (files may hold unscored ones such as demographics); score the selected.
    known = list(wvs.questions.values())
    scored = {q.id for q in questions}
    if PLACEHOLDER not in str(template):
        records = [r for r in load_predictions(next(iter(paths.values())), known) if r["id"] in scored]
        return {None: records}
    return {code: [r for r in load_predictions(path, known) if r["id"] in scored] for code, path in paths.items()}


def _setting(settings: EvaluateSettings, adapter: str | None) -> dict[str, Any]:
    from_model = settings.eval.source == "model"
    return {
        "source": settings.eval.source,
        "model": str(settings.model["name"]) if from_model else None,
        "adapter": adapter,
        "prompt": settings.prompt_name if from_model else None,
        "decoding": settings.decoding_mode if from_model else None,
        "runs": None,
        "predictions": settings.eval.predictions.get("path") if not from_model else None,
        "limit": settings.eval.limit,
    }


def _answers(
    settings: EvaluateSettings, runtime: EvaluateRuntime, wvs: WVSData, questions: list[Question]
) -> tuple[dict, dict[str, Any], AdapterPlan | None]:
    """The answers per culture, the ``setting`` block that says where they came from, and the adapter plan."""
    if settings.eval.source == "predictions":
        return _predicted_answers(settings, wvs, questions), _setting(settings, None), None
    cultures = list(settings.cultures)
    plan = resolve_adapters(settings.eval.adapter, cultures, settings.model, settings.cache_dir)
    runtime.check_adapters(plan.folders.values())  # trained on debug or foreign pairs: said (paper: refused)
    setting = _setting(settings, plan.describe())
    setting["adapter_kind"] = plan.kind
    setting["runs"], answers = runtime.answer(wvs, questions, cultures, plan)
    return answers, setting, plan


def score_wvs(settings: EvaluateSettings, runtime: EvaluateRuntime) -> Scored:
    """Answer (or read) the WVS questions and score them, with intervals and the references beside."""
    wvs = WVSData.load(settings.wvs_dir)
    cultures = list(settings.cultures)
    for code in cultures:
        wvs.answer_shares(code, wvs.eval_questions[0].id)  # raises when the survey data lacks the culture
    questions = list(wvs.eval_questions)
    if settings.eval.limit is not None:  # a positive integer: checked with the config (settings.EvalSettings)
        questions = questions[: settings.eval.limit]
    answers, setting, plan = _answers(settings, runtime, wvs, questions)
    results = score_all(answers, questions, wvs, cultures)
    table = ScoreTable.from_items(items_by_culture(answers, questions, wvs, cultures), [q.id for q in questions])
    attach_intervals(results, table, settings.bootstrap)
    results["references"] = reference_scores(wvs, questions, cultures)
    results["setting"] = setting
    for code in results["unscored"]:
        log.warning("%s: no valid answer to any question with survey answers; score reported as null", code)
    return Scored(wvs, questions, answers, plan, results)


def record(settings: EvaluateSettings, scored: Scored, runtime: EvaluateRuntime) -> dict[str, Any]:
    """Write ``alignment.json``, print the table, log to W&B (and the relations outputs); returns the summary."""
    results, out_dir = scored.results, settings.output_dir
    path = write_results(out_dir, results)
    print_table(results, title=f"WVS alignment ({results['setting'].get('prompt') or settings.eval.source})")
    print(f"alignment results written to {path}")
    summary: dict[str, Any] = {
        "alignment": str(path),
        "average": results["average"],
        "average_ci": [results["average_lo"], results["average_hi"]],
        "js_similarity_average": results["js_similarity_average"],
        "scores": {c: r["score"] for c, r in results["cultures"].items()},
        "references": averages(results["references"]),
    }
    wvs, questions, answers, cultures = scored.wvs, scored.questions, scored.answers, list(settings.cultures)
    prompts = model_prompts(settings.style, wvs, scored.plan) if scored.plan is not None else None
    with runtime.track(out_dir) as run:
        log_results(run, results)
        log_table(run, answers, questions, wvs, cultures, prompts)
        if settings.eval.suite == "relations":
            matrix = relation_matrix(answers, questions, wvs, cultures)
            outputs = relations_outputs(matrix, cultures, out_dir)
            log_outputs(run, "relations", outputs)
            summary["relations"] = {k: str(v) for k, v in outputs.items()}
            summary["relations_matrix"] = matrix
    return summary
