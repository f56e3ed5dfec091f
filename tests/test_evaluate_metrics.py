"""The alignment score and the distribution similarity against hand computations."""

from __future__ import annotations

import math

import pytest

from culturespa.evaluate.metrics import (
    Item,
    alignment_score,
    answer_frequencies,
    culture_report,
    headline,
    js_similarity,
)


def test_score_formula_by_hand() -> None:
    # a = (1, 4), g = (1, 1), n = (4, 4): ‖a−g‖ = 3, ‖n−1‖ = √18
    assert alignment_score([1, 4], [1, 1], [4, 4]) == pytest.approx(100 * (1 - 3 / math.sqrt(18)))
    assert alignment_score([2, 3], [2, 3], [4, 10]) == pytest.approx(100.0)
    # every answer at the far end of its scale scores 0
    assert alignment_score([4, 10], [1, 1], [4, 10]) == pytest.approx(0.0)
    assert alignment_score([], [], []) is None


def test_zero_based_questions_need_no_shift() -> None:
    # a 0-based 3-option question (0, 1, 2) and a 1-based 4-option one: the distance is the same either way
    zero = alignment_score([0, 1], [2, 1], [3, 4])
    shifted = alignment_score([1, 1], [3, 1], [3, 4])
    assert zero == pytest.approx(shifted) == pytest.approx(100 * (1 - 2 / math.sqrt(4 + 9)))


def test_report_excludes_and_counts_invalid_and_missing() -> None:
    items = [
        Item("Q1", "t1", (1, 2, 3, 4), answer=2, gold=1),
        Item("Q2", "t1", (1, 2, 3, 4), answer=None, gold=3),  # unparseable reply: excluded, counted invalid
        Item("Q94", "t2", (0, 1, 2), answer=0, gold=2),  # 0-based
        Item("Q3", "t2", (1, 2), answer=1, gold=None),  # culture has no survey answers: not scored at all
    ]
    survey = {"Q1": {1: 0.5, 2: 0.5}, "Q2": {3: 1.0}, "Q94": {2: 1.0}, "Q3": {}}
    report = culture_report(items, survey)
    expected = 100 * (1 - math.sqrt(1**2 + 2**2) / math.sqrt(3**2 + 2**2))
    assert report["score"] == pytest.approx(expected)
    assert (report["valid"], report["total"], report["invalid"]) == (2, 3, 1)
    assert report["no_survey_answers"] == 1
    assert report["topics"]["t1"] == {"score": pytest.approx(100 * (1 - 1 / 3)), "valid": 1, "total": 2}
    assert report["topics"]["t2"]["score"] == pytest.approx(0.0)


def test_report_with_nothing_valid_is_a_null_row() -> None:
    items = [Item("Q1", "t", (1, 2), answer=None, gold=1), Item("Q2", "t", (1, 2), answer=None, gold=2)]
    report = culture_report(items, {"Q1": {1: 1.0}, "Q2": {2: 1.0}})
    assert report["score"] is None and report["valid"] == 0 and report["total"] == 2
    assert report["js_similarity"] is None
    assert headline({"A": report, "B": {"score": 50.0}}) == 50.0  # null rows are left out of the mean


def _js_by_hand(p: list[float], q: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda x, y: sum(a * math.log2(a / b) for a, b in zip(x, y, strict=True) if a > 0)  # noqa: E731
    return 1 - math.sqrt(0.5 * kl(p, m) + 0.5 * kl(q, m))


def test_js_similarity_by_hand_base_2_and_renormalised() -> None:
    # survey shares sum to 0.6 (missing answers removed) and option 3 is absent: aligned by id and renormalised
    value = js_similarity({1: 1.0}, {1: 0.3, 2: 0.3}, [1, 2, 3])
    assert value == pytest.approx(_js_by_hand([1.0, 0.0, 0.0], [0.5, 0.5, 0.0]))
    assert value == pytest.approx(1 - math.sqrt(0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25))
    assert js_similarity({1: 0.2, 2: 0.8}, {1: 2.0, 2: 8.0}, [1, 2]) == pytest.approx(1.0)
    assert js_similarity({1: 1.0}, {2: 1.0}, [1, 2]) == pytest.approx(0.0)  # base 2: disjoint support → 0
    assert js_similarity({}, {1: 1.0}, [1, 2]) is None


def test_runs_scored_separately_then_averaged_and_frequencies_for_js() -> None:
    items = [
        Item("Q1", "t", (1, 2, 3), answer=1, gold=1, run=0),
        Item("Q1", "t", (1, 2, 3), answer=3, gold=1, run=1),
        Item("Q2", "t", (1, 2, 3), answer=2, gold=2, run=0),
        Item("Q2", "t", (1, 2, 3), answer=2, gold=2, run=1),
    ]
    survey = {"Q1": {1: 0.5, 3: 0.5}, "Q2": {2: 1.0}}
    report = culture_report(items, survey)
    run1 = 100 * (1 - 2 / math.sqrt(8))
    assert report["run_scores"] == [pytest.approx(100.0), pytest.approx(run1)]
    assert report["score"] == pytest.approx((100 + run1) / 2)
    assert (report["valid"], report["total"], report["runs"]) == (4, 4, 2)
    # Q1 answered 1 and 3 once each = the survey exactly; Q2 always 2 = the survey
    assert report["js_similarity"] == pytest.approx(1.0)
    assert answer_frequencies([1, 3, None, 7], [1, 2, 3]) == {1: 0.5, 2: 0.0, 3: 0.5}


def test_logprob_distribution_used_for_js_when_given() -> None:
    items = [Item("Q1", "t", (1, 2), answer=1, gold=1)]
    report = culture_report(items, {"Q1": {1: 0.5, 2: 0.5}}, {"Q1": {1: 0.5, 2: 0.5}})
    assert report["js_similarity"] == pytest.approx(1.0)
    assert culture_report(items, {"Q1": {1: 0.5, 2: 0.5}})["js_similarity"] < 0.6
