"""Gold answers on tied shares: the option listed first in the survey shares file wins, as in the paper's scoring.

The real WVS file has ties for the largest share (BOL Q50, Q163; NLD Q110, Q163; NZL Q35, Q193); the lower option
number is *not* the paper's gold for four of them, so these tests fail on a lowest-number tie-break.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from culturespa.evaluate.alignment_score import items_for
from culturespa.evaluate.metrics import alignment_score
from culturespa.evaluate.references import reference_scores
from culturespa.prompts.builder import self_alignment_examples
from culturespa.wvs.survey import WVSData

# (culture, question) -> the option the paper's scoring takes (the first key of the stored dict)
REAL_TIES = {
    ("BOL", "Q50"): 8,
    ("BOL", "Q163"): 5,
    ("NLD", "Q110"): 3,
    ("NLD", "Q163"): 8,
    ("NZL", "Q35"): 5,
    ("NZL", "Q193"): 10,
}


def _raw_shares(wvs: WVSData) -> dict:
    with (wvs.root / "proportions_group_by_country.json").open(encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize(("culture", "q_id"), sorted(REAL_TIES))
def test_real_ties_take_the_first_listed_option(wvs: WVSData, culture: str, q_id: str) -> None:
    shares = _raw_shares(wvs)[culture][q_id]
    values = list(shares.values())
    assert values[0] == values[1], "the named case is a tie in the data"
    assert wvs.majority_answer(culture, q_id) == REAL_TIES[(culture, q_id)] == int(next(iter(shares)))


def test_gold_is_the_first_key_everywhere(wvs: WVSData) -> None:
    """The paper reads gold as each question's first key; on the released (sorted) file ours agrees for every cell."""
    for culture, per_question in _raw_shares(wvs).items():
        for q_id, shares in per_question.items():
            expected = int(next(iter(shares))) if shares else None
            assert wvs.majority_answer(culture, q_id) == expected, (culture, q_id)


def test_stored_order_not_option_number(wvs: WVSData) -> None:
    """A tie listed higher option first keeps the higher option (json keeps the file's order; no re-sorting)."""
    shares = {c: dict(per_q) for c, per_q in wvs.shares.items()}
    shares["BOL"]["Q1"] = {3: 0.4, 1: 0.4, 2: 0.2}
    assert replace(wvs, shares=shares).majority_answer("BOL", "Q1") == 3


def test_scores_references_and_p3_use_the_tie_rule(wvs: WVSData) -> None:
    q50 = wvs.questions["Q50"]
    # scores: an answer equal to the paper's gold is a perfect score on that question
    items = items_for([{"id": "Q50", "answer": 8, "valid": True}], {"Q50": q50}, wvs, "BOL")
    assert items[0].gold == 8
    assert alignment_score([8], [items[0].gold], [q50.n_options]) == pytest.approx(100.0)
    # references: "always the first option" scored against the paper's gold (8 of 1..10), not against 7
    refs = reference_scores(wvs, [q50], ["BOL"], draws=1)
    assert refs["first_option"]["cultures"]["BOL"] == pytest.approx(100 * (1 - 7 / 9))
    # P3: wherever Q163 is shown as an example to a BOL respondent, its answer is 5 (the first listed), not 1
    hosts = [q for q, ranked in wvs.examples.items() if "Q163" in ranked[:5] and q in wvs.questions]
    assert hosts, "Q163 is among some question's first five self-alignment examples"
    shown = dict((ex.id, answer) for ex, answer in self_alignment_examples(wvs, hosts[0], "BOL", 5))
    assert shown["Q163"] == 5
