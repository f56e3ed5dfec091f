"""The reserved KV cache (``infer/kv_cache.py``): rows that grow, leave and join in place hold exactly what a plain
cache holds (checked against per-row reference contents), and decoding through it gives the logits of transformers'
``DynamicCache`` (this fails loudly if an upgrade of transformers changes how cache layers are driven)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from culturespa.infer import kv_cache
from culturespa.infer.engine import Engine

HEADS, DIM = 2, 3


def _rows(count: int, width: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Per-row contents [heads, own width, dim] of ``count`` rows, each with a random own width <= ``width``."""
    return [torch.randn(HEADS, int(torch.randint(1, width + 1, (1,), generator=gen)), DIM, generator=gen)
            for _ in range(count)]  # fmt: skip


def _stack(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Right-aligned, zero left padding: what a prefill's left-padded cache looks like."""
    out = torch.zeros(len(rows), HEADS, width, DIM)
    for i, row in enumerate(rows):
        out[i, :, width - row.shape[1] :] = row
    return out


def _check(layer: Any, reference: list[torch.Tensor]) -> None:
    assert layer.keys.shape == (len(reference), HEADS, layer.width, DIM)
    expected = _stack(reference, layer.width)
    assert torch.equal(layer.keys, expected) and torch.equal(layer.values, -expected)


def test_rows_grow_leave_and_join_in_place_like_a_plain_cache() -> None:
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    reference = _rows(5, 7, gen)
    width = max(r.shape[1] for r in reference)
    keys = _stack(reference, width)
    layer = kv_cache._layer_class()(keys, -keys, row_capacity=8)
    _check(layer, reference)
    for step in range(150):  # more columns than the spare ones: the buffers grow
        if reference and step % 7 == 3:  # some rows finish
            gone = sorted(rng.sample(range(len(reference)), rng.randint(1, len(reference))))
            cache = type("Cache", (), {"layers": [layer]})()
            order = kv_cache.remove_rows(cache, gone)
            assert sorted(order) == [i for i in range(len(reference)) if i not in gone]
            reference = [reference[i] for i in order]
        if step % 5 == 0:  # newcomers join, narrower or wider than the running rows, maybe past the row capacity
            new = _rows(rng.randint(1, 6), rng.choice([3, 40, 200]), gen)
            new_width = max(r.shape[1] for r in new) + rng.choice([0, 2])  # maybe padding in every new row
            total = max(layer.width, new_width)
            own = [r.shape[1] for r in reference + new]
            trim = rng.choice([0, total - max(own)])  # only columns that are padding in every row
            stacked = _stack(new, new_width)
            layer.add_rows(stacked, -stacked, trim)
            reference = reference + new
        if reference:
            column = torch.randn(len(reference), HEADS, 1, DIM, generator=gen)
            keys, values = layer.update(column, -column)
            assert keys.data_ptr() == layer.keys.data_ptr()
            reference = [torch.cat([r, column[i]], dim=1) for i, r in enumerate(reference)]
        _check(layer, reference)


def test_decoding_through_the_reserved_cache_gives_the_dynamic_cache_logits(make_cfg: Callable[..., Any]) -> None:
    from transformers import DynamicCache

    eng = Engine.from_config(make_cfg("generate", ["model=tiny_random", "model.dtype=float32"]))
    model, config = eng.model, eng.model.config
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a left-padded row
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    logits: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for kind in ("dynamic", "reserved"):
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        past_key_values=DynamicCache(config=config), use_cache=True)  # fmt: skip
            cache = out.past_key_values
            if kind == "reserved":
                cache = kv_cache.reserve(cache, config, 4)
                assert all(type(layer).__name__ == "ReservedLayer" for layer in cache.layers)
            step_mask, last, seen = mask, positions[:, -1], [out.logits[:, -1]]
            token = out.logits[:, -1].argmax(-1)
            for _ in range(80):  # past the spare columns
                step_mask = torch.cat([step_mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
                last = last + 1
                out = model(input_ids=token[:, None], attention_mask=step_mask, position_ids=last[:, None],
                            past_key_values=cache, use_cache=True)  # fmt: skip
                cache = out.past_key_values
                seen.append(out.logits[:, -1])
                token = out.logits[:, -1].argmax(-1)
            logits[kind] = seen
    for a, b in zip(logits["dynamic"], logits["reserved"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_transformers_own_layers_take_the_same_row_moves_by_copying() -> None:
    """Caches left to transformers (sliding-window layers, models without a config) get the same row surgery."""
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(1)
    reference = _rows(4, 5, gen)
    cache = DynamicCache()
    keys = _stack(reference, 5)
    cache.update(keys, -keys, 0)
    order = kv_cache.remove_rows(cache, [1])
    reference = [reference[i] for i in order]
    new = _rows(2, 9, gen)
    stacked = _stack(new, 9)
    newcomers = DynamicCache()
    newcomers.update(stacked, -stacked, 0)
    kv_cache.add_rows(cache, newcomers, 0)
    layer = cache.layers[0]
    assert order == [0, 3, 2] and not isinstance(cache.layers[0], kv_cache._layer_class())
    expected = _stack(reference + new, 9)
    assert torch.equal(layer.keys, expected) and torch.equal(layer.values, -expected)
