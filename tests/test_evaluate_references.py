"""Reference scores: each strategy scored like model answers, on real WVS data."""

from __future__ import annotations

import pytest

from culturespa.evaluate.metrics import alignment_score
from culturespa.evaluate.references import reference_scores
from culturespa.wvs.survey import WVSData


def test_reference_scores_match_direct_scoring(wvs: WVSData) -> None:
    questions = wvs.eval_questions[:60]
    refs = reference_scores(wvs, questions, ["USA", "CHN"], draws=5)
    assert set(refs) == {"first_option", "middle_option", "uniform_random", "culture_blind"}
    scored = [q for q in questions if wvs.majority_answer("USA", q.id) is not None]
    gold = [wvs.majority_answer("USA", q.id) for q in scored]
    expected = alignment_score([q.numbers[0] for q in scored], gold, [q.n_options for q in scored])
    assert refs["first_option"]["cultures"]["USA"] == pytest.approx(expected)
    first = refs["first_option"]
    assert first["average"] == pytest.approx((first["cultures"]["USA"] + first["cultures"]["CHN"]) / 2)
    # one culture: the culture-blind answer is that culture's own majority answer, so it scores a perfect 100
    assert reference_scores(wvs, questions, ["USA"], draws=1)["culture_blind"]["average"] == pytest.approx(100.0)
    assert 0 < refs["uniform_random"]["average"] < refs["culture_blind"]["average"] < 100
    assert reference_scores(wvs, questions, ["USA", "CHN"], draws=5) == refs  # seeded


def test_describe_names_each_strategy() -> None:
    from culturespa.evaluate.references import describe

    line = describe({"first_option": 38.281, "uniform_random": 46.0, "culture_blind": None})
    assert line == "references (same questions, prompt ignored): first option 38.28, uniform random 46.00"
