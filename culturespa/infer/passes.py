"""Forward passes over left-padded rows with a KV cache, and the row surgery continuous batching needs.

Why results do not depend on which rows run together: padding is masked out, position ids count real tokens only,
a shared prefix is computed exactly as the same tokens would be at the start of a single prompt, and rows are
dropped (:func:`retire`) or joined (:func:`splice`) by moving their cache rows (``kv_cache.py``), with left padding (masked zeros)
where two sets of rows differ in width. Keys are stored with their rotary positions already applied, so a row's
columns may move without changing what attention computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from culturespa import compat
from culturespa.infer import kv_cache
from culturespa.infer.planning import Item
from culturespa.infer.scoring import Context


@dataclass
class Rows:
    """Rows being decoded together: attention mask [B, L], last position id [B], cache, next-token logits [B, V]."""

    mask: torch.Tensor
    last_pos: torch.Tensor
    cache: Any
    logits: torch.Tensor

    def __len__(self) -> int:
        return int(self.mask.shape[0])


class Passes:
    """Runs the model: prefill of a set of prompts (sharing the KV cache of their common prefix) and decode steps."""

    def __init__(self, model: Any, device: torch.device, pad_id: int) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        self._keep_logits_ok = True
        self._prefix_kv: tuple[tuple[int, ...], list[compat.KV]] | None = None

    def reset(self) -> None:
        """Forget the memoised prefix cache (the model or the prompts change between runs)."""
        self._prefix_kv = None

    def config(self) -> Any:
        config = getattr(self.model, "config", None)
        return config if config is not None and hasattr(config, "get_text_config") else None

    def forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, keep: int
    ) -> tuple[torch.Tensor, Any]:
        """Logits of the last ``keep`` positions (float32) and the updated cache."""
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        if self._keep_logits_ok:
            try:
                out = self.model(**kwargs, logits_to_keep=keep)
            except TypeError:
                self._keep_logits_ok = False
                out = self.model(**kwargs)
        else:
            out = self.model(**kwargs)
        return out.logits[:, -keep:, :].float(), out.past_key_values

    def step(self, rows: Rows, tokens: torch.Tensor) -> Rows:
        """One decode step: every row takes its next token; returns the rows with their next logits."""
        ones = torch.ones(len(rows), 1, dtype=rows.mask.dtype, device=self.device)
        mask = torch.cat([rows.mask, ones], dim=1)
        last_pos = rows.last_pos + 1
        logits, cache = self.forward(tokens[:, None], mask, last_pos[:, None], rows.cache, keep=1)
        return Rows(mask, last_pos, cache, logits[:, -1, :])

    def prefix_cache(self, prefix: tuple[int, ...], batch_size: int) -> Any:
        """A fresh cache holding ``prefix`` for every row; the prefix itself is computed once per group."""
        from transformers import DynamicCache  # heavy: loaded with the model

        if self._prefix_kv is None or self._prefix_kv[0] != prefix:
            ids = torch.tensor([prefix], device=self.device)
            pos = torch.arange(len(prefix), device=self.device)[None]
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=pos,
                past_key_values=DynamicCache(config=self.config()),
                use_cache=True,
                **({"logits_to_keep": 1} if self._keep_logits_ok else {}),
            )
            self._prefix_kv = (prefix, compat.cache_layers(out.past_key_values))
        layers = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self._prefix_kv[1]]
        return compat.filled_cache(layers, self.config())

    def prefill(
        self, items: Sequence[Item], prefix: tuple[int, ...], extra: Sequence[Context] | None = None, keep: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Run every prompt, each followed by its ``extra`` tokens; returns the logits of the last ``keep`` columns
        [B, keep, V], the attention mask, each row's last position id and the cache. Rows are right-aligned (left
        padding), so column -1 is every row's last token."""
        from transformers import DynamicCache  # heavy: loaded with the model

        plen = len(prefix)
        suffixes = [it.ids[plen:] + list(extra[i] if extra else ()) for i, it in enumerate(items)]
        width = max(len(s) for s in suffixes)
        rows = [[self.pad_id] * (width - len(s)) + s for s in suffixes]
        mask = [[0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        input_ids = torch.tensor(rows, device=self.device)
        suffix_mask = torch.tensor(mask, device=self.device)
        positions = (plen + torch.cumsum(suffix_mask, dim=1) - 1).clamp(min=0)
        bsz = len(rows)
        if plen:
            cache = self.prefix_cache(prefix, bsz)
            full_mask = torch.cat([torch.ones(bsz, plen, dtype=suffix_mask.dtype, device=self.device), suffix_mask], 1)
        else:
            cache = DynamicCache(config=self.config())
            full_mask = suffix_mask
        logits, cache = self.forward(input_ids, full_mask, positions, cache, keep=keep)  # keep <= width: each row
        # holds >= 1 prompt token after its extra tokens
        return logits, full_mask, positions[:, -1], cache

    def start(self, items: Sequence[Item], prefix: tuple[int, ...], reserve_rows: int | None = None) -> Rows:
        """Prefilled rows ready to decode their first token. With ``reserve_rows`` the cache has room for that many
        rows and grows in place (``kv_cache.py``: decode steps, leaving and joining rows copy no more than they
        must); without, it is the prefill's own cache, to be spliced into running rows."""
        logits, mask, last_pos, cache = self.prefill(items, prefix)
        if reserve_rows is not None:
            cache = kv_cache.reserve(cache, self.config(), max(reserve_rows, len(items)))
        return Rows(mask, last_pos, cache, logits[:, -1, :])

    def retire(self, rows: Rows, finished: Sequence[int]) -> tuple[Rows, list[int]]:
        """The rows without the ``finished`` ones, and the old index of each remaining row (a finished row's place
        is taken by a running row from the end, so only that row's cache moves)."""
        order = kv_cache.remove_rows(rows.cache, finished)
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        pick = [rows.mask, rows.last_pos, rows.logits]
        mask, last_pos, logits = (t.index_select(0, index) for t in pick)
        return Rows(mask, last_pos, rows.cache, logits), order

    def splice(self, first: Rows, second: Rows) -> Rows:
        """``first``'s rows then ``second``'s (``second``'s cache is appended into ``first``'s), both left-padded to
        the wider width (masked zero keys and values); leading columns that are padding in every row are dropped when
        they are a quarter of the width or more."""
        width = max(first.mask.shape[1], second.mask.shape[1])
        masks = [F.pad(m, (width - m.shape[1], 0)) for m in (first.mask, second.mask)]
        mask = torch.cat(masks)
        used = torch.nonzero(mask.any(dim=0))
        lead = int(used[0]) if len(used) else 0
        trim = lead if lead * 4 >= width else 0
        kv_cache.add_rows(first.cache, second.cache, trim)
        return Rows(
            mask[:, trim:],
            torch.cat([first.last_pos, second.last_pos]),
            first.cache,
            torch.cat([first.logits, second.logits]),
        )
