"""Continuous batching and vectorised sampling: greedy replies equal plain HF ``generate`` and the old static batches;
sampled replies depend only on (seed, key), not on batch size, order or company; finished rows cost no decode steps;
the vectorised sampler keeps exactly the tokens of the reference filters (transformers' order and tie rule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from culturespa.infer import sampling
from culturespa.infer.engine import Decoding, Engine, Request

TINY = ["model=tiny_random", "model.dtype=float32"]


def _requests(n: int, tag: str = "r") -> list[Request]:
    topics = ["rain", "a long walk by the sea at dawn with friends", "tea", "the history of maps and of the people"]
    return [
        Request(f"{tag}{i}", [{"role": "user", "content": f"Tell me about {topics[i % 4]} ({i})."}]) for i in range(n)
    ]


def _texts(eng: Engine, reqs: list[Request], **kw: Any) -> dict[str, str]:
    return {r.key: r.text for batch in eng.generate(reqs, **kw) for r in batch}


@pytest.fixture
def engine(make_cfg: Callable[..., Any]) -> Engine:
    """The tiny random model with larger (seeded) weights: its default init answers every prompt with newlines,
    these give prompt-dependent replies of different lengths."""
    eng = Engine.from_config(make_cfg("generate", TINY))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in eng.model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return eng


def _uneven_stops(eng: Engine, reqs: list[Request], tokens: int) -> None:
    """Add stop tokens taken from inside some greedy replies, so rows end after different numbers of steps."""
    eng.schedule = "static"
    replies = [eng.tokenizer(t, add_special_tokens=False)["input_ids"] for t in _texts(
        eng, reqs, temperature=0, top_p=1.0, max_new_tokens=tokens).values()]  # fmt: skip
    eng.stop_ids = eng.stop_ids | {ids[min(2 + i, len(ids) - 1)] for i, ids in enumerate(replies[:3]) if ids}


def test_greedy_equals_hf_generate_and_static_batches(engine: Engine) -> None:
    reqs = _requests(7)
    _uneven_stops(engine, reqs, 10)
    engine.batch_size = 3
    kw: dict[str, Any] = dict(temperature=0, top_p=1.0, max_new_tokens=10)
    static = _texts(engine, reqs, **kw)
    engine.schedule = "continuous"
    before = engine.stats.row_steps
    continuous = _texts(engine, reqs, **kw)
    assert continuous == static
    lengths = {len(t) for t in continuous.values()}
    assert len(lengths) > 1 and engine.stats.row_steps > before  # rows ended at different steps; slots were refilled
    for req in reqs:  # plain HF generate, one prompt at a time, stopping at the same tokens
        ids = engine.tokenizer(engine.render(req.messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                                    eos_token_id=sorted(engine.stop_ids), pad_token_id=engine.pad_id)  # fmt: skip
        reply = [t for t in out[0, ids.shape[1] :].tolist()]
        cut = next((i for i, t in enumerate(reply) if t in engine.stop_ids), len(reply))
        assert continuous[req.key] == engine.tokenizer.decode(reply[:cut], skip_special_tokens=True), req.key


def test_sampled_replies_independent_of_batch_size_order_and_company(engine: Engine) -> None:
    reqs = _requests(6)
    _uneven_stops(engine, reqs, 8)
    kw: dict[str, Any] = dict(temperature=1.2, top_p=0.9, max_new_tokens=8, seed=5, top_k=20)
    engine.schedule, engine.batch_size = "continuous", 4
    reference = _texts(engine, reqs, **kw)
    for size in (1, 2, 6):
        engine.batch_size = size
        assert _texts(engine, reqs, **kw) == reference, size
    engine.batch_size = 3
    assert _texts(engine, list(reversed(reqs)), **kw) == reference
    mixed = _texts(engine, _requests(5, "other") + reqs, **kw)
    assert {k: mixed[k] for k in reference} == reference
    engine.schedule = "static"
    assert _texts(engine, reqs, **kw) == reference
    assert _texts(engine, reqs, **{**kw, "seed": 6}) != reference


def test_finished_rows_cost_no_decode_steps(engine: Engine) -> None:
    """Static batches step finished rows too; continuous batching computes exactly the row-steps of rows still
    generating (the same live row-steps as the static batches) and nothing else."""
    reqs = [Request(r.key, r.messages, [1, 2]) for r in _requests(8)]
    _uneven_stops(engine, reqs, 9)
    engine.batch_size = 4
    decoding = Decoding("greedy", max_new_tokens=9)
    stats = {}
    for schedule in ("static", "continuous"):
        engine.schedule = schedule
        engine.stats.row_steps = engine.stats.live_row_steps = 0
        assert len([r for batch in engine.answer(reqs, decoding) for r in batch]) == len(reqs)
        stats[schedule] = (engine.stats.row_steps, engine.stats.live_row_steps)
    assert stats["continuous"][0] == stats["continuous"][1] == stats["static"][1] < stats["static"][0]


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.6, 50, 0.9), (1.0, 5, 1.0), (0.9, 0, 0.95)])
def test_candidates_equal_the_reference_filters(temperature: float, top_k: int, top_p: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 300) * 3
    logits[1, :7] = 9.0  # a tie across the k-th logit (top_k 5: all 7 stay)
    probs, index = sampling.candidates(logits, temperature, top_k, top_p)
    ours = torch.zeros_like(logits).scatter(1, index, probs)
    ref = sampling.top_p_filter(torch.softmax(sampling.top_k_filter(logits / temperature, top_k), dim=-1), top_p)
    assert torch.equal(ours > 0, ref > 0)
    torch.testing.assert_close(ours / ours.sum(1, keepdim=True), ref / ref.sum(1, keepdim=True))
    assert bool((probs[:, :-1] >= probs[:, 1:]).all())  # descending, dropped tokens last


def test_choose_draws_from_the_distribution() -> None:
    """Inverse-CDF picks follow the kept probabilities (0.4 / 0.3 / 0.2 / 0.1, top-p 0.75 keeps three)."""
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3]])).repeat(4000, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    picks = sampling.choose(logits, False, 1.0, 0.75, gens, top_k=0)
    share = torch.bincount(picks, minlength=4).float() / 4000
    assert share[0] == 0 and share[1] == pytest.approx(4 / 9, abs=0.03) and share[2] == pytest.approx(2 / 9, abs=0.03)
    with pytest.raises(ValueError, match="one generator per row"):
        sampling.choose(logits[:2], False, 1.0, 1.0, gens[:1])


def test_decoding_values_are_checked_by_the_settings_rules() -> None:
    """One home for decoding checks (settings.py): a Decoding built in code fails as a composed config would."""
    from culturespa.errors import CultureSPAError

    assert Decoding("logprob", max_new_tokens=0).mode == "logprob"  # scoring generates nothing
    for bad, key in [
        (dict(mode="greedy", max_new_tokens=0), "decoding.max_new_tokens"),
        (dict(mode="sample", temperature=0.0), "decoding.temperature"),
        (dict(mode="sample", parse="last_integer"), "decoding.parse"),
        (dict(mode="beam"), "decoding.mode"),
        (dict(mode="sample", seed_step=0), "decoding.seed_step"),
    ]:
        with pytest.raises(CultureSPAError, match=key):
            Decoding(**bad)  # type: ignore[arg-type]
