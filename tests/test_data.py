"""WVS data facts and the data layer's one-line validation errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.wvs.cultures import CULTURE_SETS, PAPER_CULTURES, get_culture, resolve_cultures
from culturespa.wvs.fetch import WVS_SHA256, prepare, sha256
from culturespa.wvs.survey import WVSData, default_data_dir
from culturespa.wvs.topics import TOPIC_NAMES, is_zero_based, topic_of

ZERO_BASED = [f"Q{n}" for n in [*range(94, 106), 119, *range(122, 130), *range(241, 250)]]


def test_259_evaluation_questions(wvs: WVSData) -> None:
    ids = [q.id for q in wvs.eval_questions]
    assert len(ids) == 259
    assert "Q223" not in ids and not any(f"Q{n}" in ids for n in range(260, 291))
    assert "Q234A" in ids
    assert all(q.topic in TOPIC_NAMES for q in wvs.eval_questions)
    assert len({q.topic for q in wvs.eval_questions}) == 13


def test_zero_based_questions(wvs: WVSData) -> None:
    zero = sorted((q.id for q in wvs.eval_questions if q.first_option == 0), key=lambda x: int(x[1:]))
    assert zero == ZERO_BASED
    assert wvs.questions["Q94"].numbers == [0, 1, 2]
    assert wvs.questions["Q1"].numbers == [1, 2, 3, 4]
    assert is_zero_based("Q241") and not is_zero_based("Q240")


def test_majority_answers(wvs: WVSData) -> None:
    # The shares file lists each question's options by share, largest first.
    assert wvs.majority_answer("USA", "Q1") == 1
    assert wvs.majority_answer("USA", "Q3") == 2
    assert wvs.majority_answer("USA", "Q94") == 0  # zero-based question
    assert wvs.majority_answer("USA", "Q119") == 3
    assert wvs.majority_answer("USA", "Q215") is None  # no answers


@pytest.mark.parametrize(
    ("culture", "missing"),
    [
        ("CHN", 37),
        ("GBR", 13),
        ("AUS", 2),
        ("NZL", 2),
        ("USA", 2),
        ("BOL", 1),
        ("DEU", 1),
        ("RUS", 1),
        ("THA", 1),
        ("CAN", 0),
    ],
)
def test_missing_answers_per_culture(wvs: WVSData, culture: str, missing: int) -> None:
    assert len(wvs.missing_questions(culture)) == missing
    assert len(wvs.answered_questions(culture)) == 259 - missing


def test_usa_missing_questions(wvs: WVSData) -> None:
    assert wvs.missing_questions("USA") == ["Q215", "Q234A"]


def test_cultures_registry() -> None:
    assert len(PAPER_CULTURES) == 18 and "MEX" not in PAPER_CULTURES
    assert get_culture("USA").person == "an American"
    assert get_culture("CHN").person == "a Chinese"
    assert get_culture("MEX").continent == "America"
    assert [len(CULTURE_SETS[c]) for c in ("america", "europe", "asia", "africa", "oceania")] == [4, 4, 4, 4, 2]
    assert resolve_cultures(["oceania", "USA", "AUS"]) == ["AUS", "NZL", "USA"]
    with pytest.raises(CultureSPAError, match="unknown culture 'XYZ'.*USA"):
        resolve_cultures(["XYZ"])


def test_topics() -> None:
    assert topic_of("Q1") == "Social Values, Attitudes & Stereotypes"
    assert topic_of("Q234A") == "Political Interest & Political Participation"
    assert topic_of("Q259") == "Political Culture & Political Regimes"
    assert topic_of("Q270") is None


def test_similarity(wvs: WVSData) -> None:
    most, least = wvs.most_and_least_similar("USA", list(PAPER_CULTURES))
    assert most == ["CAN", "GBR", "NZL"]
    assert least[0] == "ZWE" and len(least) == 3 and "USA" not in most + least


# ---- validation: every defect is one line naming file and item ----------------------------------------------------
@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    target = tmp_path / "wvs"
    shutil.copytree(default_data_dir() / "wvs", target)
    return target


def _edit(path: Path, change) -> None:  # noqa: ANN001
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _error(root: Path) -> str:
    with pytest.raises(CultureSPAError) as info:
        WVSData.load(root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(data_copy: Path) -> None:
    (data_copy / "country_similarity.json").unlink()
    assert "country_similarity.json: file not found" in _error(data_copy)


def test_malformed_json(data_copy: Path) -> None:
    (data_copy / "wvs_questions.json").write_text('[{"Q_id": "Q1",')
    assert "wvs_questions.json: malformed JSON" in _error(data_copy)


def test_question_without_options(data_copy: Path) -> None:
    _edit(data_copy / "wvs_questions.json", lambda q: q[0].update(option_lst=[]))
    assert "wvs_questions.json: Q1: question has no options" in _error(data_copy)


def test_share_for_unknown_option(data_copy: Path) -> None:
    _edit(data_copy / "proportions_group_by_country.json", lambda p: p["USA"]["Q1"].update({"7": 0.1}))
    message = _error(data_copy)
    assert "proportions_group_by_country.json: USA Q1: option 7 is not an option of Q1" in message


def test_unknown_culture_code(data_copy: Path) -> None:
    _edit(data_copy / "proportions_group_by_country.json", lambda p: p.update(XYZ=p["USA"]))
    assert "proportions_group_by_country.json: XYZ: unknown culture code" in _error(data_copy)


def test_unknown_culture_lookup(wvs: WVSData) -> None:
    with pytest.raises(CultureSPAError, match="unknown culture 'XXX'"):
        wvs.answer_shares("XXX", "Q1")


# ---- make data --------------------------------------------------------------------------------------------------
def test_make_data_copies_and_verifies(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(default_data_dir(), shared, ignore=shutil.ignore_patterns(".complete"))
    dest = tmp_path / "data"
    prepare(dest, shared)
    assert all(sha256(dest / "wvs" / name) == digest for name, digest in WVS_SHA256.items())
    assert len(list((dest / "generated-questions-llama3-8b-instruct").glob("topic_*.json"))) == 13


def test_make_data_rejects_bad_checksum_without_partial_file(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(default_data_dir(), shared, ignore=shutil.ignore_patterns(".complete"))
    (shared / "wvs" / "country_similarity.json").write_text("{}")
    dest = tmp_path / "data"
    with pytest.raises(ValueError, match="sha256"):
        prepare(dest, shared)
    assert not (dest / "wvs" / "country_similarity.json").exists()
    assert not [p for p in (dest / "wvs").iterdir() if p.name.startswith(".")]
    assert not (dest / ".complete").exists()
