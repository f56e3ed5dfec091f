"""The default templates lay prompts out as the paper's code does (our wording, the paper's structure): options on one
line as ``1.text 2.text`` under ``#Question:`` / ``#Options:``, P3's examples inline and its ``#Answer:`` cue, and
question generation's ``#Example i:`` / ``Question:`` / ``Options: [...]`` blocks; the articles of the paper's
a/an table; and a template file of the user's own, selected with ``templates=``, changes the rendered prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from culturespa.config import compose
from culturespa.evaluate.prompting import answer_messages
from culturespa.prompts.builder import PromptBuilder, PromptStyle
from culturespa.wvs.cultures import PAPER_CULTURES, get_culture
from culturespa.wvs.survey import WVSData
from tests.conftest import REPO

# utils.py's a_an_dict in the paper's repository
PAPER_ARTICLES = {"USA": "an", "IND": "an", "ETH": "an", "AUS": "an"} | {
    c: "a" for c in ("CAN", "BOL", "BRA", "GBR", "NLD", "DEU", "UKR", "CHN", "RUS", "THA", "KEN", "NGA", "ZWE", "NZL")
}
Q1_OPTIONS = "1.Very important 2.Rather important 3.Not very important 4.Not at all important"


def _style(tmp_path: Path, prompt: str, extra: tuple[str, ...] = ()) -> PromptStyle:
    cfg = compose("evaluate", [f"prompt={prompt}", *extra], output_dir=tmp_path)
    return PromptStyle.from_config(cfg.templates, cfg.prompt)


def test_articles_follow_the_papers_table() -> None:
    assert {c: get_culture(c).article for c in PAPER_CULTURES} == PAPER_ARTICLES
    assert get_culture("UKR").person == "a Ukrainian"


def test_p1_layout(tmp_path: Path, wvs: WVSData) -> None:
    system, user = answer_messages(wvs, _style(tmp_path, "p1"), wvs.questions["Q1"], "UKR")
    assert system["role"] == "system" and system["content"].startswith("You are a Ukrainian ")
    lines = user["content"].split("\n")
    assert len(lines) == 4 and "#Question" in lines[0]
    assert lines[1:3] == ["#Question: How important is family in your life?", f"#Options: {Q1_OPTIONS}"]
    assert "number" in lines[3]


def test_unaware_and_aware_prompts_share_the_answer_template(tmp_path: Path, wvs: WVSData) -> None:
    """As released, the paper's unaware script would send generated questions bare (its template is applied only for
    paths containing "pluralistic_sampling"); we follow the evident intent: the same question turn as the aware one."""
    question = wvs.questions["Q1"]
    (_, unaware), (_, aware) = (answer_messages(wvs, _style(tmp_path, p), question, "USA") for p in ("unaware", "p1"))
    assert unaware == aware and f"#Options: {Q1_OPTIONS}" in unaware["content"]


def test_p2_layout(tmp_path: Path, wvs: WVSData) -> None:
    system, user = answer_messages(wvs, _style(tmp_path, "p2"), wvs.questions["Q1"], "USA")
    for adjective in ("Canadian", "British", "New Zealand", "Zimbabwean", "Nigerian", "Indian"):
        assert adjective in system["content"]
    assert user["content"].split("\n")[1:3] == [
        "#Question: How important is family in your life?",
        f"#Options: {Q1_OPTIONS}",
    ]


@pytest.mark.parametrize(("prompt", "culture_named"), [("p3", False), ("p1_p3", True)])
def test_p3_layout(tmp_path: Path, wvs: WVSData, prompt: str, culture_named: bool) -> None:
    """Instruction, five ``Question: ... Options: 1.a 2.b Answer: n.text`` lines, a line handing over to the question,
    then ``#Question:``, ``#Options:`` on one line and the ``#Answer:`` cue last."""
    system, user = answer_messages(wvs, _style(tmp_path, prompt), wvs.questions["Q1"], "CHN")
    assert ("Chinese" in system["content"]) == culture_named
    lines = user["content"].split("\n")
    assert len(lines) == 2 + 5 + 4
    examples = lines[2:7]
    assert examples[0] == (
        "Question: How important is work in your life? Options: 1.Very important 2.Rather important "
        "3.Not very important 4.Not at all important Answer: 2.Rather important"
    )
    assert all(x.startswith("Question: ") and " Options: 1." in x and " Answer: " in x for x in examples)
    assert lines[-3:] == ["#Question: How important is family in your life?", f"#Options: {Q1_OPTIONS}", "#Answer:"]


def test_question_generation_layout(tmp_path: Path, wvs: WVSData) -> None:
    style = _style(tmp_path, "p1")
    examples = [wvs.questions["Q1"], wvs.questions["Q2"]]
    system, user = PromptBuilder(style).question_generation_messages("Happiness and Well-being", examples)
    assert system["role"] == "system" and "World Values Survey" in system["content"]
    text = user["content"]
    blocks = (
        "#Example 1:\nQuestion: How important is family in your life?\n"
        "Options: ['Very important', 'Rather important', 'Not very important', 'Not at all important']\n\n"
        "#Example 2:\nQuestion: How important are friends in your life?\n"
        "Options: ['Very important', 'Rather important', 'Not very important', 'Not at all important']\n\n"
    )
    assert blocks in text and text.index("Happiness and Well-being") < text.index("#Example 1:")
    assert text.count("Happiness and Well-being") == 2 and '{"Question": "...", "Options": [' in text


def test_a_template_file_of_ones_own_changes_the_prompt(tmp_path: Path, wvs: WVSData) -> None:
    """templates=<name> with hydra.searchpath pointing at a folder of the user's own (e.g. the paper's exact strings)."""
    folder = tmp_path / "mine" / "templates"
    folder.mkdir(parents=True)
    default = (REPO / "conf" / "templates" / "default.yaml").read_text()
    own = default.replace("Given the #Question and #Options below, answer", "MY OWN WORDING: answer")
    assert own != default
    (folder / "paper_exact.yaml").write_text(own)
    extra = (f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "templates=paper_exact")
    question = wvs.questions["Q1"]
    ours = answer_messages(wvs, _style(tmp_path, "p1"), question, "USA")
    theirs = answer_messages(wvs, _style(tmp_path, "p1", extra), question, "USA")
    assert ours[0] == theirs[0] and ours[1] != theirs[1]
    assert theirs[1]["content"].startswith("MY OWN WORDING: answer with the number of the option")


def test_entry_points_accept_a_template_from_the_search_path(tmp_path: Path) -> None:
    """The entry points' early check of group options (utils/entry.py) also looks in hydra.searchpath folders."""
    from culturespa.entry import check_group_overrides

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "paper_exact.yaml").write_text("{}\n")
    conf = str(REPO / "conf")
    check_group_overrides([f"hydra.searchpath=[file://{tmp_path}]", "templates=paper_exact"], conf)
    with pytest.raises(SystemExit):
        check_group_overrides(["templates=paper_exact"], conf)
