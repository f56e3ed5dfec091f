"""The decode loop: work that follows the tokens generated (continuous batching), or the old static batches.

``continuous`` (the default): a row leaves the running batch the step it finishes (its KV-cache rows and positions
are dropped), and waiting prompts take the freed slots: once at least ``refill`` of the batch is free, the newcomers
are prefilled together (sharing their group's prefix cache) and spliced in with left padding. A finished row thus
never costs another step, and no row waits for the longest reply of its batch. ``static`` keeps each planned batch
together until its last row stops (finished rows keep stepping on pad tokens): the engine before continuous
batching, kept for A/B measurements.

Both are exact: a row's logits do not depend on its neighbours (``passes.py``), and each sampled row draws from its
own request's generator exactly once per token, so greedy and sampled replies are the same whatever the batch size,
order or company of a request (up to float noise in the logits).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from culturespa.infer import sampling
from culturespa.infer.passes import Passes, Rows
from culturespa.infer.planning import Item

SCHEDULES = ("continuous", "static")
DEFAULT_REFILL = 0.25  # share of the batch that must be free before waiting prompts are prefilled and spliced in


@dataclass(frozen=True)
class Policy:
    """How tokens are chosen and when a reply ends."""

    greedy: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int
    stop_ids: frozenset[int]


@dataclass
class DecodeStats:
    """Decode row-steps: rows × decode forwards computed, and how many of those rows were still generating."""

    row_steps: int = 0
    live_row_steps: int = 0


@dataclass
class _Slot:
    item: Item
    generator: torch.Generator | None
    tokens: list[int]


class Decoder:
    """Generates replies for rendered items, yielding (item, reply token ids) as rows finish."""

    def __init__(
        self, passes: Passes, batch_size: int, refill: float = DEFAULT_REFILL, stats: DecodeStats | None = None
    ) -> None:
        self.passes = passes
        self.batch_size = batch_size
        self.refill_at = max(1, math.ceil(refill * batch_size))
        self.stats = stats if stats is not None else DecodeStats()

    def continuous(self, items: Sequence[Item], policy: Policy) -> Iterator[list[tuple[Item, list[int]]]]:
        """Rows retire the step they finish; waiting items (in the given order) fill the freed slots."""
        waiting = deque(items)
        slots: list[_Slot] = []
        rows: Rows | None = None
        while waiting or slots:
            free = self.batch_size - len(slots)
            if waiting and (not slots or free >= self.refill_at):
                newcomers = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                rows, admitted = self._admit(rows, newcomers)
                slots += [_Slot(it, self._generator(it, policy), []) for it in admitted]
            assert rows is not None
            tokens = sampling.choose(
                rows.logits, policy.greedy, policy.temperature, policy.top_p, _gens(slots), policy.top_k
            )
            done = []
            for slot, token in zip(slots, tokens.tolist(), strict=True):
                slot.tokens.append(token)
                done.append(token in policy.stop_ids or len(slot.tokens) >= policy.max_new_tokens)
            finished = [(s.item, _reply(s.tokens, policy.stop_ids)) for s, d in zip(slots, done, strict=True) if d]
            if finished:
                if all(done):
                    slots, rows = [], None
                else:
                    rows, order = self.passes.retire(rows, [i for i, d in enumerate(done) if d])
                    slots, tokens = [slots[i] for i in order], tokens[order]
                yield finished
            if rows is not None:
                self._count(len(slots), len(slots))
                rows = self.passes.step(rows, tokens)

    def static(self, items: Sequence[Item], policy: Policy) -> list[tuple[Item, list[int]]]:
        """One planned batch, decoded until its last row stops (finished rows step on pad tokens)."""
        rows = self.passes.start(items, items[0].prefix, len(items))
        gens = [self._generator(it, policy) for it in items] if not policy.greedy else None
        stop = torch.tensor(sorted(policy.stop_ids), device=self.passes.device, dtype=torch.long)
        done = torch.zeros(len(items), dtype=torch.bool, device=self.passes.device)
        produced: list[torch.Tensor] = []
        for step in range(policy.max_new_tokens):
            token = sampling.choose(rows.logits, policy.greedy, policy.temperature, policy.top_p, gens, policy.top_k)  # type: ignore[arg-type]
            token = torch.where(done, torch.full_like(token, self.passes.pad_id), token)
            produced.append(token)
            done = done | torch.isin(token, stop)
            if bool(done.all()) or step == policy.max_new_tokens - 1:
                break
            self._count(len(items), int((~done).sum()))
            rows = self.passes.step(rows, token)
        tokens = torch.stack(produced, dim=1).tolist()
        return [(it, _reply(row, policy.stop_ids)) for it, row in zip(items, tokens, strict=True)]

    def _admit(self, rows: Rows | None, newcomers: list[Item]) -> tuple[Rows, list[Item]]:
        """Prefill the newcomers (one pass per shared prefix) and splice them after the running rows; returns the
        rows and the newcomers in row order."""
        groups: dict[tuple[int, ...], list[Item]] = {}
        for it in newcomers:
            groups.setdefault(it.prefix, []).append(it)
        admitted: list[Item] = []
        for prefix, members in groups.items():
            fresh = self.passes.start(members, prefix, self.batch_size if rows is None else None)
            rows = fresh if rows is None else self.passes.splice(rows, fresh)
            admitted += members
        assert rows is not None
        return rows, admitted

    def _generator(self, item: Item, policy: Policy) -> torch.Generator | None:
        if policy.greedy:
            return None
        return sampling.make_generators(policy.seed, [item.request.key], self.passes.device)[0]

    def _count(self, rows: int, live: int) -> None:
        self.stats.row_steps += rows
        self.stats.live_row_steps += live


def _gens(slots: list[_Slot]) -> list[torch.Generator] | None:
    gens = [s.generator for s in slots]
    return None if any(g is None for g in gens) else gens  # type: ignore[return-value]


def _reply(tokens: list[int], stop_ids: frozenset[int]) -> list[int]:
    """The reply's tokens up to (without) the first stop token."""
    kept = []
    for t in tokens:
        if t in stop_ids:
            break
        kept.append(t)
    return kept
