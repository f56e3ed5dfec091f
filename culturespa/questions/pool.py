"""Read question files: our JSONL of Question records, or the paper's pool (``topic_*.json`` lists of
``{Q_id, question, option_lst, class, prompt}``), as a folder or a single file.

Every record is checked here, so a malformed file or a question without options stops the stage with one line naming
the file and the record, before any model is loaded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.errors import fail
from culturespa.stages.lineage import filter_source
from culturespa.utils.jsonl import read_records
from culturespa.wvs.questions import Question
from culturespa.wvs.topics import TOPIC_NAMES

# filter.input's default: the file a stage-by-stage `generate.py stage=questions` run writes under paths.work_dir
_STAGE_BY_STAGE_INPUT = "${questions.output}"

_TOPIC_FILE = re.compile(r"topic_(\d+)\.json$")


def pool_files(path: str | Path) -> list[Path]:
    """The files behind ``path``: itself, or a folder's ``topic_*.json`` (in topic order) / ``*.jsonl``."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise fail(path, "question file or folder not found")
    topic_files = sorted(
        (p for p in path.iterdir() if _TOPIC_FILE.search(p.name)),
        key=lambda p: int(_TOPIC_FILE.search(p.name).group(1)),  # type: ignore[union-attr]
    )
    files = topic_files or sorted(path.glob("*.jsonl"))
    if not files:
        raise fail(path, "folder holds no topic_*.json or *.jsonl question files")
    return files


def _from_paper(record: dict[str, Any], where: str, file: Path, index: int) -> Question:
    """A record of the paper's pool; ids become ``pool-t{topic}-{Q_id}`` so they never collide with WVS ids."""
    if not isinstance(record.get("question"), str) or not record["question"].strip():
        raise fail(where, "missing or empty 'question'")
    options = record.get("option_lst")
    if not isinstance(options, list) or not options:
        raise fail(where, f"question {record.get('Q_id', index)!r} has no options ('option_lst')")
    if not all(isinstance(o, str) for o in options):
        raise fail(where, "'option_lst' must be a list of strings")
    match = _TOPIC_FILE.search(file.name)
    topic_index = int(match.group(1)) if match else None
    topic = record.get("class")
    if topic not in TOPIC_NAMES:
        if topic_index is None or not 0 <= topic_index < len(TOPIC_NAMES):
            raise fail(where, f"unknown topic 'class'={topic!r}; valid: {', '.join(TOPIC_NAMES)}")
        topic = TOPIC_NAMES[topic_index]
    if topic_index is None:
        topic_index = TOPIC_NAMES.index(topic)
    q_id = str(record.get("Q_id", f"Q{index}"))
    return Question(
        id=f"pool-t{topic_index}-{q_id}",
        text=record["question"],
        options=tuple(options),
        first_option=1,
        topic=topic,
        source="paper-pool",
        meta={"pool_id": q_id, "pool_file": file.name},
    )


def load_questions(path: str | Path) -> list[Question]:
    """All questions behind ``path`` in file order; ids must be unique."""
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for file in pool_files(path):
        for index, (where, record) in enumerate(read_records(file)):
            if "option_lst" in record or ("question" in record and "text" not in record):
                question = _from_paper(record, where, file, index)
            else:
                question = Question.from_record(record, where)
                if not question.text.strip():
                    raise fail(where, f"question {question.id}: empty 'text'")
            if question.id in seen:
                raise fail(where, f"duplicate question id {question.id!r} (first at {seen[question.id]})")
            seen[question.id] = where
            questions.append(question)
    return questions


def pipeline_pool(cfg: DictConfig, mode: str) -> str:
    """The question pool the pipeline filters for ``pipeline.questions=pool|both``.

    ``both`` adds the paper's pool to the model's own questions. ``pool`` reads ``filter.input``, except where it is
    still its stage-by-stage default (``questions.output``, a leftover of a manual run outside the pipeline's cache):
    the pipeline's own questions come only from its cache, so there the paper's pool is meant. It takes the pipeline's
    config itself: what it asks is whether ``filter.input`` is still that interpolation, unresolved.
    """
    if mode == "both":
        return str(cfg.paths.question_pool_dir)
    raw = OmegaConf.to_container(cfg.filter, resolve=False).get("input")
    if raw == _STAGE_BY_STAGE_INPUT:
        return str(cfg.paths.question_pool_dir)
    return filter_source(cfg)


def files_digest(path: str | Path) -> str:
    """A short hash of the question files behind ``path`` (names and bytes), so a cached stage built from them is
    reused only while they are unchanged."""
    digest = hashlib.sha1()
    for file in pool_files(path):
        digest.update(file.name.encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:10]
