"""The pipeline end to end on the tiny model, and its stage caching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from culturespa.pipeline import run_pipeline
from culturespa.stages.identity import PIPELINE_STAGES as STAGES
from culturespa.stages.identity import stage_hash

pytestmark = pytest.mark.slow

TINY_SMOKE = [
    "experiment=smoke",
    "model=tiny_random",
    "questions.per_topic=1",  # the smoke preset's source is `both`: the tiny model's (invalid) questions + the pool
    "questions.max_retries=1",
    "questions.max_new_tokens=32",
    "filter.limit_per_topic=2",
    "decoding=logprob",  # a random model's sampled replies hold no option number; logprob answers always do
    "data.criterion=none",  # and its answers rarely shift with culture: keep every aware answer
    "eval.limit=20",
    "sft.epochs=1",
]


def _run(make_cfg, root: Path, *extra: str) -> dict:  # noqa: ANN001
    cfg = make_cfg("pipeline", [*TINY_SMOKE, *extra])
    with open_dict(cfg):
        cfg.pipeline.root = str(root)
    return run_pipeline(cfg)


def test_smoke_pipeline_runs_then_reuses_every_stage(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    root = tmp_path / "pipeline"
    first = _run(make_cfg, root)
    assert first["recomputed"] == [
        "questions",
        "filter",
        "filter-pool",
        "answers",
        "pairs",
        "train",
        "eval-base",
        "eval-culturespa",
    ]
    assert [row["culture"] for row in first["cultures"]] == ["USA", "CHN"]
    assert all(row["total"] == 20 for row in first["cultures"])
    assert first["average"]["base"] is not None and first["average"]["culturespa"] is not None
    comparison = json.loads(Path(first["comparison_file"]).read_text())
    assert comparison["average"] == first["average"]
    refs = comparison["references"]
    assert set(refs) == {"first_option", "middle_option", "uniform_random", "culture_blind"}
    assert all(0 < v < 100 for v in refs.values())
    # Paired intervals and p from the stored answers (same questions, both systems).
    for block in [*comparison["cultures"], comparison["average"]]:
        assert block["base_lo"] <= block["base"] <= block["base_hi"]
        assert block["delta"] == pytest.approx(block["culturespa"] - block["base"], abs=1e-9)
        assert block["delta_lo"] <= block["delta"] <= block["delta_hi"] and 0 < block["p"] <= 1
    assert comparison["uncertainty"]["p_value"] == "permutation"
    files = first["files"]
    assert (Path(files["filter-pool"]) / "filtered.jsonl").exists()
    assert (Path(files["answers"]) / "questions" / "filter.jsonl").exists()
    assert (Path(files["answers"]) / "unaware.jsonl").exists()
    assert (Path(files["answers"]) / "aware_CHN.jsonl").exists()
    assert (Path(files["pairs"]) / "USA.jsonl").exists()
    assert (Path(files["train"]) / "adapter" / "adapter_config.json").exists()
    assert (Path(files["eval-culturespa"]) / "alignment.json").exists()

    again = _run(make_cfg, root)
    assert again["recomputed"] == []
    assert again["average"] == first["average"]

    # A training knob reruns only training and the evaluation of the adapter.
    tuned = _run(make_cfg, root, "sft.lr=1e-3")
    assert tuned["recomputed"] == ["train", "eval-culturespa"]
    assert tuned["files"]["answers"] == first["files"]["answers"]
    assert tuned["files"]["train"] != first["files"]["train"]

    # force reruns a stage and everything that reads it.
    forced = _run(make_cfg, root, "force=[pairs]")
    assert forced["recomputed"] == ["pairs", "train", "eval-culturespa"]


def test_stage_hash_ignores_paths_but_not_settings(make_cfg) -> None:  # noqa: ANN001
    cfg = make_cfg("pipeline", TINY_SMOKE)
    base = stage_hash(cfg, "train", ["x"])
    with open_dict(cfg):
        cfg.sft.output_dir = "/somewhere/else"
        cfg.sft.pairs_dir = "/another/place"
    assert stage_hash(cfg, "train", ["x"]) == base
    assert stage_hash(cfg, "train", ["y"]) != base
    with open_dict(cfg):
        cfg.peft.r = 16
    assert stage_hash(cfg, "train", ["x"]) != base
    assert set(STAGES) >= {"questions", "train", "evaluate"}


def test_stage_hash_sees_the_dtype_auto_resolves_to(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """model.dtype=auto runs bf16 on a CPU with native bf16 and fp32 on an AVX2-only one: their answers differ, so a
    stage store shared by both machines must key them apart (and auto must share with the dtype it resolves to)."""
    from culturespa.models import dtype

    cfg = make_cfg("pipeline", [*TINY_SMOKE, "model.dtype=auto", "engine.device=cpu"])
    keys = {}
    for native in (True, False):
        monkeypatch.setattr(dtype, "cpu_has_native_bf16", lambda native=native: native)
        keys[native] = stage_hash(cfg, "answers", ["f"])
    assert keys[True] != keys[False]
    assert keys[False] == stage_hash(make_cfg("pipeline", [*TINY_SMOKE, "model.dtype=float32"]), "answers", ["f"])


def test_seed_sweep_reuses_the_pinned_question_pool(make_cfg) -> None:  # noqa: ANN001
    """A training-seed sweep with ``filter.seed`` pinned and logprob answers must share the filtered pool and the
    answers (a changed filter hash would cascade into recomputing every answer file); sampled answers follow the seed."""
    cfg = make_cfg("pipeline", [*TINY_SMOKE, "filter.seed=0", "decoding=logprob"])
    other = make_cfg("pipeline", [*TINY_SMOKE, "filter.seed=0", "decoding=logprob", "seed=7"])
    assert stage_hash(cfg, "filter") == stage_hash(other, "filter")
    assert stage_hash(cfg, "answers", ["f"]) == stage_hash(other, "answers", ["f"])
    assert stage_hash(cfg, "train", ["p"]) != stage_hash(other, "train", ["p"])
    unpinned = make_cfg("pipeline", [*TINY_SMOKE, "seed=7"])
    assert stage_hash(unpinned, "filter") != stage_hash(make_cfg("pipeline", TINY_SMOKE), "filter")
    sampled = [make_cfg("pipeline", [*TINY_SMOKE, "decoding=sample", f"seed={s}"]) for s in (1, 2)]
    assert stage_hash(sampled[0], "answers", ["f"]) != stage_hash(sampled[1], "answers", ["f"])


def test_settings_outside_a_stage_identity_are_named_by_their_full_key(make_cfg) -> None:  # noqa: ANN001
    """data.bootstrap shapes only the pairs' noise statistics: it reruns pairs, not training; a key of the same leaf
    name in another node (here a new ``peft.bootstrap``) still counts for the stage that reads that node."""
    cfg = make_cfg("pipeline", TINY_SMOKE)
    other = make_cfg("pipeline", [*TINY_SMOKE, "data.bootstrap=17"])
    assert stage_hash(cfg, "pairs", ["a"]) != stage_hash(other, "pairs", ["a"])
    assert stage_hash(cfg, "train", ["p"]) == stage_hash(other, "train", ["p"])
    with open_dict(other):
        other.peft.bootstrap = 3
    assert stage_hash(cfg, "train", ["p"]) != stage_hash(other, "train", ["p"])
