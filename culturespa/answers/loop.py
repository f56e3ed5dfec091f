"""Fill one answers file through the engine, resuming its part file: the loop behind the answers stage and evaluation.

An :class:`AnswerFile` says what to answer (questions x runs, this shard's share, how each is asked and seeded);
:func:`fill` loads what its part file (and, when allowed, its finished file) already holds, sends every unfinished
resume chunk to the engine whole (``chunks.py``: so the result is bitwise that of an uninterrupted run) and writes the
final file in key order. Deciding whether a file is needed at all (skip, resume, overwrite, sidecars) is the caller's.
The work comes out as independent chunks (:meth:`AnswerFile.chunks`), the unit a faster engine or several workers
would take.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from culturespa.answers.chunks import resume_chunks
from culturespa.answers.records import AnswerRecord, answer_key, answer_record
from culturespa.answers.shards import Shard
from culturespa.utils.jsonl import ResumableJsonl, iter_jsonl
from culturespa.wvs.questions import Question

if TYPE_CHECKING:  # the engine pulls in torch; it is imported when answering starts
    from culturespa.infer.engine import Decoding, Engine, Result

log = logging.getLogger("culturespa.answers")

Messages = Callable[[Question], list[dict[str, str]]]


@dataclass(frozen=True)
class Chunk:
    """Questions of one run that go to the engine together: (key, question) in file order."""

    run: int
    members: list[tuple[str, Question]]


@dataclass(frozen=True)
class AnswerFile:
    """One answers file to fill: ``questions`` asked ``runs`` times (run-major), this ``shard``'s share of them."""

    path: Path
    setting: str
    culture: str | None
    questions: Sequence[Question]
    messages: Messages  # the chat messages that ask one question
    runs: int = 1
    chunk: int = 256
    shard: Shard | None = None
    seed: int = 0
    seed_step: int = (
        0  # evaluation: run r samples with seed + r * decoding.seed_step; the answers stage: every run uses seed
    )

    def key(self, question: Question, run: int) -> str:
        return f"{question.id}|{self.culture}|{run}"

    def keys(self) -> dict[str, dict[str, Any]]:
        """Key -> question record of every answer this file holds, in file order (this shard's share)."""
        keys = {self.key(q, run): q.to_record() for run in range(self.runs) for q in self.questions}
        return self.shard.keys(keys, self.chunk, len(self.questions)) if self.shard else keys

    def chunks(self, keys: dict[str, Any]) -> list[Chunk]:
        """The resume chunks of the unsharded file, each cut down to ``keys`` (chunks left empty are dropped)."""
        n = len(self.questions)
        order = [self.key(q, run) for run in range(self.runs) for q in self.questions]
        position = {key: i for i, key in enumerate(order)}
        found = []
        for members in resume_chunks(order, self.chunk, n):
            mine = [(key, self.questions[position[key] % n]) for key in members if key in keys]
            if mine:
                found.append(Chunk(position[members[0]] // n, mine))
        return found

    def seed_for(self, run: int) -> int:
        return self.seed + run * self.seed_step


@dataclass(frozen=True)
class Filled:
    """What :func:`fill` did: the final records (in file order) and how many were answered, resumed and reused."""

    records: list[AnswerRecord]
    answered: int
    resumed: int
    reused: int


def fill(
    engine: Engine,
    decoding: Decoding,
    file: AnswerFile,
    reuse_finished: bool = False,
    on_results: Callable[[list[Result]], None] | None = None,
) -> Filled:
    """Answer what ``file`` still lacks and write it. ``reuse_finished``: the finished file at ``file.path`` was made
    by the same settings, so its answers to unchanged questions are kept. ``on_results`` sees every engine batch."""
    from culturespa.infer.engine import Request  # torch: heavy, loaded only once there is something to answer

    keys = file.keys()
    store = ResumableJsonl(file.path, key=answer_key)
    answered = 0
    bar = None
    try:
        if store.dropped_torn_line:
            log.warning("dropped a torn last line from %s (killed run)", store.part)
        _drop_changed(store, keys)
        resumed = len(store.records)
        reused = _reuse_finished(store, file.path, keys) if reuse_finished else 0
        done = resumed + reused
        if done:
            log.info(
                "resuming: %d of %d records done (%s; %d from its finished file)", done, len(keys), file.path, reused
            )
        bar = tqdm(total=len(keys), initial=done, desc=f"answers {file.culture or file.setting}", unit="q")
        for chunk in file.chunks(keys):
            if all(key in store.records for key, _ in chunk.members):
                continue
            asked = dict(chunk.members)
            requests = [Request(key, file.messages(q), q.numbers) for key, q in chunk.members]
            for results in engine.answer(requests, decoding, seed=file.seed_for(chunk.run)):
                new = [r for r in results if r.key not in store.records]
                store.append_many(answer_record(r, asked[r.key], file.setting, file.culture, chunk.run) for r in new)
                answered += len(new)
                bar.update(len(new))
                if on_results is not None:
                    on_results(results)
    finally:
        if bar is not None:
            bar.close()
        store.close()
    final: list[AnswerRecord] = store.finish(order=list(keys))  # type: ignore[assignment]
    return Filled(final, answered, resumed, reused)


def _drop_changed(store: ResumableJsonl, keys: dict[str, dict[str, Any]]) -> None:
    """Forget part-file answers whose question changed since: they are asked again (the new line wins on resume)."""
    for key in [k for k, r in store.records.items() if keys.get(k) not in (None, r.get("question"))]:
        del store.records[key]


def _reuse_finished(store: ResumableJsonl, path: Path, keys: dict[str, dict[str, Any]]) -> int:
    """Copy the finished file's answers to unchanged questions that the part file lacks into the part file."""
    if not path.is_file():
        return 0
    reused = [
        r
        for _, r in iter_jsonl(path)
        if answer_key(r) not in store.records and keys.get(answer_key(r)) == r.get("question")
    ]
    store.append_many(reused)
    return len(reused)
