"""Logprob answers: the option distribution of each prompt from its next-token probabilities, no generation.

One forward pass gives the next-token distribution; for questions whose option numbers share digits ("1" vs "10";
see ``scoring.py``) the digit is appended to the prompt in the same pass, and only numbers whose prefixes branch
("1" and "2" on a 1..21 scale) need a short second pass over the prompts' caches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from culturespa import compat
from culturespa.infer.decoding import Result
from culturespa.infer.passes import Passes
from culturespa.infer.planning import Batch
from culturespa.infer.scoring import Context, OptionPlan, continuation_ids, digit_token_ids, normalise

After = dict[int, dict[Context, dict[int, float]]]  # row -> context -> next-token log-prob of the tokens needed
Cont = dict[int, dict[Context, float]]  # row -> context -> probability that a digit follows it


class Scorer:
    """Scores batches of multiple-choice prompts through ``passes``."""

    def __init__(self, passes: Passes, tokenizer: Any) -> None:
        self.passes = passes
        self.tokenizer = tokenizer
        self._digit_ids: torch.Tensor | None = None
        self._number_cache: dict[tuple[str, int], Context] = {}

    def _number_ids(self, prompt: str, number: int) -> Context:
        tail = prompt[-48:]
        key = (tail, number)
        if key not in self._number_cache:
            self._number_cache[key] = continuation_ids(self.tokenizer, tail, str(number))
        return self._number_cache[key]

    def _digits(self) -> torch.Tensor:
        if self._digit_ids is None:
            ids = digit_token_ids(self.tokenizer)
            self._digit_ids = torch.tensor(ids, dtype=torch.long, device=self.passes.device)
        return self._digit_ids

    def score(self, batch: Batch) -> list[Result]:
        """One result per row: the most likely option and the normalised distribution over all options."""
        plans = []
        for it in batch.items:
            numbers = list(it.request.numbers or [])
            plans.append(OptionPlan.build(numbers, {n: self._number_ids(it.prompt, n) for n in numbers}))
        # A row whose contexts form one chain ("1" for a 1..10 scale) gets its longest context appended to the prompt:
        # the columns of the same forward pass then hold the distributions after every context, so the common case
        # costs one pass. Other rows (e.g. 1..21: "1" and "2") are scored by a second pass over their cache.
        chains = [_chain(plan.contexts) for plan in plans]
        extra = [chain or () for chain in chains]
        keep = 1 + max(len(e) for e in extra)
        logits, mask, last_pos, cache = self.passes.prefill(batch.items, batch.prefix, extra, keep)
        logp = torch.log_softmax(logits, dim=-1)  # [B, keep, V]
        digit_mass = torch.exp(logp.index_select(2, self._digits())).sum(dim=2)  # [B, keep]
        after: After = {}
        cont: Cont = {}
        first_col = []
        for row, (plan, appended) in enumerate(zip(plans, extra, strict=True)):
            start = keep - 1 - len(appended)  # column of the prompt's last token
            first_col.append(start)
            for j in range(1, len(appended) + 1):
                ctx = appended[:j]
                after.setdefault(row, {})[ctx] = {t: float(logp[row, start + j, t]) for t in _wanted(plan, ctx)}
                cont.setdefault(row, {})[ctx] = float(digit_mass[row, start + j])
        unfolded = [row for row, chain in enumerate(chains) if chain is None]
        if unfolded:
            more_after, more_cont = self._score_contexts(plans, unfolded, mask, last_pos, cache)
            after.update(more_after)
            cont.update(more_cont)
        results = []
        for row, (it, plan) in enumerate(zip(batch.items, plans, strict=True)):
            needed = {seq[0] for seq in plan.sequences.values()}
            first_row = {t: float(logp[row, first_col[row], t]) for t in needed}
            scores = plan.scores(first_row, after.get(row, {}), cont.get(row, {}))
            best, dist = normalise(scores)
            results.append(Result(it.request.key, str(best), best, True, dist, it.prompt))
        return results

    def _score_contexts(
        self, plans: list[OptionPlan], rows: list[int], mask: torch.Tensor, last_pos: torch.Tensor, cache: Any
    ) -> tuple[After, Cont]:
        """One extra forward over the prompt caches of ``rows`` for each of their contexts: the next-token log-probs
        after each context (only the tokens the plans need) and the probability that a digit follows it."""
        pairs = [(row, ctx) for row in rows for ctx in plans[row].contexts]
        if not pairs:
            return {}, {}
        device = self.passes.device
        index = torch.tensor([r for r, _ in pairs], device=device)
        width = max(len(c) for _, c in pairs)
        ids = torch.tensor([list(c) + [self.passes.pad_id] * (width - len(c)) for _, c in pairs], device=device)
        layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in compat.cache_layers(cache)]
        sub_cache = compat.filled_cache(layers, self.passes.config())
        ctx_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for _, c in pairs], device=device)
        full_mask = torch.cat([mask.index_select(0, index), ctx_mask.to(mask.dtype)], dim=1)
        positions = last_pos.index_select(0, index)[:, None] + 1 + torch.arange(width, device=device)[None]
        logits, _ = self.passes.forward(ids, full_mask, positions, sub_cache, keep=width)
        ends = torch.tensor([len(c) - 1 for _, c in pairs], device=device)
        picked = logits[torch.arange(len(pairs), device=device), ends]  # distribution after each context
        logp = torch.log_softmax(picked, dim=-1)
        digit_mass = torch.exp(logp.index_select(1, self._digits())).sum(dim=1).tolist()
        after: After = {}
        cont: Cont = {}
        for k, (row, ctx) in enumerate(pairs):
            after.setdefault(row, {})[ctx] = {t: float(logp[k, t]) for t in _wanted(plans[row], ctx)}
            cont.setdefault(row, {})[ctx] = float(digit_mass[k])
        return after, cont


def _chain(contexts: Sequence[Context]) -> Context | None:
    """The longest context when every context is a prefix of it (``()`` when there are none), else None."""
    if not contexts:
        return ()
    longest = max(contexts, key=len)
    return longest if all(longest[: len(c)] == c for c in contexts) else None


def _wanted(plan: OptionPlan, ctx: Context) -> set[int]:
    """Tokens that continue ``ctx`` towards one of the plan's option numbers."""
    return {seq[len(ctx)] for seq in plan.sequences.values() if len(seq) > len(ctx) and seq[: len(ctx)] == ctx}
