"""Which prompts run together: rendered requests grouped by shared context, sorted by length, cut into batches.

Why: a group's common token prefix (system prompt and instructions) is computed once and reused by every row of the
group (``engine.prefix_cache``), and length-sorted rows waste less left padding. Logprob scoring (prefill only) also
bounds each batch's padding (``engine.max_padding``); generation keeps full batches, or, with continuous batching,
takes rows one by one in this order as decode slots free up (``decode.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from culturespa.errors import CultureSPAError
from culturespa.infer.decoding import Request

MIN_PREFIX_TOKENS = 8  # a shared prefix shorter than this is not worth a separate forward pass


@dataclass
class Item:
    """A rendered request: position in the input, prompt text, token ids and the shared prefix its group computes once."""

    index: int
    request: Request
    prompt: str
    ids: list[int]
    prefix: tuple[int, ...] = ()


@dataclass
class Batch:
    items: list[Item]
    prefix: tuple[int, ...]  # shared leading token ids computed once for the group (() = none)


def prepare(reqs: Sequence[Request], render: Callable[[list[dict[str, str]]], str], tokenizer: Any) -> list[Item]:
    """Render and tokenise every request (one-line errors for empty ones)."""
    items = []
    for i, r in enumerate(reqs):
        if not r.messages:
            raise CultureSPAError(f"request {r.key}: no messages")
        prompt = render(r.messages) + r.prefix
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise CultureSPAError(f"request {r.key}: the prompt tokenises to nothing")
        items.append(Item(i, r, prompt, list(ids)))
    return items


@dataclass
class Planner:
    """Cuts rendered items into batches (the ``engine.*`` batching settings)."""

    batch_size: int = 32
    sort_by_length: bool = True
    prefix_cache: bool = True
    max_padding: float | None = 0.1

    def plan(self, items: list[Item], tight: bool = False) -> list[Batch]:
        """Batches, grouped by shared context (all messages but the last) so a group's common prefix is computed
        once; within a group (and in the pool of ungrouped requests) sorted by length to waste less padding.
        ``tight`` (prefill-only work: logprob scoring) also bounds padding by ``max_padding``. Every item's
        ``prefix`` is set to its batch's."""
        groups: dict[str, list[Item]] = {}
        if self.prefix_cache:
            for it in items:
                groups.setdefault(json.dumps(it.request.messages[:-1], sort_keys=True), []).append(it)
        else:
            groups[""] = list(items)
        batches: list[Batch] = []
        pool: list[Item] = []
        for members in groups.values():
            prefix = common_prefix([m.ids for m in members]) if self.prefix_cache and len(members) > 1 else ()
            if len(prefix) < MIN_PREFIX_TOKENS:
                pool.extend(members)
                continue
            batches.extend(Batch(chunk, prefix) for chunk in self.chunks(members, len(prefix), tight))
        batches.extend(Batch(chunk, ()) for chunk in self.chunks(pool, 0, tight))
        for batch in batches:
            for it in batch.items:
                it.prefix = batch.prefix
        return batches

    def chunks(self, members: list[Item], prefix_len: int, tight: bool) -> Iterator[list[Item]]:
        """At most ``batch_size`` rows; with ``max_padding`` a batch also closes before its pad tokens would exceed
        that share of its real tokens (the prefix is shared, not padded). Padding is pure waste in matmuls and
        attention: 32 WVS prompts of one culture in one batch add ~84 % padding, which costs more than the smaller
        matmuls of tighter batches (docs/benchmarks.md)."""
        ordered = sorted(members, key=lambda m: (len(m.ids), m.index)) if self.sort_by_length else members
        batch: list[Item] = []
        real = width = 0
        for item in ordered:
            length = len(item.ids) - prefix_len
            wider = max(width, length)
            too_padded = (
                tight
                and self.max_padding is not None
                and batch
                and (len(batch) + 1) * wider > (1 + self.max_padding) * (real + length)
            )
            if len(batch) == self.batch_size or too_padded:
                yield batch
                batch, real, wider = [], 0, length
            batch.append(item)
            real += length
            width = wider
        if batch:
            yield batch


def common_prefix(seqs: list[list[int]]) -> tuple[int, ...]:
    """Longest common leading token run, leaving at least one token of every sequence to run as its suffix."""
    if not seqs:
        return ()
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return tuple(first[:n])
