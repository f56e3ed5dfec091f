"""Settings of stage ``questions`` (``cfg.questions``, checked by ``settings.QuestionsSettings``), its attempts as records, and the fingerprint that
decides whether a finished or partial output file belongs to a config; ``QuestionsStageSettings``: all the stage reads
from the composed config, read once at its entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.errors import CultureSPAError
from culturespa.infer.workers import worker_devices
from culturespa.settings import QuestionsSettings, check_group
from culturespa.stages import identity, outputs
from culturespa.wvs.topics import TOPIC_NAMES

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
        """Keys an older config lacks take their :data:`LEGACY_VALUES`; the values are checked where every group's
        are (``settings.QuestionsSettings``), one line for the first bad one."""
        values = {**LEGACY_VALUES, **identity.plain(cfg, "questions")}
        check_group(QuestionsSettings, values)
        q = QuestionsSettings.from_config(values)
        return cls(
            topics=resolve_topics(q.topics),
            per_topic=q.per_topic,
            n_examples=q.n_examples,
            n_generated=q.n_generated,
            max_retries=q.max_retries,
            batch_size=q.batch_size,
            temperature=float(q.temperature),
            top_p=float(q.top_p),
            top_k=q.top_k,
            max_new_tokens=q.max_new_tokens,
            exposure=q.exposure,
            accept=q.accept,
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
        for k, v in identity.plain(cfg, "questions").items()
        if k not in ignore and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])
    }
    return identity.fingerprint(
        {
            "model": identity.plain(cfg, "model"),
            "questions": settings,
            "seed": int(cfg.seed),
            "template": identity.plain(cfg, "templates.question_generation"),
        }
    )


@dataclass(frozen=True)
class QuestionsStageSettings:
    """What the questions stage reads from the composed config, typed; built once by the entry point (a worker
    process builds its own from the config of its share of the topics)."""

    questions: Settings
    output: Path  # questions.output
    fingerprint: str  # of the output file (``fingerprint``): the same for every share of the topics
    overwrite: bool
    wvs_dir: str | None
    templates: dict[str, Any]  # resolved ``templates`` and ``prompt`` nodes: ``PromptStyle.from_config`` reads them
    prompt: dict[str, Any]
    devices: tuple[str, ...]  # engine.devices > 1: one worker per device (empty: this process)
    workers_dir: Path | None  # paths.output_dir: where worker logs go (None: next to the output)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> QuestionsStageSettings:
        devices = tuple(worker_devices(cfg))  # checked first, as the stage always did
        workers_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
        return cls(
            questions=Settings.from_config(cfg),
            output=Path(str(cfg.questions.output)),
            fingerprint=fingerprint(cfg),
            overwrite=outputs.overwrite_requested(cfg),
            wvs_dir=cfg.paths.wvs_dir,
            templates=identity.plain(cfg, "templates"),
            prompt=identity.plain(cfg, "prompt"),
            devices=devices,
            workers_dir=Path(str(workers_dir)) if workers_dir else None,
        )
