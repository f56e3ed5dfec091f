"""Stage ``pairs`` (CRQPC, step 3): per culture, keep the culture-related question-answer pairs.

For each question, the ``data.system`` answer (aware | cct) of a culture is compared with the culture-unaware answer.
A pair is *valid* when both answers (sample 0) are valid; valid pairs are *same* or *differ*. Criteria
(``data.criterion``):

* ``answer`` (the paper): keep valid pairs whose answers (sample 0) differ;
* ``majority``: k sampled answers per setting (``data.samples``); keep when the aware majority option is not an
  unaware majority option and the Freeman-Halton exact test on the option counts rejects "same distribution" at
  ``data.alpha`` (``culturespa.generate.criteria``);
* ``distribution``: with sampled answers, keep when the Jensen-Shannon distance between the aware and unaware option
  frequencies of the k samples exceeds the ``data.null_quantile`` quantile of the same distance between two unaware
  replicates (calibrated on the noise, not a fixed number); with logprob answers (no sampling noise to calibrate
  against) keep valid pairs whose answer distributions are at least ``data.js_threshold`` apart (base 2, in [0, 1]),
  so that a flip between two nearly tied options is not taken for culture;
* ``none``: keep every valid culture-aware answer (the unaware one may be missing or invalid): the data-quality
  ablation.

Next to the counts, ``stats.json`` holds the noise floor per culture and topic (``culturespa.generate.noise``): how
often aware and unaware samples disagree, how often unaware samples disagree with each other, the difference with a
paired bootstrap interval, and the expected share of kept pairs that are noise. Files hold the samples of a question as
runs 0, 1, ...; the paper's rule uses run 0. Every input file is checked before anything is written; the stage is
cheap and deterministic, so it always recomputes (atomically).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.data.jsonl import iter_jsonl, refuse_fewer, write_json, write_jsonl
from culturespa.errors import CultureSPAError, fail
from culturespa.generate import criteria, noise
from culturespa.generate.answers import answers_file
from culturespa.generate.outputs import overwrite_requested, read_meta
from culturespa.generate.track import stage_run

log = logging.getLogger("culturespa.generate")
CRITERIA = ("answer", "majority", "distribution", "none")
Runs = dict[str, list[int | None]]


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


def js_distance(p: dict[str, float], q: dict[str, float], numbers: list[int]) -> float:
    """Jensen-Shannon distance (base 2) between two logprob answer distributions (JSON: option numbers as strings)."""
    distance = criteria.js_over({int(k): v for k, v in p.items()}, {int(k): v for k, v in q.items()}, numbers)
    if distance is None:
        raise CultureSPAError(f"empty answer distribution over options {numbers}")
    return distance


def _numbers(question: dict[str, Any]) -> list[int]:
    first = int(question.get("first_option", 1))
    return list(range(first, first + len(question["options"])))


class Rule:
    """The criterion with its settings, applied the same way to (aware, unaware) and to (unaware r, unaware 0)."""

    def __init__(self, criterion: str, k: int, alpha: float, js_threshold: float, sampled: bool) -> None:
        if criterion not in CRITERIA:
            raise CultureSPAError(f"data.criterion={criterion!r} is not valid; choose one of: {', '.join(CRITERIA)}")
        self.criterion, self.k, self.alpha, self.sampled = criterion, k, alpha, sampled
        self.calibrated = criterion == "distribution" and sampled
        self.counted = criterion in ("majority", "distribution") and sampled  # decided on the sample counts
        self.threshold: float | None = None if self.calibrated else js_threshold
        self.quantile: float | None = None
        self.null_size = 0

    def replicate(self, runs: list[int | None], r: int) -> list[int | None]:
        return runs[r * self.k : (r + 1) * self.k]

    def calibrate(self, unaware: Runs, questions: dict[str, dict[str, Any]], replicates: int, quantile: float) -> None:
        """The distribution criterion's threshold: the ``quantile`` of unaware replicate r vs 0 (r = 1..R)."""
        if not self.calibrated:
            return
        null = []
        for q_id, runs in unaware.items():
            base = criteria.counts(self.replicate(runs, 0))
            for r in range(1, replicates + 1):
                js = criteria.count_js(criteria.counts(self.replicate(runs, r)), base, _numbers(questions[q_id]))
                if js is not None:
                    null.append(js)
        self.threshold, self.quantile, self.null_size = criteria.null_threshold(null, quantile), quantile, len(null)
        if self.threshold is None:
            raise CultureSPAError(
                "data.criterion=distribution: no unaware question has valid answers in two replicates to "
                "calibrate the threshold on (answer with data.noise_replicates>=1 and decoding=sample)"
            )

    def decide(self, aware: list[int | None], unaware: list[int | None], numbers: list[int]) -> dict[str, Any] | None:
        """For sampled count-based criteria: None when not comparable, else keep/answer/statistics."""
        a, u = criteria.counts(aware), criteria.counts(unaware)
        if not a or not u:
            return None
        out: dict[str, Any] = {
            "answer": criteria.majority(a, u),
            "unaware_answer": criteria.unaware_answer(u),
            "aware_counts": {str(o): n for o, n in sorted(a.items())},
            "unaware_counts": {str(o): n for o, n in sorted(u.items())},
        }
        if self.criterion == "majority":
            keep, p = criteria.keep_majority(a, u, self.alpha)
            return out | {"keep": keep, "p_value": p}
        js = criteria.count_js(a, u, numbers)
        return out | {"keep": js is not None and js > self.threshold, "js": js}  # type: ignore[operator]

    def null_keep(self, runs: list[int | None], r: int, numbers: list[int]) -> bool | None:
        """Would the rule keep unaware replicate r against replicate 0? None when it cannot be evaluated."""
        if self.criterion == "answer":
            first, other = runs[0] if runs else None, runs[r * self.k] if len(runs) > r * self.k else None
            return None if first is None or other is None else first != other
        if self.counted:
            decision = self.decide(self.replicate(runs, r), self.replicate(runs, 0), numbers)
            return None if decision is None else bool(decision["keep"])
        return None

    def settings(self) -> dict[str, Any]:
        return {
            "samples": self.k,
            "alpha": self.alpha if self.criterion == "majority" else None,
            "calibrated": self.calibrated,
            "threshold": self.threshold if self.criterion == "distribution" else None,
            "quantile": self.quantile,
            "null_size": self.null_size if self.calibrated else None,
        }


def null_rates(rule: Rule, unaware: Runs, questions: dict[str, dict[str, Any]], replicates: int) -> dict[str, Any]:
    """How often the rule keeps a question between two unaware replicates: overall (``_all``) and per topic."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for q_id, runs in unaware.items():
        topic = str(questions[q_id].get("topic"))
        for r in range(1, replicates + 1):
            keep = rule.null_keep(runs, r, _numbers(questions[q_id]))
            if keep is None:
                continue
            for scope in ("_all", topic):
                hits[scope][0] += int(keep)
                hits[scope][1] += 1
    return {scope: (k / n if n else None) for scope, (k, n) in hits.items()}


def compare(
    aware: dict[str, dict[str, Any]],
    unaware: dict[str, dict[str, Any]],
    culture: str,
    *,
    aware_runs: Runs,
    unaware_runs: Runs,
    rule: Rule,
    null: dict[str, Any],
    ci: tuple[int, float, int],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs and stats for one culture (stats per topic and the noise floor included)."""
    pairs: list[dict[str, Any]] = []
    zero = {"valid": 0, "same": 0, "differ": 0, "kept": 0, "compared": 0}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict(zero))
    floor = noise.Floor([], [], [])
    counted, sampled = rule.counted, rule.sampled
    for q_id, rec in aware.items():
        question = rec["question"]
        topic = str(question.get("topic"))
        base = unaware.get(q_id)
        both = bool(rec["valid"]) and base is not None and bool(base["valid"])
        a_runs, u_runs = aware_runs.get(q_id, []), unaware_runs.get(q_id, [])
        js = None
        if (
            base is not None
            and isinstance(rec.get("distribution"), dict)
            and isinstance(base.get("distribution"), dict)
        ):
            js = js_distance(rec["distribution"], base["distribution"], _numbers(question))
        decision = None
        if counted:
            decision = rule.decide(a_runs[: rule.k], rule.replicate(u_runs, 0), _numbers(question))
        if sampled:
            rates = noise.disagreement(criteria.counts(a_runs), criteria.counts(u_runs))
            if rates is not None:
                floor.topics.append(topic)
                floor.aware.append(rates[0])
                floor.unaware.append(rates[1])
        elif both:
            floor.topics.append(topic)
            floor.aware.append(float(rec["answer"] != base["answer"]))  # type: ignore[index]
            floor.unaware.append(0.0)
        for scope in ("_all", topic):
            c = counts[scope]
            if both:
                c["valid"] += 1
                c["same" if rec["answer"] == base["answer"] else "differ"] += 1  # type: ignore[index]
            c["compared"] += int(decision is not None if counted else both)
        if rule.criterion == "answer":
            keep = both and rec["answer"] != base["answer"]  # type: ignore[index]
        elif counted:
            keep = bool(decision and decision["keep"])
        elif rule.criterion == "distribution":
            keep = both and js is not None and js >= float(rule.threshold)  # type: ignore[arg-type]
        else:
            keep = bool(rec["valid"])
        if keep:
            counts["_all"]["kept"] += 1
            counts[topic]["kept"] += 1
            pair = {
                "id": q_id,
                "culture": culture,
                "topic": question.get("topic"),
                "question": question,
                "answer": rec["answer"],
                "unaware_answer": base["answer"] if base is not None and base["valid"] else None,
                "js": js,
            }
            pairs.append(pair if decision is None else pair | _pair_fields(decision))

    resamples, level, seed = ci
    deterministic = not sampled

    def finish(c: dict[str, int], topic: str | None) -> dict[str, Any]:
        out = {k: v for k, v in c.items() if k != "compared"}
        out["differ_rate"] = c["differ"] / c["valid"] if c["valid"] else 0.0
        out["noise"] = noise.summarise(
            floor,
            topic,
            deterministic=deterministic,
            kept=c["kept"],
            compared=c["compared"],
            null_keep_rate=null.get("_all" if topic is None else topic),
            resamples=resamples,
            level=level,
            seed=seed,
            label=f"{culture}/{topic or '_all'}",
        )
        return out

    overall = finish(counts.pop("_all", dict(zero)), None)
    overall["topics"] = {t: finish(c, t) for t, c in sorted(counts.items())}
    return pairs, overall


def _pair_fields(decision: dict[str, Any]) -> dict[str, Any]:
    """A kept sampled pair: the aware majority is the SFT target; the counts and the test statistic travel along."""
    return {k: v for k, v in decision.items() if k != "keep"}


def _decoding(cfg: DictConfig, path: Path) -> str:
    """How the answers were collected: the answers stage's sidecar says so; older files fall back to the config."""
    recorded = read_meta(path).get("decoding")
    return str(recorded or OmegaConf.select(cfg, "decoding.mode", default="greedy"))


def run_pairs(cfg: DictConfig, cultures: list[str]) -> dict[str, Any]:
    system = str(cfg.data.system)
    criterion = str(cfg.data.criterion)
    threshold = float(cfg.data.js_threshold)
    folder = Path(str(cfg.answers.output_dir))
    out_dir = Path(str(cfg.sft.pairs_dir))
    unaware_path = answers_file(folder, "unaware", None)
    mode = _decoding(cfg, unaware_path)
    sampled = mode == "sample"
    k = int(OmegaConf.select(cfg, "data.samples", default=1) or 1)
    replicates = int(OmegaConf.select(cfg, "data.noise_replicates", default=0) or 0)
    alpha = float(OmegaConf.select(cfg, "data.alpha", default=0.05))
    ci = (
        int(OmegaConf.select(cfg, "data.bootstrap", default=1000)),
        float(OmegaConf.select(cfg, "data.ci_level", default=0.95)),
        int(OmegaConf.select(cfg, "data.seed", default=0) or 0),
    )
    if criterion == "majority" and not sampled:
        raise CultureSPAError(f"data.criterion=majority needs sampled answers; {unaware_path} holds {mode} answers")
    need_dist = criterion == "distribution" and not sampled
    # every input is read and checked before anything is written
    unaware, unaware_runs = read_answer_runs(unaware_path, need_dist)
    aware = {c: read_answer_runs(answers_file(folder, system, c), need_dist) for c in cultures}
    questions = {q: r["question"] for q, r in unaware.items()}
    rule = Rule(criterion, k, alpha, threshold, sampled)
    have = min((len(r) for r in unaware_runs.values()), default=0)
    if rule.counted:
        for path, runs in [(unaware_path, unaware_runs)] + [
            (answers_file(folder, system, c), aware[c][1]) for c in cultures
        ]:
            fewest = min((len(r) for r in runs.values()), default=0)
            if fewest < k:
                raise fail(
                    path,
                    f"holds {fewest} sample(s) for some question; data.criterion={criterion} with data.samples={k} "
                    f"needs {k}: rerun the answers stage with data.samples={k}",
                )
    usable = min(replicates, have // k - 1) if sampled else 0
    if sampled and usable < replicates:
        log.warning(
            "pairs: %s holds %d samples per question, fewer than data.samples x (1 + data.noise_replicates) = %d; "
            "using %d replicate(s) for the noise floor",
            unaware_path,
            have,
            k * (1 + replicates),
            max(usable, 0),
        )
    usable = max(usable, 0)
    rule.calibrate(unaware_runs, questions, usable, float(OmegaConf.select(cfg, "data.null_quantile", default=0.95)))
    null = null_rates(rule, unaware_runs, questions, usable) if sampled else {}
    results = {
        c: compare(
            aware[c][0],
            unaware,
            c,
            aware_runs=aware[c][1],
            unaware_runs=unaware_runs,
            rule=rule,
            null=null,
            ci=ci,
        )
        for c in cultures
    }
    log.info("pairs: recomputing from %s (cheap, deterministic)", folder)
    if not sampled:
        status = noise.DETERMINISTIC
    elif have < 2:
        status = "not measured (one sample per question: set data.noise_replicates>=1)"
    elif not any(s["noise"]["questions"] for _, s in results.values()):
        status = "not measured (no question with 1 valid aware and 2 valid unaware samples)"
    else:
        status = f"measured ({have} unaware samples per question, {usable} replicate(s) of k={k})"
    settings = rule.settings()
    stats = {
        "criterion": criterion,
        "system": system,
        "js_threshold": settings["threshold"] if criterion == "distribution" else None,
        "rule": criteria.describe(criterion, settings),
        "criterion_settings": settings,
        "noise_floor": {
            "status": status,
            "decoding": mode,
            "samples": k,
            "unaware_samples": have,
            "replicates": usable,
            "null_keep_rate": null.get("_all"),
            "bootstrap": ci[0],
            "ci_level": ci[1],
            "seed": ci[2],
        },
        "cultures": {c: s for c, (_, s) in results.items()},
    }
    if not overwrite_requested(cfg):  # every file checked before any is written
        for culture, (pairs, _) in results.items():
            how = "set sft.pairs_dir=<another folder> for these settings, or overwrite=true"
            refuse_fewer(out_dir / f"{culture}.jsonl", len(pairs), how)
    with stage_run(cfg, "pairs") as run:
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
    kept = {c: s["kept"] for c, s in stats["cultures"].items()}
    log.info("pairs: criterion=%s system=%s kept %s -> %s", criterion, system, kept, out_dir)
    return {
        "stage": "pairs",
        "output_dir": str(out_dir),
        "stats": str(out_dir / "stats.json"),
        "kept": kept,
        "criterion": criterion,
        "noise_floor": status,
    }
