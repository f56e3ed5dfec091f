"""A researcher's first hour (issue 14): debug runs that flow, a joint run that survives an empty culture, a pipeline
that reads only its own cache, our own answer files as predictions, honest progress bars, single log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.train.sft_data import prepare_splits
from culturespa.train.synthetic import write_pairs

TINY_TRAIN = [
    "model=tiny_random",
    "logger=csv",
    "sft.global_batch_size=4",
    "sft.micro_batch_size=2",
    "sft.max_steps=1",
    "trainer.enable_progress_bar=false",
]


def test_debug_presets_pick_answers_that_always_parse_and_pool_questions(make_cfg) -> None:  # noqa: ANN001
    for preset in ("default", "tiny"):
        cfg = make_cfg("generate", [f"debug={preset}"])
        assert cfg.decoding.mode == "logprob"  # a small or random model's greedy replies often hold no option number
        assert cfg.filter.input == "paper" and cfg.filter.limit_per_topic == 1
        assert cfg.data.criterion == "none"  # a small model's top option rarely moves with the culture
        assert cfg.questions.max_retries <= 1
    assert make_cfg("generate", ["debug=tiny"]).model.name == "tiny_random"


def test_joint_splits_skip_an_empty_culture_and_stop_only_when_all_are(make_cfg, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    pairs = write_pairs(tmp_path / "pairs", {"USA": 6, "CHN": 6})
    (pairs / "KEN.jsonl").write_text("")
    cfg = make_cfg("train", [*TINY_TRAIN, f"sft.pairs_dir={pairs}"])
    with caplog.at_level(logging.WARNING, logger="culturespa.train"):
        splits = prepare_splits(cfg, ["USA", "KEN", "CHN"], skip_empty=True)
    assert list(splits) == ["USA", "CHN"]
    assert any("KEN" in r.getMessage() and "empty" in r.getMessage() for r in caplog.records)
    with pytest.raises(CultureSPAError, match="no pairs for culture KEN"):
        prepare_splits(cfg, ["USA", "KEN"])  # culture-specific: KEN's adapter cannot be trained
    empty = tmp_path / "empty"
    empty.mkdir()
    for code in ("USA", "KEN"):
        (empty / f"{code}.jsonl").write_text("")
    with pytest.raises(CultureSPAError, match="no pairs for any culture"):
        prepare_splits(make_cfg("train", [*TINY_TRAIN, f"sft.pairs_dir={empty}"]), ["USA", "KEN"], skip_empty=True)


@pytest.mark.slow
def test_joint_run_trains_without_the_empty_culture(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from culturespa.train.run import train

    pairs = write_pairs(tmp_path / "pairs", {"USA": 6, "CHN": 6})
    (pairs / "KEN.jsonl").write_text("")
    out = tmp_path / "out"
    cfg = make_cfg("train", [*TINY_TRAIN, "cultures=[USA,KEN,CHN]", f"sft.pairs_dir={pairs}", f"sft.output_dir={out}"])
    result = train(cfg)
    assert result["skipped_cultures"] == ["KEN"]
    meta = json.loads((out / "adapter" / "culturespa.json").read_text())
    assert meta["cultures"] == ["USA", "CHN"]
