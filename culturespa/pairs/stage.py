"""Stage ``pairs`` (CRQPC, step 3): per culture, keep the culture-related question-answer pairs.

For each question, the ``data.system`` answer (aware | cct) of a culture is compared with the culture-unaware answer.
A pair is *valid* when both answers (sample 0) are valid; valid pairs are *same* or *differ*. Criteria
(``data.criterion``):

* ``answer`` (the paper): keep valid pairs whose answers (sample 0) differ;
* ``majority``: k sampled answers per setting (``data.samples``); keep when the aware majority option is not an
  unaware majority option and the Freeman-Halton exact test on the option counts rejects "same distribution" at
  ``data.alpha`` (``culturespa.pairs.criteria``);
* ``distribution``: with sampled answers, keep when the Jensen-Shannon distance between the aware and unaware option
  frequencies of the k samples exceeds the ``data.null_quantile`` quantile of the same distance between two unaware
  replicates (calibrated on the noise, not a fixed number); with logprob answers (no sampling noise to calibrate
  against) keep valid pairs whose answer distributions are at least ``data.js_threshold`` apart (base 2, in [0, 1]),
  so that a flip between two nearly tied options is not taken for culture;
* ``none``: keep every valid culture-aware answer (the unaware one may be missing or invalid): the data-quality
  ablation.

Next to the counts, ``stats.json`` holds the noise floor per culture and topic (``culturespa.pairs.noise``): how
often aware and unaware samples disagree, how often unaware samples disagree with each other, the difference with a
paired bootstrap interval, and the expected share of kept pairs that are noise. Files hold the samples of a question as
runs 0, 1, ...; the paper's rule uses run 0. Every input file is checked before anything is written; the stage is
cheap and deterministic, so it always recomputes (atomically).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.answers.stage import answers_file
from culturespa.errors import CultureSPAError, fail
from culturespa.pairs import criteria, noise
from culturespa.pairs.rule import Rule, Runs, compare, null_rates
from culturespa.settings import DataSettings
from culturespa.stages.outputs import overwrite_requested, read_meta
from culturespa.stages.tracking import Tracker
from culturespa.utils.jsonl import iter_jsonl, refuse_fewer, write_json, write_jsonl

log = logging.getLogger("culturespa.generate")


def read_answer_runs(path: Path, need_distribution: bool = False) -> tuple[dict[str, dict[str, Any]], Runs]:
    """Answer records by question id (run 0 preferred) and every run's answer (None = invalid) by id, in run order;
    a missing, empty or malformed file is a one-line error."""
    if not path.is_file():
        raise fail(path, "answers file not found (run `generate.py stage=answers` for this setting and culture)")
    by_id: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[int, int | None]] = defaultdict(dict)
    for number, record in iter_jsonl(path):
        where = f"{path}:{number}"
        for key in ("id", "valid", "answer", "question"):
            if key not in record:
                raise fail(where, f"answer record without {key!r}")
        if not isinstance(record["question"], dict) or not record["question"].get("options"):
            raise fail(where, f"answer {record['id']}: 'question' must be a question record with options")
        if record["valid"] and not isinstance(record["answer"], int):
            raise fail(where, f"answer {record['id']}: valid but 'answer' is {record['answer']!r}")
        if need_distribution and record["valid"] and not isinstance(record.get("distribution"), dict):
            raise fail(
                where,
                f"answer {record['id']}: no 'distribution'; data.criterion=distribution needs answers "
                "collected with decoding=logprob, or sampled ones (decoding=sample)",
            )
        run = record.get("run", 0)
        if not isinstance(run, int) or run < 0:
            raise fail(where, f"answer {record['id']}: 'run' must be a non-negative integer, not {run!r}")
        if record["id"] not in by_id or run == 0:
            by_id[str(record["id"])] = record
        runs[str(record["id"])][run] = record["answer"] if record["valid"] else None
    if not by_id:
        raise fail(path, "answers file is empty")
    return by_id, {q: [r[i] for i in sorted(r)] for q, r in runs.items()}


@dataclass(frozen=True)
class PairsSettings:
    """What the pairs stage reads from the composed config, typed; built once by the entry point."""

    data: DataSettings
    answers_dir: Path
    pairs_dir: Path
    decoding_mode: str  # the config's, for answer files written before their sidecar recorded it
    overwrite: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PairsSettings:
        return cls(
            data=DataSettings.from_config(cfg.data),
            answers_dir=Path(str(cfg.answers.output_dir)),
            pairs_dir=Path(str(cfg.sft.pairs_dir)),
            decoding_mode=str(cfg.decoding.mode),
            overwrite=overwrite_requested(cfg),
        )


def _decoding(settings: PairsSettings, path: Path) -> str:
    """How the answers were collected: the answers stage's sidecar says so; older files fall back to the config."""
    recorded = read_meta(path).get("decoding")
    return str(recorded or settings.decoding_mode)


@dataclass(frozen=True)
class PairsPlan:
    """Where the stage reads and writes, and the criterion's settings, all resolved before any file is read."""

    system: str
    criterion: str
    folder: Path
    out_dir: Path
    unaware_path: Path
    decoding: str
    samples: int
    replicates: int
    alpha: float
    js_threshold: float
    null_quantile: float
    ci: tuple[int, float, int]

    @property
    def sampled(self) -> bool:
        return self.decoding == "sample"

    def aware_path(self, culture: str) -> Path:
        return answers_file(self.folder, self.system, culture)


@dataclass
class PairsInputs:
    """Every answers file the stage compares, read and checked before anything is written."""

    unaware: dict[str, dict[str, Any]]
    unaware_runs: Runs
    aware: dict[str, tuple[dict[str, dict[str, Any]], Runs]]

    @property
    def questions(self) -> dict[str, dict[str, Any]]:
        return {q: r["question"] for q, r in self.unaware.items()}

    @property
    def unaware_samples(self) -> int:
        return min((len(r) for r in self.unaware_runs.values()), default=0)


def plan_pairs(settings: PairsSettings) -> PairsPlan:
    """The settings plus what the answer files say of themselves (how they were decoded)."""
    data, folder = settings.data, settings.answers_dir
    unaware_path = answers_file(folder, "unaware", None)
    return PairsPlan(
        system=str(data.system),
        criterion=str(data.criterion),
        folder=folder,
        out_dir=settings.pairs_dir,
        unaware_path=unaware_path,
        decoding=_decoding(settings, unaware_path),
        samples=int(data.samples or 1),
        replicates=int(data.noise_replicates or 0),
        alpha=float(data.alpha),
        js_threshold=float(data.js_threshold),
        null_quantile=float(data.null_quantile),
        ci=(int(data.bootstrap), float(data.ci_level), int(data.seed or 0)),
    )


def read_inputs(plan: PairsPlan, cultures: list[str], rule: Rule) -> PairsInputs:
    """Read every answers file; a counted criterion needs ``data.samples`` samples per question in each."""
    if plan.criterion == "majority" and not plan.sampled:
        raise CultureSPAError(
            f"data.criterion=majority needs sampled answers; {plan.unaware_path} holds {plan.decoding} answers"
        )
    need_dist = plan.criterion == "distribution" and not plan.sampled
    unaware, unaware_runs = read_answer_runs(plan.unaware_path, need_dist)
    aware = {c: read_answer_runs(plan.aware_path(c), need_dist) for c in cultures}
    if rule.counted:
        k = plan.samples
        for path, runs in [(plan.unaware_path, unaware_runs)] + [(plan.aware_path(c), aware[c][1]) for c in cultures]:
            fewest = min((len(r) for r in runs.values()), default=0)
            if fewest < k:
                raise fail(
                    path,
                    f"holds {fewest} sample(s) for some question; data.criterion={plan.criterion} with "
                    f"data.samples={k} needs {k}: rerun the answers stage with data.samples={k}",
                )
    return PairsInputs(unaware, unaware_runs, aware)


def usable_replicates(plan: PairsPlan, have: int) -> int:
    """The unaware replicates the files hold for the noise floor (warns when fewer than asked)."""
    if not plan.sampled:
        return 0
    usable = min(plan.replicates, have // plan.samples - 1)
    if usable < plan.replicates:
        log.warning(
            "pairs: %s holds %d samples per question, fewer than data.samples x (1 + data.noise_replicates) = %d; "
            "using %d replicate(s) for the noise floor",
            plan.unaware_path,
            have,
            plan.samples * (1 + plan.replicates),
            max(usable, 0),
        )
    return max(usable, 0)


def floor_status(plan: PairsPlan, have: int, usable: int, results: dict[str, tuple[list, dict]]) -> str:
    if not plan.sampled:
        return noise.DETERMINISTIC
    if have < 2:
        return "not measured (one sample per question: set data.noise_replicates>=1)"
    if not any(s["noise"]["questions"] for _, s in results.values()):
        return "not measured (no question with 1 valid aware and 2 valid unaware samples)"
    return f"measured ({have} unaware samples per question, {usable} replicate(s) of k={plan.samples})"


def pairs_stats(plan: PairsPlan, rule: Rule, status: str, have: int, usable: int, null: dict, results: dict) -> dict:
    """``stats.json``: the rule, the noise floor's settings and each culture's counts."""
    settings = rule.settings()
    return {
        "criterion": plan.criterion,
        "system": plan.system,
        "js_threshold": settings["threshold"] if plan.criterion == "distribution" else None,
        "rule": criteria.describe(plan.criterion, settings),
        "criterion_settings": settings,
        "noise_floor": {
            "status": status,
            "decoding": plan.decoding,
            "samples": plan.samples,
            "unaware_samples": have,
            "replicates": usable,
            "null_keep_rate": null.get("_all"),
            "bootstrap": plan.ci[0],
            "ci_level": plan.ci[1],
            "seed": plan.ci[2],
        },
        "cultures": {c: s for c, (_, s) in results.items()},
    }


def run_pairs(settings: PairsSettings, cultures: list[str], track: Tracker) -> dict[str, Any]:
    """Plan, read every input, compare each culture, then write pairs and ``stats.json`` (atomically, with W&B
    through ``track``)."""
    plan = plan_pairs(settings)
    rule = Rule(plan.criterion, plan.samples, plan.alpha, plan.js_threshold, plan.sampled)
    inputs = read_inputs(plan, cultures, rule)
    have = inputs.unaware_samples
    usable = usable_replicates(plan, have)
    questions = inputs.questions
    rule.calibrate(inputs.unaware_runs, questions, usable, plan.null_quantile)
    null = null_rates(rule, inputs.unaware_runs, questions, usable) if plan.sampled else {}
    results = {
        c: compare(
            inputs.aware[c][0],
            inputs.unaware,
            c,
            aware_runs=inputs.aware[c][1],
            unaware_runs=inputs.unaware_runs,
            rule=rule,
            null=null,
            ci=plan.ci,
        )
        for c in cultures
    }
    log.info("pairs: recomputing from %s (cheap, deterministic)", plan.folder)
    status = floor_status(plan, have, usable, results)
    stats = pairs_stats(plan, rule, status, have, usable, null, results)
    record_pairs(settings, track, plan, results, stats, null)
    kept = {c: s["kept"] for c, s in stats["cultures"].items()}
    log.info("pairs: criterion=%s system=%s kept %s -> %s", plan.criterion, plan.system, kept, plan.out_dir)
    return {
        "stage": "pairs",
        "output_dir": str(plan.out_dir),
        "stats": str(plan.out_dir / "stats.json"),
        "kept": kept,
        "criterion": plan.criterion,
        "noise_floor": status,
    }


def record_pairs(
    settings: PairsSettings, track: Tracker, plan: PairsPlan, results: dict, stats: dict[str, Any], null: dict
) -> None:
    """Write each culture's pairs and ``stats.json`` inside the stage's run (W&B tables, summary), then print."""
    out_dir, status = plan.out_dir, stats["noise_floor"]["status"]
    if not settings.overwrite:  # every file checked before any is written
        for culture, (pairs, _) in results.items():
            how = "set sft.pairs_dir=<another folder> for these settings, or overwrite=true"
            refuse_fewer(out_dir / f"{culture}.jsonl", len(pairs), how)
    with track() as run:
        for culture, (pairs, _) in results.items():
            write_jsonl(out_dir / f"{culture}.jsonl", pairs)
        write_json(out_dir / "stats.json", stats)
        rows = [
            [c, s["valid"], s["same"], s["differ"], s["differ_rate"], s["kept"]] for c, s in stats["cultures"].items()
        ]
        columns = ["culture", "valid", "same", "differ", "differ_rate", "kept"]
        run.table("pairs/stats", columns, rows)
        run.bar("pairs/differ_rate", columns, rows, "culture", "differ_rate", "Differ rate per culture")
        noise_rows = noise.table_rows(stats)
        run.table("pairs/noise", noise.COLUMNS, noise_rows)
        run.table("pairs/noise_topics", ["culture/topic", *noise.COLUMNS[1:]], noise.topic_rows(stats))
        samples = [
            [c, p["id"], p["question"]["text"], p["unaware_answer"], p["answer"], p["js"]]
            for c, (pairs, _) in results.items()
            for p in pairs[:3]
        ]
        run.table("pairs/samples", ["culture", "id", "question", "unaware_answer", "answer", "js"], samples)
        run.summary(
            {f"kept/{c}": s["kept"] for c, s in stats["cultures"].items()}
            | {f"differ_rate/{c}": s["differ_rate"] for c, s in stats["cultures"].items()}
            | {
                f"{name}/{row[0]}": value
                for row in noise_rows
                for name, value in zip(noise.COLUMNS[3:], row[3:], strict=True)
            }
            | {"noise_floor": status, "null_keep_rate": null.get("_all")}
        )
    noise.print_table(stats)
