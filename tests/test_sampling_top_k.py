"""Top-k in every sampling path: the filter against transformers' own warpers (top-k, then top-p), the engine's answer
and free-text paths honouring it, its default of 50 under ``paper_*`` for answers, evaluation and question generation,
and sampled answers still reproducible per request seed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from culturespa.config import compose, validate_config
from culturespa.errors import CultureSPAError
from culturespa.infer import sampling
from culturespa.infer.engine import Decoding, Engine, Request

PAPER = ["paper_joint", "paper_cct", "paper_quality", "paper_quantity", "paper_specific"]


def _kept(probs: torch.Tensor) -> set[int]:
    return set(torch.nonzero(probs > 0).flatten().tolist())


def test_top_k_keeps_the_k_largest_and_ties() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.5]])
    assert torch.isinf(sampling.top_k_filter(logits, 2)).tolist() == [[False, True, False, False, True]]
    assert torch.isinf(sampling.top_k_filter(logits, 3)).tolist() == [[False, True, False, False, True]]  # a tie
    assert torch.equal(sampling.top_k_filter(logits, 0), logits)  # 0 = off
    assert torch.equal(sampling.top_k_filter(logits, 9), logits)


def test_top_k_applies_before_top_p() -> None:
    """Probabilities 0.4 / 0.3 / 0.2 / 0.1: top-p 0.5 alone keeps two tokens; top-k 2 first renormalises to 4:3, so
    the first token alone reaches 0.5 and is the only one left."""
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    gens = [torch.Generator().manual_seed(s) for s in range(1)]
    picks = {int(sampling.choose(logits, False, 1.0, 0.5, gens, top_k=2)) for _ in range(200)}
    assert picks == {0}
    picks = {int(sampling.choose(logits, False, 1.0, 0.5, gens, top_k=0)) for _ in range(200)}
    assert picks == {0, 1}


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.6, 50, 0.9), (0.9, 50, 0.95), (1.0, 5, 1.0)])
def test_kept_tokens_match_transformers(temperature: float, top_k: int, top_p: float) -> None:
    """The tokens our filter leaves equal those transformers' TemperatureLogitsWarper, TopKLogitsWarper and
    TopPLogitsWarper leave, in that order (what generate(do_sample=True, temperature, top_p) runs)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList(
        [TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)]
    )
    torch.manual_seed(0)
    for _ in range(20):
        logits = torch.randn(3, 500) * 3
        theirs = torch.softmax(warpers(None, logits.clone()), dim=-1)
        ours = sampling.top_p_filter(torch.softmax(sampling.top_k_filter(logits / temperature, top_k), dim=-1), top_p)
        for row in range(3):
            assert _kept(ours[row]) == _kept(theirs[row])


def test_engine_paths_honour_top_k(make_cfg: Callable[..., Any]) -> None:
    """top_k 1 makes sampling greedy in the answer path and in the free-text path; other top-k values still sample
    reproducibly per request."""
    cfg = make_cfg("generate", ["model=tiny_random"])
    eng = Engine.from_config(cfg)
    reqs = [Request(f"r{i}", [{"role": "user", "content": f"Say something about {i}."}]) for i in range(4)]
    text = lambda batches: {r.key: r.text for batch in batches for r in batch}  # noqa: E731
    greedy = text(eng.generate(reqs, 0.0, 1.0, 6))
    assert text(eng.generate(reqs, 1.5, 1.0, 6, seed=1, top_k=1)) == greedy
    sampled = text(eng.generate(reqs, 1.5, 1.0, 6, seed=1, top_k=50))
    assert sampled != greedy and text(eng.generate(reqs, 1.5, 1.0, 6, seed=1, top_k=50)) == sampled

    answers = [Request(f"a{i}", r.messages, [1, 2, 3]) for i, r in enumerate(reqs)]
    as_greedy = text(eng.answer(answers, Decoding("greedy", max_new_tokens=6)))
    assert text(eng.answer(answers, Decoding("sample", 1.5, 1.0, 6, top_k=1), seed=3)) == as_greedy
    with pytest.raises(CultureSPAError, match="top_k"):
        list(eng.generate(reqs, 1.0, 1.0, 2, top_k=-1))


def test_decoding_top_k_and_seed_step_from_config(tmp_path: Path) -> None:
    sample = Decoding.from_config(compose("evaluate", ["decoding=sample"], output_dir=tmp_path).decoding)
    assert sample.top_k == 50 and sample.seed_step == 1 and [sample.run_seed(42, r) for r in range(3)] == [42, 43, 44]
    assert Decoding.from_config({"mode": "sample", "temperature": 0.6}).top_k == sampling.DEFAULT_TOP_K == 50
    with pytest.raises(CultureSPAError, match="decoding.top_k"):
        Decoding("sample", 0.6, top_k=-1)
    with pytest.raises(CultureSPAError, match="decoding.seed_step"):
        Decoding("sample", 0.6, seed_step=0)
    for key in ("decoding.top_k", "questions.top_k"):
        with pytest.raises(CultureSPAError, match=key):
            validate_config(compose("generate", ["decoding=sample", f"{key}=-1"], output_dir=tmp_path))


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_presets_sample_with_top_k_50_and_seeds_42_minus_run(experiment: str, tmp_path: Path) -> None:
    """Answers, evaluation (both from ``decoding``) and question generation sample with top-k 50 (transformers'
    default, which the paper's generate() calls kept); evaluation run r uses seed 42 - r as the paper's scripts do."""
    for config in ("pipeline", "evaluate", "generate"):
        cfg = compose(config, [f"experiment={experiment}"], output_dir=tmp_path)
        decoding = Decoding.from_config(cfg.decoding)
        assert (decoding.mode, decoding.top_k, cfg.questions.top_k) == ("sample", 50, 50), config
        assert cfg.seed == 42 and [decoding.run_seed(cfg.seed, r) for r in range(cfg.eval.runs)] == [42, 41, 40]
