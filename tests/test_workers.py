"""engine.devices=N on CPU: N spawned worker processes write what one process writes (byte for byte with greedy or
logprob decoding, and with sampling, whose seeds are per request); a killed worker resumes to the same files; a bad
value is one line naming the key."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from culturespa.answers.merge import fan_out
from culturespa.errors import CultureSPAError
from culturespa.evaluate.run import evaluate
from culturespa.generate.run import generate
from culturespa.infer.workers import parse_devices
from culturespa.settings import check_values
from tests.conftest import TINY_ANSWERS

REPO = Path(__file__).resolve().parents[1]


def test_devices_values() -> None:
    none, two = (lambda: 0), (lambda: 2)
    assert parse_devices(1, "auto", two) == ["auto"] and parse_devices("auto", "auto", none) == ["auto"]
    assert parse_devices("auto", "auto", two) == ["cuda:0", "cuda:1"] and parse_devices("auto", "cpu", two) == ["cpu"]
    assert parse_devices(2, "auto", none) == ["cpu", "cpu"] and parse_devices("2", "cpu", two) == ["cpu", "cpu"]
    assert parse_devices(2, "auto", two) == ["cuda:0", "cuda:1"]
    assert parse_devices(["cuda:1", "cuda"], "auto", two) == ["cuda:1", "cuda:0"]
    bad = {0: "must be auto", -1: "must be auto", "two": "must be auto", True: "must be auto", 1.5: "must be auto"}
    bad |= {3: "only 2 CUDA", ("gpu0",): "gpu0 is not a device", (): "empty list", ("cuda:2",): "cuda:2 is not one"}
    bad |= {("cuda:0", "cuda:0"): "twice"}
    for value, why in bad.items():
        with pytest.raises(CultureSPAError, match=rf"^engine\.devices=.*{why}"):
            parse_devices(list(value) if isinstance(value, tuple) else value, "auto", two)
    assert check_values({"engine": {"devices": "auto"}}) == [] and check_values({"engine": {"devices": ["cpu"]}}) == []
    assert check_values({"engine": {"devices": 0}}) == [
        "engine.devices=0 must be auto, a positive integer or a list of devices like [cuda:0,cuda:1] or [cpu,cpu]"
    ]


def test_bad_devices_value_is_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "generate.py", *TINY_ANSWERS, "engine.devices=[gpu0]", f"answers.output_dir={tmp_path}"]
    cmd += [f"paths.log_dir={tmp_path / 'logs'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | _offline())
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "engine.devices" in line]
    assert len(lines) == 1 and "[gpu0]" in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def _offline() -> dict[str, str]:
    return {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("decoding", ["greedy", "logprob", "sample"])
def test_two_workers_write_the_one_process_files(make_cfg, tmp_path: Path, decoding: str) -> None:
    args = [*TINY_ANSWERS, f"decoding={decoding}", "answers.setting=aware", "cultures=[USA,CHN]"]
    if decoding == "sample":  # two samples per question: runs 0 and 1, each seeded per request
        args += ["data.samples=2", "data.criterion=none", "answers.limit=4"]
    one = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'one'}"]))
    two = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'two'}", "engine.devices=2"]))
    assert one["answered"] == (16 if decoding == "sample" else 14)  # sample: 4 questions x 2 runs x 2 cultures
    assert two["workers"] == 2 and two["answered"] == one["answered"] and two["invalid"] == one["invalid"]
    for code in ("USA", "CHN"):
        name = f"aware_{code}.jsonl"
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
        meta, ref = (json.loads((tmp_path / d / f"{name}.meta.json").read_text()) for d in ("two", "one"))
        assert meta["fingerprint"] == ref["fingerprint"] and meta["complete"] and meta["n"] == ref["n"]
        assert sorted(p.name for p in (tmp_path / "two").glob(f"aware_{code}.shard-*-of-2.jsonl")) == [
            f"aware_{code}.shard-0-of-2.jsonl",
            f"aware_{code}.shard-1-of-2.jsonl",
        ]
    # finished: a rerun (one process or two) skips without starting workers
    again = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'two'}", "engine.devices=2"]))
    assert len(again["skipped"]) == 2 and "workers" not in again


def test_a_killed_worker_resumes_to_the_same_files(make_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    args = [*TINY_ANSWERS, "decoding=logprob", "answers.setting=unaware"]
    one = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'one'}"]))
    out = tmp_path / "two"
    two = [*args, f"answers.output_dir={out}", "engine.devices=2"]
    # shard 1 is SIGKILLed right after its first answers are appended; shard 0 finishes
    monkeypatch.setenv("CULTURESPA_CHAOS", "jsonl.append:1")
    monkeypatch.setenv("CULTURESPA_CHAOS_JOB", "answers shard 1/2")
    with pytest.raises(
        CultureSPAError, match=r"^answers shard 1/2 failed \(exit code -9\); see its log .*shard-1-of-2"
    ):
        generate(make_cfg("generate", two))
    assert (out / "unaware.shard-0-of-2.jsonl").is_file() and not (out / "unaware.jsonl").exists()
    part = out / "unaware.shard-1-of-2.jsonl.part"
    assert len(part.read_text().splitlines()) == 2  # its first chunk survives the kill
    monkeypatch.delenv("CULTURESPA_CHAOS")
    resumed = generate(make_cfg("generate", two))
    assert resumed["answered"] == 1  # shard 0 was finished; shard 1 ([Q3 Q4] [Q7]) resumed after its first chunk
    assert (out / "unaware.jsonl").read_bytes() == Path(one["files"]["unaware"]).read_bytes()


def test_two_workers_evaluate_as_one_process(make_cfg, tmp_path: Path) -> None:
    args = ["model=tiny_random", "logger=none", "eval.limit=5", "cultures=[USA,CHN]", "prompt=p1"]
    args += ["decoding=logprob", "answers.resume_chunk=2"]
    one = evaluate(make_cfg("evaluate", [*args, f"eval.output_dir={tmp_path / 'one'}"]))
    two = evaluate(make_cfg("evaluate", [*args, f"eval.output_dir={tmp_path / 'two'}", "engine.devices=2"]))
    for code in ("USA", "CHN"):
        name = f"answers/p1_{code}.jsonl"
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    scores = [json.loads(Path(s["alignment"]).read_text())["cultures"] for s in (one, two)]
    assert scores[0] == scores[1]


def test_two_workers_generate_the_one_process_questions(make_cfg, tmp_path: Path) -> None:
    args = ["stage=questions", "model=tiny_random", "questions.topics=[2,4,7]", "questions.per_topic=2"]
    args += ["questions.max_retries=1", "questions.max_new_tokens=4", "questions.temperature=0", "logger=csv"]
    one = generate(make_cfg("generate", [*args, f"questions.output={tmp_path / 'one.jsonl'}"]))
    two = generate(make_cfg("generate", [*args, f"questions.output={tmp_path / 'two.jsonl'}", "engine.devices=2"]))
    assert two["workers"] == 2 and two["generated"] == one["generated"] and two["bad_json"] == one["bad_json"]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    meta, ref = (json.loads((tmp_path / f"{n}.jsonl.meta.json").read_text()) for n in ("two", "one"))
    assert meta == ref and len(ref["failed"]) == 6  # tiny_random writes no JSON: every slot fails, replies kept
    assert [f["id"] for f in meta["failed"]] == [f"gen-t{t}-{n}" for t in (2, 4, 7) for n in range(2)]


def test_pipeline_shards_run_at_once_on_the_devices(make_cfg, tmp_path: Path) -> None:
    """`pipeline.answer_shards=3` with `engine.devices=2`: three shard jobs on two workers, then the merge."""
    args = [*TINY_ANSWERS, "decoding=logprob", "answers.setting=unaware"]
    one = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'one'}"]))
    out = [*args, f"answers.output_dir={tmp_path / 'fan'}", "engine.devices=2"]
    merged = fan_out(generate, lambda extra: make_cfg("generate", [*out, *(f"{k}={v}" for k, v in extra.items())]), 3)
    assert merged["shards"] == 3 and merged["answered"] == 7 and merged["files"]
    assert (tmp_path / "fan" / "unaware.jsonl").read_bytes() == Path(one["files"]["unaware"]).read_bytes()
    logs = sorted(p.name for p in (tmp_path / "run" / "workers").glob("*.log"))
    assert logs == [f"answers-unaware.shard-{i}-of-3.log" for i in range(3)]


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" in status.read_text()  # a zombie whose reaper is slow is dead too
    except OSError:
        return True


def test_killing_the_parent_stops_its_workers_and_a_rerun_resumes(make_cfg, tmp_path: Path) -> None:
    args = [a for a in TINY_ANSWERS if a != "answers.limit=7"] + ["answers.limit=12", "model.dtype=float32"]
    args += ["decoding=logprob", "answers.setting=unaware"]  # the CLI as make_cfg: fp32
    one = generate(make_cfg("generate", [*args, f"answers.output_dir={tmp_path / 'one'}"]))
    out = tmp_path / "two"
    cmd = [sys.executable, "generate.py", *args, f"answers.output_dir={out}", "engine.devices=2"]
    cmd += [f"paths.log_dir={tmp_path / 'logs'}"]
    parent = subprocess.Popen(cmd, cwd=REPO, env=os.environ | _offline(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(p.stat().st_size for p in out.glob("unaware.shard-*.jsonl.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("answers-unaware.shard-*.log"))
    workers = [int(pid) for pid in re.findall(r"worker (\d+): cpu with", logs)]
    assert len(workers) == 2
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_gone(pid) for pid in workers)  # no orphan writes beside the rerun
    assert not (out / "unaware.jsonl").exists()
    rerun = subprocess.run(cmd, cwd=REPO, env=os.environ | _offline(), capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / "unaware.jsonl").read_bytes() == Path(one["files"]["unaware"]).read_bytes()
