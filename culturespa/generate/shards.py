"""Sharded answer collection: ``answers.shard=i/n`` answers one n-th of the questions, ``stage=merge-answers`` joins.

    python generate.py -m stage=answers answers.shard=0/4,1/4,2/4,3/4 [hydra/launcher=slurm]   # one job per shard
    python generate.py stage=merge-answers                                                      # same other settings

The split is by position in whole resume chunks (``answers.resume_chunk`` questions): chunk ``k`` goes to shard
``k mod n``. The unsharded run sends exactly those chunks to the engine, in the same batches, so with greedy or
logprob decoding every answer of a shard is bitwise the unsharded run's, and the merged file is byte-identical to
the file one unsharded run writes. Each shard writes its own ``{name}.shard-{i}-of-{n}.jsonl`` (with its own part
file and sidecar), so it resumes on its own after a kill. The merge checks that every shard is complete, made by the
current config and holds exactly its questions, then writes ``{name}.jsonl`` and its sidecar as the unsharded run
would (so a later ``stage=answers`` without a shard skips it, and ``stage=pairs`` reads it). Shard files are kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.data.jsonl import iter_jsonl, write_jsonl
from culturespa.errors import CultureSPAError, fail
from culturespa.generate import outputs

log = logging.getLogger("culturespa.generate")
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, value: Any, key: str = "answers.shard") -> Shard | None:
        """``"i/n"`` (0 <= i < n) or null; anything else is a one-line error naming the key."""
        if value is None:
            return None
        match = _SPEC.match(str(value))
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise CultureSPAError(f"{key}={value!r} must be i/n with 0 <= i < n (e.g. 0/4), or null")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Shard | None:
        return cls.parse(OmegaConf.select(cfg, "answers.shard", default=None))

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def path(self, path: Path) -> Path:
        """``unaware.jsonl`` → ``unaware.shard-1-of-4.jsonl``."""
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")

    def fingerprint(self, fp: str, chunk: int) -> str:
        """A shard's identity: the unsharded output's fingerprint plus how the questions were split."""
        return outputs.fingerprint({"answers": fp, "shard": [self.index, self.count], "chunk": chunk})

    def keys(self, keys: dict[str, Any], chunk: int, per_run: int | None = None) -> dict[str, Any]:
        """This shard's share of the (ordered) question keys: the chunks ``k`` with ``k mod count == index``."""
        mine = {
            k
            for i, members in enumerate(resume_chunks(list(keys), chunk, per_run))
            if i % self.count == self.index
            for k in members
        }
        return {k: v for k, v in keys.items() if k in mine}

    def restrict(
        self, path: Path, fp: str, keys: dict[str, Any], chunk: int, per_run: int | None = None
    ) -> tuple[Path, str, dict[str, Any]]:
        """The shard's output file, fingerprint and questions in place of the unsharded ones."""
        return self.path(path), self.fingerprint(fp, chunk), self.keys(keys, chunk, per_run)


def resume_chunk(cfg: Any) -> int:
    """``answers.resume_chunk``: how many questions go to the engine together (answers stage and evaluation)."""
    chunk = OmegaConf.select(cfg, "answers.resume_chunk", default=256)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise CultureSPAError(f"answers.resume_chunk={chunk!r} must be a positive integer")
    return chunk


def resume_chunks(order: list[str], chunk: int, per_run: int | None = None) -> list[list[str]]:
    """The fixed resume chunks of an answers file: ``chunk`` keys at a time by position within each run (sample) of
    ``per_run`` keys, run-major, so run 0 is batched exactly as when one sample is asked for."""
    per_run = per_run or len(order) or 1
    return [
        order[start : min(start + chunk, run + per_run)]
        for run in range(0, len(order), per_run)
        for start in range(run, min(run + per_run, len(order)), chunk)
    ]


def shard_counts(path: Path) -> list[int]:
    """The shard counts ``n`` of the shard files (finished or not) found next to ``path``."""
    pattern = re.compile(re.escape(path.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(path.suffix) + r"(\.part)?$")
    found = {int(m[2]) for f in path.parent.glob(f"{path.stem}.shard-*") if (m := pattern.match(f.name))}
    return sorted(found)


def merge_one(
    path: Path, fp: str, keys: dict[str, Any], chunk: int, overwrite: bool, per_run: int | None = None
) -> dict[str, Any]:
    """Join the shards of one answers file; every problem is a one-line error naming the shard file."""
    from culturespa.generate.answers import answer_key

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
        if not meta.get("complete") or meta.get("fingerprint") != shard.fingerprint(fp, chunk):
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
    """``pipeline.answer_shards=n``: run the answers stage as ``n`` shards one after another, then merge (the same
    files as one run; on a cluster run the shards as separate jobs with ``answers.shard`` instead). ``stage_cfg``
    builds the stage config from extra settings."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CultureSPAError(f"pipeline.answer_shards={n!r} must be a positive integer")
    if n == 1:
        return run(stage_cfg({}))
    shards = [run(stage_cfg({"answers.shard": Shard(i, n).label})) for i in range(n)]
    merged = run(stage_cfg({"stage": "merge-answers"}))
    answered = sum(int(s.get("answered") or 0) for s in shards)
    return merged | {"shards": n, "answered": answered, "invalid": _sum_invalid(shards)}


def _sum_invalid(summaries: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for summary in summaries:
        for label, count in (summary.get("invalid") or {}).items():
            total[label] = total.get(label, 0) + int(count)
    return total
