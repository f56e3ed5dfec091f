"""Stage ``merge-answers``: join the finished shards of each answers file (``answers/shards.py``), and the
pipeline's ``pipeline.answer_shards=n`` that runs the shards (one after another, or at once on ``engine.devices``
worker processes: ``infer/workers.py``) and merges them.

The merge checks that every shard is complete, made by the current config and holds exactly its questions, then
writes ``{name}.jsonl`` and its sidecar as the unsharded run would (so a later ``stage=answers`` without a shard skips
it, and ``stage=pairs`` reads it): with greedy or logprob decoding it is byte-identical to the file of one unsharded
run. Shard files are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.answers.records import answer_key
from culturespa.answers.shards import Shard, shard_counts
from culturespa.errors import CultureSPAError, fail
from culturespa.infer.workers import Job, run_jobs, worker_devices
from culturespa.stages import outputs
from culturespa.stages.identity import fingerprint
from culturespa.utils.jsonl import iter_jsonl, write_jsonl

log = logging.getLogger("culturespa.generate")


def shard_fingerprint(shard: Shard, fp: str, chunk: int) -> str:
    """A shard file's fingerprint: the unsharded output's ``fp`` plus how the questions were split."""
    return fingerprint(shard.identity(fp, chunk))


def merge_one(
    path: Path, fp: str, keys: dict[str, Any], chunk: int, overwrite: bool, per_run: int | None = None
) -> dict[str, Any]:
    """Join the shards of one answers file; every problem is a one-line error naming the shard file."""
    counts = shard_counts(path)
    if not counts:
        raise fail(path, "no shard files to merge (run stage=answers answers.shard=i/n for every i first)")
    if len(counts) > 1:
        raise fail(path, f"shard files of several splits ({', '.join(f'n={n}' for n in counts)}); keep one split")
    n = counts[0]
    if outputs.prepare(path, fp, overwrite) == "skip" and {answer_key(r) for _, r in iter_jsonl(path)} == set(keys):
        log.info("merge-answers: %s is complete for this config; skipping", path)
        return {"file": str(path), "shards": n, "answers": len(keys), "skipped": True}
    records: dict[str, dict[str, Any]] = {}
    for index in range(n):
        shard = Shard(index, n)
        shard_path = shard.path(path)
        meta = outputs.read_meta(shard_path)
        again = f"rerun stage=answers answers.shard={shard.label}"
        if not shard_path.is_file() or shard_path.with_name(shard_path.name + ".part").exists():
            raise fail(shard_path, f"shard {shard.label} is missing or unfinished; {again}")
        if not meta.get("complete") or meta.get("fingerprint") != shard_fingerprint(shard, fp, chunk):
            raise fail(shard_path, f"shard {shard.label} was made by another config or split; {again} overwrite=true")
        expected = shard.keys(keys, chunk, per_run)
        got = {answer_key(r): r for _, r in iter_jsonl(shard_path)}
        stale = [k for k, r in got.items() if expected.get(k) != r.get("question")]
        if set(got) != set(expected) or stale:
            raise fail(shard_path, f"shard {shard.label} does not hold this question set; {again}")
        records.update(got)
    write_jsonl(path, [records[k] for k in keys])
    carried = {k: meta[k] for k in ("decoding", "runs") if k in meta}  # what the pairs stage reads from a sidecar
    outputs.mark(path, fp, complete=True, n=len(keys), merged_from=n, **carried)
    log.info("merge-answers: %s: %d answers from %d shards", path, len(keys), n)
    return {"file": str(path), "shards": n, "answers": len(keys), "skipped": False}


def fan_out(
    run: Callable[[DictConfig], dict[str, Any]], stage_cfg: Callable[[dict[str, Any]], DictConfig], n: Any
) -> dict[str, Any]:
    """``pipeline.answer_shards=n``: run the answers stage as ``n`` shards, then merge (the same files as one run).
    With ``engine.devices`` > 1 the shards run at once, one worker process per device (``run`` must then be a
    module-level function); else one after another. ``stage_cfg`` builds the stage config from extra settings."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CultureSPAError(f"pipeline.answer_shards={n!r} must be a positive integer")
    if n == 1:  # with engine.devices > 1 the stage splits itself over the devices
        return run(stage_cfg({}))
    devices = worker_devices(stage_cfg({}))
    if devices:
        jobs = [_shard_job(run, stage_cfg, Shard(i, n)) for i in range(n)]
        shards = run_jobs(jobs, devices)
    else:
        shards = [run(stage_cfg({"answers.shard": Shard(i, n).label})) for i in range(n)]
    merged = run(stage_cfg({"stage": "merge-answers"}))
    answered = sum(int(s.get("answered") or 0) for s in shards)
    return merged | {"shards": n, "answered": answered, "invalid": _sum_invalid(shards)}


def _shard_job(
    run: Callable[[DictConfig], dict[str, Any]], stage_cfg: Callable[[dict[str, Any]], DictConfig], shard: Shard
) -> Job:
    cfg = stage_cfg({"answers.shard": shard.label, "engine.devices": 1})
    setting = OmegaConf.select(cfg, "answers.setting", default="answers")
    log_file = (
        Path(str(cfg.paths.output_dir)) / "workers" / f"answers-{setting}.shard-{shard.index}-of-{shard.count}.log"
    )
    return Job(f"answers shard {shard.label}", run, cfg, log_file)


def _sum_invalid(summaries: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for summary in summaries:
        for label, count in (summary.get("invalid") or {}).items():
            total[label] = total.get(label, 0) + int(count)
    return total
