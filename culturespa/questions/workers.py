"""Question generation on ``engine.devices`` worker processes: the topics are dealt round-robin to one worker per
device, each generating its topics into its own file, and the parts are joined in the one-process order.

A topic's slots see only the questions of their own topic, so each worker runs exactly the stage's step loop for its
topics (``questions.py``), with its own part file: a killed worker (or parent) resumes on the next run of the same
command. Worker ``i`` of ``n`` writes ``{name}.shard-i-of-n.jsonl`` (fingerprinted as the whole output: the
fingerprint leaves the topics out); the join writes ``{name}.jsonl`` and its sidecar as one process would, topic by
topic, slot by slot. With greedy decoding (``questions.temperature=0``) the content is the one-process content as long
as a prompt's reply does not depend on its batch partners (on CPU a logit may change in its last bits with them, so a
near tie can flip; no such flip in the tests). A finished or part-written output of one process is left to one
process (extending or resuming it). A worker re-enters the stage (``run_share``) with a copy of the composed config
that names its topics and file (``runtime.worker_config``), and reads its own settings from it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.errors import fail
from culturespa.infer.workers import Job, run_jobs
from culturespa.questions.generate import run_questions
from culturespa.questions.settings import QuestionsStageSettings
from culturespa.stages import outputs
from culturespa.stages.runtime import StageRuntime
from culturespa.utils.jsonl import read_jsonl, write_jsonl

log = logging.getLogger("culturespa.generate")


def run_questions_on_devices(stage: QuestionsStageSettings, runtime: StageRuntime) -> dict[str, Any]:
    """Stage ``questions``: on one process (``engine.devices=1``, or an output that one process started), else
    one worker per device, each on its share of the topics, then joined."""
    devices, output, fp = list(stage.devices), stage.output, stage.fingerprint
    if not devices or (not stage.overwrite and outputs.prepare(output, fp, False) != "fresh"):
        return run_questions(stage, runtime)
    topics = stage.questions.topics
    n = min(len(devices), len(topics))
    shares = [topics[i::n] for i in range(n)]
    folder = stage.workers_dir or output.parent
    jobs = [
        Job(
            f"questions shard {i}/{n}",
            run_share,
            runtime.worker_config({"questions.topics": share, "questions.output": str(_shard_path(output, i, n))}),
            folder / "workers" / f"questions.shard-{i}-of-{n}.log",
        )
        for i, share in enumerate(shares)
    ]
    started = time.perf_counter()
    parts = run_jobs(jobs, devices[:n])
    return join_questions(stage, n) | {
        "replies_this_run": sum(int(p.get("replies_this_run") or 0) for p in parts),
        "replies_per_s": None,
        "seconds": time.perf_counter() - started,
        "workers": n,
    }


def _shard_path(output: Path, index: int, count: int) -> Path:
    return output.with_name(f"{output.stem}.shard-{index}-of-{count}{output.suffix}")


def run_share(cfg: DictConfig) -> dict[str, Any]:
    """A worker's job: the stage on its share of the topics. A worker process starts from the pickled config, so it
    is an entry point: it reads the settings and binds the runtime."""
    return run_questions(QuestionsStageSettings.from_config(cfg), StageRuntime.bind(cfg, "questions"))


def join_questions(stage: QuestionsStageSettings, count: int) -> dict[str, Any]:
    """Write the output and its sidecar from the workers' finished files, as one process writes them."""
    good: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    bad_json = 0
    settings, output, fp = stage.questions, stage.output, stage.fingerprint
    for index in range(count):
        part = _shard_path(output, index, count)
        meta = outputs.read_meta(part)
        if not part.is_file() or not meta.get("complete") or meta.get("fingerprint") != fp:
            raise fail(part, f"questions shard {index}/{count} is missing or unfinished; rerun to resume it")
        good |= {r["id"]: r for r in read_jsonl(part)}
        failed |= {m["id"]: m for m in meta.get("failed", []) if isinstance(m, dict) and "id" in m}
        bad_json += int(meta.get("bad_json") or 0)
    expected = [k for t in settings.topics for k in settings.slot_ids(t)]
    kept = [good[k] for k in expected if k in good]
    lost = [failed[k] for k in expected if k in failed]
    write_jsonl(output, kept)
    outputs.mark(output, fp, complete=True, generated=len(kept), bad_json=bad_json, failed=lost)
    log.info(
        "questions: %d generated, %d slots failed, joined from %d workers -> %s", len(kept), len(lost), count, output
    )
    return {
        "stage": "questions",
        "output": str(output),
        "generated": len(kept),
        "failed": len(lost),
        "bad_json": bad_json,
        "skipped": False,
    }
