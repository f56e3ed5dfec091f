"""Issue 22 item 2: stage files carry their provenance (readable deciding settings, input fingerprints); a stage that
reads a file made under other settings names each differing key, and a paper_* run refuses it; debug runs write to
their own folder, so a real training run after the debug quickstart says there are no pairs yet."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.stages import provenance
from culturespa.train.synthetic import write_pairs

REPO = Path(__file__).resolve().parents[1]


def _pairs_made_under(make_cfg, folder: Path, *overrides: str) -> Path:  # noqa: ANN001
    """Pairs files for USA and CHN whose sidecars record the config of ``overrides``."""
    write_pairs(folder, {"USA": 4, "CHN": 4})
    made = make_cfg("generate", ["stage=pairs", "model=tiny_random", *overrides])
    provenance.record(made, "pairs", {"output_dir": str(folder), "kept": {"USA": 4, "CHN": 4}}, [])
    return folder


def test_filtered_questions_record_their_provenance(make_cfg) -> None:  # noqa: ANN001
    cfg = make_cfg("generate", ["stage=filter", "debug=tiny", "filter.limit_per_topic=1"])
    summary = generate(cfg)
    meta = json.loads(Path(summary["output"] + ".meta.json").read_text())
    entry = meta["provenance"]
    assert entry["stage"] == "filter" and entry["made_with"] == {"debug": "tiny"}
    assert entry["settings"]["filter"]["limit_per_topic"] == 1  # the deciding settings, as the pipeline records them
    assert entry["inputs"] == []  # the paper's pool is no stage file


def test_pairs_made_under_debug_warn_a_real_training_run(make_cfg, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    pairs = _pairs_made_under(make_cfg, tmp_path / "pairs", "debug=default")
    cfg = make_cfg("train", ["model=tiny_random", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}"])
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        provenance.check_training_pairs(cfg)
    assert "pairs/USA.jsonl was made with debug=default, this run has debug=none" in caplog.messages
    assert "pairs/USA.jsonl was made with data.criterion=none, this run has data.criterion=answer" in caplog.messages
    assert "pairs/USA.jsonl was made with decoding=logprob, this run has decoding=greedy" not in caplog.messages
    caplog.clear()
    same = make_cfg("train", ["model=tiny_random", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}", "debug=default"])
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        provenance.check_training_pairs(same)
    assert caplog.messages == []  # made under this run's own settings: nothing to say


def test_a_paper_run_refuses_debug_pairs_in_one_line(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    pairs = _pairs_made_under(make_cfg, tmp_path / "pairs", "debug=tiny")
    cfg = make_cfg("train", ["experiment=paper_joint", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}"])
    with pytest.raises(CultureSPAError) as err:
        provenance.check_training_pairs(cfg)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{pairs / 'USA.jsonl'}: pairs/USA.jsonl was made with debug=tiny")
    assert "this run has debug=none; pairs/USA.jsonl was made with data.criterion=none, this run has" in line
    assert "paper_joint run reads only files made under its own settings" in line


def test_old_sidecars_without_provenance_are_unknown_one_warning(make_cfg, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    pairs = tmp_path / "pairs"
    write_pairs(pairs, {"USA": 4, "CHN": 4})
    (pairs / "USA.jsonl.meta.json").write_text(json.dumps({"fingerprint": "abc", "complete": True}))
    cfg = make_cfg("train", ["experiment=paper_joint", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}"])
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        provenance.check_training_pairs(cfg)  # unknown is no refusal, even for a paper run
    assert len(caplog.messages) == 1 and "2 input file(s) of train carry no provenance" in caplog.messages[0]


def test_a_generate_stage_names_a_debug_input(make_cfg, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    made = generate(make_cfg("generate", ["stage=filter", "debug=tiny", "filter.limit_per_topic=1"]))
    cfg = make_cfg("generate", ["stage=answers", "model=tiny_random", f"answers.input={made['output']}"])
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        files = provenance.check_generate(cfg, "answers")
    assert files == [Path(made["output"])]
    assert caplog.messages == ["questions/filtered.jsonl was made with debug=tiny, this run has debug=none"]


def test_debug_presets_write_to_their_own_folder(make_cfg) -> None:  # noqa: ANN001
    from culturespa.config import compose

    real = compose("train", [])
    for preset in ("default", "tiny"):
        cfg = compose("train", [f"debug={preset}"])
        assert cfg.paths.debug == preset and cfg.pipeline.questions == "pool"
        assert Path(cfg.paths.work_dir).parts[-3:-1] == ("debug", preset)
        assert cfg.sft.pairs_dir != real.sft.pairs_dir
    assert real.paths.debug == "none" and "debug" not in Path(real.paths.work_dir).parts


def test_no_pairs_yet_names_the_command_and_the_debug_pairs(tmp_path: Path) -> None:
    """The README quickstart (debug) then the headline `train.py mode=joint cultures=all`: debug pairs are not read,
    and the headline run says in one line that there are none yet and which command makes them."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("train.py", "conf", ".venv", "data", ".cache"):
        (root / name).symlink_to((REPO / name).resolve())
    write_pairs(root / "outputs" / "debug" / "default" / "smollm2_135m" / "pairs", {"USA": 4})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CULTURESPA_")}
    env.update(CULTURESPA_ROOT=str(root), PYTHONPATH=str(REPO), WANDB_MODE="offline")
    result = subprocess.run(
        [sys.executable, "train.py", "mode=joint", "cultures=all"], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith(f"error: {root}/outputs/smollm2_135m/pairs: no pairs yet (sft.pairs_dir)")
    assert "made by a debug=default run" in lines[0] and "python generate.py stage=pairs cultures=all" in lines[0]


def test_empty_stage_by_stage_filter_stops_there(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    empty = tmp_path / "generated.jsonl"
    empty.write_text("")
    cfg = make_cfg("generate", ["stage=filter", f"filter.input={empty}", "filter=strict"])
    with open_dict(cfg):
        cfg.task_name = "generate"
    with pytest.raises(CultureSPAError) as err:
        generate(cfg)
    assert "the filter kept 0 of 0 questions (its input holds no questions)" in str(err.value)
    assert "filter.input=paper" in str(err.value)


# ---- adapters: provenance in culturespa.json, checked by evaluation ------------------------------------------------
def _adapter_meta(folder: Path, meta: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "culturespa.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.slow
def test_an_adapter_trained_on_debug_pairs_warns_its_evaluation(make_cfg, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """The quickstart's `debug=default` then a real evaluation of its adapter: each differing key named once."""
    from culturespa.train.run import train

    pairs = _pairs_made_under(make_cfg, tmp_path / "pairs", "debug=default")
    out = tmp_path / "out"
    args = ["debug=default", "model=tiny_random", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}"]
    result = train(make_cfg("train", [*args, f"sft.output_dir={out}", f"logger.csv.save_dir={out}"]))
    adapter = Path(result["adapters"]["joint"])
    entry = json.loads((adapter / "culturespa.json").read_text())["provenance"]
    assert entry["stage"] == "train"
    assert entry["made_with"] == {
        "debug": "default",
        "model": "tiny_random",
        "data.criterion": "none",
        "data.system": "aware",
    }
    assert [Path(i["path"]).name for i in entry["inputs"]] == ["USA.jsonl", "CHN.jsonl"]
    assert all(len(i["sha1"]) > 8 for i in entry["inputs"])

    cfg = make_cfg("evaluate", ["model=tiny_random", "cultures=[USA,CHN]", f"eval.adapter={adapter}"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        provenance.check_adapters(cfg, [adapter])
    assert f"adapter {adapter} was made with debug=default, this run has debug=none" in caplog.messages
    assert f"adapter {adapter} was made with data.criterion=none, this run has data.criterion=answer" in caplog.messages
    assert len(caplog.messages) == 2
    caplog.clear()
    same = make_cfg("evaluate", ["debug=default", "model=tiny_random", "cultures=[USA,CHN]"])
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        provenance.check_adapters(same, [adapter])
    assert caplog.messages == []


def test_a_paper_evaluation_refuses_a_debug_adapter_in_one_line(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    made_with = {"debug": "tiny", "model": "llama3_8b_instruct", "data.criterion": "answer", "data.system": "aware"}
    adapter = _adapter_meta(tmp_path / "adapter", {"base_model": "x", "provenance": {"made_with": made_with}})
    cfg = make_cfg("evaluate", ["experiment=paper_joint", "cultures=[USA]"])
    with pytest.raises(CultureSPAError) as err:
        provenance.check_adapters(cfg, [adapter])
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"{adapter / 'culturespa.json'}: adapter {adapter} was made with debug=tiny, this run has")
    assert "paper_joint run reads only adapters made under its own settings: train it again" in line


def test_adapters_without_provenance_are_unknown_one_warning(make_cfg, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    old = [_adapter_meta(tmp_path / code, {"base_model": "x", "mode": "specific"}) for code in ("USA", "CHN")]
    cfg = make_cfg("evaluate", ["experiment=paper_specific", "cultures=[USA,CHN]"])
    with caplog.at_level(logging.WARNING, logger="culturespa.provenance"):
        provenance.check_adapters(cfg, old)  # unknown is no refusal, even for a paper run
    assert len(caplog.messages) == 1 and "2 adapter(s) carry no provenance" in caplog.messages[0]
    assert "so the settings that made them are unknown" in caplog.messages[0]
