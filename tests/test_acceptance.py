"""The acceptance run: its step bookkeeping (failures recorded, budgets respected), the estimate arithmetic, and the
whole ``--dry`` path on the CPU (the code a GPU machine will run, on a tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culturespa.acceptance.estimate import (
    ANSWER_PROMPTS,
    EVAL_PROMPTS,
    DecodeShape,
    decode_floor_s,
    paper_hours,
)
from culturespa.acceptance.record import Run, Skip, StepResult, write_report


def test_failures_are_recorded_and_later_steps_still_run(tmp_path: Path) -> None:
    run = Run(total_s=60.0)

    def broken(row: StepResult) -> None:
        raise ValueError("no such kernel")

    def fine(row: StepResult) -> None:
        row.figures["x"] = 1.5
        row.checks["holds"] = True

    def refused(row: StepResult) -> None:
        raise Skip("only one device")

    def wrong(row: StepResult) -> None:
        row.checks["loss falls"] = False

    run.step("a", "broken", "1", 1, broken)
    run.step("b", "fine", "2", 1, fine)
    run.step("c", "refused", "2", 1, refused)
    run.step("d", "wrong", "3", 1, wrong)
    run.step("e", "too long", "4", 3600, fine)
    assert [s.status for s in run.steps] == ["failed", "ok", "skipped", "check failed", "skipped"]
    assert "ValueError: no such kernel" in (run.steps[0].reason or "")
    assert run.steps[4].reason and run.steps[4].reason.startswith("time:")
    json_path, md_path = write_report(tmp_path, run, {"mode": "test"})
    body = json.loads(json_path.read_text())
    assert [s["id"] for s in body["steps"]] == ["a", "b", "c", "d", "e"]
    table = md_path.read_text()
    assert "| checklist item |" in table and "| b fine | 2 | ok |" in table and "loss falls: NO" in table


def test_estimate_arithmetic() -> None:
    shape = DecodeShape(weight_bytes=16e9, kv_bytes_per_token=1e5, prompt_tokens=100, new_tokens=200)
    # 200 steps, each reading 16 GB of weights + 32 rows x 200 tokens of context x 100 kB, at 4 TB/s
    assert decode_floor_s(shape, 32, 4e12) == pytest.approx(200 * (16e9 + 32 * 200 * 1e5) / 4e12)
    hours = paper_hours(10.0, 100.0)
    want = (ANSWER_PROMPTS / 10.0 + EVAL_PROMPTS / 100.0) / 3600
    assert hours["1_gpu_h"] == pytest.approx(want) and hours["8_gpu_h"] == pytest.approx(want / 8)


@pytest.mark.slow
def test_dry_run_settles_every_step_on_the_cpu(tmp_path: Path) -> None:
    from culturespa.acceptance.__main__ import main

    json_path = main(["--out", str(tmp_path / "acc"), "--dry", "--total-s", "900"])  # room on a shared machine
    body = json.loads(json_path.read_text())
    status = {s["id"]: s for s in body["steps"]}
    assert set(status) == {"m0", "a1", "a2", "b1", "b2", "c1", "d1", "e1"}
    assert {k: s["status"] for k, s in status.items() if k != "c1"} == dict.fromkeys(set(status) - {"c1"}, "ok")
    assert status["c1"]["status"] == "skipped" and "needs GPUs" in status["c1"]["reason"]  # the project's refusal
    b2 = status["b2"]["figures"]
    assert b2["tokens_per_s"] > 0 and 0 < b2["mfu_cpu_est"] < 1 and b2["adapter_only"] is True
    assert status["d1"]["figures"]["device"] == "cpu" and status["d1"]["figures"]["reload_max_logit_diff"] == 0.0
    assert status["e1"]["figures"]["8_gpu_h"] * 8 == pytest.approx(status["e1"]["figures"]["1_gpu_h"])
    assert (json_path.parent / "acceptance.md").is_file()


def test_slim_bitsandbytes_keeps_cpu_and_chosen_cuda(tmp_path: Path) -> None:
    import zipfile

    from culturespa.acceptance.wheels import slim

    wheel = tmp_path / "bitsandbytes-0-py3-none-any.whl"
    libs = ["cpu", "cuda118", "cuda128", "rocm72"]
    with zipfile.ZipFile(wheel, "w") as z:
        for lib in libs:
            z.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", b"x" * 1000)
        z.writestr("bitsandbytes/__init__.py", "")
        record = "\n".join(f"bitsandbytes/libbitsandbytes_{lib}.so,sha256=0,1000" for lib in libs)
        z.writestr("bitsandbytes-0.dist-info/RECORD", record + "\nbitsandbytes/__init__.py,,\n")
    slim(wheel, ["cuda128"])
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.dist-info/RECORD").decode()
    kept = {n for n in names if n.endswith(".so")}
    assert kept == {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda128.so"}
    assert "cuda118" not in record and "rocm72" not in record and "__init__.py" in record
