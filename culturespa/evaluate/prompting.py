"""How each WVS question is put to the model for one culture under a prompt variant (unaware, P1, P2, P3, P1+P3,
P2+P3).

Rule for adapters: the *wording* (templates) comes from the ``prompt_style.yaml`` saved beside the adapter, so a
trained model is asked exactly the way it was trained; the *variant* (system kind, in-context examples, number of
similar cultures) always comes from ``cfg.prompt``, because comparing prompt variants on one adapter is itself one of
the paper's experiments. Without a saved style (or for the base model) the templates come from ``cfg.templates``.
"""

from __future__ import annotations

from dataclasses import replace

from culturespa.prompts.builder import (
    Message,
    PromptBuilder,
    PromptStyle,
    self_alignment_examples,
    similar_cultures,
)
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData


def adapter_style(style: PromptStyle, saved: PromptStyle | None) -> PromptStyle:
    """The config's prompt variant ``style`` with the adapter's saved templates when there are any."""
    return style if saved is None else replace(style, templates=saved.templates)


def culture_independent(style: PromptStyle) -> bool:
    """True when the prompt does not depend on the culture (unaware, no examples): the model is asked once."""
    return style.system == "unaware" and style.n_examples == 0


def answer_messages(wvs: WVSData, style: PromptStyle, question: Question, culture: str | None) -> list[Message]:
    """The chat for ``question``: the variant's system prompt, P3's examples (the culture's majority answers to the
    questions ranked most useful for this one), then the question."""
    builder = PromptBuilder(style)
    similar: list[str] = []
    dissimilar: list[str] = []
    if style.system == "cct" and culture is not None:
        similar, dissimilar = similar_cultures(wvs, culture, style.n_similar)
    examples = (
        self_alignment_examples(wvs, question.id, culture, style.n_examples)
        if culture is not None and style.n_examples > 0
        else []
    )
    system_culture = culture if style.system != "unaware" else None
    return builder.answer_messages(question, style.system, system_culture, similar, dissimilar, examples)
