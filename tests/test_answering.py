"""The shared answer loop (``culturespa/answering``) without a model: a scripted engine records what it is asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culturespa.answers.loop import AnswerFile, fill
from culturespa.answers.records import answer_key, answer_record
from culturespa.answers.shards import Shard
from culturespa.infer.engine import Decoding, Result
from culturespa.wvs.questions import Question

QUESTIONS = [Question(id=f"Q{i}", text=f"question {i}?", options=("yes", "no", "maybe")) for i in range(5)]


class ScriptedEngine:
    """Answers option ``1 + (seed + position) % 3``; batches of two; ``die_after`` batches, then raises (a kill)."""

    def __init__(self, die_after: int | None = None) -> None:
        self.calls: list[tuple[int, list[str]]] = []
        self.die_after = die_after

    def answer(self, requests, decoding, seed=0, desc=None):  # noqa: ANN001, ANN201
        self.calls.append((seed, [r.key for r in requests]))
        for start in range(0, len(requests), 2):
            if self.die_after is not None and self.die_after == 0:
                raise KeyboardInterrupt
            self.die_after = None if self.die_after is None else self.die_after - 1
            batch = requests[start : start + 2]
            answers = [1 + (seed + start + i) % 3 for i in range(len(batch))]
            yield [Result(r.key, str(a), a, True, None, "prompt") for r, a in zip(batch, answers, strict=True)]


def _file(path: Path, **extra) -> AnswerFile:  # noqa: ANN003
    return AnswerFile(path, "aware", "USA", QUESTIONS, lambda q: [{"role": "user", "content": q.text}], **extra)


def test_an_invalid_reply_has_no_answer_whatever_the_parser_left() -> None:
    result = Result("Q0|USA|0", "1 2 3", 1, False, None, "p")
    record = answer_record(result, QUESTIONS[0], "aware", "USA", 0)
    assert record["answer"] is None and record["valid"] is False and record["raw"] == "1 2 3"
    scored = answer_record(Result("Q0|USA|0", "2", 2, True, {1: 0.25, 2: 0.75}, "p"), QUESTIONS[0], "aware", "USA", 0)
    assert scored["answer"] == 2 and scored["distribution"] == {"1": 0.25, "2": 0.75}
    assert list(scored) == ["id", "culture", "setting", "run", "raw", "answer", "valid", "distribution", "question"]
    assert answer_key(scored) == "Q0|USA|0"


def test_a_killed_fill_resumes_whole_chunks_to_the_same_file(tmp_path: Path) -> None:
    decoding = Decoding("greedy")
    straight = fill(ScriptedEngine(), decoding, _file(tmp_path / "a.jsonl", runs=2, chunk=3))
    reference = (tmp_path / "a.jsonl").read_text()
    assert [r["run"] for r in straight.records] == [0] * 5 + [1] * 5 and straight.answered == 10

    killed = ScriptedEngine(die_after=4)  # run 0 done (3 batches), then half of run 1's first chunk
    with pytest.raises(KeyboardInterrupt):
        fill(killed, decoding, _file(tmp_path / "b.jsonl", runs=2, chunk=3))
    resumed_engine = ScriptedEngine()
    resumed = fill(resumed_engine, decoding, _file(tmp_path / "b.jsonl", runs=2, chunk=3))
    assert (tmp_path / "b.jsonl").read_text() == reference
    assert resumed.resumed == 7 and resumed.answered == 3  # the half-done chunk is asked again whole
    assert [keys for _, keys in resumed_engine.calls] == [
        ["Q0|USA|1", "Q1|USA|1", "Q2|USA|1"],
        ["Q3|USA|1", "Q4|USA|1"],
    ]


def test_seeds_per_run_and_shards_take_whole_chunks(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    fill(engine, Decoding("greedy"), _file(tmp_path / "e.jsonl", runs=2, chunk=2, seed=7, seed_step=1))
    assert sorted({seed for seed, _ in engine.calls}) == [7, 8]
    parts = []
    for index in range(2):
        shard_engine = ScriptedEngine()
        file = _file(tmp_path / f"s{index}.jsonl", runs=2, chunk=2, shard=Shard(index, 2), seed=7)
        parts.append(fill(shard_engine, Decoding("greedy"), file).records)
        assert all(len(keys) <= 2 for _, keys in shard_engine.calls)
    whole = fill(ScriptedEngine(), Decoding("greedy"), _file(tmp_path / "w.jsonl", runs=2, chunk=2, seed=7)).records
    assert sorted(map(json.dumps, parts[0] + parts[1])) == sorted(map(json.dumps, whole))
    assert {answer_key(r) for r in parts[0]}.isdisjoint(answer_key(r) for r in parts[1])


def test_a_finished_file_is_reused_only_when_allowed_and_only_for_unchanged_questions(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    fill(ScriptedEngine(), Decoding("greedy"), _file(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[0]["question"]["text"] = "an older wording?"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    engine = ScriptedEngine()
    again = fill(engine, Decoding("greedy"), _file(path), reuse_finished=True)
    assert again.reused == 4 and [keys for _, keys in engine.calls] == [
        ["Q0|USA|0", "Q1|USA|0", "Q2|USA|0", "Q3|USA|0", "Q4|USA|0"]
    ]
    assert again.answered == 1 and again.records[0]["question"]["text"] == "question 0?"
    fresh = ScriptedEngine()
    assert fill(fresh, Decoding("greedy"), _file(path)).answered == 5
