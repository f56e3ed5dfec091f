"""Step (a): answering on the run's device with culturespa's engine, sampled at the paper's decoding (T 0.6, top-p
0.9, top-k 50, up to 256 new tokens) and by log-probs, against a plain batched ``generate`` and the paper's
one-prompt loop on the same prompts; plus a tiny model's answers on the device against a CPU fp32 reference.

"Finished rows" are rows of a batch that already produced their end-of-turn token while the batch keeps decoding for
its other rows: the share of such row-steps is what a batch wastes. For the engine it is inferred from each batch's
replies (re-tokenised, so within a token or two); for ``generate`` it is read off the output ids exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from culturespa.acceptance.models import DRY_SHAPE, Setup, random_llama
from culturespa.acceptance.record import StepResult
from culturespa.bench.inference import build_prompts
from culturespa.config import compose
from culturespa.infer.engine import Decoding, Engine, Request

PAPER_DECODING = {"temperature": 0.6, "top_p": 0.9, "top_k": 50}
BATCH = 32


def prompts(setup: Setup, n: int) -> list[Request]:
    """``n`` culture-aware WVS prompts (USA and CHN), built with the project's prompt builder."""
    cfg = compose("generate", ["logger=none", f"paths.wvs_dir={setup.wvs_dir}"], output_dir=setup.out / "compose")
    return build_prompts(cfg, max(1, (n + 1) // 2), ["USA", "CHN"])[:n]


def _timed(device: str, work: Any) -> tuple[Any, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = work()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def engine_rates(setup: Setup, engine: Engine, requests: Sequence[Request], row: StepResult) -> None:
    """Engine: sampled at the paper's decoding and by log-probs (after one untimed warm-up batch)."""
    sample = Decoding(mode="sample", max_new_tokens=setup.max_new_tokens, **PAPER_DECODING)
    list(engine.answer(requests[:2], Decoding(mode="sample", max_new_tokens=2, **PAPER_DECODING)))  # warm-up
    batches, seconds = _timed(setup.device, lambda: list(engine.answer(requests, sample, seed=0)))
    lengths = [[_reply_tokens(engine, r.text, setup.max_new_tokens) for r in batch] for batch in batches]
    new_tokens = sum(sum(b) for b in lengths)
    finished, steps = 0, 0
    for batch in lengths:
        width = max(batch)
        steps += width * len(batch)
        finished += sum(width - n for n in batch)
    row.figures["engine_sample_prompts_per_s"] = len(requests) / seconds
    row.figures["engine_sample_new_tokens_per_s"] = new_tokens / seconds
    row.figures["engine_finished_row_share"] = finished / max(1, steps)
    row.figures["engine_valid_share"] = sum(r.valid for b in batches for r in b) / len(requests)
    logprob = Decoding(mode="logprob", max_new_tokens=0)
    list(engine.answer(requests[:2], logprob))  # warm-up
    results, seconds = _timed(setup.device, lambda: [r for b in engine.answer(requests, logprob) for r in b])
    row.figures["engine_logprob_prompts_per_s"] = len(requests) / seconds
    row.checks["every logprob answer valid"] = all(r.valid for r in results)


def _reply_tokens(engine: Engine, text: str, cap: int) -> int:
    """Decode steps a row ran: its reply's tokens, plus the end-of-turn token when it stopped before the cap."""
    n = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    return min(cap, n + 1)


def generate_rates(setup: Setup, engine: Engine, requests: Sequence[Request], row: StepResult) -> None:
    """Plain HF ``generate`` on the same prompts, left-padded batches of ``BATCH``, same sampling settings."""
    tok, model = engine.tokenizer, engine.model
    texts = [engine.render(r.messages) for r in requests]
    side, tok.padding_side = tok.padding_side, "left"
    stop = sorted(engine.stop_ids)

    def run() -> tuple[int, int, int]:
        new, finished, steps = 0, 0, 0
        for i in range(0, len(texts), BATCH):
            enc = tok(texts[i : i + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(engine.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    do_sample=True,
                    max_new_tokens=setup.max_new_tokens,
                    pad_token_id=engine.pad_id,
                    eos_token_id=stop,
                    **PAPER_DECODING,
                )
            reply = out[:, enc["input_ids"].shape[1] :]
            is_stop = torch.isin(reply, torch.tensor(stop, device=reply.device))
            # a row is finished after its first stop token: later positions are wasted steps
            after = (is_stop.int().cumsum(dim=1) - is_stop.int()) > 0
            finished += int(after.sum())
            steps += reply.numel()
            new += reply.numel() - int(after.sum())
        return new, finished, steps

    torch.manual_seed(0)
    try:
        (new, finished, steps), seconds = _timed(setup.device, run)
    finally:
        tok.padding_side = side
    row.figures["generate_prompts_per_s"] = len(requests) / seconds
    row.figures["generate_new_tokens_per_s"] = new / seconds
    row.figures["generate_finished_row_share"] = finished / max(1, steps)


def loop_rate(setup: Setup, engine: Engine, requests: Sequence[Request], row: StepResult) -> None:
    """The paper's loop: one prompt at a time with ``generate`` at the paper's sampling settings."""
    tok, model = engine.tokenizer, engine.model

    def run() -> int:
        new = 0
        for req in requests:
            ids = tok(engine.render(req.messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = ids.to(engine.device)
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    max_new_tokens=setup.max_new_tokens,
                    pad_token_id=engine.pad_id,
                    **PAPER_DECODING,
                )
            new += int(out.shape[1] - ids.shape[1])
        return new

    torch.manual_seed(0)
    new, seconds = _timed(setup.device, run)
    row.figures["loop_prompts_per_s"] = len(requests) / seconds
    row.figures["loop_mean_new_tokens"] = new / len(requests)
    if row.figures.get("engine_sample_prompts_per_s"):
        row.figures["engine_sample_x_loop"] = row.figures["engine_sample_prompts_per_s"] * seconds / len(requests)


def answering_step(setup: Setup, model: Any, tokenizer: Any, row: StepResult) -> None:
    """Step (a) on the run's model (already on its device)."""
    requests = prompts(setup, setup.prompts)
    engine = Engine(model, tokenizer, batch_size=BATCH, device=setup.device)
    row.figures["prompts"] = len(requests)
    row.figures["max_new_tokens"] = setup.max_new_tokens
    row.figures["device"] = str(engine.device)
    engine_rates(setup, engine, requests, row)
    generate_rates(setup, engine, requests, row)
    loop_rate(setup, engine, requests[: setup.loop_prompts], row)


def reference_step(setup: Setup, tokenizer: Any, row: StepResult, tolerance: float = 1e-3) -> None:
    """A tiny random model's log-prob answers on the run's device (fp32) against the same model on the CPU (fp32,
    one prompt per batch, no prefix cache). In ``--dry`` both run on the CPU: then it checks batching invariance."""
    requests = prompts(setup, min(8, setup.prompts))
    reference_model = random_llama(DRY_SHAPE, tokenizer, "cpu", "float32", seed=1)
    reference = Engine(reference_model, tokenizer, batch_size=1, prefix_cache=False, device="cpu", prepack=False)
    logprob = Decoding(mode="logprob", max_new_tokens=0)
    want = sorted((r for b in reference.answer(requests, logprob) for r in b), key=lambda r: r.key)
    device_model = random_llama(DRY_SHAPE, tokenizer, "cpu", "float32", seed=1).to(setup.device)
    engine = Engine(device_model, tokenizer, batch_size=BATCH, device=setup.device)
    got = sorted((r for b in engine.answer(requests, logprob) for r in b), key=lambda r: r.key)
    diff = max(
        abs(w.distribution[k] - g.distribution[k])  # type: ignore[index]
        for w, g in zip(want, got, strict=True)
        for k in w.distribution or {}
    )
    row.figures["compared"] = f"{engine.device} fp32 batched vs cpu fp32 one by one"
    row.figures["max_prob_diff"] = diff
    row.checks[f"distributions within {tolerance:g}"] = diff <= tolerance
    row.checks["same answers"] = [w.answer for w in want] == [g.answer for g in got]
