"""Next-token choice for the decode loop: greedy, or temperature + top-p sampling with one generator per request.

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


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens whose mass reaches ``top_p`` (the top token always stays)."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def choose(
    logits: torch.Tensor, greedy: bool, temperature: float, top_p: float, generators: list[torch.Generator] | None
) -> torch.Tensor:
    """One token id per row of ``logits`` [B, V]."""
    if greedy:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
    probs = top_p_filter(probs, top_p)
    assert generators is not None and len(generators) == probs.shape[0]
    picks = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
    return torch.cat(picks)
