"""W&B as the lab notebook, offline: artifacts with lineage, cached stages linked, per-question table, plots, sync.

Everything is read back from the offline run files (the ``.wandb`` transaction log, decoded by
:mod:`culturespa.utils.wandb_records`, and the run's ``files/`` folder): no server, no API key.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from culturespa.stages import lineage
from culturespa.utils import artifacts
from culturespa.utils.wandb_records import main as records_main
from culturespa.utils.wandb_records import offline_runs, read_records, read_run, run_folders

REPO = Path(__file__).resolve().parents[1]
WAIT = 30.0  # seconds a finished run may take to reach its .wandb file


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B with its staging folder inside the test's tmp folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    return tmp_path


def _init(folder: Path, name: str):  # noqa: ANN202
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    return wandb.init(mode="offline", project="culturespa-test", dir=str(folder), name=name, reinit="finish_previous")


def test_offline_input_resolves_to_the_producers_version_by_digest(offline: Path) -> None:
    source = offline / "questions" / "generated.jsonl"
    source.parent.mkdir()
    source.write_text('{"id": "q1"}\n{"id": "q2"}\n')
    copy = offline / "elsewhere" / "filter.jsonl"  # a consumer reading a renamed copy still links to it
    copy.parent.mkdir()
    shutil.copyfile(source, copy)

    producer = _init(offline / "p", "producer")
    made = artifacts.log_output(producer, lineage.questions(source))
    producer.finish()
    consumer = _init(offline / "c", "consumer")
    used = artifacts.use_input(consumer, lineage.questions(copy))
    copy.write_text('{"id": "q1"}\n')
    changed = artifacts.use_input(consumer, lineage.questions(copy))
    consumer.finish()

    (out,) = [a for a in offline_runs(offline / "p", WAIT).pop().outputs if a.name == "questions"]
    inputs = offline_runs(offline / "c", WAIT).pop().inputs
    assert made == used == out.digest and changed != made
    assert [a.digest for a in inputs] == [made, changed]
    # the producer uploads a staged copy; the consumer only references its file
    ((entry, staged),) = out.entries
    assert entry == "questions.jsonl" and Path(staged).is_file()
    assert Path(staged).is_relative_to(offline / "wandb-data" / "artifacts" / "staging")
    assert Path(staged).read_text() == source.read_text()
    assert inputs[0].entries == (("questions.jsonl", copy.resolve().as_uri()),)


def test_plain_use_artifact_refuses_offline_so_inputs_use_the_draft_record(offline: Path) -> None:
    import wandb

    data = offline / "pairs"
    data.mkdir()
    (data / "USA.jsonl").write_text("{}\n")
    run = _init(offline / "r", "r")
    try:
        with pytest.raises(TypeError, match="offline"):
            run.use_artifact(artifacts.build(lineage.pairs(data), copy_up_to=0))
        assert artifacts.use_input(run, lineage.pairs(data)) is not None
    finally:
        run.finish()
    assert [(a.name, a.type, a.used) for a in read_run(run_folders([offline / "r"])[0], WAIT).artifacts] == [
        ("pairs", "pairs", True)
    ]
    assert wandb.run is None


def test_files_above_the_size_limit_go_by_reference_with_the_same_digest(offline: Path) -> None:
    folder = offline / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "adapter_config.json").write_text("{}")
    cfg = OmegaConf.create({"logger": {"wandb": {"artifacts": {"enabled": True, "reference_mb": 1 / 1024}}}})
    copied = artifacts.build(lineage.adapter(folder), copy_up_to=1e9).manifest.digest()
    run = _init(offline / "r", "r")
    digest = artifacts.log_output(run, lineage.adapter(folder), cfg)
    run.finish()
    (out,) = read_run(run_folders([offline / "r"])[0], WAIT).outputs
    entries = dict(out.entries)
    assert digest == copied == out.digest
    assert entries["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").resolve().as_uri()
    assert not entries["adapter_config.json"].startswith("file://")  # small: staged copy, uploaded on sync
    off = OmegaConf.create({"logger": {"wandb": {"artifacts": {"enabled": False}}}})
    assert artifacts.log_output(run, lineage.adapter(folder), off) is None


def test_reader_reassembles_records_across_blocks_and_checks_them(offline: Path) -> None:
    run = _init(offline / "r", "r")
    run.summary["long"] = "x" * 100_000  # one record over three 32 KiB blocks
    run.finish()
    folder = run_folders([offline / "r"])[0]
    read_run(folder, WAIT)  # waits for the end of the file
    (log,) = folder.glob("run-*.wandb")
    summaries = [r for r in read_records(log) if r.WhichOneof("record_type") == "summary"]
    values = [json.loads(item.value_json) for s in summaries for item in s.summary.update if item.key == "long"]
    assert values == ["x" * 100_000]
    data = bytearray(log.read_bytes())
    data[40] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_records(log)


def test_question_table_rows_and_distances_match_the_score(wvs) -> None:  # noqa: ANN001
    from culturespa.evaluate.metrics import alignment_score
    from culturespa.evaluate.question_table import COLUMNS, distance, rows

    questions = [q for q in wvs.eval_questions if wvs.majority_answer("USA", q.id) is not None][:3]
    q0, q1, q2 = questions
    answer0 = q0.numbers[-1]
    records = [
        {"id": q0.id, "raw": "reply 0", "answer": answer0, "valid": True, "run": 0},
        {"id": q1.id, "raw": "no idea", "answer": None, "valid": False, "run": 0},
        {"id": q2.id, "raw": "reply 2", "answer": q2.numbers[0], "valid": True, "run": 0},
    ]
    table = rows({None: records}, questions, wvs, ["USA", "CHN"], lambda q, c: f"prompt {q.id} {c}")
    assert len(table) == 6 and len(table[0]) == len(COLUMNS)
    row = dict(zip(COLUMNS, table[0], strict=True))
    gold = wvs.majority_answer("USA", q0.id)
    assert row["question_id"] == q0.id and row["culture"] == "USA" and row["raw"] == "reply 0"
    assert row["parsed"] == answer0 and row["gold"] == gold and row["n_options"] == len(q0.numbers)
    assert row["prompt"] == f"prompt {q0.id} None"
    # one question alone: score = 100 * (1 - distance)
    alone = alignment_score([answer0], [gold], [len(q0.numbers)])
    assert row["distance"] == pytest.approx(1 - alone / 100)
    assert dict(zip(COLUMNS, table[1], strict=True))["distance"] is None  # invalid answers are not scored
    assert distance(3, None, [1, 2, 3]) is None and distance(1, 3, [1, 2, 3]) == 1.0


def test_sync_uploads_every_offline_run_oldest_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    later = tmp_path / "outputs" / "pipeline" / "runs" / "a=1,b=2" / "wandb" / "offline-run-20260102_000000-bbbb"
    earlier = tmp_path / "logs" / "train" / "runs" / "x" / "wandb" / "offline-run-20260101_000000-aaaa"
    for folder in (later, earlier):
        folder.mkdir(parents=True)
    (later.parent / "latest-run").symlink_to(later)  # W&B's link to the newest run: not a second run
    assert records_main(["--sync", "--dry-run", str(tmp_path / "logs"), str(tmp_path / "outputs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines] == [str(earlier), str(later)]
    assert all(re.search(r"(wandb|-m wandb) sync ", line) for line in lines)


def test_readme_documents_the_sync_command_without_globstar() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Weights & Biases", 1)[1].split("\n## ", 1)[0]
    assert "python -m culturespa.utils.wandb_records --sync logs outputs" in section
    assert "**" not in re.sub(r"\*\*[^*]+\*\*", "", section)  # bold text is fine, `**` globs are not


TINY = [
    "experiment=smoke",
    "model=tiny_random",
    "pipeline.questions=pool",  # the pool's questions: no slow question generation on a random model
    "filter.limit_per_topic=1",
    "decoding=logprob",
    "data.criterion=none",
    "eval.limit=6",
    "sft.max_steps=2",
]


@pytest.mark.slow
def test_pipeline_lineage_runs_from_questions_to_score_and_survives_the_cache(make_cfg, offline: Path) -> None:  # noqa: ANN001
    from culturespa.evaluate.question_table import COLUMNS
    from culturespa.pipeline import run_pipeline

    def run() -> dict:
        cfg = make_cfg("pipeline", TINY)
        with open_dict(cfg):
            cfg.pipeline.root = str(offline / "pipeline")
            cfg.filter.input = str(cfg.paths.question_pool_dir)
        return run_pipeline(cfg)

    first = run()
    home = Path(first["comparison_file"]).parent
    runs = offline_runs(home / "wandb", WAIT)
    assert sorted(f for f in run_folders([offline]) if home not in f.parents) == []  # one documented place
    assert len({r.name for r in runs}) == len(runs) == 8, [r.name for r in runs]
    assert {r.job_type for r in runs} == {"generate-filter", "generate-answers", "generate-pairs", "train"} | {
        "evaluate",
        "pipeline",
    }
    assert len({r.group for r in runs}) == 1
    produced = {(a.name, a.digest): r.job_type for r in runs for a in r.outputs}
    external = {lineage.POOL, lineage.WVS}
    for r in runs:  # every input but the reference data is some run's output: one graph from pool to score
        for a in r.inputs:
            assert a.name in external or (a.name, a.digest) in produced, (r.job_type, a.name)
    chain = {r.job_type + ("-base" if r.name.endswith("-base") else ""): r for r in runs}
    names = {k: {a.name for a in r.inputs} for k, r in chain.items()}
    assert names["generate-pairs"] == {"answers-unaware", "answers-aware"}
    assert names["train"] == {lineage.PAIRS}
    assert names["evaluate"] == {lineage.WVS, lineage.ADAPTER} and names["evaluate-base"] == {lineage.WVS}
    assert names["pipeline"] == {lineage.ALIGNMENT}
    assert {a.name for a in chain["pipeline"].outputs} >= {lineage.COMPARISON}

    # the per-question table and the comparison plot are in the run files
    evaluation = chain["evaluate"].folder / "files" / "media"
    (table_file,) = (evaluation / "table" / "alignment").glob("questions_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == COLUMNS and len(table["data"]) == 6 * 2
    assert all(str(row[4]).startswith(("system:", "user:")) for row in table["data"])
    assert list((chain["pipeline"].folder / "files" / "media" / "images" / "comparison").glob("plot_*.png"))

    # a second run reuses every stage and links each stage's artifacts into its own group
    outputs = {(a.name, a.digest) for r in runs for a in r.outputs}  # 'alignment' twice: base and adapter
    pairs_done = Path(first["files"]["pairs"]) / "_SUCCESS.json"  # as cached before artifacts were recorded
    record = json.loads(pairs_done.read_text())
    assert [a["name"] for a in record.pop("artifacts")] == [lineage.PAIRS]
    pairs_done.write_text(json.dumps(record))
    second = run()
    assert second["recomputed"] == []
    cached = [r for r in offline_runs(home / "wandb", WAIT) if r.job_type == "cached"]
    assert len(cached) == 6 and all(r.name.endswith("-cached") for r in cached)
    linked = {(a.name, a.digest) for r in cached for a in r.inputs}
    assert linked <= outputs, linked - outputs  # each cached stage links the very versions the first run produced
    assert {name for name, _ in linked} >= {lineage.FILTERED, lineage.PAIRS, lineage.ADAPTER, lineage.ALIGNMENT}
    assert len([name for name, _ in linked if name == lineage.ALIGNMENT]) == 2  # both evaluations' results
    done = json.loads((Path(first["files"]["train"]) / "_SUCCESS.json").read_text())
    assert [a["name"] for a in done["artifacts"]] == [lineage.ADAPTER]


def test_specific_adapters_link_one_by_one(tmp_path: Path) -> None:
    """Training logs each culture's adapter; an evaluation given the ``adapters/`` folder uses each of them."""
    folders = []
    for code in ("USA", "CHN"):
        folder = tmp_path / "adapters" / code
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"culture": code}))
        folders.append(folder)
    (tmp_path / "adapters" / "notes.txt").write_text("not an adapter")
    made = {lineage.adapter(f).name: artifacts.build(lineage.adapter(f), 1e9).manifest.digest() for f in folders}
    used = {s.name: artifacts.build(s, 0).manifest.digest() for s in lineage.adapter_inputs(tmp_path / "adapters")}
    assert used == made and set(made) == {"adapter-USA", "adapter-CHN"}
    assert [s.name for s in lineage.adapter_inputs(folders[0])] == ["adapter-USA"]


def test_the_two_filter_runs_of_a_pipeline_have_different_names(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from culturespa.stages.tracking import _label
    from culturespa.utils.tracking import wandb_settings

    generated = tmp_path / "generated.jsonl"
    generated.write_text("")
    pool_cfg, file_cfg = make_cfg("generate", ["stage=filter"]), make_cfg("generate", ["stage=filter"])
    with open_dict(pool_cfg), open_dict(file_cfg):  # same overrides, as in a pipeline
        pool_cfg.filter.input = str(pool_cfg.paths.question_pool_dir)
        file_cfg.filter.input = str(generated)
    names = {wandb_settings(c, "generate-filter", _label(c, "filter"))["name"] for c in (pool_cfg, file_cfg)}
    assert len(names) == 2
    answers_cfg = make_cfg("generate", ["stage=answers", "answers.setting=aware"])
    assert _label(answers_cfg, "answers") == "answers-aware"


def test_pipeline_wandb_folder_is_pinned_unless_given(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from culturespa.utils.tracking import pin_wandb_dir

    default = make_cfg("pipeline", [])
    pin_wandb_dir(default, tmp_path / "runs" / "x")
    assert default.logger.wandb.save_dir == str(tmp_path / "runs" / "x")
    given = make_cfg("pipeline", [f"logger.wandb.save_dir={tmp_path / 'mine'}"])
    pin_wandb_dir(given, tmp_path / "runs" / "x")
    assert given.logger.wandb.save_dir == str(tmp_path / "mine")
