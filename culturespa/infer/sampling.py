"""Next-token choice for the decode loop: greedy, or temperature, then top-k, then top-p sampling with one generator
per request (the order and the top-k default of 50 are those of transformers' ``generate``, which the paper called
without setting ``top_k``).

Vectorised over the batch: ``torch.topk`` keeps the k best logits of every row (no full-vocabulary sort unless top-k
is off), top-p trims the sorted survivors, and each row's token is picked by inverse CDF from one uniform drawn from
its own request's generator. A generator per request, seeded from (seed, key), makes a request's sample independent
of which batch it lands in, of its neighbours and of how many requests came before it, so a resumed run draws the
same answers (up to float noise in the logits).
"""

from __future__ import annotations

import hashlib

import torch

DEFAULT_TOP_K = 50  # transformers' GenerationConfig default; 0 turns top-k off


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


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set every logit below the ``top_k``-th largest of its row to -inf (ties with it stay); ``top_k`` 0 = no cut.
    The full-vocabulary reference for :func:`candidates`."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens whose mass reaches ``top_p`` (the top token always stays).
    The full-vocabulary reference for :func:`candidates`."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def candidates(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling distribution of every row as (probabilities [B, K] in descending order, zeros last; token ids
    [B, K]): temperature, then top-k (ties with the k-th logit stay, as in transformers), then top-p."""
    scaled = logits.float() / max(temperature, 1e-6)
    vocab = scaled.shape[-1]
    if 0 < top_k < vocab:
        values, index = torch.topk(scaled, top_k, dim=-1)
        kth = values[:, -1:]
        widest = int((scaled >= kth).sum(dim=-1).max())
        if widest > top_k:  # a tie at the k-th logit: keep every tied token
            values, index = torch.topk(scaled, widest, dim=-1)
            values = values.masked_fill(values < kth, float("-inf"))
    else:
        values, index = torch.sort(scaled, dim=-1, descending=True)
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
        probs = probs.masked_fill(before >= top_p, 0.0)
    return probs, index


def uniforms(generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """One uniform in [0, 1) per row, each from its own request's generator."""
    return torch.cat([torch.rand(1, generator=g, device=device) for g in generators])


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
    probs, index = candidates(logits, temperature, top_k, top_p)
    if generators is None or len(generators) != probs.shape[0]:
        raise ValueError(f"sampling needs one generator per row ({probs.shape[0]})")
    cdf = torch.cumsum(probs, dim=-1)
    target = uniforms(generators, logits.device)[:, None] * cdf[:, -1:]
    pick = torch.searchsorted(cdf, target, right=True)  # the first token whose cumulative mass exceeds the draw
    last = (probs > 0).sum(dim=-1, keepdim=True) - 1  # rounding at the top end never lands on a dropped token
    return index.gather(1, torch.minimum(pick, last)).squeeze(1)
