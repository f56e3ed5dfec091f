"""answers.shard=i/n: a deterministic split in whole resume chunks, one resumable file per shard, and a merge that
writes byte for byte what one unsharded run writes (greedy / logprob on tiny_random); the pipeline can fan out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from culturespa.answers.chunks import resume_chunks
from culturespa.answers.shards import Shard
from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from tests.conftest import TINY_ANSWERS

REPO = Path(__file__).resolve().parents[1]


def test_shard_spec_and_split() -> None:
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse(None) is None and Shard.parse(" 0 / 1 ") == Shard(0, 1)
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(CultureSPAError, match=r"answers.shard=.* must be i/n"):
            Shard.parse(bad)
    keys = {f"Q{i}": i for i in range(7)}
    parts = [Shard(i, 3).keys(keys, chunk=2) for i in range(3)]
    assert [list(p) for p in parts] == [["Q0", "Q1", "Q6"], ["Q2", "Q3"], ["Q4", "Q5"]]  # chunk k -> shard k mod 3
    assert Shard(1, 3).path(Path("a/aware_USA.jsonl")) == Path("a/aware_USA.shard-1-of-3.jsonl")


def test_split_follows_the_resume_chunks_of_each_sample_run() -> None:
    """With k samples per question (data.samples) the file holds k runs of the questions; chunks never straddle two
    runs, so run 0 is batched as a one-sample run and each shard holds whole chunks of the unsharded run."""
    order = [f"Q{i}|USA|{r}" for r in range(2) for i in range(5)]
    chunks = resume_chunks(order, 2, per_run=5)
    assert chunks == [order[0:2], order[2:4], order[4:5], order[5:7], order[7:9], order[9:10]]
    keys = dict.fromkeys(order, 0)
    parts = [list(Shard(i, 2).keys(keys, 2, per_run=5)) for i in range(2)]
    assert parts[0] == [*order[0:2], *order[4:5], *order[7:9]] and parts[1] == [*order[2:4], *order[5:7], *order[9:10]]


@pytest.mark.parametrize("decoding", ["logprob", "greedy"])
def test_merged_shards_are_byte_identical_to_one_run(make_cfg, tmp_path: Path, decoding: str) -> None:
    args = [*TINY_ANSWERS, f"decoding={decoding}", "answers.setting=aware", "cultures=[USA,CHN]"]
    one = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'one'}"]))
    out = tmp_path / "sharded"
    for i in range(3):
        part = generate(make_cfg("generate", [*args, f"answers.output_dir={out}", f"answers.shard={i}/3"]))
        assert Path(part["files"]["USA"]).name == f"aware_USA.shard-{i}-of-3.jsonl"
    assert not (out / "aware_USA.jsonl").exists()
    merged = generate(make_cfg("generate", [*args, "stage=merge-answers", f"answers.output_dir={out}"]))
    assert {v["shards"] for v in merged["files"].values()} == {3}
    for code in ("USA", "CHN"):
        assert (out / f"aware_{code}.jsonl").read_bytes() == Path(one["files"][code]).read_bytes()
        meta = json.loads((out / f"aware_{code}.jsonl.meta.json").read_text())
        ref = json.loads((tmp_path / "one" / f"aware_{code}.jsonl.meta.json").read_text())
        assert meta["fingerprint"] == ref["fingerprint"] and meta["complete"] and meta["n"] == 7
    # the merged files count as finished answers for this config: an unsharded run skips them
    again = generate(make_cfg("generate", [*args, f"answers.output_dir={out}"]))
    assert len(again["skipped"]) == 2 and "answered" not in again


def test_shards_resume_alone_and_merge_checks_every_shard(make_cfg, tmp_path: Path) -> None:
    args = [*TINY_ANSWERS, "decoding=logprob", "answers.setting=unaware", f"answers.output_dir={tmp_path}"]
    merge = [*args, "stage=merge-answers"]
    with pytest.raises(CultureSPAError, match="no shard files to merge"):
        generate(make_cfg("generate", merge))
    first = generate(make_cfg("generate", [*args, "answers.shard=0/2"]))
    assert first["answered"] == 4  # chunks 0 and 2 of [Q1 Q2] [Q3 Q4] [Q5 Q6] [Q7]
    with pytest.raises(CultureSPAError, match=r"unaware.shard-1-of-2.jsonl: shard 1/2 is missing or unfinished"):
        generate(make_cfg("generate", merge))
    # shard 1 killed after its first answer: only its part file (and sidecar) exist; it resumes on its own
    second = generate(make_cfg("generate", [*args, "answers.shard=1/2"]))
    shard1 = Path(second["files"]["unaware"])
    lines = shard1.read_text().splitlines(keepends=True)
    shard1.with_name(shard1.name + ".part").write_text(lines[0] + lines[1][:9])
    shard1.unlink()
    with pytest.raises(CultureSPAError, match="shard 1/2 is missing or unfinished"):
        generate(make_cfg("generate", merge))
    resumed = generate(make_cfg("generate", [*args, "answers.shard=1/2"]))
    # shard 1 holds [Q3 Q4] and [Q7]: Q4 and Q7 are answered, the chunk [Q3 Q4] recomputed whole (same batches)
    assert resumed["answered"] == 2 and shard1.read_text().splitlines(keepends=True) == lines
    assert generate(make_cfg("generate", [*args, "answers.shard=0/2"]))["skipped"] == [first["files"]["unaware"]]
    generate(make_cfg("generate", merge))
    assert [json.loads(x)["id"] for x in (tmp_path / "unaware.jsonl").read_text().splitlines()] == [
        f"Q{i}" for i in range(1, 8)
    ]
    # a shard made with another split (resume_chunk) or of another split count is refused, nothing overwritten
    before = (tmp_path / "unaware.jsonl").read_bytes()
    with pytest.raises(CultureSPAError, match="another config or split"):
        generate(make_cfg("generate", [*merge, "answers.resume_chunk=3", "overwrite=true"]))
    generate(make_cfg("generate", [*args, "answers.shard=0/3"]))
    with pytest.raises(CultureSPAError, match="several splits"):
        generate(make_cfg("generate", [*merge, "overwrite=true"]))
    assert (tmp_path / "unaware.jsonl").read_bytes() == before


def test_multirun_fans_out_the_shards(tmp_path: Path) -> None:
    """`-m answers.shard=0/2,1/2`: Hydra parses i/n and runs one job per shard."""
    out = tmp_path / "answers"
    cmd = [
        sys.executable,
        "generate.py",
        "-m",
        *[a for a in TINY_ANSWERS if a != "answers.limit=7"],
        "answers.limit=3",
        "decoding=logprob",
        "answers.setting=unaware",
        f"answers.output_dir={out}",
        "answers.shard=0/2,1/2",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = os.environ | {"WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.shard-*.jsonl")) == [
        "unaware.shard-0-of-2.jsonl",
        "unaware.shard-1-of-2.jsonl",
    ]
    assert [len(p.read_text().splitlines()) for p in sorted(out.glob("*.shard-*.jsonl"))] == [2, 1]


@pytest.mark.slow
def test_pipeline_answer_shards_write_the_same_answers(make_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """`pipeline.answer_shards=2` answers in two shards then merges: the same cached stage, the same bytes."""
    from omegaconf import open_dict

    from culturespa.pipeline import run_pipeline

    class Stop(Exception):
        pass

    def stop(cfg, callbacks=()):  # noqa: ANN001, ANN202
        raise Stop  # the answers (and pairs) are what this test is about

    monkeypatch.setattr("culturespa.pipeline.train", stop)
    folders = []
    for n in (1, 2):
        cfg = make_cfg(
            "pipeline",
            [
                "experiment=smoke",
                "model=tiny_random",
                "pipeline.questions=pool",
                "filter.input=${paths.question_pool_dir}",
                "filter.limit_per_topic=1",
                "decoding=logprob",
                "data.criterion=none",
                "answers.resume_chunk=4",
                f"pipeline.answer_shards={n}",
            ],
        )
        with open_dict(cfg):
            cfg.pipeline.root = str(tmp_path / f"n{n}")
        with pytest.raises(Stop):
            run_pipeline(cfg)
        (folder,) = (tmp_path / f"n{n}" / "answers").iterdir()
        folders.append(folder)
    one, two = folders
    assert one.name == two.name  # the shard count is not part of the stage's identity
    names = ["unaware.jsonl", "aware_USA.jsonl", "aware_CHN.jsonl"]
    for name in names:
        assert (two / name).read_bytes() == (one / name).read_bytes()
    assert sorted(p.name for p in two.glob("aware_USA.shard-*.jsonl")) == [
        "aware_USA.shard-0-of-2.jsonl",
        "aware_USA.shard-1-of-2.jsonl",
    ]
    summary = json.loads((two / "_SUCCESS.json").read_text())["summary"]
    assert summary["unaware"]["shards"] == 2 and summary["unaware"]["answered"] == 13
