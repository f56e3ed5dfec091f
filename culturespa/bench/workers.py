"""N-worker benchmark: the answers stage on 1 process against ``engine.devices=N`` worker processes, same prompts.

Each case runs the real stage (``generate`` with ``stage=answers``, culture-aware, WVS questions) into a fresh folder
and is timed end to end, worker start-up (spawn, imports, model load) included, since that is what a user waits for.
On CPU the N workers split the cores (``torch.set_num_threads(max(1, cores // N))`` each), so the figure is the
ratio of two ways of spending the same cores; on a GPU node each worker has a device of its own. The merged files
are compared with the one-process ones byte for byte (greedy / logprob), so the row also says the split is exact.

Run: ``python -m culturespa.bench.workers [--workers 2] [--questions 64] [--model smollm2_135m]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culturespa.generate.run import generate


def cpu_name() -> str:
    """The CPU model and whether it has native bf16 / AMX (what decides fp32 vs bf16 speed here)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    marks = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model} ({', '.join(marks) or 'no avx512_bf16/amx'}), {os.cpu_count()} cores"


def run_case(args: argparse.Namespace, devices: int, folder: Path) -> dict[str, Any]:
    """One timed run of the answers stage with ``engine.devices=devices`` into ``folder``."""
    from culturespa.config import compose  # the stage stack: loaded when the benchmark runs

    overrides = [
        "stage=answers",
        f"model={args.model}",
        "model.dtype=float32",
        "logger=none",
        "answers.input=wvs",
        "answers.setting=aware",
        f"cultures=[{','.join(args.cultures)}]",
        f"answers.limit={args.questions}",
        f"decoding={args.decoding}",
        f"answers.resume_chunk={args.chunk}",
        f"engine.devices={devices}",
        f"answers.output_dir={folder / 'answers'}",
    ]
    cfg = compose("generate", overrides, output_dir=folder / "run")
    started = time.perf_counter()
    summary = generate(cfg)
    wall = time.perf_counter() - started
    files = sorted((folder / "answers").glob("aware_*[A-Z].jsonl"))
    return {"devices": devices, "wall_s": wall, "answered": summary.get("answered"), "files": files}


def compare(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """The one-process case, then the N-worker case; each row with its speed-up and whether its files match."""
    one = run_case(args, 1, root / "one")
    many = run_case(args, args.workers, root / f"n{args.workers}")
    same = [a.read_bytes() == b.read_bytes() for a, b in zip(one["files"], many["files"], strict=True)]
    rows = []
    for case in (one, many):
        rows.append(
            {
                "workers": case["devices"],
                "wall_s": round(case["wall_s"], 1),
                "answers": case["answered"],
                "answers_per_s": round((case["answered"] or 0) / case["wall_s"], 2),
                "speed_up": round(one["wall_s"] / case["wall_s"], 2),
                "identical": all(same) if case is many else True,
            }
        )
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--cultures", nargs="+", default=["USA", "CHN"])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--decoding", default="logprob", choices=("logprob", "greedy"))
    parser.add_argument("--chunk", type=int, default=16, help="answers.resume_chunk: the unit dealt to workers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Print (and return) the 1-process and N-worker rows."""
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        rows = compare(args, Path(tmp))
    print(
        f"N-worker answering ({args.decoding}, {args.questions} questions x {len(args.cultures)} cultures, {args.model}, fp32) on {cpu_name()}"
    )
    print("| workers | wall s | answers | answers/s | speed-up | files identical |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['wall_s']} | {r['answers']} | {r['answers_per_s']} | {r['speed_up']}x | {r['identical']} |"
        )
    return rows


if __name__ == "__main__":
    main()
