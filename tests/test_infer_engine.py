"""The batched inference engine on the tiny random model: exact logprob scoring of multi-token option numbers against
a brute-force reference, batch/single equivalence (left padding, shared-prefix cache), free generation, seeded
sampling; and on the embedded model, WVS answers as two cultures."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from culturespa.errors import CultureSPAError
from culturespa.infer.engine import Decoding, Engine, Request, Result
from culturespa.prompts.builder import PromptBuilder, PromptStyle
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData
from tests.conftest import REPO

TINY = ["model=tiny_random"]


def _builder(cfg: Any) -> PromptBuilder:
    return PromptBuilder(PromptStyle.from_config(cfg.templates, cfg.prompt))


def _requests(cfg: Any, questions: list[Question], cultures: list[str | None]) -> list[Request]:
    b = _builder(cfg)
    out = []
    for c in cultures:
        for q in questions:
            messages = b.answer_messages(q, "aware" if c else "unaware", c)
            out.append(Request(f"{q.id}|{c}", messages, q.numbers))
    return out


def _collect(batches: Any) -> dict[str, Result]:
    out: dict[str, Result] = {}
    for batch in batches:
        for r in batch:
            assert r.key not in out, f"{r.key} answered twice"
            out[r.key] = r
    return out


def _questions(wvs: WVSData, ids: list[str]) -> list[Question]:
    return [wvs.questions[i] for i in ids]


@pytest.fixture
def engine(make_cfg: Callable[..., Any]) -> tuple[Engine, Any]:
    cfg = make_cfg("generate", TINY)
    return Engine.from_config(cfg), cfg


# ---- brute force reference -------------------------------------------------------------------------------------------
def _brute_force(eng: Engine, req: Request) -> dict[int, float]:
    """One full, uncached forward per option: log P(number's tokens | prompt), times P(no digit next) when the number
    is a prefix of another valid number; renormalised over the valid numbers. Independent of the engine's code."""
    tok, model = eng.tokenizer, eng.model
    prompt = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
    base = tok(prompt, add_special_tokens=False)["input_ids"]
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    digits = torch.tensor([i for i, t in enumerate(vocab) if t and t[0] in "0123456789"])
    numbers = req.numbers or []
    scores = {}
    for n in numbers:
        full = tok(prompt + str(n), add_special_tokens=False)["input_ids"]
        assert full[: len(base)] == base
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        score = sum(float(logp[i - 1, full[i]]) for i in range(len(base), len(full)))
        if any(m != n and str(m).startswith(str(n)) for m in numbers):
            score += math.log(1 - float(logp[-1].exp()[digits].sum()))
        scores[n] = score
    top = max(scores.values())
    total = sum(math.exp(s - top) for s in scores.values())
    return {n: math.exp(s - top) / total for n, s in scores.items()}


def test_logprob_matches_brute_force_on_multi_token_numbers(engine: tuple[Engine, Any], wvs: WVSData) -> None:
    eng, cfg = engine
    # 1..10 (10 = "1","0"), 0..10 (0-based; "1" is a prefix of "10"), 1..4 and 0..2 in the same batch
    qs = _questions(wvs, ["Q48", "Q241", "Q1", "Q94"])
    assert [q.numbers[-1] for q in qs] == [10, 10, 4, 2] and qs[1].first_option == qs[3].first_option == 0
    reqs = _requests(cfg, qs, ["USA", None])
    got = _collect(eng.answer(reqs, Decoding("logprob")))
    for req in reqs:
        ref = _brute_force(eng, req)
        res = got[req.key]
        assert res.distribution is not None and set(res.distribution) == set(req.numbers or [])
        assert sum(res.distribution.values()) == pytest.approx(1.0, abs=1e-9)
        for n, p in ref.items():  # compared in log space: the tiny "10" probabilities must be right too
            assert math.log(res.distribution[n]) == pytest.approx(math.log(p), abs=2e-4), (req.key, n)
        assert res.answer == max(ref, key=lambda n: (ref[n], -n)) and res.text == str(res.answer) and res.valid


def test_logprob_mixed_context_shapes_in_one_batch(engine: tuple[Engine, Any], wvs: WVSData) -> None:
    """A 1..21 scale needs two contexts ("1" and "2", no chain), so it takes the second pass while the 1..10 row in
    the same batch is scored from its appended context and the 1..4 row needs no context: all match brute force."""
    eng, cfg = engine
    wide = Question("W21", "Rate it from 1 to 21.", tuple(str(i) for i in range(1, 22)), topic=None, source="test")
    reqs = _requests(cfg, [wide, *_questions(wvs, ["Q48", "Q1"])], ["USA"])
    got = _collect(eng.answer(reqs, Decoding("logprob")))
    for req in reqs:
        ref = _brute_force(eng, req)
        dist = got[req.key].distribution
        assert dist is not None and set(dist) == set(ref)
        for n, p in ref.items():
            assert math.log(dist[n]) == pytest.approx(math.log(p), abs=2e-4), (req.key, n)


def test_logprob_prefix_numbers_are_terminated(engine: tuple[Engine, Any], wvs: WVSData) -> None:
    """Without the terminator factor, "1" would absorb the mass of "10" and "11"; check the factor is applied."""
    eng, cfg = engine
    q = wvs.questions["Q241"]
    req = _requests(cfg, [q], ["USA"])[0]
    dist = _collect(eng.answer([req], Decoding("logprob")))[req.key].distribution
    assert dist is not None
    ref = _brute_force(eng, req)
    # an engine scoring bare "1" (no terminator) would give dist[1]/dist[2] = P(first="1")/P(first="2")
    prompt_ids = eng.tokenizer(eng.render(req.messages), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        first = torch.log_softmax(eng.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].double(), -1)
    one, two = eng.tokenizer.convert_tokens_to_ids(["1", "2"])
    bare_ratio = math.exp(float(first[one] - first[two]))
    assert dist[1] / dist[2] == pytest.approx(ref[1] / ref[2], rel=1e-3)
    assert dist[1] / dist[2] < bare_ratio * (1 - 1e-6)


@pytest.mark.parametrize("mode", ["greedy", "logprob"])
def test_batch_equals_single(make_cfg: Callable[..., Any], wvs: WVSData, mode: str) -> None:
    """Same answers whether a request runs alone (no prefix cache) or in a length-sorted batch with the shared-prefix
    cache and left padding."""
    cfg = make_cfg("generate", TINY)
    batched = Engine.from_config(cfg)
    alone = Engine(batched.model, batched.tokenizer, batch_size=1, sort_by_length=False, prefix_cache=False)
    qs = _questions(wvs, ["Q1", "Q27", "Q48", "Q164", "Q241", "Q131"])
    reqs = _requests(cfg, qs, ["USA", "CHN", None])
    plan = batched._plan(batched._prepare(reqs))
    assert any(b.prefix for b in plan) and any(len({len(i.ids) for i in b.items}) > 1 for b in plan)
    decoding = Decoding(mode, max_new_tokens=6)
    a = _collect(batched.answer(reqs, decoding))
    b = _collect(alone.answer(reqs, decoding))
    assert set(a) == set(b) == {r.key for r in reqs}
    for key in a:
        assert a[key].text == b[key].text and a[key].answer == b[key].answer and a[key].prompt == b[key].prompt
        if mode == "logprob":
            for n, p in b[key].distribution.items():  # type: ignore[union-attr]
                assert a[key].distribution[n] == pytest.approx(p, rel=1e-4, abs=1e-7)  # type: ignore[index]


def test_left_padding_mixed_lengths(engine: tuple[Engine, Any], wvs: WVSData) -> None:
    """Two prompts of very different length in one batch (no prefix cache): the short one is left-padded and must
    score exactly as when alone."""
    eng, cfg = engine
    short = Request("short", [{"role": "user", "content": "Pick 1 or 2."}], [1, 2])
    long_q = wvs.questions["Q48"]
    long = _requests(cfg, [long_q], ["USA"])[0]
    eng.prefix_cache, eng.sort_by_length, eng.batch_size, eng.max_padding = False, False, 2, None
    ids = [eng.tokenizer(eng.render(r.messages), add_special_tokens=False)["input_ids"] for r in (short, long)]
    assert len(ids[1]) > 3 * len(ids[0])
    together = _collect(eng.answer([short, long], Decoding("logprob")))
    for r in (short, long):
        alone = _collect(eng.answer([r], Decoding("logprob")))[r.key]
        for n, p in alone.distribution.items():  # type: ignore[union-attr]
            assert together[r.key].distribution[n] == pytest.approx(p, rel=1e-4)  # type: ignore[index]


def test_batches_bound_padding(engine: tuple[Engine, Any]) -> None:
    """max_padding closes a batch before its pad tokens exceed that share of its real tokens; batch_size caps rows;
    every request lands in exactly one batch; null gives fixed-size batches."""
    from culturespa.infer.planning import Item

    eng, _ = engine
    lengths = [5, 5, 6, 6, 6, 7, 12, 13, 13, 30, 31, 90, 8, 8, 8, 8]
    items = [Item(i, Request(str(i), [{"role": "user", "content": "x"}]), "", [1] * n) for i, n in enumerate(lengths)]
    eng.batch_size, eng.max_padding = 4, 0.1
    batches = list(eng._planner().chunks(items, prefix_len=2, tight=True))
    assert sorted(it.index for b in batches for it in b) == list(range(len(items)))
    for b in batches:
        own = [len(it.ids) - 2 for it in b]
        assert len(b) <= 4 and (len(b) == 1 or len(b) * max(own) <= 1.1 * sum(own)), own
    # own lengths 3, 3, then 4: padding 1 + 1 = 2 > 10 % of 10 closes the batch; 4, 4, 4 then 5 (3 pads > 1.7)
    assert [[len(it.ids) for it in b] for b in batches[:2]] == [[5, 5], [6, 6, 6]]
    assert [len(b) for b in eng._planner().chunks(items, prefix_len=2, tight=False)] == [4, 4, 4, 4]  # generation: full
    eng.max_padding = None
    assert [len(b) for b in eng._planner().chunks(items, prefix_len=2, tight=True)] == [4, 4, 4, 4]
    with pytest.raises(CultureSPAError, match="engine.max_padding"):
        Engine(eng.model, eng.tokenizer, max_padding=-1)


def test_generate_free_text(engine: tuple[Engine, Any]) -> None:
    eng, _ = engine
    reqs = [Request(f"g{i}", [{"role": "user", "content": f"Write survey question number {i}."}]) for i in range(5)]
    got = _collect(eng.generate(reqs, temperature=0.9, top_p=0.95, max_new_tokens=12, seed=3))
    assert set(got) == {r.key for r in reqs}
    for r in got.values():
        assert r.answer is None and r.distribution is None and isinstance(r.text, str) and r.text.strip()
        assert r.valid and r.prompt.endswith("<|im_start|>assistant\n")
    again = _collect(eng.generate(reqs, temperature=0.9, top_p=0.95, max_new_tokens=12, seed=3))
    assert {k: r.text for k, r in again.items()} == {k: r.text for k, r in got.items()}
    greedy = _collect(eng.generate(reqs[:2], temperature=0.0, top_p=1.0, max_new_tokens=4))
    assert all(r.text for r in greedy.values())


def test_sample_reproducible_per_request(make_cfg: Callable[..., Any], wvs: WVSData) -> None:
    """Seeded per (seed, key): same seed gives the same samples at any batch size; another seed gives others."""
    cfg = make_cfg("generate", TINY)
    eng = Engine.from_config(cfg)
    reqs = _requests(cfg, _questions(wvs, ["Q1", "Q2", "Q48", "Q241"]), ["USA", "DEU"])
    dec = Decoding("sample", temperature=0.6, top_p=0.9, max_new_tokens=8)
    first = _collect(eng.answer(reqs, dec, seed=7))
    second = _collect(eng.answer(reqs, dec, seed=7))
    single = _collect(Engine(eng.model, eng.tokenizer, batch_size=1, prefix_cache=False).answer(reqs, dec, seed=7))
    other = _collect(eng.answer(reqs, dec, seed=8))
    texts = lambda d: {k: r.text for k, r in d.items()}  # noqa: E731
    assert texts(first) == texts(second) == texts(single)
    assert texts(first) != texts(other)
    for r in first.values():
        assert r.valid == (r.answer is not None) and r.distribution is None


def test_stops_at_end_of_turn(engine: tuple[Engine, Any]) -> None:
    """Generation ends at a stop token, which is not part of the text (mid-reply stops: see the embedded test)."""
    eng, _ = engine
    req = Request("s", [{"role": "user", "content": "Write a survey question."}])
    ids = eng.tokenizer(eng.render(req.messages), add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # the first greedy token, computed without the engine
        first = int(eng.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    assert _collect(eng.generate([req], temperature=0, top_p=1.0, max_new_tokens=3))[req.key].text
    eng.stop_ids = eng.stop_ids | {first}
    empty = _collect(eng.generate([req], temperature=0, top_p=1.0, max_new_tokens=3))[req.key]
    assert empty.text == "" and not empty.valid


def test_option_list_replies_rejected_when_asked(
    engine: tuple[Engine, Any], wvs: WVSData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """decoding.reject_option_lists reaches the parser: an echoed option list is option 1 by default, invalid if set."""
    eng, cfg = engine
    monkeypatch.setattr(eng.tokenizer, "decode", lambda *a, **k: "1. Strongly agree\n2. Agree\n3.")
    req = _requests(cfg, _questions(wvs, ["Q1"]), ["USA"])[0]
    lenient = _collect(eng.answer([req], Decoding("greedy", max_new_tokens=2)))[req.key]
    strict = _collect(eng.answer([req], Decoding("greedy", max_new_tokens=2, reject_option_lists=True)))[req.key]
    assert (lenient.answer, lenient.valid) == (1, True)
    assert (strict.answer, strict.valid) == (None, False) and strict.text == lenient.text
    node = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "decoding" / "greedy.yaml"), {"reject_option_lists": True})
    assert Decoding.from_config(node).reject_option_lists is True


def test_decoding_config_and_errors(engine: tuple[Engine, Any]) -> None:
    for name in ("sample", "greedy", "logprob"):
        node = OmegaConf.load(REPO / "conf" / "decoding" / f"{name}.yaml")
        assert Decoding.from_config(node).mode == name
    assert Decoding.from_config(OmegaConf.load(REPO / "conf" / "decoding" / "sample.yaml")).temperature == 0.6
    with pytest.raises(CultureSPAError, match="decoding.mode"):
        Decoding("beam")
    with pytest.raises(CultureSPAError, match="top_p"):
        Decoding("sample", top_p=0.0)
    eng, _ = engine
    with pytest.raises(CultureSPAError, match="needs option numbers"):
        list(eng.answer([Request("x", [{"role": "user", "content": "hi"}])], Decoding("logprob")))
    with pytest.raises(CultureSPAError, match="no option numbers"):
        list(eng.answer([Request("x", [{"role": "user", "content": "hi"}], [])], Decoding("greedy")))
    assert list(eng.answer([], Decoding("greedy"))) == []


@pytest.mark.slow
def test_embedded_model_answers_two_cultures(make_cfg: Callable[..., Any], wvs: WVSData) -> None:
    cfg = make_cfg("generate", ["model=smollm2_135m"])
    eng = Engine.from_config(cfg)
    qs = _questions(wvs, ["Q1", "Q48", "Q241"])
    reqs = _requests(cfg, qs, ["USA", "CHN"])
    scored = _collect(eng.answer(reqs, Decoding("logprob")))
    greedy = _collect(eng.answer(reqs, Decoding("greedy", max_new_tokens=8)))
    for req in reqs:
        s, g = scored[req.key], greedy[req.key]
        assert s.valid and s.answer in (req.numbers or []) and s.distribution is not None
        assert sum(s.distribution.values()) == pytest.approx(1.0)
        assert g.valid and g.answer in (req.numbers or []), g.text  # the instruct model answers with a number
    # a stop token mid-reply ends it there: stopping at "." keeps only what came before the first "."
    eng.stop_ids = eng.stop_ids | {eng.tokenizer.convert_tokens_to_ids(".")}
    cut = _collect(eng.answer(reqs, Decoding("greedy", max_new_tokens=8)))
    for key, r in cut.items():
        if "." in greedy[key].text:
            assert r.text == greedy[key].text.split(".")[0], (r.text, greedy[key].text)
    # the culture is in the prompt and changes the distribution
    assert scored["Q1|USA"].distribution != scored["Q1|CHN"].distribution
