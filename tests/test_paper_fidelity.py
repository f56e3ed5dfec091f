"""Places where the paper's code decides a number, beyond the filter and gold ties: P2's culture lists and the
``paper_*`` presets' training settings (LLaMA-Factory configs of the paper's repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culturespa.config import compose
from culturespa.wvs.cultures import PAPER_CULTURES, resolve_cultures
from culturespa.wvs.survey import WVSData


def _paper_lists(row: dict[str, float]) -> tuple[list[str], list[str]]:
    """The paper's rule, restated: sort ascending (stable), least similar from the start, most from the end."""
    ascending = sorted(row, key=lambda c: row[c])
    return ascending[::-1][:3], ascending[:3]


def test_p2_cultures_follow_the_paper_tie_order(wvs: WVSData) -> None:
    raw = json.loads((wvs.root / "country_similarity.json").read_text())
    for culture in PAPER_CULTURES:
        assert wvs.most_and_least_similar(culture, list(PAPER_CULTURES)) == _paper_lists(raw[culture]), culture
    # ties the old (value, then code) order broke the other way
    assert wvs.most_and_least_similar("DEU", list(PAPER_CULTURES))[0] == ["AUS", "NZL", "NLD"]
    assert wvs.most_and_least_similar("BRA", list(PAPER_CULTURES))[1] == ["IND", "ZWE", "NGA"]
    assert wvs.most_and_least_similar("NZL", list(PAPER_CULTURES))[0] == ["AUS", "NLD", "CAN"]


@pytest.mark.parametrize(
    ("experiment", "global_batch", "micro_batch"),
    [("paper_joint", 128, 4), ("paper_cct", 128, 4), ("paper_quality", 128, 4), ("paper_specific", 8, 1)],
)
def test_paper_presets_train_like_the_paper(
    experiment: str, global_batch: int, micro_batch: int, tmp_path: Path
) -> None:
    """LLaMA-Factory in the paper's repo: joint 4 x 32 = 128 (one GPU), specific 1 x 8 = 8; LoRA rank 8 (alpha 16,
    dropout 0 are LLaMA-Factory's defaults) on all linear layers; lr 1e-4, 1 epoch, cosine, warm-up 0.1, cut-off 4096,
    no validation split; answers and evaluation sampled at T 0.6 / top-p 0.9 with up to 256 new tokens, 3 runs."""
    cfg = compose("pipeline", [f"experiment={experiment}"], output_dir=tmp_path)
    assert (cfg.sft.global_batch_size, cfg.sft.micro_batch_size) == (global_batch, micro_batch)
    assert (cfg.peft.r, cfg.peft.alpha, cfg.peft.dropout) == (8, 16, 0.0)
    assert set(cfg.peft.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (cfg.sft.lr, cfg.sft.epochs, cfg.sft.scheduler, cfg.sft.warmup_ratio) == (1e-4, 1, "cosine", 0.1)
    assert cfg.sft.weight_decay == 0.0 and cfg.data.cutoff_len == 4096 and cfg.data.val_fraction == 0.0
    assert (cfg.decoding.mode, cfg.decoding.temperature, cfg.decoding.top_p) == ("sample", 0.6, 0.9)
    assert cfg.decoding.max_new_tokens == 256 and cfg.decoding.parse == "first_integer"
    assert cfg.eval.runs == 3 and cfg.filter.rules == "paper"
    assert (cfg.questions.per_topic, cfg.questions.temperature, cfg.questions.top_p) == (1000, 0.9, 0.95)
    assert (cfg.questions.n_examples, cfg.questions.n_generated, cfg.questions.max_new_tokens) == (5, 2, 256)
    qg = cfg.templates.question_generation
    assert qg.system and qg.response_prefix == ""  # a system prompt, and the reply is not started for the model


def test_paper_quantity_sweeps_the_paper_ratios(tmp_path: Path) -> None:
    """sub_yaml.py writes a config per ratio for `all` and for each of the 18 cultures, all at batch 4 x 32."""
    cfg = compose("train", ["experiment=paper_quantity"], output_dir=tmp_path)
    ratios = [float(x) for x in str(cfg.hydra.sweeper.params["data.fraction"]).split(",")]
    assert ratios == [round(0.1 * i, 1) for i in range(1, 11)]  # the paper's 0.1 ... 0.9, plus the full set
    assert str(cfg.hydra.sweeper.params["mode"]).split(",") == ["joint", "specific"]
    specific = compose("train", ["experiment=paper_quantity", "mode=specific"], output_dir=tmp_path)
    assert specific.mode.name == "specific" and resolve_cultures(specific.cultures) == list(PAPER_CULTURES)
    assert (specific.sft.global_batch_size, specific.sft.micro_batch_size) == (128, 4)


def test_paper_cct_trains_with_the_aware_system_prompt(tmp_path: Path) -> None:
    """The log of the paper's CCT run (llama3_lora_sft_random_all_cross_totally) prints a training example whose system
    prompt is the plain culture-aware one; its pairs compare CCT answers (data.system) with the unaware ones."""
    from culturespa.train.run import TrainSettings

    cfg = compose("train", ["experiment=paper_cct"], output_dir=tmp_path)
    assert (
        cfg.data.system == "cct"
        and TrainSettings.from_config(cfg).style.system == "aware"
        and cfg.prompt.system == "cct"
    )
    as_cct = compose("train", ["experiment=paper_cct", "data.train_system=cct"], output_dir=tmp_path)
    assert TrainSettings.from_config(as_cct).style.system == "cct"
    joint = compose("train", ["experiment=paper_joint"], output_dir=tmp_path)
    assert joint.data.train_system is None and TrainSettings.from_config(joint).style.system == "aware"


@pytest.mark.parametrize(
    "experiment", ["paper_joint", "paper_cct", "paper_quality", "paper_quantity", "paper_specific"]
)
def test_paper_presets_seed_runs_42_minus_r(experiment: str, tmp_path: Path) -> None:
    """The paper's scripts call set_seed(42 - run_id); evaluation run r of a paper_* preset samples with seed 42 - r."""
    from culturespa.infer.engine import Decoding

    cfg = compose("evaluate", [f"experiment={experiment}"], output_dir=tmp_path)
    decoding = Decoding.from_config(cfg.decoding)
    assert [decoding.run_seed(int(cfg.seed), run) for run in range(int(cfg.eval.runs))] == [42, 41, 40]
    assert (cfg.questions.exposure, cfg.questions.accept, cfg.questions.top_k, decoding.top_k) == (
        "sequential",
        "strict",
        50,
        50,
    )


def test_fidelity_prints_the_presets_and_reading_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from culturespa import fidelity

    fidelity.paper_presets(tmp_path)
    fidelity.reading_rules()
    out = capsys.readouterr().out
    assert out.count("answers + evaluation: T 0.6, top-k 50, top-p 0.9, seeds [42, 41, 40]") == 5
    assert out.count("questions: T 0.9, top-k 50, top-p 0.95, exposure sequential, accept strict") == 5
    assert "pairs from cct answers; SFT system prompt aware" in out and "mode=joint,specific" in out
    assert "the paper's \\d reads 3; ours reads None" in out and "'a Ukrainian'" in out
