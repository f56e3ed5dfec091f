"""Stage ``pairs`` (CRQPC, step 3): per culture, keep the culture-related question-answer pairs.

For each question, the ``data.system`` answer (aware | cct) of a culture is compared with the culture-unaware answer.
A pair is *valid* when both answers are valid; valid pairs are *same* or *differ*. Criteria (``data.criterion``):

* ``answer`` (the paper): keep valid pairs whose answers differ;
* ``distribution``: keep valid pairs whose answer distributions (logprob decoding) are at least ``data.js_threshold``
  apart in Jensen-Shannon distance (base 2, in [0, 1]), so that a flip between two nearly tied options is not taken
  for culture;
* ``none``: keep every valid culture-aware answer (the unaware one may be missing or invalid): the data-quality
  ablation.

When a file holds several runs of a question, run 0 is used. Every input file is checked before anything is written;
the stage is cheap and deterministic, so it always recomputes (atomically).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.data.jsonl import iter_jsonl, write_json, write_jsonl
from culturespa.errors import CultureSPAError, fail
from culturespa.generate.answers import answers_file
from culturespa.generate.track import stage_run

log = logging.getLogger("culturespa.generate")
CRITERIA = ("answer", "distribution", "none")


def read_answers(path: Path, need_distribution: bool = False) -> dict[str, dict[str, Any]]:
    """Answer records by question id (run 0 preferred); a missing, empty or malformed file is a one-line error."""
    if not path.is_file():
        raise fail(path, "answers file not found (run `generate.py stage=answers` for this setting and culture)")
    by_id: dict[str, dict[str, Any]] = {}
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
                "collected with decoding=logprob",
            )
        if record["id"] not in by_id or record.get("run", 0) == 0:
            by_id[str(record["id"])] = record
    if not by_id:
        raise fail(path, "answers file is empty")
    return by_id


def js_distance(p: dict[str, float], q: dict[str, float], numbers: list[int]) -> float:
    """Jensen-Shannon distance (base 2) between two answer distributions over the question's option numbers."""
    from scipy.spatial.distance import jensenshannon

    a = [float(p.get(str(n), 0.0)) for n in numbers]
    b = [float(q.get(str(n), 0.0)) for n in numbers]
    if sum(a) <= 0 or sum(b) <= 0:
        raise CultureSPAError(f"empty answer distribution over options {numbers}")
    return float(jensenshannon(a, b, base=2))


def _numbers(question: dict[str, Any]) -> list[int]:
    first = int(question.get("first_option", 1))
    return list(range(first, first + len(question["options"])))


def compare(
    aware: dict[str, dict[str, Any]],
    unaware: dict[str, dict[str, Any]],
    criterion: str,
    js_threshold: float,
    culture: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs and stats for one culture (stats per topic included)."""
    if criterion not in CRITERIA:
        raise CultureSPAError(f"data.criterion={criterion!r} is not valid; choose one of: {', '.join(CRITERIA)}")
    pairs: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"valid": 0, "same": 0, "differ": 0, "kept": 0})
    for q_id, rec in aware.items():
        question = rec["question"]
        topic = str(question.get("topic"))
        base = unaware.get(q_id)
        both = bool(rec["valid"]) and base is not None and bool(base["valid"])
        js = None
        if (
            base is not None
            and isinstance(rec.get("distribution"), dict)
            and isinstance(base.get("distribution"), dict)
        ):
            js = js_distance(rec["distribution"], base["distribution"], _numbers(question))
        for scope in ("_all", topic):
            c = counts[scope]
            if both:
                c["valid"] += 1
                c["same" if rec["answer"] == base["answer"] else "differ"] += 1  # type: ignore[index]
        if criterion == "answer":
            keep = both and rec["answer"] != base["answer"]  # type: ignore[index]
        elif criterion == "distribution":
            keep = both and js is not None and js >= js_threshold
        else:
            keep = bool(rec["valid"])
        if keep:
            counts["_all"]["kept"] += 1
            counts[topic]["kept"] += 1
            pairs.append(
                {
                    "id": q_id,
                    "culture": culture,
                    "topic": question.get("topic"),
                    "question": question,
                    "answer": rec["answer"],
                    "unaware_answer": base["answer"] if base is not None and base["valid"] else None,
                    "js": js,
                }
            )

    def finish(c: dict[str, int]) -> dict[str, Any]:
        return {**c, "differ_rate": c["differ"] / c["valid"] if c["valid"] else 0.0}

    overall = finish(counts.pop("_all", {"valid": 0, "same": 0, "differ": 0, "kept": 0}))
    overall["topics"] = {t: finish(c) for t, c in sorted(counts.items())}
    return pairs, overall


def run_pairs(cfg: DictConfig, cultures: list[str]) -> dict[str, Any]:
    system = str(cfg.data.system)
    criterion = str(cfg.data.criterion)
    threshold = float(cfg.data.js_threshold)
    folder = Path(str(cfg.answers.output_dir))
    out_dir = Path(str(cfg.sft.pairs_dir))
    need_dist = criterion == "distribution"
    # every input is read and checked before anything is written
    unaware = read_answers(answers_file(folder, "unaware", None), need_dist)
    aware = {c: read_answers(answers_file(folder, system, c), need_dist) for c in cultures}
    results = {c: compare(aware[c], unaware, criterion, threshold, c) for c in cultures}
    log.info("pairs: recomputing from %s (cheap, deterministic)", folder)
    stats = {
        "criterion": criterion,
        "system": system,
        "js_threshold": threshold if need_dist else None,
        "cultures": {c: s for c, (_, s) in results.items()},
    }
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
        samples = [
            [c, p["id"], p["question"]["text"], p["unaware_answer"], p["answer"], p["js"]]
            for c, (pairs, _) in results.items()
            for p in pairs[:3]
        ]
        run.table("pairs/samples", ["culture", "id", "question", "unaware_answer", "answer", "js"], samples)
        run.summary(
            {f"kept/{c}": s["kept"] for c, s in stats["cultures"].items()}
            | {f"differ_rate/{c}": s["differ_rate"] for c, s in stats["cultures"].items()}
        )
    kept = {c: s["kept"] for c, s in stats["cultures"].items()}
    log.info("pairs: criterion=%s system=%s kept %s -> %s", criterion, system, kept, out_dir)
    return {
        "stage": "pairs",
        "output_dir": str(out_dir),
        "stats": str(out_dir / "stats.json"),
        "kept": kept,
        "criterion": criterion,
    }
