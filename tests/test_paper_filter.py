"""``filter=paper``: each of the notebook's steps on hand-made cases, and the per-step counts on the paper's pool.

The pool counts after steps 1 and 2 (12,891 and 12,860) are the ones the paper's notebook printed on the same pool
(``data_process/2.question_filtering.ipynb``, stored outputs); the others are ours, checked once against a literal
run of the notebook's cells (identical output, question by question) and pinned here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culturespa.generate.run import generate
from culturespa.questions.filter import paper_seed_texts
from culturespa.questions.near_dup import near_duplicates
from culturespa.questions.paper_filter import STEPS, clean_label, first_option, numbered_kind, paper_filter
from culturespa.questions.pool import load_questions
from culturespa.stages.lineage import report_path
from culturespa.wvs.questions import Question

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "data" / "generated-questions-llama3-8b-instruct"


def _q(i: int, text: str, options: list[str]) -> Question:
    return Question(f"g{i}", text, tuple(options), 1, "Corruption", "generated")


def _run(questions: list[Question], seeds: tuple[str, ...] = ()) -> tuple[list[Question], dict[str, int], dict]:
    kept, steps, ids = paper_filter(questions, seeds)
    assert [s.step for s in steps] == [name for name, _ in STEPS]
    return kept, {s.step: s.count for s in steps}, ids


# ---- step 1: exact duplicates -----------------------------------------------------------------------------------
def test_step1_exact_duplicates_of_seed_and_earlier_questions() -> None:
    seed = "How important is family in your life?"
    pool = [
        _q(0, seed, ["Yes", "No"]),  # a seed question, verbatim
        _q(1, "Do you trust banks?", ["Yes", "No"]),
        _q(2, "Do you trust banks?", ["A lot", "Not at all"]),  # same text, other options: still a duplicate
        _q(3, "do you trust banks?", ["Yes", "No"]),  # case differs: not a duplicate (the notebook compares exactly)
        _q(4, "Do you trust banks? ", ["Yes", "No"]),  # trailing space differs: kept too
    ]
    kept, counts, ids = _run(pool, (seed,))
    assert counts["duplicates"] == 2 and ids["duplicates"] == ["g0", "g2"]
    assert [q.id for q in kept] == ["g1", "g3", "g4"]


def test_step1_counts_seed_and_generated_duplicates_apart() -> None:
    _, steps, _ = paper_filter([_q(0, "S?", ["a", "b"]), _q(1, "T?", ["a", "b"]), _q(2, "T?", ["a", "b"])], {"S?"})
    assert steps[0].detail == {"of_seed": 1, "of_generated": 1}


# ---- step 2: bare numbers without a scale explanation -----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "dropped"),
    [
        ("How much do you trust the police?", True),
        ("On a scale of 1 to 5, how much do you trust the police?", False),
        ("How much do you trust the police, with 1 being not at all?", False),
        ("Rate your trust, where 1 means none and 5 complete.", False),
        ("Use the card, on which 1 means none.", False),  # "which 1 means"
        ("Rate your trust from 1 (none) to 5 (complete).", True),  # explained, but not by one of the four phrases
    ],
)
def test_step2_bare_numbers(text: str, dropped: bool) -> None:
    kept, counts, _ = _run([_q(0, text, ["1", "2", "3", "4", "5"])])
    assert counts["bare_numbers_unexplained"] == int(dropped) and len(kept) == int(not dropped)
    if kept:
        assert list(kept[0].options) == ["1", "2", "3", "4", "5"] and kept[0].first_option == 1


def test_step2_numbering_from_zero() -> None:
    kept, _, _ = _run([_q(0, "On a scale from 0 to 10, how happy are you?", [str(n) for n in range(11)])])
    assert kept[0].first_option == 0 and kept[0].numbers == list(range(11))


# ---- step 3: number prefixes cleaned ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "label"),
    [
        ("1 (Rarely or never)", "Rarely or never"),
        ("1. Rarely", "Rarely"),
        ("1 - Rarely", "Rarely"),
        ("2.Often", "Often"),
    ],
)
def test_clean_label(option: str, label: str) -> None:
    assert clean_label(option) == label


def test_step3_prefixes_cleaned_and_recorded() -> None:
    options = ["1 (Rarely)", "2 (Sometimes)", "3 (Often)"]
    kept, counts, _ = _run([_q(0, "How often?", options), _q(1, "Which?", ["Yes", "No"])])
    assert counts["prefix_cleaned"] == 1 and len(kept) == 2
    assert list(kept[0].options) == ["Rarely", "Sometimes", "Often"] and kept[0].text == "How often?"
    assert kept[0].meta["filter"] == {"changes": ["prefix_cleaned"], "original_text": "How often?",
                                      "original_options": options}  # fmt: skip
    assert kept[1].options == ("Yes", "No") and "filter" not in kept[1].meta


def test_step3_leaves_ranges_and_text_lists_alone() -> None:
    ranges = ["1-3: Too slow", "4-6: Just right", "7-8: Too fast", "9-10: Extremely fast"]
    text_first = ["Never", "1-2 times a year", "3 or more times"]
    kept, counts, _ = _run([_q(0, "Speed?", ranges), _q(1, "How often?", text_first)])
    assert counts["prefix_cleaned"] == 0 and [list(q.options) for q in kept] == [ranges, text_first]
    assert numbered_kind(text_first) is None and numbered_kind(ranges) == "mixed"


# ---- steps 4 and 5: scales labelled at the ends converted, the rest dropped -------------------------------------
def test_step4_end_labelled_scale_is_converted() -> None:
    options = ["1 - Strongly disagree", "2", "3", "4", "5 - Strongly agree"]
    kept, counts, _ = _run([_q(0, "Do you agree that taxes are too high?", options)])
    assert counts["scale_converted"] == 1 and counts["unconvertible_or_refusal"] == 0
    assert list(kept[0].options) == ["1", "2", "3", "4", "5"]
    assert kept[0].text == (
        "Do you agree that taxes are too high? Using this card on which 1 means 'Strongly disagree' "
        "and 5 means 'Strongly agree'"
    )


def test_step4_scale_note_is_configurable() -> None:
    options = ["0 (None)", "1", "2 (All)"]
    kept, _, _ = paper_filter([_q(0, "How many?", options)], (), " [{low}={low_label}; {high}={high_label}]")
    assert kept[0].text == "How many? [0=None; 2=All]" and kept[0].first_option == 0


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["1 - Not at all", "2", "3 - Somewhat", "4", "5 - Completely"], "unconvertible"),  # a label in the middle
        (["1 - Not at all", "2", "3", "4", "5"], "unconvertible"),  # no label at the top end
        (["0-2", "3-5", "6-7", "8-9", "10"], "unconvertible"),  # ranges with a bare end
        (["1 - Agree", "2", "3 - Refused"], "refusal"),
    ],
)
def test_step5_unconvertible_or_refusal_dropped(options: list[str], reason: str) -> None:
    kept, steps, ids = paper_filter([_q(0, "Q?", options), _q(1, "Fine?", ["Yes", "No"])], ())
    last = steps[-1]
    assert last.count == 1 and last.detail[reason] == 1 and ids["unconvertible_or_refusal"] == ["g0"]
    assert [q.id for q in kept] == ["g1"] and last.remaining == 1


def test_first_option_follows_the_paper_numbering() -> None:
    assert first_option(["0", "1"]) == 0 and first_option(["1", "2"]) == 1 and first_option(["None", "Some"]) == 1


def test_refusals_and_dont_know_in_text_lists_are_kept() -> None:
    """The paper keeps "Don't know" / "Other" options; only ``filter=strict`` drops them."""
    kept, _, _ = _run([_q(0, "Do you vote?", ["Yes", "No", "Don't know", "Other (please specify)"])])
    assert len(kept) == 1


# ---- the paper's pool -------------------------------------------------------------------------------------------
@pytest.mark.skipif(not POOL.is_dir(), reason="the paper's question pool is not in data/")
def test_paper_pool_counts_per_step(make_cfg, tmp_path: Path, capsys) -> None:
    out = tmp_path / "filtered.jsonl"
    cfg = make_cfg("generate", ["stage=filter", "filter.input=paper", f"filter.output={out}"])
    summary = generate(cfg)
    report = json.loads(report_path(out).read_text())
    remaining = [(s["step"], s["count"], s["remaining"]) for s in report["steps"]]
    assert remaining == [
        ("duplicates", 109, 12891),  # the notebook printed 12,891 after this step
        ("bare_numbers_unexplained", 31, 12860),  # and 12,860 after this one
        ("prefix_cleaned", 2833, 12860),
        ("scale_converted", 23, 12860),
        ("unconvertible_or_refusal", 13, 12847),
    ]
    assert report["steps"][0]["detail"] == {"of_seed": 0, "of_generated": 109}
    assert report["steps"][-1]["detail"] == {"unconvertible": 13, "refusal": 0}
    assert summary["kept"] == report["kept"] == 12847 == len(out.read_text().splitlines())
    printed = capsys.readouterr().out
    assert "duplicates" in printed and "12891" in printed and "12847" in printed
    # W&B (offline, the real client) got the steps table
    tables = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/table/filter/steps_*.table.json"))
    assert len(tables) == 1
    assert json.loads(tables[0].read_text())["data"][0] == ["duplicates", "removed", 109, 12891]


@pytest.mark.slow
@pytest.mark.skipif(not POOL.is_dir(), reason="the paper's question pool is not in data/")
def test_rouge_l_near_duplicates_on_the_paper_pool() -> None:
    """ROUGE-L near-duplicates per topic on the paper's 13,000 questions at 0.7 (``filter.rouge_l_threshold``): the
    count the rouge-score private LCS gave before near_dup moved to its public scorer (same questions, checked)."""
    by_topic: dict[str | None, list[str]] = {}
    for question in load_questions(str(POOL)):
        by_topic.setdefault(question.topic, []).append(question.text)
    dropped = [sum(d is not None for d in near_duplicates(texts, 0.7)) for texts in by_topic.values()]
    assert len(by_topic) == 13 and sum(dropped) == 2274


def test_paper_seed_texts_include_questions_without_options(wvs) -> None:
    texts = paper_seed_texts(wvs.root)
    assert len(texts) > len(wvs.questions)  # the demographic questions without options count as seeds too


@pytest.mark.skipif(not POOL.is_dir(), reason="the paper's question pool is not in data/")
def test_fidelity_report_prints_the_doc_figures(capsys) -> None:
    from culturespa.fidelity import main

    main([])
    out = capsys.readouterr().out
    assert "unconvertible_or_refusal          removed     13      12847" in out
    assert "9 ties; in 6 the gold (first listed) is not the lowest option number" in out
    assert "5 of 18 cultures" in out
