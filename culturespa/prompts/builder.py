"""Render chats for question generation, answering (unaware / aware / CCT, with optional self-alignment examples) and
SFT targets, from template strings kept in config.

A :class:`PromptStyle` (the templates plus the prompt variant) is saved beside every adapter, so evaluation asks the
trained model exactly the way it was trained (LitGPT's prompt-style registry, in YAML).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.wvs.cultures import PAPER_CULTURES, get_culture
from culturespa.wvs.questions import Question

Message = dict[str, str]
SYSTEM_KINDS = ("unaware", "aware", "cct")
STYLE_FILE = "prompt_style.yaml"


@dataclass
class PromptStyle:
    """Templates (``conf/templates/*.yaml``) plus the prompt variant (``conf/prompt/*.yaml``)."""

    templates: dict[str, Any]
    system: str = "aware"
    n_examples: int = 0
    n_similar: int = 3
    name: str = "p1"

    @classmethod
    def from_config(cls, templates: Any, prompt: Any) -> PromptStyle:
        from omegaconf import OmegaConf

        tpl = OmegaConf.to_container(templates, resolve=True) if OmegaConf.is_config(templates) else dict(templates)
        p = OmegaConf.to_container(prompt, resolve=True) if OmegaConf.is_config(prompt) else dict(prompt)
        if p.get("system", "aware") not in SYSTEM_KINDS:
            raise CultureSPAError(f"prompt.system={p.get('system')!r}; choose one of: {', '.join(SYSTEM_KINDS)}")
        return cls(
            templates=tpl,  # type: ignore[arg-type]
            system=p.get("system", "aware"),
            n_examples=int(p.get("n_examples", 0)),
            n_similar=int(p.get("n_similar", 3)),
            name=str(p.get("name", "custom")),
        )

    def save(self, folder: str | Path) -> Path:
        from omegaconf import OmegaConf

        path = Path(folder) / STYLE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "name": self.name,
            "system": self.system,
            "n_examples": self.n_examples,
            "n_similar": self.n_similar,
            "templates": self.templates,
        }
        OmegaConf.save(OmegaConf.create(data), path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> PromptStyle:
        from omegaconf import OmegaConf

        path = Path(folder) / STYLE_FILE
        if not path.is_file():
            raise CultureSPAError(f"{path}: no prompt style saved beside this adapter")
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(data, dict)
        return cls(
            templates=data["templates"],
            system=data["system"],
            n_examples=int(data["n_examples"]),
            n_similar=int(data.get("n_similar", 3)),
            name=str(data.get("name", "custom")),
        )


class PromptBuilder:
    """Builds chat message lists; knows nothing about models or tokenizers."""

    def __init__(self, style: PromptStyle) -> None:
        self.style = style
        self.t = style.templates

    # ---- pieces -------------------------------------------------------------------------------------------------
    def _fmt(self, template: str, **values: Any) -> str:
        try:
            return template.format(**values)
        except (KeyError, IndexError) as err:
            raise CultureSPAError(f"templates: placeholder {err} is not available in {template[:60]!r}") from None

    def join_names(self, names: Sequence[str]) -> str:
        a = self.t["answer"]
        if len(names) <= 1:
            return "".join(names)
        return a["list_separator"].join(names[:-1]) + a["last_separator"] + names[-1]

    def format_options(self, question: Question) -> str:
        """The options as ``answer.option`` each, joined by ``answer.option_separator`` (older templates: a line each)."""
        line, separator = self.t["answer"]["option"], self.t["answer"].get("option_separator", "\n")
        return separator.join(self._fmt(line, number=n, text=question.option_text(n)) for n in question.numbers)

    def user_turn(self, question: Question) -> str:
        return self._fmt(self.t["answer"]["user"], question=question.text, options=self.format_options(question))

    def assistant_turn(self, number: int) -> str:
        return self._fmt(self.t["answer"]["assistant"], number=number)

    def system_prompt(
        self,
        kind: str,
        culture: str | None = None,
        similar: Sequence[str] = (),
        dissimilar: Sequence[str] = (),
    ) -> str:
        """System prompt of kind unaware / aware / cct; aware and cct need a culture, cct its similar cultures."""
        if kind not in SYSTEM_KINDS:
            raise CultureSPAError(f"system prompt kind {kind!r}; choose one of: {', '.join(SYSTEM_KINDS)}")
        template = self.t["answer"]["system"][kind]
        if kind == "unaware":
            return self._fmt(template)
        if culture is None:
            raise CultureSPAError(f"a {kind} prompt needs a culture")
        c = get_culture(culture)
        names = lambda codes: self.join_names([get_culture(x).adjective for x in codes])  # noqa: E731
        return self._fmt(
            template,
            person=c.person,
            adjective=c.adjective,
            country=c.country,
            code=c.code,
            similar=names(similar),
            dissimilar=names(dissimilar),
        )

    # ---- whole chats --------------------------------------------------------------------------------------------
    def answer_messages(
        self,
        question: Question,
        system: str,
        culture: str | None = None,
        similar: Sequence[str] = (),
        dissimilar: Sequence[str] = (),
        examples: Sequence[tuple[Question, int]] = (),
    ) -> list[Message]:
        """System prompt, then the question; P3's in-context examples go inside the question's user turn (style
        ``inline``, the paper's: each shows its question, options and answer number with the option's text; the
        turn's template gets ``{examples}``, ``{question_text}``, ``{options}`` and ``{question}``, the whole plain
        question turn) or before it as user/assistant exchanges (style ``turns``), per
        ``templates.answer.examples.style``."""
        messages: list[Message] = [
            {"role": "system", "content": self.system_prompt(system, culture, similar, dissimilar)}
        ]
        spec = self.t["answer"].get("examples") or {"style": "turns"}
        if examples and spec.get("style", "turns") == "inline":
            shown = "\n".join(self._inline_example(spec, example, number) for example, number in examples)
            content = self._fmt(
                spec["user"],
                examples=shown,
                question=self.user_turn(question),
                question_text=question.text,
                options=self.format_options(question),
            )
            return [*messages, {"role": "user", "content": content}]
        for example, number in examples:
            messages.append({"role": "user", "content": self.user_turn(example)})
            messages.append({"role": "assistant", "content": self.assistant_turn(number)})
        messages.append({"role": "user", "content": self.user_turn(question)})
        return messages

    def _inline_example(self, spec: dict[str, Any], example: Question, number: int) -> str:
        options = " ".join(self._fmt(spec["option"], number=n, text=example.option_text(n)) for n in example.numbers)
        return self._fmt(
            spec["example"], question=example.text, options=options, number=number, text=example.option_text(number)
        )

    def sft_messages(
        self,
        question: Question,
        answer: int,
        system: str,
        culture: str,
        similar: Sequence[str] = (),
        dissimilar: Sequence[str] = (),
    ) -> list[Message]:
        """A training chat: the answering prompt plus the target assistant turn."""
        return self.answer_messages(question, system, culture, similar, dissimilar) + [
            {"role": "assistant", "content": self.assistant_turn(answer)}
        ]

    def question_generation_prefix(self) -> str:
        """Text the assistant's reply is started with (e.g. the opening of the JSON object), so that small models
        continue the requested format instead of chatting; empty to let the model start freely."""
        return self._fmt(str(self.t["question_generation"].get("response_prefix") or ""))

    def question_generation_messages(self, topic: str, examples: Sequence[Question]) -> list[Message]:
        qg = self.t["question_generation"]
        blocks = [
            self._fmt(
                qg["example"],
                index=i + 1,
                question=q.text,
                options=list(q.options),
                json=json.dumps({"Question": q.text, "Options": list(q.options)}, ensure_ascii=False),
            )
            for i, q in enumerate(examples)
        ]
        messages: list[Message] = []
        if qg.get("system"):
            messages.append({"role": "system", "content": self._fmt(qg["system"], topic=topic)})
        messages.append({"role": "user", "content": self._fmt(qg["user"], topic=topic, examples="\n\n".join(blocks))})
        return messages


def similar_cultures(wvs: Any, culture: str, k: int) -> tuple[list[str], list[str]]:
    """The k most and k least similar cultures for a cross-culture-thinking prompt (from the WVS similarity data)."""
    return wvs.most_and_least_similar(culture, list(PAPER_CULTURES), k)


def self_alignment_examples(wvs: Any, question_id: str, culture: str, k: int) -> list[tuple[Question, int]]:
    """P3: the first ``k`` questions ranked for ``question_id`` in the self-alignment data that ``culture`` answered,
    each with the culture's majority answer (the question itself and unanswered ones are skipped)."""
    if k <= 0:
        return []
    ranked = wvs.examples.get(question_id, [])
    chosen: list[tuple[Question, int]] = []
    for other in ranked:
        if other == question_id or other not in wvs.questions:
            continue
        answer = wvs.majority_answer(culture, other)
        if answer is None:
            continue
        chosen.append((wvs.questions[other], answer))
        if len(chosen) == k:
            break
    return chosen
