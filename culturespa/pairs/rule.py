"""The CRQPC keep rule of one pairs run: a criterion with its settings, applied the same way to (aware, unaware) and
to two unaware replicates, so the noise floor measures exactly what the stage keeps; and the comparison of one
culture's answers with the unaware ones under it (kept pairs, counts per topic, noise floor)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.pairs import criteria, noise

CRITERIA = ("answer", "majority", "distribution", "none")
Runs = dict[str, list[int | None]]


def option_numbers(question: dict[str, Any]) -> list[int]:
    """The option numbers of a question record (0- or 1-based, as the record says)."""
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
                js = criteria.count_js(criteria.counts(self.replicate(runs, r)), base, option_numbers(questions[q_id]))
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
            keep = rule.null_keep(runs, r, option_numbers(questions[q_id]))
            if keep is None:
                continue
            for scope in ("_all", topic):
                hits[scope][0] += int(keep)
                hits[scope][1] += 1
    return {scope: (k / n if n else None) for scope, (k, n) in hits.items()}


def js_distance(p: dict[str, float], q: dict[str, float], numbers: list[int]) -> float:
    """Jensen-Shannon distance (base 2) between two logprob answer distributions (JSON: option numbers as strings)."""
    distance = criteria.js_over({int(k): v for k, v in p.items()}, {int(k): v for k, v in q.items()}, numbers)
    if distance is None:
        raise CultureSPAError(f"empty answer distribution over options {numbers}")
    return distance


Counts = dict[str, int]
_ZERO: Counts = {"valid": 0, "same": 0, "differ": 0, "kept": 0, "compared": 0}


@dataclass(frozen=True)
class Judgement:
    """What the rule decided for one question of one culture, and what the counts and the noise floor need of it."""

    both_valid: bool
    js: float | None
    decision: dict[str, Any] | None
    keep: bool


@dataclass
class CultureTally:
    """Counts per scope (``_all`` and each topic), the noise floor's per-question rates and the kept pairs."""

    counts: dict[str, Counts] = field(default_factory=lambda: defaultdict(lambda: dict(_ZERO)))
    floor: noise.Floor = field(default_factory=lambda: noise.Floor([], [], []))
    pairs: list[dict[str, Any]] = field(default_factory=list)


def judge(
    rec: dict[str, Any], base: dict[str, Any] | None, a_runs: list[int | None], u_runs: list[int | None], rule: Rule
) -> Judgement:
    """Apply the rule to one question: the aware record ``rec`` against the unaware record ``base``."""
    numbers = option_numbers(rec["question"])
    both = bool(rec["valid"]) and base is not None and bool(base["valid"])
    js = None
    if base is not None and isinstance(rec.get("distribution"), dict) and isinstance(base.get("distribution"), dict):
        js = js_distance(rec["distribution"], base["distribution"], numbers)
    decision = rule.decide(a_runs[: rule.k], rule.replicate(u_runs, 0), numbers) if rule.counted else None
    if rule.criterion == "answer":
        keep = both and rec["answer"] != base["answer"]  # type: ignore[index]
    elif rule.counted:
        keep = bool(decision and decision["keep"])
    elif rule.criterion == "distribution":
        keep = both and js is not None and js >= float(rule.threshold)  # type: ignore[arg-type]
    else:
        keep = bool(rec["valid"])
    return Judgement(both, js, decision, keep)


def tally(
    t: CultureTally,
    rec: dict[str, Any],
    base: dict[str, Any] | None,
    j: Judgement,
    runs: tuple[list[int | None], list[int | None]],
    rule: Rule,
) -> None:
    """Add one judged question to the culture's counts and noise floor."""
    topic = str(rec["question"].get("topic"))
    if rule.sampled:
        rates = noise.disagreement(criteria.counts(runs[0]), criteria.counts(runs[1]))
        if rates is not None:
            t.floor.topics.append(topic)
            t.floor.aware.append(rates[0])
            t.floor.unaware.append(rates[1])
    elif j.both_valid:
        t.floor.topics.append(topic)
        t.floor.aware.append(float(rec["answer"] != base["answer"]))  # type: ignore[index]
        t.floor.unaware.append(0.0)
    for scope in ("_all", topic):
        c = t.counts[scope]
        if j.both_valid:
            c["valid"] += 1
            c["same" if rec["answer"] == base["answer"] else "differ"] += 1  # type: ignore[index]
        c["compared"] += int(j.decision is not None if rule.counted else j.both_valid)
        c["kept"] += int(j.keep)


def pair_record(q_id: str, rec: dict[str, Any], base: dict[str, Any] | None, j: Judgement, culture: str) -> dict:
    """A kept pair; for sampled criteria the aware majority is the SFT target and the counts travel along."""
    question = rec["question"]
    pair = {
        "id": q_id,
        "culture": culture,
        "topic": question.get("topic"),
        "question": question,
        "answer": rec["answer"],
        "unaware_answer": base["answer"] if base is not None and base["valid"] else None,
        "js": j.js,
    }
    return pair if j.decision is None else pair | {k: v for k, v in j.decision.items() if k != "keep"}


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
    t = CultureTally()
    for q_id, rec in aware.items():
        base = unaware.get(q_id)
        a_runs, u_runs = aware_runs.get(q_id, []), unaware_runs.get(q_id, [])
        j = judge(rec, base, a_runs, u_runs, rule)
        tally(t, rec, base, j, (a_runs, u_runs), rule)
        if j.keep:
            t.pairs.append(pair_record(q_id, rec, base, j, culture))
    overall = culture_stats(t, None, culture, rule, null, ci)
    overall["topics"] = {
        topic: culture_stats(t, topic, culture, rule, null, ci) for topic in sorted(t.counts) if topic != "_all"
    }
    return t.pairs, overall


def culture_stats(
    t: CultureTally, topic: str | None, culture: str, rule: Rule, null: dict[str, Any], ci: tuple[int, float, int]
) -> dict[str, Any]:
    """The counts of one scope (a topic, or all with ``topic=None``) with its differ rate and noise floor."""
    c = t.counts.get("_all" if topic is None else topic, dict(_ZERO))
    out: dict[str, Any] = {k: v for k, v in c.items() if k != "compared"}
    out["differ_rate"] = c["differ"] / c["valid"] if c["valid"] else 0.0
    resamples, level, seed = ci
    out["noise"] = noise.summarise(
        t.floor,
        topic,
        deterministic=not rule.sampled,
        kept=c["kept"],
        compared=c["compared"],
        null_keep_rate=null.get("_all" if topic is None else topic),
        resamples=resamples,
        level=level,
        seed=seed,
        label=f"{culture}/{topic or '_all'}",
    )
    return out
