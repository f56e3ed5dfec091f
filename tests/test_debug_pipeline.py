"""Issue 22 item 1: ``python -m culturespa.pipeline debug=tiny`` / ``debug=default`` run end to end (the debug presets
take the paper's pool, as the stage-by-stage filter does), and a stage that makes nothing stops the pipeline there,
in one line naming the key to change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from culturespa.entry import task_wrapper
from culturespa.generate.run import nothing_made
from culturespa.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]


def _checkout(tmp_path: Path) -> Path:
    """A checkout as a new user has it, writing only under tmp_path (outputs/, logs/)."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("conf", ".venv", "data", ".cache"):
        (root / name).symlink_to((REPO / name).resolve())
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset",
    [
        "tiny",
        pytest.param(  # SmolLM2 through every stage: ~10 min on 2 idle cores, too long for `make test`
            "default",
            marks=pytest.mark.skipif(
                os.environ.get("CULTURESPA_LONG_TESTS") != "1", reason="set CULTURESPA_LONG_TESTS=1 (about 10 min)"
            ),
        ),
    ],
)
def test_the_pipeline_runs_end_to_end_under_each_debug_preset(tmp_path: Path, preset: str) -> None:
    root = _checkout(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CULTURESPA_")}
    env.update(CULTURESPA_ROOT=str(root), PYTHONPATH=str(REPO), WANDB_MODE="offline")
    cmd = [sys.executable, "-m", "culturespa.pipeline", f"debug={preset}", "trainer.enable_progress_bar=false"]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    [comparison] = (root / "outputs" / "pipeline" / "runs").glob("*/comparison.json")
    result = json.loads(comparison.read_text())
    assert "questions" not in result["files"] and "filter-pool" in result["files"]  # the pool, not step 1
    assert len(result["cultures"]) == 18 and result["average"]["culturespa"] is not None


@pytest.mark.slow  # 13 question slots on the tiny model: ~50 s of CPU
def test_a_pipeline_whose_model_writes_no_question_stops_at_the_questions_stage(make_cfg, tmp_path, capsys) -> None:  # noqa: ANN001
    cfg = make_cfg("pipeline", ["debug=tiny", "pipeline.questions=generate", "cultures=[USA]"])
    with open_dict(cfg):
        cfg.pipeline.root = str(tmp_path / "pipeline")
    with pytest.raises(SystemExit) as exit_:
        task_wrapper(run_pipeline)(cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]) and "Traceback" not in err
    assert lines[0].startswith("error: [questions] ") and "the questions stage wrote 0 questions" in lines[0]
    assert "pipeline.questions=pool" in lines[0]
    assert not (tmp_path / "pipeline" / "filter").exists()  # stopped there, not at the next stage


def test_nothing_made_names_the_key_to_change() -> None:
    assert nothing_made("questions", {"generated": 3}, pipeline=True) is None
    assert nothing_made("filter", {"kept": 2, "n_input": 5}, pipeline=False) is None
    assert nothing_made("pairs", {"kept": {"USA": 0, "CHN": 1}}, pipeline=True) is None
    removed = nothing_made("filter", {"output": "f.jsonl", "kept": 0, "n_input": 5, "removed": {"dup": 5}}, True)
    assert removed and removed.startswith("f.jsonl: the filter kept 0 of 5 questions (every one was removed")
    pairs = nothing_made("pairs", {"output_dir": "p", "kept": {"USA": 0}, "criterion": "answer"}, pipeline=True)
    assert pairs and pairs.startswith("p: no culture kept a pair under data.criterion=answer")
    assert "data.criterion=none" in pairs
