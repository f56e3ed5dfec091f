"""The stage home keeps every digest stable: pipeline stage folders, run folders, training and output sidecars,
evaluation answers. The values were first computed by the five hashers before they became one function, and held
through the restructuring (issue 18). Issue 21 then changed the default templates (the paper's prompt layout) and added
``questions.top_k/exposure/accept`` and ``data.train_system``: every stage whose output a prompt decides (questions,
answers, train, evaluate) got a new digest on purpose, so no cached output made with the old prompts is reused;
filter and pairs kept theirs. A digest that moves without such a reason is a bug."""

from __future__ import annotations

from pathlib import Path

from culturespa.evaluate.evaluate_settings import FINGERPRINT_KEYS, answers_fingerprint
from culturespa.stages.identity import (
    GENERATE_STAGES,
    PIPELINE_STAGES,
    DoneRecord,
    config_hash,
    config_key,
    fingerprint,
    pairs_digest,
    read_done,
    stage_hash,
    write_done,
)
from culturespa.train.run import TrainSettings
from culturespa.train.run import fingerprint as training_fingerprint
from culturespa.utils.rundirs import run_dir_name

PINNED_STAGES = {
    ("sample", "questions"): "05b082f5d6",
    ("sample", "filter"): "ea8f5fcdc1",
    ("sample", "answers"): "2990477514",
    ("sample", "pairs"): "3b8d198fba",
    ("sample", "train"): "b49b1ccd13",
    ("sample", "evaluate"): "6ae86d32c5",
    ("logprob", "questions"): "05b082f5d6",
    ("logprob", "filter"): "ea8f5fcdc1",
    ("logprob", "answers"): "374bb1368b",
    ("logprob", "pairs"): "3b8d198fba",
    ("logprob", "train"): "b49b1ccd13",
    ("logprob", "evaluate"): "f8c604db1f",
}


def test_stage_hashes_are_unchanged(pinned) -> None:  # noqa: ANN001
    for decoding in ("sample", "logprob"):
        cfg = pinned("pipeline", f"decoding={decoding}")
        for stage in PIPELINE_STAGES:
            assert stage_hash(cfg, stage, ["u1", "u2"]) == PINNED_STAGES[decoding, stage], (decoding, stage)


def test_run_folder_training_and_answer_digests_are_unchanged(pinned) -> None:  # noqa: ANN001
    evaluation = pinned("evaluate", "eval.adapter=/pinned-adapter")
    assert config_hash(evaluation, FINGERPRINT_KEYS) == "eb5bd65de3"
    assert answers_fingerprint(evaluation)["hash"] == "eb5bd65de3"  # what fingerprint.json holds
    assert list(answers_fingerprint(evaluation)["settings"]) == list(FINGERPRINT_KEYS)
    assert config_key(evaluation) == "68a8e5d94b"
    assert run_dir_name(evaluation, config_key) == "eval.adapter-pinned-adapter+model.dtype-float32-68a8e5d94b"
    assert str(evaluation.hydra.run.dir).endswith(
        "/evaluate/runs/eval.adapter-pinned-adapter+model.dtype-float32-68a8e5d94b"
    )
    training = pinned("train", "sft.pairs_dir=/pinned-pairs", "mode=specific")
    assert training_fingerprint(TrainSettings.from_config(training), "joint") == "e6b82ba4825d"
    assert training_fingerprint(TrainSettings.from_config(training), "USA", ["USA"]) == "45b6204f565e"
    assert config_key(training) == "6427f225dd"  # issue 18: the pairs' contents left the key (run_inputs.py)
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
