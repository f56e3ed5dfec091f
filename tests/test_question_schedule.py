"""Question generation as the paper's loop runs it: sequential example exposure (every question's prompt can show the
questions generated before it in its topic), strict whole-reply JSON acceptance and top-k 50 under ``paper_*``, and
part files written before these settings existed still resuming."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from culturespa.generate.run import generate
from culturespa.infer.engine import Engine, Result
from culturespa.questions.generate import pick_examples
from culturespa.questions.json_extract import Extracted, strict_question
from culturespa.questions.settings import fingerprint
from culturespa.stages import identity
from culturespa.wvs.survey import WVSData
from culturespa.wvs.topics import TOPIC_NAMES

ARGS = ["stage=questions", "questions.topics=[0,4]", "questions.per_topic=5", "questions.max_retries=2", "logger=csv"]


class Scripted:
    """Replies per request key: slot 2's first attempt is prose (retried), every other reply a JSON question, bare or
    wrapped in a fence; logs each generate() call's requests and top-k."""

    def __init__(self, fenced: bool = False) -> None:
        self.calls: list[tuple[list, int]] = []
        self.fenced = fenced

    def generate(self, requests, temperature, top_p, max_new_tokens, seed=0, desc=None, top_k=50) -> Iterator:  # noqa: ANN001
        reqs = list(requests)
        self.calls.append((reqs, top_k))
        yield [Result(r.key, self._reply(r.key, r.prefix), None, True, None, "prompt") for r in reqs]

    def _reply(self, key: str, prefix: str) -> str:
        qid, attempt = key.split("#a")
        if qid.endswith("-2") and attempt == "0":
            return "Here is a question about trust."
        body = json.dumps({"Question": f"Question  {qid}?", "Options": ["Yes", "No", "Maybe"]})
        text = f"```json\n{body}\n```" if self.fenced else body
        return text[len(prefix) :] if text.startswith(prefix) else text  # the reply continues the prefill


def _run(make_cfg, monkeypatch, engine: Scripted, overrides: list[str], out: Path | None = None) -> tuple[dict, list]:  # noqa: ANN001
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg, model=None, tokenizer=None: engine))
    where = [f"questions.output={out}"] if out else []
    summary = generate(make_cfg("generate", [*ARGS, *overrides, *where]))
    return summary, [json.loads(x) for x in Path(summary["output"]).read_text().splitlines()]


def test_sequential_exposure_is_the_papers_loop(make_cfg, monkeypatch, wvs: WVSData) -> None:  # noqa: ANN001
    """Each question sees exactly the examples the paper's sequential loop would draw for it: up to 2 of the questions
    generated before it in its topic, the rest from the topic's WVS questions; one request per topic at a time."""
    engine = Scripted()
    summary, records = _run(make_cfg, monkeypatch, engine, [])
    assert summary["generated"] == 10 and summary["bad_json"] == 2
    assert all(len({r.key.split("-")[1] for r in reqs}) == len(reqs) for reqs, _ in engine.calls)  # 1 per topic
    by_id = {r["id"]: r for r in records}
    for topic in (0, 4):
        real = wvs.questions_of_topic(TOPIC_NAMES[topic])
        before: list = []  # the paper's loop, restated: slot after slot, each seeing what came before
        for slot in range(5):
            record = by_id[f"gen-t{topic}-{slot}"]
            attempt = record["meta"]["attempts"] - 1
            rng = random.Random(f"42|{topic}|{slot}|{attempt}")
            expected = pick_examples(real, before, 5, 2, rng)
            assert record["meta"]["examples"] == [q.id for q in expected]
            before.append(type(real[0]).from_record(record))
    assert "gen-t0-0" in by_id["gen-t0-1"]["meta"]["examples"]  # the second question already sees the first


def test_waves_show_a_wave_none_of_its_own_questions(make_cfg, monkeypatch) -> None:  # noqa: ANN001
    engine = Scripted()
    _, records = _run(make_cfg, monkeypatch, engine, ["questions.exposure=waves", "questions.batch_size=4"])
    first_wave = [r for r in records if int(r["id"].rsplit("-", 1)[1]) < 4 and r["meta"]["attempts"] == 1]
    assert len(first_wave) == 6  # slots 0, 1, 3 of each topic (slot 2 was retried in the next wave)
    assert not any(e.startswith("gen-") for r in first_wave for e in r["meta"]["examples"])
    assert len(engine.calls[0][0]) == 8  # 4 slots x 2 topics in one request batch


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"Question": "Do  you pray?", "Options": ["Yes", "No"]}', Extracted("Do  you pray?", ["Yes", "No"])),
        ('  {"question": "Q?", "options": ["only one"]}\n', Extracted("Q?", ["only one"])),
        ('{"Question": "Q?", "question": "q?", "Options": [1, 2]}', Extracted("Q?", ["1", "2"])),
        ('```json\n{"Question": "Q?", "Options": ["a", "b"]}\n```', "reply is not one JSON object"),
        ('Sure! {"Question": "Q?", "Options": ["a", "b"]}', "reply is not one JSON object"),
        ('{"Question:" "Q?", "Options": ["a", "b"]}', "reply is not one JSON object"),  # the paper's example's typo
        ('{"Question": "Q?", "Options": ["a", "b"],}', "reply is not one JSON object"),
        ('{"QUESTION": "Q?", "Options": ["a", "b"]}', "no question text"),
        ('{"Question": "Q?", "Options": "a, b"}', "no options list"),
        ('["Q?"]', "reply is not one JSON object"),
    ],
)
def test_strict_acceptance_is_json_loads_of_the_whole_reply(reply: str, expected: Extracted | str) -> None:
    assert strict_question(reply) == expected


def test_strict_acceptance_in_the_stage(make_cfg, monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    """Under accept=strict a fenced reply is a bad reply (the lenient default takes it) and text is kept as written."""
    strict = ["questions.accept=strict", "questions.per_topic=2"]
    summary, _ = _run(make_cfg, monkeypatch, Scripted(fenced=True), strict, tmp_path / "a.jsonl")
    assert summary["generated"] == 0 and summary["failed"] == 4
    summary, records = _run(make_cfg, monkeypatch, Scripted(), strict, tmp_path / "b.jsonl")
    assert summary["generated"] == 4 and records[0]["text"] == "Question  gen-t0-0?"  # whitespace kept
    fenced = Scripted(fenced=True)
    lenient, records = _run(make_cfg, monkeypatch, fenced, ["questions.per_topic=2"], tmp_path / "c.jsonl")
    assert lenient["generated"] == 4 and records[0]["text"] == "Question gen-t0-0?"  # found in the fence, collapsed


@pytest.mark.parametrize("experiment", ["paper_joint", "paper_specific"])
def test_paper_presets_generate_questions_like_the_paper(make_cfg, monkeypatch, experiment: str) -> None:  # noqa: ANN001
    """Sequential exposure, strict acceptance, top-k 50 reaching the engine, no reply prefill."""
    engine = Scripted()
    summary, records = _run(make_cfg, monkeypatch, engine, [f"experiment={experiment}", "questions.per_topic=3"])
    assert summary["generated"] == 6 and {top_k for _, top_k in engine.calls} == {50}
    assert all(r.prefix == "" for reqs, _ in engine.calls for r in reqs)
    assert all(len(reqs) <= 2 for reqs, _ in engine.calls) and records[0]["text"] == "Question  gen-t0-0?"


def test_files_from_before_the_new_settings_still_resume(make_cfg) -> None:  # noqa: ANN001
    """At top_k 0, waves and lenient (the behaviour before these settings existed) the fingerprint is the one the
    earlier code wrote, so an interrupted or finished file of that code is resumed or skipped, not refused."""
    legacy = ["questions.top_k=0", "questions.exposure=waves", "questions.accept=lenient"]
    cfg = make_cfg("generate", [*ARGS, *legacy])
    ignore = ("output", "overwrite", "per_topic", "topics", "batch_size", "max_retries", "top_k", "exposure", "accept")
    earlier = identity.fingerprint(  # the payload the earlier code hashed (it had no top_k, exposure, accept)
        {
            "model": identity.plain(cfg, "model"),
            "questions": {k: v for k, v in identity.plain(cfg, "questions").items() if k not in ignore},
            "seed": int(cfg.seed),
            "template": identity.plain(cfg, "templates.question_generation"),
        }
    )
    assert fingerprint(cfg) == earlier
    assert fingerprint(make_cfg("generate", ARGS)) != earlier  # top-k 50 and sequential exposure make other questions


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("questions.exposure=parallel", "questions.exposure='parallel' is not valid; choose one of: sequential, waves"),
        ("questions.accept=loose", "questions.accept='loose' is not valid; choose one of: strict, lenient"),
        ("questions.top_k=-3", "questions.top_k=-3 must be a non-negative integer"),
        ("questions.n_generated=9", "questions.n_generated=9 exceeds questions.n_examples=5"),
    ],
)
def test_bad_schedule_settings_are_one_line_errors(make_cfg, override: str, message: str) -> None:  # noqa: ANN001
    from culturespa.errors import CultureSPAError
    from culturespa.questions.settings import Settings

    with pytest.raises(CultureSPAError) as err:
        Settings.from_config(make_cfg("generate", [*ARGS, override]))
    assert str(err.value) == message
