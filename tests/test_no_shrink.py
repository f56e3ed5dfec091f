"""Issue 22 item 7: no finished stage file is replaced by fewer records (questions, filtered questions, pairs; answers
in tests/test_resume.py) unless ``overwrite=true``; the refusal is one line and leaves every file as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.utils.jsonl import ResumableJsonl, refuse_fewer
from tests.test_generate_filter import _paper_pool
from tests.test_generate_pairs import _cfg as pairs_cfg
from tests.test_generate_pairs import _write as write_answers
from tests.test_generate_stages import QUESTION_ARGS, ScriptedEngine, _use


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_refuse_fewer_names_file_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    refuse_fewer(path, 0, "how")  # nothing there: nothing to protect
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    refuse_fewer(path, 2, "how")  # as many: allowed
    with pytest.raises(CultureSPAError, match=r"x.jsonl: holds 2 records; this run would replace it with 1; how$"):
        refuse_fewer(path, 1, "how")


def test_resumable_file_keeps_its_part_when_it_would_shrink(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n')
    store = ResumableJsonl(path, key=lambda r: r["id"], never_fewer="set x.output")
    store.append_many([{"id": "c"}])
    with pytest.raises(CultureSPAError, match=r"this run's records stay in .*x.jsonl.part; set x.output"):
        store.finish()
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n' and path.with_name("x.jsonl.part").is_file()
    assert [r["id"] for r in ResumableJsonl(path, key=lambda r: r["id"]).finish()] == ["c"]  # not asked: replaced


def test_filtered_questions_never_shrink(make_cfg, tmp_path: Path) -> None:
    _paper_pool(tmp_path / "pool")
    out = tmp_path / "work" / "filtered.jsonl"
    args = ["stage=filter", "filter=strict", f"filter.output={out}", "logger=csv"]
    assert generate(make_cfg("generate", [*args, f"filter.input={tmp_path / 'pool'}"]))["kept"] == 2
    before = _files(out.parent)
    smaller = [*args, f"filter.input={tmp_path / 'pool' / 'topic_5.json'}"]
    with pytest.raises(CultureSPAError, match=r"filtered.jsonl: holds 2 records; this run would replace it with 1"):
        generate(make_cfg("generate", smaller))
    assert _files(out.parent) == before  # nor the report
    assert generate(make_cfg("generate", [*smaller, "overwrite=true"]))["kept"] == 1


def test_pairs_never_shrink(make_cfg, tmp_path: Path) -> None:
    write_answers(tmp_path / "answers")
    everything = generate(pairs_cfg(make_cfg, tmp_path, "data.criterion=none"))
    before = _files(tmp_path / "pairs")
    with pytest.raises(CultureSPAError, match=r"USA.jsonl: holds \d+ records; this run would replace it with \d+; set"):
        generate(pairs_cfg(make_cfg, tmp_path))  # the answer criterion keeps fewer
    assert _files(tmp_path / "pairs") == before  # no culture's file, nor stats.json
    kept = generate(pairs_cfg(make_cfg, tmp_path, "overwrite=true"))
    assert kept["kept"] != everything["kept"]


def test_generated_questions_never_shrink(make_cfg, monkeypatch, tmp_path: Path) -> None:
    _use(monkeypatch, ScriptedEngine())
    out = Path(generate(make_cfg("generate", QUESTION_ARGS))["output"])
    before = _files(out.parent)
    assert len(out.read_bytes().splitlines()) == 6
    other = [*QUESTION_ARGS, "questions.per_topic=2", "questions.temperature=0.5"]  # another config: starts over
    with pytest.raises(CultureSPAError, match=r"generated.jsonl: holds 6 records; this run would replace it with 4"):
        generate(make_cfg("generate", other))
    assert _files(out.parent) == before  # refused before any work: the sidecar still names the finished config
    replaced = generate(make_cfg("generate", [*other, "overwrite=true"]))
    assert replaced["generated"] == 4 and len(out.read_text().splitlines()) == 4
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()][0] == "gen-t0-0"
