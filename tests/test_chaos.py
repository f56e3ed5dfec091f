"""Chaos: SIGKILL the real commands at seeded random points, rerun the same command, and compare with an
uninterrupted run byte for byte.

Kill points (``culturespa/utils/chaos.py``): after answers are appended, mid-line in a part file, between a temp file
and its rename, after a checkpoint, with ``last.ckpt`` half written, as validation starts. With
``CULTURESPA_CHAOS_KILLS`` above 3 (``make chaos``) every other kill is instead a timer SIGKILL at a random moment of the
run, wherever the process happens to be (imports, model loading, Lightning internals).

Scenarios (tiny_random, logprob decoding, so answers and training are deterministic):

* ``pipeline``: filter-pool → answers (unaware + aware, 2 cultures) → pairs → train (3 steps, a checkpoint per step)
  → evaluate base and adapter, killed ``CULTURESPA_CHAOS_KILLS`` times (default 2) across its stages;
* ``train.py`` and ``evaluate.py``: the same command rerun after a kill resumes in its own run folder (keyed by config)
  and says so ("resuming from step N", "resuming: M of T records done").

Compared byte for byte (after replacing the run's root folder by ``<ROOT>``): every answers, questions, pairs and
alignment file, the adapter weights and files. Excluded, because they record time, paths or how the run went rather
than what it produced: ``_SUCCESS.json`` (seconds, answers/s), the ``*.meta.json`` and ``fingerprint.json`` sidecars
(hashes of configs that hold the root folder), ``csv/`` metrics, ``checkpoints/`` (optimiser state and the number of
restarts) and, in the adapter's ``culturespa.json``, the throughput metric ``train/tokens_per_s`` and the config
fingerprint; ``adapter_config.json`` is compared with ``target_modules`` sorted (PEFT saves a set, in hash order,
even between two uninterrupted runs); the pipeline's comparison file is compared without its ``recomputed`` list.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("CULTURESPA_CHAOS_KILLS", "2"))
SEED = int(os.environ.get("CULTURESPA_CHAOS_SEED", "12"))
TIMEOUT = 900

TINY = [
    "debug=tiny",
    "decoding=logprob",
    "trainer.detect_anomaly=false",
    "trainer.enable_progress_bar=false",
]
PIPELINE = [
    *TINY,
    "cultures=[USA,CHN]",
    "pipeline.questions=pool",
    "filter.input=${paths.question_pool_dir}",
    "filter.limit_per_topic=1",
    "data.criterion=none",
    "sft.save_every_n_steps=1",
]
SKIP_NAMES = {"_SUCCESS.json", "fingerprint.json"}
SKIP_PARTS = {"checkpoints", "csv", "logs", "wandb", ".hydra"}
TIMING_KEYS = {"train/tokens_per_s"}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CULTURESPA_CHAOS")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="offline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra or {})
    return env


def _command(kind: str, root: Path) -> list[str]:
    logs = f"paths.log_dir={root / 'logs'}"
    if kind == "pipeline":
        return [sys.executable, "-m", "culturespa.pipeline", *PIPELINE, f"+pipeline.root={root}", logs]
    if kind == "train":
        pairs = f"sft.pairs_dir={root / 'pairs'}"
        return [sys.executable, "train.py", *TINY, "cultures=[USA]", "sft.save_every_n_steps=1", pairs, logs]
    return [sys.executable, "evaluate.py", *TINY, "cultures=[USA,CHN]", logs]


def _run(cmd: list[str], env: dict[str, str], timer: float | None = None) -> subprocess.CompletedProcess[str]:
    if timer is None:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timer)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL from outside, wherever the process is
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def reference(kind: str, root: Path) -> tuple[int, float, str]:
    """Run uninterrupted; returns the kill points it passed, its duration and its output."""
    count = root / "points.txt"
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = _run(_command(kind, root), _env({"CULTURESPA_CHAOS_COUNT": str(count)}))
    assert done.returncode == 0, done.stderr[-3000:]
    points = len(count.read_text().splitlines()) if count.exists() else 0
    count.unlink(missing_ok=True)
    return points, time.perf_counter() - start, done.stdout + done.stderr


def chaos(kind: str, root: Path, points: int, seconds: float, kills: int, rng: random.Random) -> tuple[list[str], str]:
    """Kill the command ``kills`` times at seeded random points, then rerun it to the end; returns what was done."""
    cmd = _command(kind, root)
    marks = sorted(rng.sample(range(1, points + 1), min(kills, points)))
    log: list[str] = []
    previous = 0
    for i, mark in enumerate(marks):
        if kills > 3 and i % 2:
            delay = rng.uniform(1.0, seconds)
            done = _run(cmd, _env(), timer=delay)
            what = f"timer {delay:.1f}s"
        else:
            n = max(1, mark - previous)
            done = _run(cmd, _env({"CULTURESPA_CHAOS": str(n)}))
            what = f"point {n}"
        previous = mark
        if done.returncode == 0:
            log.append(f"{what}: finished first")
            return log, done.stdout + done.stderr
        assert done.returncode == -9, f"{what}: exit {done.returncode}\n{done.stderr[-3000:]}"
        log.append(f"{what}: killed")
    done = _run(cmd, _env())
    assert done.returncode == 0, f"resume after {log}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return log, done.stdout + done.stderr


def snapshot(root: Path) -> dict[str, bytes]:
    """What a run produced, with ``root`` spelled ``<ROOT>`` and the timing/progress records left out."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or SKIP_PARTS & set(rel.parts) or path.name in SKIP_NAMES:
            continue
        if path.name.endswith((".meta.json", ".count", "points.txt")):
            continue
        data = path.read_bytes().replace(str(root).encode(), b"<ROOT>")
        if path.name == "culturespa.json":
            meta = json.loads(data)
            for key in TIMING_KEYS:
                meta.get("train", {}).get("metrics", {}).pop(key, None)
            meta.pop("fingerprint", None)  # a hash of the config, whose paths hold the root folder
            data = json.dumps(meta, sort_keys=True).encode()
        if path.name == "adapter_config.json":
            config = json.loads(data)
            config["target_modules"] = sorted(config.get("target_modules") or [])  # PEFT saves a set
            data = json.dumps(config, sort_keys=True).encode()
        if path.name == "comparison.json":
            comparison = json.loads(data)
            comparison.pop("recomputed", None)
            data = json.dumps(comparison, sort_keys=True).encode()
        key = re.sub(r"^runs/[^/]+", "runs/<name>", str(rel))  # the pipeline's run name holds its root folder
        out[key] = data
    return out


def assert_same(straight: Path, resumed: Path) -> None:
    a, b = snapshot(straight), snapshot(resumed)
    assert sorted(a) == sorted(b), f"files differ: {sorted(set(a) ^ set(b))}"
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"resumed output differs from the uninterrupted run in {different}"


@pytest.mark.slow
def test_pipeline_killed_at_random_points_resumes_byte_identical(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    points, seconds, _ = reference("pipeline", tmp_path / "a")
    assert points > 10
    log, _ = chaos("pipeline", tmp_path / "b", points, seconds, KILLS, rng)
    print(f"pipeline chaos (seed {SEED}, {points} kill points): {log}")
    assert_same(tmp_path / "a", tmp_path / "b")
    assert not list((tmp_path / "b").rglob("*.part")), "no part file may be left behind"


def _pairs(root: Path) -> None:
    from culturespa.train.synthetic import write_pairs

    write_pairs(root / "pairs", {"USA": 12})


@pytest.mark.slow
def test_train_and_evaluate_commands_resume_in_their_own_run_folder(tmp_path: Path) -> None:
    """The identical train.py / evaluate.py command, rerun after a SIGKILL, finds its run folder and resumes."""
    _pairs(tmp_path)
    env = _env({"CULTURESPA_CHAOS": "ckpt.saved:2"})
    killed = _run(_command("train", tmp_path), env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "joint" / "last.ckpt").is_file()
    done = _run(_command("train", tmp_path), _env())
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "resuming from step 2 of 3" in output
    assert list((tmp_path / "logs" / "train" / "runs").iterdir()) == runs  # the same folder, not a new one
    adapter = runs[0] / "adapter"
    assert f"adapter (joint): {adapter}" in output
    assert f"next: python evaluate.py eval.adapter={adapter} debug=tiny" in output

    # evaluate: killed after its first culture's answers; the same command resumes them
    killed = _run(_command("evaluate", tmp_path), _env({"CULTURESPA_CHAOS": "atomic.write:2"}))
    assert killed.returncode == -9, killed.stderr[-3000:]
    done = _run(_command("evaluate", tmp_path), _env())
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert re.search(r"resuming: \d+ of 8 records done", output), output[-3000:]
    (run,) = list((tmp_path / "logs" / "evaluate" / "runs").iterdir())
    assert f"alignment results written to {run / 'alignment.json'}" in output
    if KILLS <= 3:  # make test: the pipeline scenario already compares resumed evaluations byte for byte
        return
    # the same figures as an uninterrupted evaluation (log_dir does not enter the run folder's key)
    straight = _run(_command("evaluate", tmp_path / "straight"), _env())
    assert straight.returncode == 0, straight.stderr[-3000:]
    (ref,) = list((tmp_path / "straight" / "logs" / "evaluate" / "runs").iterdir())
    assert ref.name == run.name
    for rel in ["alignment.json", "answers/p1_USA.jsonl", "answers/p1_CHN.jsonl"]:
        assert (ref / rel).read_bytes() == (run / rel).read_bytes(), rel
