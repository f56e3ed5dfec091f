"""SFT data: pairs validation, splits and subsampling counts, label masking, collate, sampler sharding/resume."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from culturespa.errors import CultureSPAError
from culturespa.models.loader import ModelSpec, load_tokenizer
from culturespa.settings import DataSettings
from culturespa.train.datamodule import Collator, SFTDataModule, ShardedSampler, steps_per_epoch
from culturespa.train.module import SFTModule
from culturespa.train.run import BatchPlan, TrainSettings, world_size
from culturespa.train.sft_data import IGNORE_INDEX, ExampleEncoder, prepare_splits, read_pairs
from culturespa.train.synthetic import pair_record, write_pairs
from culturespa.wvs.cultures import PAPER_CULTURES


@pytest.fixture(scope="module")
def tokenizer():
    from culturespa.config import compose

    cfg = compose("train", ["model=tiny_random"])
    return load_tokenizer(ModelSpec.from_config(cfg.model), cfg.paths.cache_dir)


def test_counts_joint_specific_fraction(make_cfg, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs", {"USA": 40, "CHN": 21})
    base = ["model=tiny_random", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}", "data.val_fraction=0.1"]

    def splits(*extra: str) -> dict:
        cfg = make_cfg("train", [*base, *extra])
        return prepare_splits(cfg.sft.pairs_dir, DataSettings.from_config(cfg.data), ["USA", "CHN"])

    full = splits()
    assert {c: (len(s.train), len(s.val)) for c, s in full.items()} == {"USA": (36, 4), "CHN": (19, 2)}
    half = splits("data.fraction=0.5")
    assert {c: len(s.train) for c, s in half.items()} == {"USA": 18, "CHN": 10}  # round(36/2), round(19/2)
    # the validation split does not depend on the fraction, and the subsample is a subset, stratified by topic
    for code in ("USA", "CHN"):
        assert [p.id for p in half[code].val] == [p.id for p in full[code].val]
        assert {p.id for p in half[code].train} <= {p.id for p in full[code].train}
        rest = [p.topic for p in full[code].train]
        kept = [p.topic for p in half[code].train]
        assert all(abs(kept.count(t) - rest.count(t) * len(kept) / len(rest)) < 1 for t in set(rest))
    again = splits("data.fraction=0.5")
    assert [p.id for p in again["USA"].train] == [p.id for p in half["USA"].train]
    other_seed = splits("data.fraction=0.5", "data.seed=7")
    assert [p.id for p in other_seed["USA"].train] != [p.id for p in half["USA"].train]


def test_pairs_errors_are_one_line(tmp_path: Path) -> None:
    folder = write_pairs(tmp_path / "pairs", {"USA": 3})
    with pytest.raises(CultureSPAError, match=r"CHN\.jsonl: pairs file for culture CHN not found"):
        read_pairs(folder / "CHN.jsonl", "CHN")
    (folder / "KEN.jsonl").write_text("")
    with pytest.raises(CultureSPAError, match="no pairs for culture KEN"):
        read_pairs(folder / "KEN.jsonl", "KEN")
    (folder / "BAD.jsonl").write_text('{"id": "x"\n')
    with pytest.raises(CultureSPAError, match=r"BAD\.jsonl:1: malformed JSON"):
        read_pairs(folder / "BAD.jsonl", "USA")
    record = pair_record("USA", 0, __import__("random").Random(0))
    record["answer"] = 9
    (folder / "NGA.jsonl").write_text(json.dumps(record | {"culture": "NGA"}) + "\n")
    with pytest.raises(CultureSPAError, match=r"NGA\.jsonl:1: answer 9 is not an option number") as err:
        read_pairs(folder / "NGA.jsonl", "NGA")
    assert "\n" not in str(err.value)


def test_labels_keep_answer_and_end_of_turn_when_pad_is_eos(tokenizer, tmp_path: Path) -> None:
    from culturespa.config import compose

    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the SmolLM2 trap this test is about
    style = TrainSettings.from_config(compose("train", ["model=tiny_random"])).style
    encoder = ExampleEncoder(tokenizer, style, "aware", 512)
    pair = read_pairs(write_pairs(tmp_path / "p", {"USA": 1}) / "USA.jsonl", "USA")[0]
    example = encoder.encode(pair)
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == f"{pair.answer}<|im_end|>"
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    text = tokenizer.decode(example["input_ids"])
    assert "American" in text and pair.question.text in text and "#Options: 1.Very important 2." in text

    short = ExampleEncoder(tokenizer, style, "aware", 20).encode(pair)  # left truncation keeps the answer
    assert len(short["input_ids"]) == 20 and short["labels"][-2:] == example["labels"][-2:]

    batch = Collator(tokenizer.pad_token_id)([example, short])
    assert batch["input_ids"].shape == (2, len(example["input_ids"]))
    assert batch["attention_mask"][1].sum() == 20 and batch["attention_mask"][0].all()
    # the padded row: pads (== eos ids) are masked by position; the real end-of-turn keeps its label
    assert (batch["labels"][1, 20:] == IGNORE_INDEX).all()
    assert batch["labels"][1, 19] == tokenizer.eos_token_id
    assert (batch["labels"] != IGNORE_INDEX).sum() == 4


def test_cct_system_prompt_names_similar_cultures(tokenizer, tmp_path: Path, wvs) -> None:
    from culturespa.config import compose

    style = TrainSettings.from_config(compose("train", ["model=tiny_random", "data.system=cct"])).style
    assert style.system == "cct"
    pair = read_pairs(write_pairs(tmp_path / "p", {"CHN": 1}) / "CHN.jsonl", "CHN")[0]
    messages = ExampleEncoder(tokenizer, style, "cct", 512, wvs).messages(pair)
    similar, dissimilar = wvs.most_and_least_similar("CHN", list(PAPER_CULTURES), 3)
    assert "Chinese" in messages[0]["content"] and len(similar) == 3 and len(dissimilar) == 3
    assert messages[-1] == {"role": "assistant", "content": str(pair.answer)}


def test_sampler_shards_global_batches_identically_and_resumes() -> None:
    single = ShardedSampler(10, seed=3, shuffle=True)
    ranks = [ShardedSampler(10, seed=3, shuffle=True, rank=r, world_size=2) for r in range(2)]
    order = list(single)
    # one optimiser step of global batch 4: world 1 takes order[:4]; each of 2 ranks takes 2, together the same 4
    assert sorted(list(ranks[0])[:2] + list(ranks[1])[:2]) == sorted(order[:4])
    single.set_epoch(1)
    assert list(single) != order
    resumed = ShardedSampler(10, seed=3, shuffle=True)
    resumed.set_epoch(1)
    resumed.skip, resumed.skip_epoch = 4, 1
    assert list(resumed) == list(single)[4:]
    assert steps_per_epoch(10, 2, 1, 2) == 3 and steps_per_epoch(10, 2, 2, 1) == 3


def test_batch_plan_follows_world_size(make_cfg) -> None:
    cfg = make_cfg("train", ["model=tiny_random", "trainer=ddp", "trainer.accelerator=cpu"])
    assert world_size(cfg.trainer) == 2
    assert BatchPlan.from_config(cfg).accumulate == 128 // (4 * 2)
    bad = make_cfg(
        "train", ["trainer=ddp", "trainer.accelerator=cpu", "sft.global_batch_size=12", "sft.micro_batch_size=4"]
    )
    with pytest.raises(CultureSPAError, match="multiple of sft.micro_batch_size=4 x 2 devices"):
        BatchPlan.from_config(bad)


def test_module_and_data_pickle_small(make_cfg) -> None:
    """ddp_spawn pickles both; the base model is loaded later, in each worker's configure_model."""
    module = SFTModule({"name": "tiny_random"}, {"r": 8}, {"lr": 1e-4}, None, 10)
    data = SFTDataModule([{"input_ids": [1, 2], "labels": [-100, 2]}], [], 1, 1, 2, 0)
    blob = pickle.dumps((module, data))
    assert len(blob) < 100_000
    restored, _ = pickle.loads(blob)
    assert restored.model is None and restored.strict_loading is False
    assert torch.is_tensor(Collator(2)([{"input_ids": [1], "labels": [1]}])["input_ids"])
