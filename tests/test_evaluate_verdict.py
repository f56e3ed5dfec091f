"""Issue 22 item 5: the verdict under every evaluation and comparison table is computed from the numbers (below
chance, equal to always-first-option, a clear positive difference), and Holm's adjustment matches hand-computed
values."""

from __future__ import annotations

import pytest

from culturespa.evaluate.multiplicity import holm
from culturespa.evaluate.verdict import Estimate, comparison_verdict, evaluation_verdict

REFS = {"uniform_random": 53.10, "first_option": 63.11, "middle_option": 68.83, "culture_blind": 70.02}


def test_holm_matches_hand_computed_values() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, None, 0.6]) == [pytest.approx(0.4), None, pytest.approx(0.6)]  # m = 2: None is no test
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, then monotone
    assert holm([]) == [] and holm([None]) == [None]


def test_scores_below_chance_and_a_difference_within_noise() -> None:
    text = comparison_verdict(
        "smollm2_135m",
        Estimate(33.79, 30.12, 37.40),
        Estimate(35.20, 31.50, 39.01),
        Estimate(1.41, -2.24, 5.95),
        0.447,
        {"USA": 0.30, "CHN": 0.60, "IND": 0.90},
        REFS,
        0.95,
        "permutation",
    )
    assert text.startswith("Verdict: Base 33.79 [30.12, 37.40] is below every reference: chance (uniform random) 53.10")
    assert text.count("worse than guessing at random") == 2  # base and CultureSPA
    assert "The difference +1.41 [-2.24, 5.95] (p = 0.447, permutation test) is not distinguishable from zero" in text
    assert "0 of 3 per-culture differences have a Holm-adjusted p < 0.05 (smallest Holm-adjusted p 0.900, USA)" in text
    assert "holds no measurable culture signal (docs/results.md)" in text


def test_a_score_equal_to_always_first_option_says_so() -> None:
    scores = {"USA": 63.11, "CHN": 60.0}
    refs = {
        "uniform_random": {"average": 53.10, "cultures": {"USA": 50.0, "CHN": 61.0}},
        "first_option": {"average": 63.11},
    }
    text = evaluation_verdict("llama3_8b_instruct", Estimate(63.11, 60.2, 66.0), scores, refs)
    assert "equals always-first-option 63.11" in text
    assert "the model very likely answers option 1 every time" in text
    assert "is above chance (uniform random) 53.10" in text
    assert "1 of 2 cultures score below their chance reference (CHN)" in text
    assert "docs/results.md" not in text  # no caveat for a model not known to lack signal


def test_a_clear_positive_difference_is_distinguishable_with_holm_named() -> None:
    text = comparison_verdict(
        "llama3_8b_instruct",
        Estimate(66.0, 65.0, 67.0),
        Estimate(72.0, 71.0, 73.0),
        Estimate(6.0, 4.5, 7.5),
        0.001,
        {"USA": 0.001, "CHN": 0.02, "IND": 0.30},  # Holm: 0.003, 0.04, 0.30
        REFS,
    )
    assert "The difference +6.00 [4.50, 7.50] (p = 0.001) is distinguishable from zero (CultureSPA higher)" in text
    assert "2 of 3 per-culture differences have a Holm-adjusted p < 0.05 (CHN, USA)" in text
    assert "CultureSPA 72.00 [71.00, 73.00] is above every reference: chance (uniform random) 53.10" in text
    assert "a culture-specific signal" in text
    # the same per-culture p-values unadjusted would count 0.02 twice as strong; Holm keeps only what survives


def test_no_difference_at_all_and_a_missing_score() -> None:
    text = comparison_verdict("tiny_random", Estimate(40.0), Estimate(40.0), Estimate(0.0, 0.0, 0.0), 1.0, {}, REFS)
    assert "The difference is exactly +0.00 [0.00, 0.00]: the two systems' scored answers are the same" in text
    assert "random weights" in text
    none = comparison_verdict(None, Estimate(None), Estimate(None), Estimate(None), None, {}, {})
    assert "no reference scores" in none and "No difference could be computed" in none


def test_tables_end_with_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    from culturespa.evaluate.comparison import print_comparison
    from culturespa.evaluate.report import print_table
    from culturespa.pipeline import _print_report

    rows = [
        {"culture": c, "base": 40.0, "culturespa": 41.0, "p": p, "base_valid": 9, "culturespa_valid": 9, "total": 9}
        for c, p in (("USA", 0.01), ("CHN", 0.5))
    ]
    comparison = {
        "model": "smollm2_135m",
        "prompt": "p1",
        "cultures": rows,
        "average": {"base": 40.0, "culturespa": 41.0, "p": 0.2, "delta_lo": -1.0, "delta_hi": 3.0},
        "references": REFS,
        "uncertainty": {"confidence": 0.95, "p_value": "permutation"},
        "comparison_file": "x/comparison.json",
    }
    from rich.console import Console

    last = "these numbers show that the pipeline runs, not whether CultureSPA works."
    print_comparison(comparison, Console())
    out = capsys.readouterr().out
    assert "p Holm" in out and "0.020" in out  # USA's 0.01, doubled over 2 cultures
    assert " ".join(out.split()).endswith(last)
    _print_report(comparison, [])  # what the pipeline, and so `make demo`, prints last
    out = " ".join(capsys.readouterr().out.split())
    assert out.endswith(last) and "Verdict: Base 40.00 is below every reference" in out
    results = {
        "cultures": {
            "USA": {"score": 30.0, "score_lo": 28.0, "score_hi": 32.0, "valid": 9, "total": 9, "js_similarity": 0.5}
        },
        "average": 30.0,
        "average_lo": 28.0,
        "average_hi": 32.0,
        "references": {"uniform_random": {"average": 50.0, "cultures": {"USA": 50.0}}},
        "setting": {"model": "smollm2_135m"},
    }
    print_table(results)
    out = " ".join(capsys.readouterr().out.split())
    assert out.endswith("these numbers show that the pipeline runs, not whether CultureSPA works.")
    assert "Verdict: The average 30.00 [28.00, 32.00] is below chance (uniform random) 50.00" in out
    assert "1 of 1 cultures score below their chance reference (USA)" in out
