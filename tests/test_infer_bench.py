"""`make bench`'s inference benchmark runs end to end (here on the tiny random model) and its figures hang together."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from culturespa.bench import inference as bench


def test_bench_runs_on_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = bench.main(
        ["--model", "tiny_random", "--questions", "3", "--cultures", "USA", "CHN", "--paper-prompts", "2",
         "--rounds", "1", "--gen-tokens", "3", "--long-tokens", "5", "--long-prompts", "4", "--ab-static",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert out["prompts"] == 6 and out["paper"]["prompts"] == 2 and len(out["paper"]["rounds_prompts_per_s"]) == 2
    # the shared system/instruction prefix is computed once per culture; padding only adds tokens
    assert out["non_prefix_tokens"] < out["prompt_tokens"] and out["batched_tokens"] >= out["non_prefix_tokens"]
    for mode in ("sample", "greedy", "logprob", "logprob-bf16", "sample@5", "greedy@5", "sample@5-static"):
        entry = out[mode]
        assert entry["prompts_per_s"] == pytest.approx(entry["prompts"] / entry["seconds"])
        assert entry["prompts"] == (4 if "@" in mode else 6)
        assert entry["speedup_vs_paper"] == pytest.approx(entry["prompts_per_s"] / out["paper"]["prompts_per_s"])
        assert 0 <= entry["valid"] <= 1
    for mode in ("logprob", "logprob-bf16"):
        assert out[mode]["valid"] == 1.0  # logprob always picks a valid option
        assert out[mode]["floor_s"] > 0 and out[mode]["vs_floor"] == pytest.approx(
            out[mode]["seconds"] / out[mode]["floor_s"]
        )
    # the paper's decoding on the seeded subset: continuous batching steps no finished row, static batches may
    for mode in ("sample@5", "greedy@5"):
        assert out[mode]["finished_row_share"] == 0 and out[mode]["decode_row_steps"] > 0
        assert out[f"{mode}-static"]["decode_row_steps"] >= out[mode]["decode_row_steps"]
        assert out[f"{mode}-static"]["schedule"] == "static" and out[mode]["schedule"] == "continuous"
    lo, hi = out["paper"]["seconds_per_prompt_95"]  # the ratio's interval comes from the paper loop's spread
    assert lo <= 1 / out["paper"]["prompts_per_s"] <= hi
    low, high = out["sample@5"]["speedup_vs_paper_95"]
    assert low <= out["sample@5"]["speedup_vs_paper"] <= high
    assert bench.seeded_subset(list(range(10)), 4) == bench.seeded_subset(list(range(10)), 4) != list(range(4))
    printed = capsys.readouterr().out
    assert "paper loop" in printed and "vs paper loop" in printed and "floor" in printed
    # bf16 speed depends on the CPU: every figure line names the CPU capability it was measured on
    assert out["cpu"] and all(f"[CPU {out['cpu']}]" in line for line in printed.splitlines() if "/s" in line)


def test_bench_runs_only_the_rows_asked_in_the_dtype_asked(tmp_path: Path) -> None:
    out = bench.main(
        ["--model", "tiny_random", "--questions", "2", "--cultures", "USA", "--paper-prompts", "2", "--long-tokens",
         "4", "--long-prompts", "0", "--dtype", "bfloat16", "--only", "greedy@4", "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert [name for name in ("sample", "greedy", "logprob", "sample@4", "greedy@4") if name in out] == ["greedy@4"]
    assert out["greedy@4"]["prompts"] == 2 and "bfloat16" in out["dtype"]
    assert bench.interval([2.0]) == (2.0, 2.0) and bench.interval([1.0, 3.0])[0] < 2.0 < bench.interval([1.0, 3.0])[1]
    times = [1.0 + 0.1 * i for i in range(24)]  # the default --paper-prompts
    lo, hi = bench.interval(times)
    mean, sem = statistics.fmean(times), statistics.stdev(times) / 24**0.5
    assert (mean - lo, hi - mean) == pytest.approx((2.0687 * sem, 2.0687 * sem), rel=1e-4)  # t, 23 df (was 1.96)
