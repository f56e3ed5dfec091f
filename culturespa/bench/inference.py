"""Answer-collection benchmark on the embedded model: the paper-style loop against the engine in every mode.

The paper collected answers one prompt at a time, sampling (temperature 0.6, top-p 0.9) up to 256 new tokens. We time
that loop on a sample of the prompts, once before and once after the engine runs (best of the two, same seeded
replies, so a machine that slows down in between does not flatter the ratio), and the engine (sample / greedy /
logprob, plus logprob in bf16) on the whole prompt set: by default an evaluation-sized one, all 259 WVS questions ×
culture-aware system prompts of two cultures, built with the real PromptBuilder (a real answer or evaluation stage
runs hundreds to thousands of prompts per culture; a few dozen would mostly time batch set-up). The compute floor is
2 × parameters × (prompt tokens outside each group's shared prefix) ÷ the matmul FLOP/s measured here, in the same
process and dtype, right before the logprob run — so a busy machine slows floor and engine alike. Both are also
given by process CPU time, which a machine shared with other jobs inflates far less than wall time.

The paper's own decoding (sampling, up to 256 new tokens) is timed twice more on a seeded subset of the prompt set
(``--long-prompts``; 0 = all): with the engine's continuous batching, and, with ``--ab-static``, with the static
batches it replaced, in the same process (so the ratio holds on a busy machine), each with the share of decode
row-steps spent on rows whose reply had already ended. The paper loop's rate per prompt is what the ratios compare.

The paper loop's seconds per prompt vary with each reply's length, so every ratio to it carries a 95 % interval from
the spread over its sampled prompts. ``--dtype bfloat16`` runs the paper loop and the generation rows in bf16 (what
``model.dtype=auto`` picks on CPUs with AVX512-BF16 or AMX); ``--only`` runs the named engine rows alone.

Run: ``python -m culturespa.bench.inference [--questions 259] [--cultures USA CHN] [--paper-prompts 24]
[--long-prompts 0] [--ab-static] [--dtype float32|bfloat16] [--only sample@256 ...] [--threads N]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from typing import Any

import torch

from culturespa.config import compose
from culturespa.evaluate.uncertainty import t_interval
from culturespa.infer.engine import Decoding, Engine, Request
from culturespa.infer.parsing import parse_answer
from culturespa.models.dtype import cpu_capability
from culturespa.prompts.builder import PromptBuilder, PromptStyle
from culturespa.wvs.survey import WVSData

PAPER = {"temperature": 0.6, "top_p": 0.9, "max_new_tokens": 256}


def layer_shapes(config: Any) -> list[tuple[int, int]]:
    """(in, out) of every projection in one decoder layer: q, k, v, o, gate, up, down (GQA-aware)."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads) * head_dim
    inner = int(getattr(config, "intermediate_size", 4 * hidden))
    return [
        (hidden, heads * head_dim),
        (hidden, kv),
        (hidden, kv),
        (heads * head_dim, hidden),
        (hidden, inner),
        (hidden, inner),
        (inner, hidden),
    ]


def matmul_flops(
    dtype: torch.dtype, rows: int, shapes: Sequence[tuple[int, int]], seconds: float = 2.0
) -> tuple[float, float]:
    """Best FLOP/s of the matmuls of one decoder layer at ``rows`` tokens, back to back (the exact shapes a prefill
    batch multiplies, so small GQA projections count at their real efficiency): by wall clock, and by process CPU
    time × threads (what the same kernels reach when the machine is not shared)."""
    weights = [torch.randn(i, o, dtype=dtype) for i, o in shapes]
    inputs = {i: torch.randn(rows, i, dtype=dtype) for i, _ in shapes}
    flops = sum(2 * rows * i * o for i, o in shapes)
    for w in weights:
        inputs[w.shape[0]] @ w
    best_wall = best_cpu = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        wall, cpu = time.perf_counter(), time.process_time()
        for w in weights:
            inputs[w.shape[0]] @ w
        best_wall = max(best_wall, flops / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, flops * torch.get_num_threads() / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu


def build_prompts(cfg: Any, n_questions: int, cultures: Sequence[str]) -> list[Any]:

    wvs = WVSData.load(cfg.paths.wvs_dir)
    builder = PromptBuilder(PromptStyle.from_config(cfg.templates, cfg.prompt))
    pool = wvs.eval_questions
    step = max(1, len(pool) // n_questions)
    questions = pool[::step][:n_questions]  # spread over all topics, incl. 10- and 11-option scales
    return [
        Request(f"{q.id}|{c}", builder.answer_messages(q, "aware", c), q.numbers) for c in cultures for q in questions
    ]


def paper_loop(engine: Any, requests: Sequence[Any]) -> tuple[float, float, float]:
    """One prompt at a time with HF ``generate``: (seconds per prompt, valid rate, mean new tokens, 95 % interval of
    the seconds per prompt)."""

    tok, model = engine.tokenizer, engine.model
    valid, new_tokens = 0, 0
    torch.manual_seed(0)
    warm = tok(engine.render(requests[0].messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():  # one-off set-up outside the timing, as for the engine
        model.generate(
            warm.to(engine.device),
            attention_mask=torch.ones_like(warm).to(engine.device),
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=engine.pad_id,
        )
    start, times = time.perf_counter(), []
    for req in requests:
        began = time.perf_counter()
        ids = tok(engine.render(req.messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                ids.to(engine.device),
                attention_mask=torch.ones_like(ids).to(engine.device),
                do_sample=True,
                pad_token_id=engine.pad_id,
                **PAPER,
            )
        reply = out[0, ids.shape[1] :]
        new_tokens += int(reply.numel())
        valid += parse_answer(tok.decode(reply, skip_special_tokens=True), req.numbers) is not None
        times.append(time.perf_counter() - began)
    n = len(requests)
    return (time.perf_counter() - start) / n, valid / n, new_tokens / n, interval(times)


def interval(times: Sequence[float]) -> tuple[float, float]:
    """95 % t interval of the mean seconds per prompt over the sampled prompts (reply lengths, and so times, vary from
    prompt to prompt much more than between runs); its low end stays above 0, as the ratios divide by it. One prompt:
    the mean alone."""
    found = t_interval(times, 0.95)
    if found is None:
        mean = sum(times) / len(times)
        return mean, mean
    return max(found[0], 1e-9), found[1]


def run_engine(engine: Any, requests: Sequence[Any], decoding: Any, rounds: int = 2) -> dict[str, Any]:
    """Wall seconds and process CPU seconds for all requests (best of ``rounds``: the first also pays one-off kernel
    set-up for each new batch shape, which a long run amortises), the valid-answer rate, and the share of decode
    row-steps spent on finished rows (over all rounds)."""
    best = (float("inf"), float("inf"))
    rows, live = engine.stats.row_steps, engine.stats.live_row_steps
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        results = [r for batch in engine.answer(requests, decoding, seed=0) for r in batch]
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    assert len(results) == len(requests)
    rows, live = engine.stats.row_steps - rows, engine.stats.live_row_steps - live
    return {
        "prompts_per_s": len(requests) / best[0],
        "seconds": best[0],
        "cpu_seconds": best[1],
        "valid": sum(r.valid for r in results) / len(results),
        "rounds": rounds,
        "prompts": len(requests),
        "decode_row_steps": rows,
        "finished_row_share": 1 - live / rows if rows else 0.0,
        "mean_reply_chars": sum(len(r.text) for r in results) / len(results),
    }


def token_counts(engine: Any, requests: Sequence[Any]) -> tuple[int, int, int, int]:
    """From the engine's own logprob plan: (all prompt tokens; tokens outside the shared prefixes, each prefix counted
    once per group — the floor's count; tokens the passes run, i.e. each prefix once plus rows × widest suffix per
    batch, padding included; number of batches)."""
    batches = engine._plan(engine._prepare(requests), tight=True)
    total = sum(len(it.ids) for b in batches for it in b.items)
    members: dict[tuple[int, ...], int] = {}
    for b in batches:
        members[b.prefix] = members.get(b.prefix, 0) + len(b.items)
    shared = sum(len(prefix) * (count - 1) for prefix, count in members.items() if prefix)
    run = sum(len(p) for p in members) + sum(
        len(b.items) * max(len(it.ids) - len(b.prefix) for it in b.items) for b in batches
    )
    return total, total - shared, run, len(batches)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="culturespa.bench.inference", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model preset")
    parser.add_argument("--questions", type=int, default=259, help="WVS questions, spread over all topics")
    parser.add_argument("--cultures", nargs="+", default=["USA", "CHN"])
    parser.add_argument("--paper-prompts", type=int, default=24, help="prompts the paper-style loop answers per round")
    parser.add_argument("--rounds", type=int, default=2, help="logprob rounds (best counts)")
    parser.add_argument("--gen-rounds", type=int, default=1, help="sample/greedy rounds (best counts)")
    parser.add_argument("--gen-tokens", type=int, default=16, help="sample/greedy max new tokens")
    parser.add_argument("--long-tokens", type=int, default=PAPER["max_new_tokens"], help="paper-decoding rows' max")
    parser.add_argument("--long-prompts", type=int, default=0, help="seeded subset for them (0 = every prompt)")
    parser.add_argument("--ab-static", action="store_true", help="also time them with static batches (before)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="model dtype of the paper loop and the "
        "sample/greedy rows (bfloat16 = what model.dtype=auto picks on CPUs with AVX512-BF16 or AMX)",
    )
    parser.add_argument("--only", nargs="+", default=None, help="run only these engine rows (e.g. sample@256)")
    parser.add_argument(
        "--max-padding", type=float, default=0.1, help="engine.max_padding (negative = fixed-size batches)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--output-dir", default="/tmp/culturespa-bench")
    return parser.parse_args(list(argv) if argv is not None else [])


def seeded_subset(requests: Sequence[Any], n: int, seed: int = 0) -> list[Any]:
    """``n`` requests drawn with a fixed seed, in their original order (all of them when ``n`` is 0 or too big)."""
    if n <= 0 or n >= len(requests):
        return list(requests)
    chosen = sorted(random.Random(seed).sample(range(len(requests)), n))
    return [requests[i] for i in chosen]


def setup(args: argparse.Namespace) -> tuple[Any, list[Any], dict[str, Any]]:
    """The fp32 engine with the bench's batching, the prompt set and the figures that describe it."""

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"model={args.model}", f"model.dtype={args.dtype}", "logger=none"]  # the baseline; bf16 logprob below
    cfg = compose("generate", overrides, output_dir=args.output_dir)
    engine = Engine.from_config(cfg)
    engine.batch_size = args.batch_size
    engine.max_padding = None if args.max_padding < 0 else args.max_padding
    requests = build_prompts(cfg, args.questions, args.cultures)
    total_tokens, own_tokens, run_tokens, n_batches = token_counts(engine, requests)
    out: dict[str, Any] = {
        "model": args.model,
        "cpu": cpu_capability(),
        "prompts": len(requests),
        "params": sum(p.numel() for p in engine.model.parameters()),
        "threads": torch.get_num_threads(),
        "dtype": str(engine.model.dtype),
        "prompt_tokens": total_tokens,
        "non_prefix_tokens": own_tokens,
        "batched_tokens": run_tokens,
        "logprob_batches": n_batches,
    }
    return engine, requests, out


def print_header(args: argparse.Namespace, engine: Any, out: dict[str, Any], cap: str) -> None:
    print(
        f"infer bench: {args.model} ({out['params'] / 1e6:.1f} M params, {engine.model.dtype}), {out['prompts']} "
        f"prompts ({out['prompts'] // len(args.cultures)} WVS questions x {len(args.cultures)} cultures, aware "
        f"prompts), {out['threads']} torch threads, batch {args.batch_size}, max padding {engine.max_padding}, "
        f"prepack {engine.prepack}, {cap}"
    )
    print(
        f"  prompt tokens: {out['prompt_tokens']} in all, {out['non_prefix_tokens']} outside shared prefixes, "
        f"{out['batched_tokens']} run in {out['logprob_batches']} logprob batches "
        f"({out['batched_tokens'] / out['non_prefix_tokens'] - 1:.0%} padding)"
    )


def modes(args: argparse.Namespace, n_long: int) -> list[tuple[str, Any, torch.dtype, int, str, bool]]:
    """(row name, decoding, model dtype, rounds, engine.schedule, on the long subset) of every engine row."""

    paper, long = (PAPER["temperature"], PAPER["top_p"]), args.long_tokens
    base = getattr(torch, args.dtype)
    rows = [
        ("sample", Decoding("sample", *paper, args.gen_tokens), base, args.gen_rounds, "continuous", False),
        ("greedy", Decoding("greedy", max_new_tokens=args.gen_tokens), base, args.gen_rounds, "continuous", False),
        (f"sample@{long}", Decoding("sample", *paper, long), base, 1, "continuous", True),
        (f"greedy@{long}", Decoding("greedy", max_new_tokens=long), base, 1, "continuous", True),
    ]
    if args.ab_static:
        rows += [(f"{name}-static", dec, dt, r, "static", True) for name, dec, dt, r, _, on_long in rows[2:4]]
    logprob = Decoding("logprob")
    rows += [
        ("logprob", logprob, torch.float32, args.rounds, "continuous", False),
        ("logprob-bf16", logprob, torch.bfloat16, args.rounds, "continuous", False),
    ]
    if args.only:
        rows = [row for row in rows if row[0] in args.only]
    if n_long == 0:
        rows = [row for row in rows if not row[5]]
    return rows


def floor_figures(
    entry: dict[str, Any], params: int, own_tokens: int, flops: float, cpu_flops: float, dtype: torch.dtype, cap: str
) -> str:
    """Add the logprob compute floor to ``entry``; the line that prints it."""
    seconds, threads = entry["seconds"], torch.get_num_threads()
    floor = 2 * params * own_tokens / flops
    cpu_floor = 2 * params * own_tokens / cpu_flops  # in wall seconds of an unshared machine
    entry.update(
        {
            "matmul_gflops": flops / 1e9,
            "floor_s": floor,
            "vs_floor": seconds / floor,
            "matmul_gflops_cpu_time": cpu_flops / 1e9,
            "vs_floor_cpu_time": entry["cpu_seconds"] / threads / cpu_floor,
        }
    )
    return (
        f"\n  {'':13s}  floor {floor:.1f} s at {flops / 1e9:.0f} GFLOP/s {str(dtype)[6:]} matmul"
        f" -> wall {seconds / floor:.2f}x floor;"
        f" by CPU time: floor {cpu_floor:.1f} s at {cpu_flops / 1e9:.0f} GFLOP/s"
        f" -> {entry['vs_floor_cpu_time']:.2f}x floor  {cap}"
    )


def engine_rows(args: argparse.Namespace, engine: Any, requests: list[Any], out: dict[str, Any], cap: str) -> list[str]:
    """Time every engine row (printing each as it comes); returns the row names."""

    base_model, model = engine.model, engine.model
    long_requests = seeded_subset(requests, args.long_prompts)
    shapes = layer_shapes(model.config)
    rows = min(4096, args.batch_size * max(1, out["non_prefix_tokens"] // max(1, len(requests))))
    names = []
    for name, decoding, dtype, rounds, schedule, on_long in modes(args, len(long_requests)):
        if model.dtype != dtype:  # load it in that dtype, as a user's `model.dtype=bfloat16` does
            other = compose("generate", [f"model={args.model}", f"model.dtype={str(dtype)[6:]}", "logger=none"],
                            output_dir=args.output_dir)  # fmt: skip
            model = Engine.from_config(other, tokenizer=engine.tokenizer).model
            engine.model = model
        if name.startswith("logprob"):
            flops, cpu_flops = matmul_flops(dtype, rows, shapes)
        engine.schedule = schedule
        entry = run_engine(engine, long_requests if on_long else requests, decoding, rounds)
        entry["schedule"] = schedule
        line = f"(wall {entry['seconds']:.1f} s, cpu {entry['cpu_seconds']:.1f} s, best of {rounds})  {cap}"
        if decoding.mode != "logprob":
            line = (
                f"{entry['prompts']} prompts, {schedule}, {entry['finished_row_share']:.1%} of "
                f"{entry['decode_row_steps']} decode row-steps on finished rows " + line
            )
        if name.startswith("logprob"):
            line += floor_figures(entry, out["params"], out["non_prefix_tokens"], flops, cpu_flops, dtype, cap)
        out[name] = entry
        names.append(name)
        print(f"  {name:13s}: {entry['prompts_per_s']:8.2f} prompts/s  valid {entry['valid']:6.1%}  {line}", flush=True)
    engine.model, engine.schedule = base_model, "continuous"
    return names


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    engine, requests, out = setup(args)
    cap = f"[CPU {out['cpu']}]"  # printed beside every figure: bf16 speed depends on it
    print_header(args, engine, out, cap)
    paper_requests = seeded_subset(requests, args.paper_prompts)
    label = f"seeded subset of {len(paper_requests)} of {len(requests)} prompts"
    paper_rounds = [paper_loop(engine, paper_requests)]
    print(f"  paper loop   : {1 / paper_rounds[0][0]:8.2f} prompts/s  (round 1, {label})  {cap}", flush=True)
    names = engine_rows(args, engine, requests, out, cap)
    paper_rounds.append(paper_loop(engine, paper_requests))  # again, on the model it ran on before
    paper_s, paper_valid, paper_new, (paper_lo, paper_hi) = min(paper_rounds)
    out["paper"] = {
        "prompts_per_s": 1 / paper_s,
        "rounds_prompts_per_s": [1 / r[0] for r in paper_rounds],
        "valid": paper_valid,
        "mean_new_tokens": paper_new,
        "seconds_per_prompt_95": [paper_lo, paper_hi],
        "prompts": len(paper_requests),
        "subset": label,
    }
    print(
        f"  paper loop   : {1 / paper_s:8.2f} prompts/s  valid {paper_valid:6.1%}  "
        f"(best of rounds {', '.join(f'{1 / r[0]:.2f}' for r in paper_rounds)}; {label}, "
        f"{paper_new:.0f} new tokens each on average, {paper_s:.2f} s per prompt [95 % {paper_lo:.2f}, "
        f"{paper_hi:.2f}]; its rate per prompt is compared)  {cap}"
    )
    for name in names:
        rate = out[name]["prompts_per_s"]
        out[name]["speedup_vs_paper"] = rate * paper_s
        out[name]["speedup_vs_paper_95"] = [rate * paper_lo, rate * paper_hi]
        print(
            f"  {name:13s}: x{rate * paper_s:6.1f} vs paper loop [95 % {rate * paper_lo:.1f}, {rate * paper_hi:.1f}: "
            f"from the paper loop's prompt-to-prompt spread]  {cap}"
        )
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
