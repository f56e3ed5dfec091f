"""The stage home keeps every digest the package ever wrote: the values below were computed by the hashers before
they became one function (pipeline stage folders, run folders, training and output sidecars, evaluation answers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from culturespa.config import compose
from culturespa.evaluate.answering import FINGERPRINT_KEYS
from culturespa.stages.identity import (
    GENERATE_STAGES,
    PIPELINE_STAGES,
    DoneRecord,
    config_hash,
    config_key,
    fingerprint,
    pairs_digest,
    read_done,
    run_inputs,
    run_key,
    stage_hash,
    write_done,
)
from culturespa.train.run import fingerprint as training_fingerprint
from culturespa.utils.rundirs import run_dir_name

PINNED_STAGES = {
    ("sample", "questions"): "130aace47e",
    ("sample", "filter"): "ea8f5fcdc1",
    ("sample", "answers"): "cfdb917a3d",
    ("sample", "pairs"): "3b8d198fba",
    ("sample", "train"): "47b36ac9a5",
    ("sample", "evaluate"): "8756e14505",
    ("logprob", "questions"): "130aace47e",
    ("logprob", "filter"): "ea8f5fcdc1",
    ("logprob", "answers"): "8160504b2d",
    ("logprob", "pairs"): "3b8d198fba",
    ("logprob", "train"): "47b36ac9a5",
    ("logprob", "evaluate"): "d05633dbf5",
}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> object:
    """Configs whose paths do not depend on the checkout: the digests hold on any machine."""
    monkeypatch.setenv("CULTURESPA_ROOT", "/pinned-root")
    monkeypatch.delenv("CULTURESPA_DATA_DIR", raising=False)
    monkeypatch.delenv("CULTURESPA_CACHE", raising=False)

    def make(name: str, *overrides: str) -> DictConfig:
        return compose(name, ["model.dtype=float32", *overrides], output_dir="/pinned-out")

    return make


def test_stage_hashes_are_unchanged(pinned) -> None:  # noqa: ANN001
    for decoding in ("sample", "logprob"):
        cfg = pinned("pipeline", f"decoding={decoding}")
        for stage in PIPELINE_STAGES:
            assert stage_hash(cfg, stage, ["u1", "u2"]) == PINNED_STAGES[decoding, stage], (decoding, stage)


def test_run_folder_training_and_answer_digests_are_unchanged(pinned) -> None:  # noqa: ANN001
    evaluation = pinned("evaluate", "eval.adapter=/pinned-adapter")
    assert config_hash(evaluation, FINGERPRINT_KEYS) == "70fc59af3f"
    assert config_key(evaluation, run_inputs(evaluation)) == "eedcee141d"
    assert run_dir_name("runs", evaluation, run_key) == "eval.adapter-pinned-adapter+model.dtype-float32-eedcee141d"
    assert str(evaluation.hydra.run.dir).endswith(
        "/evaluate/runs/eval.adapter-pinned-adapter+model.dtype-float32-eedcee141d"
    )
    training = pinned("train", "sft.pairs_dir=/pinned-pairs", "mode=specific")
    assert training_fingerprint(training, "joint") == "ef59a50bf935"
    assert training_fingerprint(training, "USA", ["USA"]) == "d856344c0b51"
    assert config_key(training, run_inputs(training)) == "65bcd275eb"
    assert fingerprint({"model": {"name": "x"}, "seed": 3, "culture": None, "similar": [1, 2]}) == "a483109f9ce1"


def test_pairs_digest_hashes_content_not_place(tmp_path: Path) -> None:
    (tmp_path / "USA.jsonl").write_text('{"q": 1}\n')
    (tmp_path / "stats.json").write_text("{}")
    assert pairs_digest(tmp_path) == {"USA.jsonl": "f4ae84c7085b"}
    assert pairs_digest(tmp_path / "missing") == {}


def test_one_list_of_stages_and_a_done_marker(tmp_path: Path) -> None:
    assert set(PIPELINE_STAGES) - set(GENERATE_STAGES) == {"train", "evaluate"}
    assert read_done(tmp_path) is None
    write_done(tmp_path, DoneRecord("pairs", "abc", ["u"], {"seed": 1}, 1.5, {"kept": Path("x")}, []))
    record = read_done(tmp_path)
    assert record is not None and record["summary"] == {"kept": "x"} and record["upstream"] == ["u"]
