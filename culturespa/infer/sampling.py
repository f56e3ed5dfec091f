"""Next-token choice for the decode loop: greedy, or temperature, then top-k, then top-p sampling with one generator
per request (the order and the top-k default of 50 are those of transformers' ``generate``, which the paper called
without setting ``top_k``).

A generator per request, seeded from (seed, key), makes a request's sample independent of which batch it lands in
and of how many requests came before it, so a resumed run draws the same answers (up to float noise in the logits).
"""

from __future__ import annotations

import hashlib

import torch


def request_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generators(seed: int, keys: list[str], device: torch.device) -> list[torch.Generator]:
    gens = []
    for key in keys:
        g = torch.Generator(device=device)
        g.manual_seed(request_seed(seed, key))
        gens.append(g)
    return gens


DEFAULT_TOP_K = 50  # transformers' GenerationConfig default; 0 turns top-k off


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set every logit below the ``top_k``-th largest of its row to -inf (ties with it stay); ``top_k`` 0 = no cut."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens whose mass reaches ``top_p`` (the top token always stays)."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def choose(
    logits: torch.Tensor,
    greedy: bool,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator] | None,
    top_k: int = DEFAULT_TOP_K,
) -> torch.Tensor:
    """One token id per row of ``logits`` [B, V]."""
    if greedy:
        return torch.argmax(logits, dim=-1)
    scaled = top_k_filter(logits.float() / max(temperature, 1e-6), top_k)
    probs = top_p_filter(torch.softmax(scaled, dim=-1), top_p)
    assert generators is not None and len(generators) == probs.shape[0]
    picks = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
    return torch.cat(picks)
