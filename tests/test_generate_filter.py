"""Filter stage: every rule on hand-made cases, JSON extraction, pool loading errors, ROUGE-L near-duplicates."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.questions.filter import filter_questions, normalise
from culturespa.questions.json_extract import Extracted, extract_question
from culturespa.questions.near_dup import near_duplicates, rouge_l, tokenize
from culturespa.questions.options import explains_scale, format_question, parse_option
from culturespa.questions.pool import load_questions
from culturespa.stages.lineage import report_path
from culturespa.wvs.questions import Question

REPO = Path(__file__).resolve().parents[1]


# ---- option parsing and per-question rules ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, expected",
    [
        ("1. Rarely", (1, "Rarely")),
        ("1 - Rarely", (1, "Rarely")),
        ("1) Rarely", (1, "Rarely")),
        ("1 (Rarely)", (1, "Rarely")),
        ("10 - Refused", (10, "Refused")),
        ("7", (7, None)),
        ("1-2 weeks", (None, "1-2 weeks")),
        ("0-2", (None, "0-2")),
        ("1.5 hours", (None, "1.5 hours")),
        ("Very important", (None, "Very important")),
    ],
)
def test_parse_option(option: str, expected: tuple) -> None:
    assert parse_option(option) == expected


@pytest.mark.parametrize(
    "options",
    [
        ["1. Rarely", "2. Sometimes", "3. Often"],
        ["1 - Rarely", "2 - Sometimes", "3 - Often"],
        ["1) Rarely", "2) Sometimes", "3) Often"],
        ["1 (Rarely)", "2 (Sometimes)", "3 (Often)"],
        ["0. Rarely", "1. Sometimes", "2. Often"],
    ],
)
def test_numbered_prefixes_are_cleaned(options: list[str]) -> None:
    out = format_question("How often do you vote?", options)
    assert out.dropped is None
    assert out.options == ["Rarely", "Sometimes", "Often"]
    assert out.changes == ["prefix_cleaned"] and out.first_option == 1
    assert out.text == "How often do you vote?"


def test_ranges_and_plain_text_are_untouched() -> None:
    options = ["Less than a week", "1-2 weeks", "1-3 months", "More than 6 months"]
    out = format_question("How long does it take?", options)
    assert out.dropped is None and out.options == options and out.changes == []
    # a partly numbered list: prefixes matching their position are cleaned, the rest kept
    out = format_question("Which?", ["1. Keep my job", "2. Take the venture", "Both equally"])
    assert out.options == ["Keep my job", "Take the venture", "Both equally"]


def test_bare_numbers_need_a_scale_explanation() -> None:
    numbers = [str(n) for n in range(0, 11)]
    dropped = format_question("On a scale from 0 to 10, how important is religion?", numbers)
    assert dropped.dropped == "bare_numbers_unexplained"
    kept = format_question("How important is religion, where 0 means 'not at all' and 10 means 'very'?", numbers)
    assert kept.dropped is None and kept.options == numbers and kept.first_option == 0
    one_based = format_question("Rate it, with 1 being 'never' and 5 being 'always'.", ["1", "2", "3", "4", "5"])
    assert one_based.dropped is None and one_based.first_option == 1
    quoted = format_question("Rate it on a scale from '1' meaning 'never' to '5' meaning 'always'.", list("12345"))
    assert quoted.dropped is None
    ranges = format_question("On a scale of 0-10, how happy are you?", ["0", "1-2", "3-4", "5-6", "7-8", "9-10"])
    assert ranges.dropped == "bare_numbers_unexplained"
    assert explains_scale("on a scale from 1 (strongly disagree) to 5 (strongly agree)", 1, 5)
    assert not explains_scale("On a scale of 1-5, how often?", 1, 5)


def test_labelled_scale_ends_become_bare_numbers_with_a_sentence() -> None:
    out = format_question("How much do you trust science?", ["1 - Not at all", "2", "3", "4", "5 - Completely"])
    assert out.dropped is None
    assert out.options == ["1", "2", "3", "4", "5"] and out.first_option == 1
    assert out.text == 'How much do you trust science? On this scale, 1 means "Not at all" and 5 means "Completely".'
    assert out.changes == ["scale_converted"]
    middle = format_question("Q?", ["0 (Never)", "1", "2 (Sometimes)", "3", "4 (Always)"])
    assert middle.first_option == 0
    assert middle.text.endswith('0 means "Never", 2 means "Sometimes" and 4 means "Always".')


def test_unconvertible_scales_are_dropped() -> None:
    assert format_question("Q?", ["1", "2", "3", "4", "5 - Completely"]).dropped == "unconvertible_scale"
    assert format_question("Q?", ["Never", "2", "Always"]).dropped == "unconvertible_scale"


@pytest.mark.parametrize(
    "extra",
    [
        "9 - Don't know",
        "10 - Refused",
        "Don’t know",
        "Refuse to answer",
        "Other (please specify)",
        "Other answer",
        "Prefer not to say",
        "Not sure",
        "No opinion",
        "Don't know/Refused",
    ],
)
def test_non_substantive_options_drop_the_question(extra: str) -> None:
    options = ["1 - Agree", "2 - Disagree", extra]
    assert format_question("Q?", options).dropped == "non_substantive_option"
    stripped = format_question("Q?", options, non_substantive="strip")
    assert stripped.dropped is None and stripped.options == ["Agree", "Disagree"]
    assert stripped.changes == ["non_substantive_stripped", "prefix_cleaned"]


@pytest.mark.parametrize(
    "option",
    [
        "Undecided",
        "It depends on the situation",
        "Other issues should come first",
        "Prohibit people coming here from other countries",
    ],
)
def test_substantive_options_are_kept(option: str) -> None:
    assert format_question("Q?", ["Yes", "No", option]).dropped is None


def test_too_few_and_duplicate_options() -> None:
    assert format_question("Q?", ["Yes"]).dropped == "too_few_options"
    assert format_question("Q?", ["1 - Agree", "2 - Neutral", "3 - agree"]).dropped == "duplicate_options"
    with pytest.raises(ValueError):
        format_question("Q?", ["a", "b"], non_substantive="keep")


# ---- pool-level rules and the report ----------------------------------------------------------------------------
def _q(i: int, text: str, options: list[str], topic: str = "Corruption") -> Question:
    return Question(f"g{i}", text, tuple(options), 1, topic, "generated")


def test_filter_questions_counts_every_rule() -> None:
    yes_no = ["Yes", "No"]
    pool = [
        _q(0, "Do you trust the police?", yes_no),
        _q(1, "  do you TRUST the police? ", ["Agree", "Disagree"]),  # exact duplicate after folding
        _q(2, "How important is family in your life?", yes_no),  # a WVS seed question
        _q(3, "Do you vote?", ["1 - Yes", "2 - No", "9 - Don't know"]),
        _q(4, "Rate it on a scale of 1 to 5.", ["1", "2", "3", "4", "5"]),
        _q(5, "Q5?", ["1", "2", "3 - High"]),
        _q(6, "Q6?", ["A", "a"]),
        _q(7, "Q7?", ["Only"]),
        _q(8, "How often do you pray?", ["1. Rarely", "2. Often"]),
        _q(9, "Do you trust the police force?", yes_no),  # near-duplicate of g0
        _q(10, "How much do you trust courts?", ["1 - None", "2", "3 - Full"], topic="Security"),
    ]
    seeds = {normalise("How important is family in your life?")}
    kept, report, samples = filter_questions(pool, seeds, rouge_l_threshold=0.7)
    assert [q.id for q in kept] == ["g0", "g8", "g10"]
    assert report["removed"] == {
        "too_few_options": 1,
        "non_substantive_option": 1,
        "bare_numbers_unexplained": 1,
        "unconvertible_scale": 1,
        "duplicate_options": 1,
        "duplicate_of_wvs": 1,
        "duplicate": 1,
        "near_duplicate": 1,
        "over_limit": 0,
    }
    assert report["kept"] == 3 and report["n_input"] == 11
    assert report["modified"]["prefix_cleaned"] == 1 and report["modified"]["scale_converted"] == 1
    assert kept[1].options == ("Rarely", "Often")
    assert kept[1].meta["filter"]["original_options"] == ["1. Rarely", "2. Often"]
    assert kept[2].options == ("1", "2", "3") and "1 means" in kept[2].text
    assert {row[4] for row in samples} >= {"kept", "duplicate", "duplicate_of_wvs", "unconvertible_scale"}
    off, report_off, _ = filter_questions(pool, seeds, rouge_l_threshold=None)
    assert report_off["removed"]["near_duplicate"] == 0 and len(off) == 4
    limited, report_lim, _ = filter_questions(pool, seeds, limit_per_topic=1, seed=3)
    assert sorted(q.topic for q in limited) == ["Corruption", "Security"]
    assert report_lim["removed"]["over_limit"] == 2


def test_near_duplicates_match_brute_force() -> None:
    """The bounded search drops exactly what rouge-score's own scorer, on every pair of raw texts, would drop."""
    from rouge_score import rouge_scorer

    rng = random.Random(0)
    words = "do you think people trust the government police family work religion should always never".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) for _ in range(120)]
    got = near_duplicates(texts, 0.6)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    kept: list[int] = []
    expected = []
    for i, text in enumerate(texts):
        dup = any(scorer.score(text, texts[j])["rougeL"].fmeasure > 0.6 for j in kept)
        expected.append(dup)
        if not dup:
            kept.append(i)
    assert [g is not None for g in got] == expected
    assert any(expected) and not all(expected)


@pytest.mark.parametrize(
    "a, b",
    [
        ("How IMPORTANT is family, in your life?", "how important is   family to you?!"),
        ("Café culture: über-trust (1-10)?", "cafe culture 1 10 trust"),
        ("", "anything at all"),
        ("same words same words", "words same words same"),
    ],
)
def test_rouge_l_is_rouge_scores_public_scorer(a: str, b: str) -> None:
    from rouge_score import rouge_scorer

    expected = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    assert rouge_l(tokenize(a), tokenize(b)) == expected
    assert rouge_l(tokenize(b), tokenize(a)) == expected


# ---- JSON extraction ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        '{"Question": "Do you pray?", "Options": ["Yes", "No"]}',
        'Sure! Here it is:\n```json\n{"question": "Do you pray?", "options": ["Yes", "No"]}\n```\nThanks.',
        'My question is {"Question:" "Do you pray?", "Options": ["Yes", "No"]} as requested.',
        '{"Question:": "Do you pray?", "OPTIONS": ["Yes", "No",]}',
        "{'Question': 'Do you pray?', 'Options': ['Yes', 'No']}",
        '{"note": 1}\n{"Question": "Do  you\npray?", "Options": ["Yes", "No"]}',
    ],
)
def test_extract_question(reply: str) -> None:
    assert extract_question(reply) == Extracted("Do you pray?", ["Yes", "No"])


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("I cannot write a question.", "no JSON object"),
        ('{"Question": "Do you pray?", "Options": ["Yes"]}', "fewer than two usable options"),
        ('{"Question": "", "Options": ["a", "b"]}', "no question text"),
        ('{"Question": "Q?", "Options": "a, b"}', "no options list"),
        ('{"Question": "Q?", "Options": ["a", "b"', "no JSON object"),
    ],
)
def test_extract_question_rejects(reply: str, reason: str) -> None:
    assert extract_question(reply) == reason


# ---- pools, errors, the stage -----------------------------------------------------------------------------------
def _paper_pool(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        {"Q_id": "Q0", "question": "Do you trust banks?", "option_lst": ["1. Yes", "2. No"], "class": "Corruption"},
        {"Q_id": "Q1", "question": "Do you trust banks?", "option_lst": ["Yes", "No"], "class": "Corruption"},
        {
            "Q_id": "Q2",
            "question": "Bribes?",
            "option_lst": ["Yes", "No", "Refused"],
            "class": "Corruption",
            "prompt": "...",
        },
    ]
    (folder / "topic_4.json").write_text(json.dumps(items))
    (folder / "topic_5.json").write_text(json.dumps([{**items[0], "question": "Migrants?", "class": "Migration"}]))


def test_load_paper_pool_folder_and_file(tmp_path: Path) -> None:
    _paper_pool(tmp_path / "pool")
    questions = load_questions(tmp_path / "pool")
    assert [q.id for q in questions] == ["pool-t4-Q0", "pool-t4-Q1", "pool-t4-Q2", "pool-t5-Q0"]
    assert questions[3].topic == "Migration" and questions[0].meta["pool_id"] == "Q0"
    assert len(load_questions(tmp_path / "pool" / "topic_5.json")) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"Q_id": "Q0", "question": "Q?", "option_lst": []}]', "item 0: question 'Q0' has no options"),
        ('[{"Q_id": "Q0", "option_lst": ["a", "b"]}]', "item 0: missing or empty 'question'"),
        ('[{"Q_id": "Q0", "question": "Q?", "option_lst": ["a"', "malformed JSON"),
        ('{"id": "x", "text": "Q?", "options": []}\n', ":1: question x: 'options' must be a non-empty list"),
        (
            '{"id": "x", "text": "Q?", "options": ["a", "b"]}\n{"id": "x", "text": "Q?", "options": ["a", "b"]}\n',
            "duplicate question id 'x'",
        ),
    ],
)
def test_bad_pool_is_a_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ("topic_0.json" if content.startswith("[") else "q.jsonl")
    path.write_text(content)
    with pytest.raises(CultureSPAError) as err:
        load_questions(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_filter_stage_end_to_end(make_cfg, tmp_path: Path) -> None:
    _paper_pool(tmp_path / "pool")
    out = tmp_path / "work" / "filtered.jsonl"
    old = out.with_name("old")
    cfg = make_cfg(
        "generate",
        ["stage=filter", "filter=strict", f"filter.input={tmp_path / 'pool'}", f"filter.output={out}", "logger=csv"],
    )
    summary = generate(cfg)
    assert summary["kept"] == 2 and summary["n_input"] == 4
    assert summary["removed"]["duplicate"] == 1 and summary["removed"]["non_substantive_option"] == 1
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["pool-t4-Q0", "pool-t5-Q0"] and lines[0]["options"] == ["Yes", "No"]
    report = json.loads(report_path(out).read_text())
    assert report["kept"] == 2 and report["removed"]["duplicate"] == 1
    # a failing run leaves the earlier output alone
    out.rename(old)
    out.write_text(old.read_text())
    (tmp_path / "pool" / "topic_5.json").write_text("[{")
    with pytest.raises(CultureSPAError):
        generate(cfg)
    assert out.read_text() == old.read_text()


def test_cli_bad_input_exits_1_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "Q?", "options": ["x", "y"]}\n{"id": "b", "text": "Q?"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "generate.py",
            "stage=filter",
            f"filter.input={bad}",
            f"filter.output={tmp_path}/f.jsonl",
            f"paths.work_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}/run",
            "logger=none",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {bad}:2: malformed JSON: Expecting ',' delimiter"]
    assert not (tmp_path / "f.jsonl").exists()
