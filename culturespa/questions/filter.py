"""Stage ``filter``: clean a question pool (ours, or the paper's 13,000) before anyone answers it.

``filter.rules`` picks the rule set: ``paper`` (the default, ``conf/filter/paper.yaml``) runs the paper notebook's
steps (``paper_filter``) and reports the count after each; ``strict`` (``conf/filter/strict.yaml``) runs the rules
below, which also drop non-substantive options, duplicate options and case/whitespace-folded duplicates.

Strict order, each question counted under the first rule that removes it: the per-question format rules of
``options.format_question`` (too few options, non-substantive option, unexplained bare numbers, unconvertible scale,
duplicate options), then exact duplicates of a WVS seed question, then exact duplicates of an earlier kept question
(case and whitespace folded, on the original text so a rewritten scale question still matches its twin), then
ROUGE-L near-duplicates within a topic (optional), then ``limit_per_topic`` (a seeded sample, input order kept).

No model is involved, so the stage is cheap and always recomputed; output and report are written atomically.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.errors import CultureSPAError
from culturespa.questions.options import RULES, format_question
from culturespa.questions.paper_filter import DEFAULT_SCALE_NOTE, paper_filter
from culturespa.questions.paper_filter import table as steps_table
from culturespa.questions.pool import load_questions
from culturespa.settings import FilterSettings
from culturespa.stages.lineage import filter_source, report_path
from culturespa.stages.outputs import overwrite_requested
from culturespa.stages.tracking import Tracker
from culturespa.utils.jsonl import refuse_fewer, write_json, write_jsonl
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import QUESTIONS_FILE, WVSData, default_data_dir, read_json

log = logging.getLogger("culturespa.generate")
ALL_RULES = (*RULES, "duplicate_of_wvs", "duplicate", "near_duplicate", "over_limit")
MODIFICATIONS = ("prefix_cleaned", "scale_converted", "non_substantive_stripped")
SAMPLE_ROWS = 50


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def limit_topics(questions: list[Question], limit: int, seed: int) -> list[Question]:
    """At most ``limit`` questions per topic, a seeded sample, input order kept."""
    rng = random.Random(seed)
    by_topic: dict[Any, list[int]] = defaultdict(list)
    for index, q in enumerate(questions):
        by_topic[q.topic].append(index)
    chosen: set[int] = set()
    for indices in by_topic.values():
        chosen.update(rng.sample(indices, min(limit, len(indices))))
    return [q for i, q in enumerate(questions) if i in chosen]


@dataclass
class Tally:
    """What the strict rules did so far: removals and modifications per rule, and sample rows for W&B."""

    removed: Counter[str] = field(default_factory=lambda: Counter({rule: 0 for rule in ALL_RULES}))
    modified: Counter[str] = field(default_factory=lambda: Counter({m: 0 for m in MODIFICATIONS}))
    samples: list[list[Any]] = field(default_factory=list)

    def note(self, q: Question, outcome: str, after: Question | None = None) -> None:
        """A sample row: the first ``SAMPLE_ROWS`` questions, plus the first few removed by each rule."""
        if len(self.samples) < SAMPLE_ROWS or (outcome != "kept" and self.removed[outcome] <= 3):
            self.samples.append(
                [
                    q.id,
                    q.topic,
                    q.text,
                    list(q.options),
                    outcome,
                    after.text if after else None,
                    list(after.options) if after else None,
                ]
            )


def _format_and_dedupe(
    questions: list[Question], seed_texts: set[str], non_substantive: str, tally: Tally
) -> list[tuple[Question, str]]:
    """The per-question format rules, then exact duplicates of a seed or of an earlier kept question; returns each
    kept question with its original text."""
    survivors: list[tuple[Question, str]] = []
    seen: set[str] = set()
    for q in questions:
        result = format_question(q.text, list(q.options), non_substantive)
        if result.dropped:
            tally.removed[result.dropped] += 1
            tally.note(q, result.dropped)
            continue
        key = normalise(q.text)
        rule = "duplicate_of_wvs" if key in seed_texts else "duplicate" if key in seen else None
        if rule:
            tally.removed[rule] += 1
            tally.note(q, rule)
            continue
        seen.add(key)
        tally.modified.update(result.changes)
        meta = dict(q.meta)
        if result.changes:
            meta["filter"] = {"changes": result.changes, "original_text": q.text, "original_options": list(q.options)}
        kept = replace(q, text=result.text, options=tuple(result.options), first_option=result.first_option, meta=meta)
        survivors.append((kept, q.text))
        tally.note(q, "kept", kept)
    return survivors


def _drop_near_duplicates(
    survivors: list[tuple[Question, str]], threshold: float, tally: Tally
) -> list[tuple[Question, str]]:
    """ROUGE-L near-duplicates within a topic, on the original texts."""
    # rouge_score and scipy load in seconds: only when the rule is on
    from culturespa.questions.near_dup import near_duplicates

    by_topic: dict[Any, list[int]] = defaultdict(list)
    for index, (kept, _) in enumerate(survivors):
        by_topic[kept.topic].append(index)
    drop: set[int] = set()
    for indices in by_topic.values():
        dup_of = near_duplicates([survivors[i][1] for i in indices], float(threshold))
        drop.update(indices[k] for k, other in enumerate(dup_of) if other is not None)
    tally.removed["near_duplicate"] = len(drop)
    return [s for i, s in enumerate(survivors) if i not in drop]


def filter_questions(
    questions: list[Question],
    seed_texts: set[str],
    rouge_l_threshold: float | None = None,
    limit_per_topic: int | None = None,
    non_substantive: str = "drop",
    seed: int = 0,
) -> tuple[list[Question], dict[str, Any], list[list[Any]]]:
    """Apply every rule; returns the kept questions, the report and sample rows (original, options, outcome)."""
    tally = Tally()
    survivors = _format_and_dedupe(questions, seed_texts, non_substantive, tally)
    if rouge_l_threshold is not None:
        survivors = _drop_near_duplicates(survivors, rouge_l_threshold, tally)
    final = [kept for kept, _ in survivors]
    if limit_per_topic is not None:
        before = len(final)
        final = limit_topics(final, int(limit_per_topic), seed)
        tally.removed["over_limit"] = before - len(final)
    report = {
        "n_input": len(questions),
        "removed": dict(tally.removed),
        "modified": dict(tally.modified),
        "kept": len(final),
        "kept_per_topic": dict(Counter(str(q.topic) for q in final)),
        "settings": {
            "rules": "strict",
            "rouge_l_threshold": rouge_l_threshold,
            "limit_per_topic": limit_per_topic,
            "non_substantive": non_substantive,
        },
    }
    assert report["kept"] + sum(tally.removed.values()) == len(questions)
    return final, report, tally.samples


@dataclass(frozen=True)
class FilterStageSettings:
    """What the filter stage reads from the composed config, typed; built once by the entry point (values checked
    with the config: ``settings.FilterSettings``)."""

    filter: FilterSettings
    source: str  # filter.input, ``paper`` resolved to the paper's pool folder
    wvs_dir: str | None
    overwrite: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> FilterStageSettings:
        return cls(
            filter=FilterSettings.from_config(cfg.filter),
            source=filter_source(cfg),
            wvs_dir=cfg.paths.wvs_dir,
            overwrite=overwrite_requested(cfg),
        )

    @property
    def output(self) -> Path:
        return Path(str(self.filter.output))


def run_filter(settings: FilterStageSettings, track: Tracker) -> dict[str, Any]:
    """``filter.rules``: the paper notebook's steps, or the strict rules (with W&B through ``track``)."""
    if settings.filter.rules == "paper":
        return run_paper_filter(settings, track)
    f, source, output = settings.filter, settings.source, settings.output
    questions = load_questions(source)
    wvs = WVSData.load(settings.wvs_dir)
    seed_texts = {normalise(q.text) for q in wvs.questions.values()}
    log.info("filter: %d questions from %s (always recomputed: no model, seconds)", len(questions), source)
    with track() as run:
        kept, report, samples = filter_questions(
            questions, seed_texts, f.rouge_l_threshold, f.limit_per_topic, f.non_substantive, int(f.seed)
        )
        report = {"input": source, "output": str(output), **report}
        _write(settings, kept, report)
        run.table(
            "filter/samples", ["id", "topic", "question", "options", "outcome", "new_question", "new_options"], samples
        )
        run.summary(
            {
                "n_input": report["n_input"],
                "kept": report["kept"],
                **{f"removed/{k}": v for k, v in report["removed"].items()},
                **{f"modified/{k}": v for k, v in report["modified"].items()},
                "questions_per_s": report["n_input"] / max(run.elapsed(), 1e-9),
            }
        )
    log.info(
        "filter: kept %d of %d -> %s (removed %s)",
        report["kept"],
        report["n_input"],
        output,
        {k: v for k, v in report["removed"].items() if v},
    )
    return stage_summary(output, report)


def _write(settings: FilterStageSettings, kept: list[Question], report: dict[str, Any]) -> None:
    """The filtered questions and their report; never fewer questions over a larger file unless ``overwrite=true``."""
    output = settings.output
    if not settings.overwrite:
        refuse_fewer(output, len(kept), "set filter.output=<another file> for this question set, or overwrite=true")
    write_jsonl(output, (q.to_record() for q in kept))
    write_json(report_path(output), report)


def stage_summary(output: Path, report: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What ``generate.py stage=filter`` returns (both rule sets): where the files went and the counts."""
    return {
        "stage": "filter",
        "output": str(output),
        "report": str(report_path(output)),
        "n_input": report["n_input"],
        "kept": report["kept"],
        "removed": report["removed"],
        **extra,
    }


def run_paper_filter(settings: FilterStageSettings, track: Tracker) -> dict[str, Any]:
    """``filter.rules=paper``: the notebook's steps (``paper_filter``), the count after each printed, written to the
    report and logged to W&B; then ``limit_per_topic`` (ours, not the paper's) when set."""
    source, output, limit = settings.source, settings.output, settings.filter.limit_per_topic
    questions = load_questions(source)
    seed_texts = paper_seed_texts(settings.wvs_dir)
    note = DEFAULT_SCALE_NOTE if settings.filter.scale_note is None else str(settings.filter.scale_note)
    log.info("filter (paper rules): %d questions from %s", len(questions), source)
    with track() as run:
        kept, steps, ids = paper_filter(questions, seed_texts, note)
        over_limit = 0
        if limit is not None:
            before = len(kept)
            kept = limit_topics(kept, limit, int(settings.filter.seed))
            over_limit = before - len(kept)
        removed = {s.step: s.count for s in steps if s.kind == "removed"}
        report = {
            "input": source,
            "output": str(output),
            "rules": "paper",
            "n_input": len(questions),
            "steps": [asdict(s) for s in steps],
            "removed": {**removed, "over_limit": over_limit},
            "modified": {s.step: s.count for s in steps if s.kind == "changed"},
            "kept": len(kept),
            "kept_per_topic": dict(Counter(str(q.topic) for q in kept)),
            "ids": ids,
            "settings": {"rules": "paper", "scale_note": note, "limit_per_topic": limit},
        }
        assert report["kept"] + sum(report["removed"].values()) == len(questions)
        _write(settings, kept, report)
        print(steps_table(len(questions), steps), flush=True)
        run.table("filter/steps", ["step", "kind", "count", "remaining"], [s.row() for s in steps])
        run.summary(
            {
                "n_input": report["n_input"],
                "kept": report["kept"],
                **{f"steps/{s.step}": s.count for s in steps},
                "removed/over_limit": over_limit,
                "questions_per_s": report["n_input"] / max(run.elapsed(), 1e-9),
            }
        )
    log.info("filter: kept %d of %d -> %s", report["kept"], report["n_input"], output)
    return stage_summary(output, report, steps={s.step: s.count for s in steps})


def paper_seed_texts(wvs_dir: Any) -> set[str]:
    """Every WVS question text exactly as stored (all 291, with the demographic ones that have no options)."""
    root = Path(str(wvs_dir)) if wvs_dir else default_data_dir()
    path = root / "wvs" / QUESTIONS_FILE if (root / "wvs" / QUESTIONS_FILE).exists() else root / QUESTIONS_FILE
    raw = read_json(path)
    if not isinstance(raw, list):
        raise CultureSPAError(f"{path}: expected a list of {{Q_id, question, option_lst}}")
    return {item["question"] for item in raw if isinstance(item, dict) and isinstance(item.get("question"), str)}
