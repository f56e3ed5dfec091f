"""The README runs as written: its quickstart block (every command of its pipeline table) on the tiny model, and its
W&B offline-sync line, so the docs cannot drift from the code."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
SCRIPTS = ("generate.py", "train.py", "evaluate.py")


def marked_block(marker: str) -> list[str]:
    """The lines of the first fenced block after ``<!-- marker``, comments stripped."""
    start = README.index(f"<!-- {marker}")
    match = re.compile(r"```bash\n(.*?)```", re.S).search(README, start)
    assert match, f"no bash block after the {marker} marker"
    lines = [line.split(" #")[0].strip() for line in match.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def table_commands() -> list[str]:
    """The command column of the README's pipeline table (first code span of each row)."""
    section = README[README.index("## The pipeline") :]
    section = section[: section.index("\n\n", section.index("| step |"))]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    return [re.search(r"`([^`]+)`", row.split(" | ")[2]).group(1) for row in rows]  # type: ignore[union-attr]


def _covered(command: str, line: str) -> bool:
    """Every word of ``command`` is in ``line``; ``key=<placeholder>`` only needs the key."""
    words = shlex.split(line)
    for word in shlex.split(command.replace("<adapter dir>", "<adapter>")):
        if "<" in word:
            if not any(w.startswith(word.split("=")[0] + "=") for w in words):
                return False
        elif word not in words:
            return False
    return True


def test_every_table_command_is_in_the_quickstart_and_make_targets_exist() -> None:
    quickstart = marked_block("quickstart")
    commands = table_commands()
    assert len(commands) == 8
    for command in commands:
        assert any(_covered(command, line) for line in quickstart), f"README table command not in quickstart: {command}"
    makefile = (REPO / "Makefile").read_text()
    for line in quickstart:
        if line.startswith("make "):
            for target in line.split()[1:]:
                assert re.search(rf"^{target}:", makefile, re.M), f"make target {target} missing"
    assert "source .venv/bin/activate" in quickstart


def _checkout(tmp_path: Path) -> Path:
    """A fresh checkout as a new user has it (scripts, conf/, .venv, data/, .cache/), writing only under tmp_path."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in (*SCRIPTS, "conf", ".venv", "data", ".cache"):
        (root / name).symlink_to((REPO / name).resolve())
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CULTURESPA_", "VIRTUAL_ENV"))}
    env.update(
        CULTURESPA_ROOT=str(root),
        PYTHONPATH=str(REPO),  # this checkout's package before any installed one
        WANDB_MODE="offline",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_SILENT="true",
    )
    return env


@pytest.mark.slow
def test_quickstart_runs_as_written_on_the_tiny_model(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    lines = [line for line in marked_block("quickstart") if not line.startswith("make ")]  # installs: not in tests
    assert all("debug=default" in line for line in lines if line.startswith("python"))
    script = "\n".join(["set -euo pipefail", *(line.replace("debug=default", "debug=tiny") for line in lines)])
    if not (root / ".venv" / "bin" / "activate").is_file():
        script = script.replace("source .venv/bin/activate", f"export PATH={Path(sys.executable).parent}:$PATH")
    done = subprocess.run(["bash", "-c", script], cwd=root, env=_env(root), capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    stage_files = root / "outputs" / "debug" / "tiny" / "tiny_random"  # debug runs write to their own folder
    assert (stage_files / "questions" / "filtered.jsonl").stat().st_size > 0
    assert (stage_files / "answers" / "aware_ZWE.jsonl").stat().st_size > 0
    assert (stage_files / "pairs" / "USA.jsonl").stat().st_size > 0
    assert (root / "outputs" / "quickstart" / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list((root / "logs" / "evaluate" / "runs").glob("*/alignment.json"))) == 1
    assert len(list((root / "outputs" / "pipeline" / "runs").glob("*/comparison.json"))) == 1


@pytest.mark.slow
def test_wandb_sync_line_finds_offline_runs_of_stages_and_pipeline(tmp_path: Path) -> None:
    import wandb

    (line,) = marked_block("wandb-sync")
    assert "**" not in line  # globstar is off in bash by default
    for folder in ("logs/train/runs/x", "outputs/pipeline/eval-base/abc"):
        run = wandb.init(project="culturespa", mode="offline", dir=str(tmp_path / folder))
        run.finish()
    env = {**_env(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(REPO)
    assert line.startswith("python -m culturespa.utils.wandb_records --sync ")
    done = subprocess.run(
        ["bash", "-c", f"{line} --dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    synced = re.findall(r"^\S*wandb sync (\S+)$", done.stdout, re.M)
    assert len(synced) == 2 and all("offline-run-" in folder for folder in synced), output
