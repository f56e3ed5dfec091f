"""A KV cache for the decode loop whose rows grow, leave and join in place.

Why: transformers' ``DynamicCache`` appends a decode step's keys and values with ``torch.cat``, which copies the whole
cache of every layer at every step (batch × width × layers: 0.2-0.6 GB per step for 32 rows of the embedded model in
fp32), and a row that leaves or joins the batch meant one more full copy. Here each full-attention layer keeps
preallocated buffers (rows × heads × columns × head_dim, with spare columns): a step writes one column, a finished
row is replaced by the last running row (one row copied), and newcomers are written into free rows when they fit.
Attention reads views of the buffers, so what it computes is unchanged (``tests/test_infer_kv_cache.py`` checks the
logits against ``DynamicCache``). Layers of other kinds (sliding windows) and caches built without a model config
keep transformers' own layers, handled by copying as before.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

KV = tuple[torch.Tensor, torch.Tensor]  # one layer's (keys, values), [rows, heads, columns, head_dim]
SPARE_COLUMNS = 64  # columns reserved beyond the current width; growth adds at least this or half the width


@functools.cache
def _layer_class() -> type:
    """The reserved layer, a ``DynamicLayer`` subclass (created on first use: transformers is heavy)."""
    from transformers.cache_utils import DynamicLayer  # heavy: loaded with the model

    class ReservedLayer(DynamicLayer):
        """Keys and values in buffers with spare rows and columns; ``keys``/``values`` are views of the used part."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, row_capacity: int) -> None:
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.rows, self.width, self.row_capacity = 0, 0, row_capacity
            self._k = keys.new_empty(0, keys.shape[1], 0, keys.shape[3])
            self._v = values.new_empty(0, values.shape[1], 0, values.shape[3])
            self.add_rows(keys, values, 0)

        def _layout(self, row_capacity: int, width: int, drop: int = 0) -> None:
            """New buffers for ``row_capacity`` rows and ``width`` used columns (plus spare ones); the held rows are
            copied without their first ``drop`` columns (padding in every row), right-aligned, zeros on the left."""
            old_k, old_v, kept = self._k, self._v, self.width - drop
            columns = width + max(SPARE_COLUMNS, width // 2)
            self._k = old_k.new_empty(row_capacity, old_k.shape[1], columns, old_k.shape[3])
            self._v = old_v.new_empty(row_capacity, old_v.shape[1], columns, old_v.shape[3])
            for new, old in ((self._k, old_k), (self._v, old_v)):
                new[: self.rows, :, : width - kept].zero_()
                new[: self.rows, :, width - kept : width].copy_(old[: self.rows, :, drop : self.width])
            self.width = width
            self._view()

        def _view(self) -> None:
            self.keys = self._k[: self.rows, :, : self.width]
            self.values = self._v[: self.rows, :, : self.width]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> KV:
            """Append the columns of a forward pass (every row takes the same number) in place."""
            steps = key_states.shape[2]
            if self.width + steps > self._k.shape[2]:
                self._layout(self._k.shape[0], self.width)  # more spare columns: one copy, amortised
            self._k[: self.rows, :, self.width : self.width + steps].copy_(key_states)
            self._v[: self.rows, :, self.width : self.width + steps].copy_(value_states)
            self.width += steps
            self._view()
            return self.keys, self.values

        def move_rows(self, targets: Sequence[int], sources: Sequence[int], rows: int) -> None:
            """Row ``sources[i]`` overwrites row ``targets[i]``; then only the first ``rows`` rows are kept."""
            for target, source in zip(targets, sources, strict=True):
                self._k[target, :, : self.width].copy_(self._k[source, :, : self.width])
                self._v[target, :, : self.width].copy_(self._v[source, :, : self.width])
            self.rows = rows
            self._view()

        def add_rows(self, keys: torch.Tensor, values: torch.Tensor, trim: int) -> None:
            """Rows appended after the held ones, both right-aligned to the wider of the two widths, then the first
            ``trim`` columns (padding in every row) dropped. In place when nothing moves; otherwise one re-layout."""
            count, width = keys.shape[0], keys.shape[2]
            total = max(self.width, width)
            final = total - trim
            if trim or total != self.width or self.rows + count > self._k.shape[0]:
                capacity = max(self.row_capacity, self.rows + count)
                self._layout(capacity, final, max(0, trim - (total - self.width)))
            drop = max(0, trim - (total - width))
            kept = width - drop
            for new, given in ((self._k, keys), (self._v, values)):
                new[self.rows : self.rows + count, :, : final - kept].zero_()
                new[self.rows : self.rows + count, :, final - kept : final].copy_(given[:, :, drop:])
            self.rows += count
            self._view()

    return ReservedLayer


def reserve(cache: Any, config: Any, row_capacity: int) -> Any:
    """``cache`` (a prefill's ``DynamicCache``) with each full-attention layer moved into a reserved layer with room
    for ``row_capacity`` rows; other layers, or every layer when ``config`` is None, stay as they are."""
    from transformers import DynamicCache  # heavy: loaded with the model
    from transformers.cache_utils import DynamicLayer  # heavy: loaded with the model

    if config is None:
        return cache
    fresh = DynamicCache(config=config)
    if len(fresh.layers) != len(cache.layers):
        return cache
    reserved_class = _layer_class()
    for index, (mine, layer) in enumerate(zip(fresh.layers, cache.layers, strict=True)):
        if type(mine) is DynamicLayer and type(layer) is DynamicLayer and layer.keys is not None:
            fresh.layers[index] = reserved_class(layer.keys, layer.values, row_capacity)
        else:
            fresh.layers[index] = layer
    return fresh


def remove_rows(cache: Any, finished: Sequence[int]) -> list[int]:
    """Drop the ``finished`` rows in place: each finished row among the rows that stay is overwritten by a running row
    from the end. Returns the new row order (old row index of each remaining row)."""
    layers = cache.layers
    rows = int(layers[0].keys.shape[0])
    gone = set(finished)
    left = rows - len(gone)
    holes = sorted(i for i in gone if i < left)
    movers = [i for i in range(left, rows) if i not in gone]
    order = list(range(left))
    for hole, mover in zip(holes, movers, strict=True):
        order[hole] = mover
    index = None
    for layer in layers:
        if isinstance(layer, _layer_class()):
            layer.move_rows(holes, movers, left)
        else:  # transformers' own layer: a copy of the kept rows
            index = torch.tensor(order, device=layer.keys.device) if index is None else index
            layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
    return order


def add_rows(cache: Any, newcomers: Any, trim: int) -> None:
    """Append the rows of ``newcomers`` (a prefill's cache) to ``cache``, both right-aligned to the wider width, then
    drop the first ``trim`` columns (padding in every row)."""
    for layer, new in zip(cache.layers, newcomers.layers, strict=True):
        if isinstance(layer, _layer_class()):
            layer.add_rows(new.keys, new.values, trim)
            continue
        width = max(layer.keys.shape[2], new.keys.shape[2])
        parts = [(layer.keys, layer.values), (new.keys, new.values)]
        padded = [[F.pad(t, (0, 0, width - t.shape[2], 0)) for t in pair] for pair in parts]
        layer.keys = torch.cat([padded[0][0], padded[1][0]])[:, :, trim:]
        layer.values = torch.cat([padded[0][1], padded[1][1]])[:, :, trim:]
