"""The CRQPC keep rule of one pairs run: a criterion with its settings, applied the same way to (aware, unaware) and
to two unaware replicates, so the noise floor measures exactly what the stage keeps."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.generate import criteria

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
