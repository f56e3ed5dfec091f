"""``python -m culturespa.acceptance --out DIR [--dry]``: the GPU acceptance run (see the package docstring and
docs/gpu-scale.md). Writes ``DIR/acceptance.json`` and ``DIR/acceptance.md`` and prints their paths.

Each step's budget is the time it is expected to need; a step that would not fit in what is left of ``--total-s`` is
skipped (recorded), so the run always comes back with its report within the machine's time limit.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from culturespa.acceptance.answering import answering_step, reference_step
from culturespa.acceptance.estimate import paper_hours
from culturespa.acceptance.evaluation import evaluation_step
from culturespa.acceptance.fsdp import fsdp_step
from culturespa.acceptance.models import Setup, build_and_save, embedded_tokenizer
from culturespa.acceptance.record import Run, Skip, StepResult, write_report
from culturespa.acceptance.training import sft_step
from culturespa.models.dtype import cpu_capability
from culturespa.models.loader import default_cache_dir
from culturespa.wvs.survey import default_data_dir

# expected seconds per step on one H100/H200 (8B shape), and on 2 CPU cores for --dry (tiny model)
GPU_BUDGET = {"m0": 60, "a1": 15, "a2": 90, "b1": 60, "b2": 80, "c1": 80, "d1": 60, "e1": 1}
DRY_BUDGET = {"m0": 5, "a1": 5, "a2": 15, "b1": 10, "b2": 12, "c1": 2, "d1": 6, "e1": 1}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m culturespa.acceptance", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for acceptance.json / acceptance.md (and work files)")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny random model: the same steps, small")
    parser.add_argument("--total-s", type=float, default=None, help="wall-clock budget (default 480; dry 300)")
    parser.add_argument("--tokenizer", default=None, help="a saved SmolLM2 tokenizer folder (a bare GPU image)")
    parser.add_argument("--wvs-dir", default=None, help="WVS data folder (default: the project's data/wvs)")
    parser.add_argument("--train-steps", type=int, default=None, help="SFT steps per run (default 20; dry 4)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts answered in step a (default 32; dry 4)")
    return parser.parse_args(list(argv) if argv is not None else None)


def make_setup(args: argparse.Namespace) -> Setup:

    cuda = torch.cuda.is_available() and not args.dry
    if not cuda and not args.dry:
        print("[acceptance] no CUDA device: running the CPU dry path (--dry)")
    dry = not cuda
    return Setup(
        out=Path(args.out).resolve(),
        dry=dry,
        device="cuda" if cuda else "cpu",
        dtype="bfloat16" if cuda else "float32",
        cache_dir=str(default_cache_dir()),
        wvs_dir=str(args.wvs_dir or default_data_dir()),
        tokenizer_dir=args.tokenizer,
        prompts=args.prompts or (4 if dry else 32),
        loop_prompts=1 if dry else 4,
        max_new_tokens=8 if dry else 256,  # dry: the code path, not the figures
        train_steps=args.train_steps or (4 if dry else 20),
        eval_questions=4 if dry else 16,
    )


def header(setup: Setup) -> dict[str, Any]:
    cuda = setup.device == "cuda"
    return {
        "mode": "dry (CPU, tiny model)" if setup.dry else "CUDA (Llama-3-8B shape, random weights)",
        "device": torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or 'CPU'} {cpu_capability()}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "dtype": setup.dtype,
        "threads": torch.get_num_threads(),
    }


def run_all(setup: Setup, total_s: float) -> Run:
    """Every step in order; a failed step never stops the next (later steps say what they miss)."""
    budget = DRY_BUDGET if setup.dry else GPU_BUDGET
    run, held, trained = Run(total_s), {}, {}
    tokenizer = embedded_tokenizer(setup)

    def build(row: StepResult) -> None:
        held["model"], figures = build_and_save(setup, tokenizer)
        row.figures.update(figures)

    run.step("m0", "random model on the device + save", "1, 2 (set-up)", budget["m0"], build)
    run.step("a1", "tiny model vs CPU fp32 reference", "1", budget["a1"], lambda r: reference_step(setup, tokenizer, r))
    if "model" in held:
        run.step(
            "a2",
            "answering: engine vs generate vs loop",
            "1",
            budget["a2"],
            lambda r: answering_step(setup, held["model"], tokenizer, r),
        )
    held.clear()
    gc.collect()
    if setup.device == "cuda":
        torch.cuda.empty_cache()
    if setup.model_dir is not None:
        reserve = budget["d1"] + budget["e1"] + 10  # the FSDP subprocess may use what the evaluation does not need
        run.step("b1", "LoRA SFT (bf16 on CUDA)", "2", budget["b1"], lambda r: sft_step(setup, "lora", r, trained))
        run.step("b2", "QLoRA SFT (NF4)", "2", budget["b2"], lambda r: sft_step(setup, "qlora", r, trained))
        fsdp_timeout = max(float(budget["c1"]), run.left() - reserve)
        run.step("c1", "FSDP step + adapter-only ckpt", "2", budget["c1"], lambda r: fsdp_step(setup, r, fsdp_timeout))
        run.step(
            "d1",
            "evaluate the QLoRA adapter + reload",
            "2 (reload), 3",
            budget["d1"],
            lambda r: evaluation_step(setup, trained.get("qlora"), r),
        )
    answer = run.find("a2")
    run.step("e1", "paper full run time (from a2)", "4", budget["e1"], lambda r: estimate_step(answer, r))
    return run


def estimate_step(answer: StepResult | None, row: StepResult) -> None:
    """Hours of the paper's inference at the measured engine rates (an upper bound: random weights never stop, so
    every reply runs the full 256 tokens)."""

    rate = (answer.figures.get("engine_sample_prompts_per_s") if answer else None) or 0.0
    if rate <= 0:
        raise Skip("no engine sample rate (step a2 did not finish)")
    row.figures.update(paper_hours(rate, answer.figures.get("engine_logprob_prompts_per_s") if answer else None))
    tokens = answer.figures.get("max_new_tokens") if answer else None
    row.figures["basis"] = f"a2 sample ({tokens} new tokens) for answers, a2 logprob for evaluation; 8 GPUs = 8 shards"


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    setup = make_setup(args)
    setup.out.mkdir(parents=True, exist_ok=True)
    run = run_all(setup, args.total_s or (300.0 if setup.dry else 480.0))
    json_path, md_path = write_report(setup.out, run, header(setup))
    print(md_path.read_text(encoding="utf-8"))
    print(f"acceptance report: {json_path} and {md_path}")
    return json_path


if __name__ == "__main__":
    main()
