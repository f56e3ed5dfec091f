"""The paper's full inference time on 1 and 8 GPUs: from the acceptance run's measured prompts/s, and, before any GPU
has run, from a byte model of decoding (each decode step reads every weight and the batch's KV cache once from HBM).

Workload (assumptions stated once, here): answer collection 13,000 questions × 19 answer settings, sampled, at most
256 new tokens; evaluation 259 WVS questions × 18 cultures × 6 prompt variants × 2 models (base and adapter). Eight
GPUs answer disjoint shards (``answers.shard``), so the time divides by 8 (no communication).
"""

from __future__ import annotations

from dataclasses import dataclass

ANSWER_PROMPTS = 13_000 * 19
EVAL_PROMPTS = 259 * 18 * 6 * 2
HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12}


@dataclass(frozen=True)
class DecodeShape:
    """What one decode step of a Llama-3-8B-shaped model reads from memory."""

    weight_bytes: float = 8.03e9 * 2  # bf16
    kv_bytes_per_token: float = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads x 128, bf16: 128 KiB
    prompt_tokens: int = 120  # a culture-aware WVS prompt
    new_tokens: int = 256


def decode_floor_s(shape: DecodeShape, batch: int, bandwidth: float) -> float:
    """Seconds to decode ``batch`` prompts to ``new_tokens``: each step reads the weights once and every row's KV
    cache (mean context: prompt + half the new tokens)."""
    context = shape.prompt_tokens + shape.new_tokens / 2
    per_step = (shape.weight_bytes + batch * context * shape.kv_bytes_per_token) / bandwidth
    return shape.new_tokens * per_step


def prompts_per_s_floor(shape: DecodeShape, batch: int, bandwidth: float) -> float:
    return batch / decode_floor_s(shape, batch, bandwidth)


def hours(prompts: int, prompts_per_s: float, gpus: int) -> float:
    return prompts / prompts_per_s / gpus / 3600.0


def paper_hours(sample_prompts_per_s: float, eval_prompts_per_s: float | None = None) -> dict[str, float]:
    """Answer collection + evaluation, in hours, on 1 and 8 GPUs (evaluation at ``eval_prompts_per_s``, else sampled
    like the answers)."""
    evaluation = eval_prompts_per_s or sample_prompts_per_s
    return {
        f"{gpus}_gpu_h": hours(ANSWER_PROMPTS, sample_prompts_per_s, gpus) + hours(EVAL_PROMPTS, evaluation, gpus)
        for gpus in (1, 8)
    }
