"""Question generation resumed after a crash equals the uninterrupted run, byte for byte, and asks no attempt twice.

The tiny random model writes no JSON (and nearly the same few tokens for every prompt), so each reply is tagged with
a hash of the exact prompt it answered and the reply parser accepts about half of the replies, chosen by a hash of
the tagged text: every outcome then depends on the prompt, i.e. on the attempt number and on the generated examples
the slot saw. A resumed run that rebuilt a slot's attempt counter or examples differently
would produce other questions or other attempt counts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from culturespa.generate.run import generate
from culturespa.infer.engine import Engine
from culturespa.questions import generate as stage
from culturespa.questions.json_extract import Extracted

ARGS = [
    "stage=questions",
    "model=tiny_random",
    "model.dtype=float32",
    "questions.topics=[4]",
    "questions.per_topic=4",
    "questions.batch_size=2",
    "questions.max_retries=2",
    "questions.n_generated=2",
    "questions.max_new_tokens=4",
    "questions.temperature=0",
    "engine.batch_size=1",
    "logger=csv",
]


def _scripted_extract(reply: str) -> Extracted | str:
    digest = hashlib.sha256(reply.encode()).hexdigest()
    if int(digest, 16) % 2:
        return "no JSON object found"
    return Extracted(question=f"Question {digest[:10]}?", options=["1. Yes", "2. No"])


class Crash(RuntimeError):
    pass


def _count_and_crash(monkeypatch: pytest.MonkeyPatch, counter: dict[str, int], crash_after: int | None) -> None:
    """Count the replies the engine hands back; raise (a crash) once ``crash_after`` of them were handed back."""
    original = Engine.generate

    def generate_(self, requests, *args, **kwargs):  # noqa: ANN001, ANN202
        for batch in original(self, requests, *args, **kwargs):
            if crash_after is not None and counter["replies"] >= crash_after:
                raise Crash("simulated kill")
            counter["replies"] += len(batch)
            for res in batch:
                res.text += f" [{hashlib.sha256(res.prompt.encode()).hexdigest()[:12]}]"
            yield batch

    monkeypatch.setattr(Engine, "generate", generate_)


def _run(make_cfg, tmp_path: Path, name: str, monkeypatch, crash_after: int | None) -> tuple[dict, dict[str, int]]:  # noqa: ANN001
    counter = {"replies": 0}
    with monkeypatch.context() as m:
        m.setattr(stage, "extract_question", _scripted_extract)
        _count_and_crash(m, counter, crash_after)
        cfg = make_cfg("generate", [*ARGS, f"questions.output={tmp_path / name / 'generated.jsonl'}"])
        return generate(cfg), counter


def test_resumed_question_generation_equals_uninterrupted(make_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    full, full_count = _run(make_cfg, tmp_path, "full", monkeypatch, None)
    full_out = Path(full["output"])
    assert 0 < full["generated"] < 4 and full["bad_json"] > 0  # some slots retried: the case that used to break

    for crash_after in (2, 5):  # mid-wave, in the first and in a later wave
        assert full_count["replies"] > crash_after
        with pytest.raises(Crash):
            _run(make_cfg, tmp_path, f"crash{crash_after}", monkeypatch, crash_after)
        out = tmp_path / f"crash{crash_after}" / "generated.jsonl"
        assert not out.exists() and out.with_name(out.name + ".part").is_file()
        resumed, resumed_count = _run(make_cfg, tmp_path, f"crash{crash_after}", monkeypatch, None)

        assert out.read_bytes() == full_out.read_bytes()
        assert resumed["generated"] == full["generated"] and resumed["bad_json"] == full["bad_json"]
        # no attempt asked twice: the replies before the crash plus those after it are the uninterrupted run's
        assert crash_after + resumed_count["replies"] == full_count["replies"]
        assert resumed["replies_this_run"] == full_count["replies"] - crash_after
        sidecar = out.with_name(out.name + ".meta.json").read_text()
        assert sidecar == full_out.with_name(full_out.name + ".meta.json").read_text()


def test_question_prompt_ends_with_the_response_prefix(make_cfg) -> None:  # noqa: ANN001
    """The model must see the response prefix the reply is recorded with (it used to be dropped by the engine)."""
    from culturespa.infer.engine import Request

    engine = Engine.from_config(make_cfg("generate", ["model=tiny_random"]))
    request = Request("k", [{"role": "user", "content": "Write a survey question."}], prefix="```json\n{")
    (result,) = next(iter(engine.generate([request], 0.0, 1.0, 2)))
    assert result.prompt.endswith("<|im_start|>assistant\n```json\n{")
