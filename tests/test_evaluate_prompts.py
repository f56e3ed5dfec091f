"""Prompt variants for evaluation: P3 example selection, P2's similar cultures, adapters' saved templates."""

from __future__ import annotations

from pathlib import Path

from culturespa.evaluate.adapters import AdapterPlan
from culturespa.evaluate.prompting import adapter_style, answer_messages, culture_independent
from culturespa.prompts.builder import PromptStyle, self_alignment_examples, similar_cultures
from culturespa.wvs.cultures import get_culture


def test_p3_examples_skip_unanswered_and_use_majority_answers(wvs) -> None:
    # Q42's ranked list starts Q93, Q153, Q152, Q91, Q175, ...; CHN has no survey answers for Q93
    ranked = wvs.examples["Q42"]
    assert ranked[:5] == ["Q93", "Q153", "Q152", "Q91", "Q175"]
    assert wvs.majority_answer("CHN", "Q93") is None
    chosen = self_alignment_examples(wvs, "Q42", "CHN", 5)
    expected_ids = [q for q in ranked if wvs.majority_answer("CHN", q) is not None][:5]
    assert [q.id for q, _ in chosen] == expected_ids and "Q93" not in expected_ids
    assert [a for _, a in chosen] == [wvs.majority_answer("CHN", q) for q in expected_ids]
    # USA answered all of the first five: taken in ranked order
    assert [q.id for q, _ in self_alignment_examples(wvs, "Q42", "USA", 5)] == ranked[:5]
    assert self_alignment_examples(wvs, "Q42", "USA", 0) == []


def _cfg(make_cfg, prompt: str):
    return make_cfg("evaluate", [f"prompt={prompt}", "logger=none"])


def _style(cfg) -> PromptStyle:  # noqa: ANN001
    """The config's prompt variant with its own templates (what evaluation asks the base model with)."""
    return PromptStyle.from_config(cfg.templates, cfg.prompt)


def test_p3_examples_inline_by_default_as_the_paper(make_cfg, wvs) -> None:
    """The paper puts the five examples in the question's user turn, each answer as number and option text."""
    style = _style(_cfg(make_cfg, "p1_p3"))
    question = wvs.questions["Q42"]
    messages = answer_messages(wvs, style, question, "CHN")
    assert [m["role"] for m in messages] == ["system", "user"] and "Chinese" in messages[0]["content"]
    chosen = self_alignment_examples(wvs, "Q42", "CHN", 5)
    user = messages[1]["content"]
    for example, answer in chosen:
        assert f"Question: {example.text} Options: " in user
        assert f"Answer: {answer}.{example.option_text(answer)}" in user
    assert user.index(chosen[-1][0].text) < user.index(question.text) and user.endswith("\n#Answer:")


def test_p3_messages_hold_five_answered_exchanges(make_cfg, wvs) -> None:
    cfg = make_cfg("evaluate", ["prompt=p1_p3", "logger=none", "templates.answer.examples.style=turns"])
    style = _style(cfg)
    question = wvs.questions["Q42"]
    messages = answer_messages(wvs, style, question, "CHN")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert "Chinese" in messages[0]["content"]
    chosen = self_alignment_examples(wvs, "Q42", "CHN", 5)
    assert [m["content"] for m in messages[2:11:2]] == [str(a) for _, a in chosen]
    assert f"#Question: {chosen[0][0].text}\n" in messages[1]["content"]
    assert f"#Question: {question.text}\n" in messages[-1]["content"]


def test_p3_alone_does_not_name_the_culture(make_cfg, wvs) -> None:
    style = _style(_cfg(make_cfg, "p3"))
    assert not culture_independent(style)  # examples are the culture's answers even though it is not named
    messages = answer_messages(wvs, style, wvs.questions["Q1"], "USA")
    assert "American" not in messages[0]["content"] and len(messages) == 2


def test_p2_names_three_most_and_least_similar(make_cfg, wvs) -> None:
    style = _style(_cfg(make_cfg, "p2"))
    system = answer_messages(wvs, style, wvs.questions["Q1"], "USA")[0]["content"]
    similar, dissimilar = similar_cultures(wvs, "USA", 3)
    assert (similar, dissimilar) == (["CAN", "GBR", "NZL"], ["ZWE", "NGA", "IND"])  # from country_similarity.json
    for code in similar + dissimilar:
        assert get_culture(code).adjective in system
    assert system.index("Canadian") < system.index("Zimbabwean")


def test_unaware_is_asked_once(make_cfg, wvs) -> None:
    style = _style(_cfg(make_cfg, "unaware"))
    assert culture_independent(style)
    assert answer_messages(wvs, style, wvs.questions["Q1"], None) == answer_messages(
        wvs, style, wvs.questions["Q1"], None
    )


def test_adapter_templates_with_the_configured_variant(make_cfg, wvs, tmp_path: Path) -> None:
    cfg = _cfg(make_cfg, "p1")
    trained = PromptStyle.from_config(cfg.templates, {"name": "unaware", "system": "unaware", "n_examples": 0})
    trained.templates["answer"]["user"] = "TRAINED WORDING\n{question}\n{options}"
    (tmp_path / "adapter_config.json").write_text("{}")
    trained.save(tmp_path)
    plan = AdapterPlan("joint", {None: tmp_path})
    style = adapter_style(_style(cfg), plan.style_for(None))
    assert style.system == "aware" and style.name == "p1"  # the variant comes from cfg.prompt
    messages = answer_messages(wvs, style, wvs.questions["Q1"], "USA")
    assert messages[-1]["content"].startswith("TRAINED WORDING") and "American" in messages[0]["content"]
    assert AdapterPlan("base").style_for(None) is None
