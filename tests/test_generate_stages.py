"""Stages questions and answers end to end (tiny_random, a scripted engine, and the embedded model), resume after a
kill, skip of finished outputs, and errors before any model is loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.infer.engine import Engine, Result
from culturespa.wvs.topics import TOPIC_NAMES


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _tear(final: Path, keep: int) -> None:
    """Simulate kill -9: the final file never got written; the part file holds ``keep`` lines and a torn one."""
    lines = final.read_text().splitlines(keepends=True)
    part = final.with_name(final.name + ".part")
    part.write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])
    final.unlink()
    meta = final.with_name(final.name + ".meta.json")
    side = json.loads(meta.read_text())
    meta.write_text(json.dumps({**side, "complete": False}))


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cls, cfg, model=None, tokenizer=None):  # noqa: ANN001
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(Engine, "from_config", classmethod(refuse))


class ScriptedEngine:
    """Stands in for the engine: deterministic replies per request key, and a log of the requests it saw."""

    def __init__(self) -> None:
        self.requests: list = []
        self.top_k: list[int] = []  # the top-k of every generate() call

    def generate(
        self, requests, temperature, top_p, max_new_tokens, seed=0, desc=None, top_k=50
    ) -> Iterator[list[Result]]:
        reqs = list(requests)
        self.requests += reqs
        self.top_k.append(top_k)
        for start in range(0, len(reqs), 3):
            yield [Result(r.key, self._reply(r.key), None, True, None, "prompt") for r in reqs[start : start + 3]]

    def answer(self, requests, decoding, seed=0, desc=None) -> Iterator[list[Result]]:
        reqs = list(requests)
        self.requests += reqs
        yield [Result(r.key, str(r.numbers[-1]), r.numbers[-1], True, None, "prompt") for r in reqs]

    @staticmethod
    def _reply(key: str) -> str:
        qid, attempt = key.split("#a")
        slot = int(qid.rsplit("-", 1)[1])
        if slot == 2 or (slot == 1 and attempt == "0"):
            return "I think a good question would be about trust."  # no JSON: retried
        return f'Here you go:\n```json\n{{"Question:" "New question {qid}?", "Options": ["1. Yes", "2. No"]}}\n```'


def _use(monkeypatch: pytest.MonkeyPatch, engine: object) -> None:
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg, model=None, tokenizer=None: engine))


QUESTION_ARGS = [
    "stage=questions",
    "questions.topics=[0,4]",
    "questions.per_topic=4",
    "questions.batch_size=2",
    "questions.max_retries=1",
    "logger=csv",
]


def test_questions_scripted_retries_provenance_resume_skip(make_cfg, monkeypatch, tmp_path: Path) -> None:
    engine = ScriptedEngine()
    _use(monkeypatch, engine)
    cfg = make_cfg("generate", QUESTION_ARGS)
    summary = generate(cfg)
    out = Path(summary["output"])
    records = _lines(out)
    assert [r["id"] for r in records] == ["gen-t0-0", "gen-t0-1", "gen-t0-3", "gen-t4-0", "gen-t4-1", "gen-t4-3"]
    assert summary["generated"] == 6 and summary["failed"] == 2
    assert summary["bad_json"] == 2 * (1 + 2)  # per topic: slot 1 failed once, slot 2 twice (then given up)
    first = records[0]
    assert first["text"] == "New question gen-t0-0?" and first["options"] == ["1. Yes", "2. No"]
    assert first["topic"] == TOPIC_NAMES[0] and first["source"] == "generated"
    assert first["meta"]["attempts"] == 1 and records[1]["meta"]["attempts"] == 2 and first["meta"]["seed"] == 42
    # examples: 5 per prompt, real WVS ones of the topic plus up to 2 already generated for it
    for r in records:
        examples = r["meta"]["examples"]
        assert len(examples) == 5 and len(set(examples)) == 5
        real = [e for e in examples if not e.startswith("gen-")]
        assert all(TOPIC_NAMES[r["meta"]["topic_index"]] == cfg_topic(e) for e in real)
    assert [e.startswith("gen-") for e in records[0]["meta"]["examples"]].count(True) == 0
    assert [e.startswith("gen-t4-") for e in records[5]["meta"]["examples"]].count(True) == 2
    system, user = (m["content"] for m in engine.requests[0].messages)
    assert "World Values Survey" in system and "#Example 1:\nQuestion: " in user

    # kill -9 after two records: the rerun continues and ends with each record exactly once
    _tear(out, keep=2)
    engine.requests.clear()
    again = generate(make_cfg("generate", QUESTION_ARGS))
    assert [r["id"] for r in _lines(out)] == [r["id"] for r in records]
    assert [r["text"] for r in _lines(out)] == [r["text"] for r in records]
    assert not out.with_name(out.name + ".part").exists() and again["generated"] == 6
    assert not any(r.key.startswith(("gen-t0-0#", "gen-t0-1#")) for r in engine.requests)  # already done

    # a complete output is skipped without loading the model
    with monkeypatch.context() as m:
        _no_model(m)
        assert generate(make_cfg("generate", QUESTION_ARGS))["skipped"] is True
    # more questions per topic: the finished ones (and the failed slots) are kept, only the new slots are asked
    engine.requests.clear()
    grown = generate(make_cfg("generate", [*QUESTION_ARGS, "questions.per_topic=5"]))
    assert {r.key for r in engine.requests} == {"gen-t0-4#a0", "gen-t4-4#a0"}
    assert grown["generated"] == 8 and grown["failed"] == 2 and grown["bad_json"] == 6
    assert _lines(out)[:3] == records[:3]


def cfg_topic(q_id: str) -> str:
    from culturespa.wvs.topics import topic_of

    return str(topic_of(q_id))


def test_questions_tiny_random_counts_bad_json(make_cfg) -> None:
    cfg = make_cfg(
        "generate",
        [
            "stage=questions",
            "model=tiny_random",
            "questions.topics=[5]",
            "questions.per_topic=1",
            "questions.max_retries=1",
            "questions.max_new_tokens=6",
            "logger=csv",
        ],
    )
    summary = generate(cfg)
    assert summary["generated"] + summary["failed"] == 1
    assert summary["bad_json"] == 2 * summary["failed"]  # a random model writes no JSON: 1 try + 1 retry
    assert Path(summary["output"]).is_file()


ANSWER_ARGS = ["stage=answers", "model=tiny_random", "answers.input=wvs", "logger=csv"]


@pytest.mark.parametrize("decoding", ["logprob", "greedy"])
def test_answers_resume_is_identical(make_cfg, tmp_path: Path, decoding: str) -> None:
    args = [
        *ANSWER_ARGS,
        f"decoding={decoding}",
        "decoding.max_new_tokens=3",
        "answers.setting=unaware",
        "answers.limit=5",
        "engine.batch_size=2",
        "answers.resume_chunk=2",
    ]
    full = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'a'}"]))
    reference = Path(full["files"]["unaware"])
    records = _lines(reference)
    assert [r["id"] for r in records] == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    r = records[0]
    assert r["culture"] is None and r["setting"] == "unaware" and r["run"] == 0 and r["question"]["id"] == "Q1"
    assert (r["distribution"] is not None) == (decoding == "logprob")
    # a killed run in another folder: three answers (one chunk and a half) and a torn line in the part file
    killed = tmp_path / "b" / "unaware.jsonl"
    killed.parent.mkdir()
    killed.write_text(reference.read_text())
    (killed.parent / "unaware.jsonl.meta.json").write_text((reference.parent / "unaware.jsonl.meta.json").read_text())
    _tear(killed, keep=3)
    resumed = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'b'}"]))
    assert resumed["answered"] == 2
    assert killed.read_bytes() == reference.read_bytes()


def test_answers_two_cultures_skip_overwrite_and_pairs(make_cfg, monkeypatch, tmp_path: Path) -> None:
    args = [*ANSWER_ARGS, "decoding=logprob", "answers.limit=4", "cultures=[USA,CHN]"]
    aware = generate(make_cfg("generate", [*args, "answers.setting=aware"]))
    assert set(aware["files"]) == {"USA", "CHN"} and aware["invalid"] == {"USA": 0, "CHN": 0}
    usa = _lines(Path(aware["files"]["USA"]))
    assert len(usa) == 4 and all(r["culture"] == "USA" and r["setting"] == "aware" for r in usa)
    assert Path(aware["files"]["USA"]).name == "aware_USA.jsonl"
    generate(make_cfg("generate", [*args, "answers.setting=unaware"]))
    pairs = generate(make_cfg("generate", [*args, "stage=pairs", "data.criterion=none"]))
    assert pairs["kept"] == {"USA": 4, "CHN": 4}

    # rerun: complete for this config, skipped before the model is loaded; the limit grown: old answers reused
    with monkeypatch.context() as m:
        _no_model(m)
        assert generate(make_cfg("generate", [*args, "answers.setting=aware"]))["skipped"] == [
            aware["files"]["USA"],
            aware["files"]["CHN"],
        ]
    before = Path(aware["files"]["USA"]).read_text()
    engine = ScriptedEngine()
    with monkeypatch.context() as m:
        _use(m, engine)
        grown = [a for a in args if not a.startswith("answers.limit")] + ["answers.limit=5", "answers.setting=aware"]
        generate(make_cfg("generate", grown))
        assert {r.key for r in engine.requests} >= {"Q5|USA|0", "Q5|CHN|0"}
        assert Path(aware["files"]["USA"]).read_text().startswith(before)
        # overwrite=true redoes everything
        engine.requests.clear()
        generate(make_cfg("generate", [*grown, "overwrite=true"]))
        assert len(engine.requests) == 10


def test_answers_cct_prompts_and_zero_based_questions(make_cfg, monkeypatch, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps(
            {
                "id": "g1",
                "text": "Rate it.",
                "options": ["0", "1", "2"],
                "first_option": 0,
                "topic": "Security",
                "source": "generated",
                "meta": {},
            }
        )
        + "\n"
    )
    engine = ScriptedEngine()
    _use(monkeypatch, engine)
    summary = generate(
        make_cfg(
            "generate",
            ["stage=answers", "answers.setting=cct", f"answers.input={questions}", "cultures=[USA]", "logger=wandb"],
        )
    )
    (request,) = engine.requests
    assert request.numbers == [0, 1, 2] and request.key == "g1|USA|0"
    system = request.messages[0]["content"]
    assert "American" in system and "Cultures close to yours include" in system
    assert "#Options: 0.0 1.1 2.2\n" in request.messages[-1]["content"]  # one line, numbered from 0
    assert _lines(Path(summary["files"]["USA"]))[0]["answer"] == 2
    tables = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/table/answers/samples_*.table.json"))
    assert len(tables) == 1 and "g1|USA|0" in tables[0].read_text()


def test_answers_errors_before_the_model_loads(make_cfg, monkeypatch, tmp_path: Path) -> None:
    _no_model(monkeypatch)
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "g1", "text": "Q?", "options": []}\n')
    with pytest.raises(CultureSPAError, match=r"q.jsonl:1: question g1: 'options' must be a non-empty list"):
        generate(make_cfg("generate", ["stage=answers", f"answers.input={bad}", "logger=csv"]))
    with pytest.raises(CultureSPAError, match="missing.jsonl: question file or folder not found"):
        generate(make_cfg("generate", ["stage=answers", f"answers.input={tmp_path / 'missing.jsonl'}"]))
    # a part file left by a run with another config is not silently mixed in
    out = tmp_path / "ans"
    out.mkdir()
    (out / "unaware.jsonl.part").write_text("")
    (out / "unaware.jsonl.meta.json").write_text('{"fingerprint": "other", "complete": false}')
    with pytest.raises(CultureSPAError, match="overwrite=true"):
        generate(make_cfg("generate", ["stage=answers", "answers.input=wvs", f"answers.output_dir={out}"]))
    with pytest.raises(CultureSPAError, match="stage='nope'"):
        generate(make_cfg("generate", ["stage=nope"]))


@pytest.mark.slow
def test_answers_embedded_model_two_cultures(make_cfg) -> None:
    summary = generate(
        make_cfg(
            "generate",
            [
                "stage=answers",
                "model=smollm2_135m",
                "answers.input=wvs",
                "answers.limit=3",
                "answers.setting=aware",
                "cultures=[USA,CHN]",
                "decoding=greedy",
                "decoding.max_new_tokens=4",
                "logger=csv",
            ],
        )
    )
    for culture in ("USA", "CHN"):
        records = _lines(Path(summary["files"][culture]))
        assert [r["id"] for r in records] == ["Q1", "Q2", "Q3"]
        for r in records:
            assert r["raw"] and r["culture"] == culture
            assert r["valid"] == (r["answer"] in range(1, len(r["question"]["options"]) + 1))
        assert sum(r["valid"] for r in records) >= 2  # the 135M model does answer with a number
