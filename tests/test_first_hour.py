"""A researcher's first hour (issue 14): debug runs that flow, a joint run that survives an empty culture, a pipeline
that reads only its own cache, our own answer files as predictions, honest progress bars, single log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.questions.settings import QuestionsStageSettings
from culturespa.settings import DataSettings
from culturespa.stages.runtime import StageRuntime
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
        splits = prepare_splits(
            cfg.sft.pairs_dir, DataSettings.from_config(cfg.data), ["USA", "KEN", "CHN"], skip_empty=True
        )
    assert list(splits) == ["USA", "CHN"]
    assert any("KEN" in r.getMessage() and "empty" in r.getMessage() for r in caplog.records)
    with pytest.raises(CultureSPAError, match="no pairs for culture KEN"):
        prepare_splits(
            cfg.sft.pairs_dir, DataSettings.from_config(cfg.data), ["USA", "KEN"]
        )  # culture-specific: KEN's adapter cannot be trained
    empty = tmp_path / "empty"
    empty.mkdir()
    for code in ("USA", "KEN"):
        (empty / f"{code}.jsonl").write_text("")
    with pytest.raises(CultureSPAError, match="no pairs for any culture"):
        prepare_splits(empty, DataSettings.from_config(cfg.data), ["USA", "KEN"], skip_empty=True)


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


class _Stop(Exception):
    """Raised in place of the answers stage: these tests need only step 1."""


def _filtered_ids(root: Path) -> dict[str, list[str]]:
    out = {}
    for file in sorted(root.glob("filter-pool/*/filtered.jsonl")):
        out[file.parent.name] = [json.loads(line)["id"] for line in file.read_text().splitlines()]
    return out


def _step1(make_cfg, root: Path, monkeypatch, *extra: str) -> None:  # noqa: ANN001
    from omegaconf import open_dict

    import culturespa.generate.run as generate_run
    from culturespa.pipeline import run_pipeline

    def stop(*args: object, **kwargs: object) -> None:
        raise _Stop

    monkeypatch.setattr(generate_run, "run_answers", stop)  # the answers stage as generate() calls it
    cfg = make_cfg("pipeline", ["model=tiny_random", "pipeline.questions=pool", "logger=none", *extra])
    with open_dict(cfg):
        cfg.pipeline.root = str(root)
    with pytest.raises(_Stop):
        run_pipeline(cfg)


def _leftover(path: Path) -> None:
    from culturespa.wvs.questions import Question

    question = Question("gen-t0-0", "Is a leftover a good question?", ("Yes", "No"), 1, "social values", "generated")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(question.to_record()) + "\n")


def test_pipeline_pool_never_reads_a_leftover_stage_by_stage_file(make_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    _leftover(tmp_path / "work" / "questions" / "generated.jsonl")  # a manual `generate.py stage=questions` run
    root = tmp_path / "pipeline"
    _step1(make_cfg, root, monkeypatch, "filter.limit_per_topic=1")
    (ids,) = _filtered_ids(root).values()
    assert len(ids) == 13 and all(i.startswith("pool-t") for i in ids)  # the paper's pool, one per topic


def test_pipeline_pool_cache_follows_the_file_content(make_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    pool = tmp_path / "mine.jsonl"
    _leftover(pool)
    root = tmp_path / "pipeline"
    _step1(make_cfg, root, monkeypatch, f"filter.input={pool}")
    assert list(_filtered_ids(root).values()) == [["gen-t0-0"]]
    record = json.loads(pool.read_text())
    record["id"] = "gen-t0-1"  # the same path, other content: the cached stage must not be reused
    pool.write_text(json.dumps(record) + "\n")
    _step1(make_cfg, root, monkeypatch, f"filter.input={pool}")
    assert sorted(_filtered_ids(root).values()) == [["gen-t0-0"], ["gen-t0-1"]]


@pytest.mark.slow
def test_predictions_read_our_own_answer_files_and_score_as_the_model_run(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from culturespa.evaluate.run import evaluate

    common = ["debug=tiny", "cultures=[USA,CHN]", "logger=none"]
    model_run = evaluate(make_cfg("evaluate", [*common, f"eval.output_dir={tmp_path / 'model'}"]))
    files = sorted((tmp_path / "model" / "answers").glob("*_USA.jsonl"))
    assert len(files) == 1 and '"id": ' in files[0].read_text()  # our schema: `id`, not `Q_id`
    template = str(files[0]).replace("_USA.jsonl", "_{culture}.jsonl")
    scored = evaluate(
        make_cfg(
            "evaluate",
            [*common, "eval.source=predictions", f"eval.predictions.path='{template}'", f"eval.output_dir={tmp_path}"],
        )
    )
    assert scored["scores"] == model_run["scores"]
    assert scored["js_similarity_average"] == pytest.approx(model_run["js_similarity_average"])  # distributions kept


def test_predictions_keep_runs_of_sampled_answer_files(wvs, tmp_path: Path) -> None:  # noqa: ANN001
    from culturespa.evaluate.predictions import load_predictions

    q = wvs.eval_questions[0]
    path = tmp_path / "aware_USA.jsonl"
    rows = [{"id": q.id, "culture": "USA", "run": r, "answer": q.numbers[r]} for r in (0, 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_predictions(path, [q])
    assert [(r["id"], r["run"], r["answer"]) for r in records] == [(q.id, 0, q.numbers[0]), (q.id, 1, q.numbers[1])]
    path.write_text("".join(json.dumps(r | {"run": 0}) + "\n" for r in rows))
    with pytest.raises(CultureSPAError, match=rf"aware_USA.jsonl:2: duplicate Q_id '{q.id}' run 0"):
        load_predictions(path, [q])


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_cli_prints_each_lightning_line_once_and_a_true_epoch_bar(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    pairs = write_pairs(tmp_path / "pairs", {"USA": 14})
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    args = ["debug=tiny", "cultures=[USA]", f"sft.pairs_dir={pairs}", f"sft.output_dir={tmp_path / 'out'}"]
    args += [f"paths.log_dir={tmp_path / 'logs'}", "data.val_fraction=0"]
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    assert output.count("GPU available:") == 1  # was twice: Lightning's own handler plus Hydra's root handler
    assert output.count("optimiser steps (global batch 4") == 1
    # 3 optimiser steps x 2 micro-batches of accumulation: 6 micro-batches in one epoch (was `Epoch 0/-2` and `6/3`)
    assert "Epoch 1/1" in output and "6/6" in output and "/-" not in output


class _BarProbe:
    """Records the training bar's label and total at every epoch's first batch."""

    def __init__(self) -> None:
        import lightning as L

        probe = self

        class Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
                bar = trainer.progress_bar_callback
                if batch_idx == 0:
                    tqdm_bar = getattr(bar, "train_progress_bar", None)
                    desc = str(getattr(tqdm_bar, "desc", "")).removesuffix(": ")  # tqdm appends ": "
                    probe.seen.append((desc, getattr(tqdm_bar, "total", None)))

        self.seen: list[tuple[str | None, int | None]] = []
        self.callback = Callback()


@pytest.mark.slow
def test_epoch_bar_totals_when_max_steps_ends_in_the_second_epoch(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from culturespa.train.run import train

    pairs = write_pairs(tmp_path / "pairs", {"USA": 12})  # 12 examples / 2 per micro-batch = 6 micro-batches
    probe = _BarProbe()
    cfg = make_cfg(
        "train",
        [
            *TINY_TRAIN,
            "trainer.enable_progress_bar=true",
            "cultures=[USA]",
            "data.val_fraction=0",
            "sft.max_steps=4",  # 3 steps in epoch 1 (accumulation 2), the 4th after 2 micro-batches of epoch 2
            f"sft.pairs_dir={pairs}",
            f"sft.output_dir={tmp_path / 'out'}",
        ],
    )
    train(cfg, callbacks=[probe.callback])
    assert probe.seen == [("Epoch 1/2", 6), ("Epoch 2/2", 2)]


@pytest.mark.slow
def test_question_bar_counts_replies_with_a_total_that_holds(make_cfg, monkeypatch, capsys) -> None:  # noqa: ANN001
    import re

    import culturespa.questions.generate as questions
    from culturespa.questions.json_extract import Extracted

    real = questions.extract_question
    calls = {"n": 0}

    def first_reply_is_a_question(reply: str):  # noqa: ANN202
        calls["n"] += 1
        return Extracted("Is this a question?", ["Yes", "No"]) if calls["n"] == 1 else real(reply)

    monkeypatch.setattr(questions, "extract_question", first_reply_is_a_question)
    overrides = ["model=tiny_random", "questions.per_topic=1", "questions.topics=[0,1]", "questions.max_retries=1"]
    cfg = make_cfg("generate", [*overrides, "questions.max_new_tokens=4", "logger=none"])
    result = questions.run_questions(QuestionsStageSettings.from_config(cfg), StageRuntime.bind(cfg, "questions"))
    assert result["generated"] == 1 and result["failed"] == 1
    bars = re.findall(r"questions: +(\d+)%\|[^|]*\| *(\d+)/(\d+) \[[^]]*reply", capsys.readouterr().err)
    # 2 slots x 2 attempts at most; slot 1 resolved at its first reply: 3 replies, and the total said so at the end
    assert bars and bars[-1] == ("100", "3", "3")
