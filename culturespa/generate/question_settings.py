"""Settings of stage ``questions`` (checked ``cfg.questions``), its attempts as records, and the fingerprint that
decides whether a finished or partial output file belongs to a config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.data.topics import TOPIC_NAMES
from culturespa.errors import CultureSPAError
from culturespa.generate import outputs
from culturespa.generate.json_extract import ACCEPT_RULES

EXPOSURES = ("sequential", "waves")
# Settings added after files were written: at these values a run behaves as before they existed, so they are left out
# of the fingerprint, and a run started before them resumes (a finished file is skipped) when given these values and
# the templates it was started with (the default templates changed with them: templates=<a copy of the old file>).
LEGACY_VALUES: dict[str, Any] = {"top_k": 0, "exposure": "waves", "accept": "lenient"}


def resolve_topics(value: Any) -> list[int]:
    """``all`` or a list of topic indices 0-12 (an int or a topic name also accepted)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if value == "all" or value is None:
        return list(range(len(TOPIC_NAMES)))
    items = value if isinstance(value, list) else [value]
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item in TOPIC_NAMES:
            index = TOPIC_NAMES.index(item)
        elif isinstance(item, int) and 0 <= item < len(TOPIC_NAMES):
            index = item
        elif isinstance(item, str) and item.isdigit() and int(item) < len(TOPIC_NAMES):
            index = int(item)
        else:
            raise CultureSPAError(f"questions.topics: {item!r} is not a topic index 0-{len(TOPIC_NAMES) - 1} or 'all'")
        if index not in out:
            out.append(index)
    return out


def question_id(topic: int, slot: int) -> str:
    return f"gen-t{topic}-{slot}"


@dataclass(frozen=True)
class Attempt:
    """One ask of one slot; ``key`` is its engine request key and the id of its retry line in the part file."""

    topic: int
    slot: int
    number: int  # 0 = first ask

    @property
    def question_id(self) -> str:
        return question_id(self.topic, self.slot)

    @property
    def key(self) -> str:
        return f"{self.question_id}#a{self.number}"


@dataclass(frozen=True)
class Settings:
    """``cfg.questions`` checked, plus the run's seed and model name."""

    topics: list[int]
    per_topic: int
    n_examples: int
    n_generated: int
    max_retries: int
    batch_size: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    exposure: str
    accept: str
    seed: int
    model: str

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Settings:
        qcfg = cfg.questions
        ints = {"per_topic": 1, "n_examples": 1, "n_generated": 0, "max_retries": 0, "batch_size": 1}
        ints |= {"max_new_tokens": 1, "top_k": 0}
        for key, low in ints.items():
            value = qcfg.get(key, LEGACY_VALUES.get(key))
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise CultureSPAError(f"questions.{key}={value!r} must be an integer >= {low}")
        if qcfg.n_generated > qcfg.n_examples:
            raise CultureSPAError(
                f"questions.n_generated={qcfg.n_generated} exceeds questions.n_examples={qcfg.n_examples}"
            )
        if not (isinstance(qcfg.temperature, (int, float)) and qcfg.temperature >= 0):
            raise CultureSPAError(f"questions.temperature={qcfg.temperature!r} must be >= 0 (0 = greedy)")
        if not (isinstance(qcfg.top_p, (int, float)) and 0 < qcfg.top_p <= 1):
            raise CultureSPAError(f"questions.top_p={qcfg.top_p!r} must be in (0, 1]")
        choices = {"exposure": EXPOSURES, "accept": ACCEPT_RULES}
        for key, allowed in choices.items():
            if qcfg.get(key, LEGACY_VALUES[key]) not in allowed:
                raise CultureSPAError(f"questions.{key}={qcfg.get(key)!r} is not one of {', '.join(allowed)}")
        return cls(
            topics=resolve_topics(qcfg.topics),
            per_topic=int(qcfg.per_topic),
            n_examples=int(qcfg.n_examples),
            n_generated=int(qcfg.n_generated),
            max_retries=int(qcfg.max_retries),
            batch_size=int(qcfg.batch_size),
            temperature=float(qcfg.temperature),
            top_p=float(qcfg.top_p),
            top_k=int(qcfg.get("top_k", LEGACY_VALUES["top_k"])),
            max_new_tokens=int(qcfg.max_new_tokens),
            exposure=str(qcfg.get("exposure", LEGACY_VALUES["exposure"])),
            accept=str(qcfg.get("accept", LEGACY_VALUES["accept"])),
            seed=int(cfg.seed),
            model=str(cfg.model.name),
        )

    @property
    def slots_per_step(self) -> int:
        """Open slots of a topic asked together: one in the paper's sequential loop."""
        return 1 if self.exposure == "sequential" else self.batch_size

    def slot_ids(self, topic: int) -> list[str]:
        return [question_id(topic, n) for n in range(self.per_topic)]


def fingerprint(cfg: DictConfig) -> str:
    """What decides the questions: model, settings, seed, template. per_topic and topics are left out (growing them
    extends a finished file instead of starting over), and so are max_retries and batch_size (how work is scheduled;
    under ``exposure=waves`` batch_size also decides which questions a wave sees, but files written before that
    setting existed left it out), and the newer settings while at their legacy values."""
    ignore = ("output", "overwrite", "per_topic", "topics", "batch_size", "max_retries")
    settings = {
        k: v
        for k, v in outputs.plain(cfg, "questions").items()
        if k not in ignore and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])
    }
    return outputs.fingerprint(
        {
            "model": outputs.plain(cfg, "model"),
            "questions": settings,
            "seed": int(cfg.seed),
            "template": outputs.plain(cfg, "templates.question_generation"),
        }
    )
