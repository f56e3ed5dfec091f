"""Shards: ``answers.shard=i/n`` answers one n-th of an answers file's questions (``stage=merge-answers`` joins them).

    python generate.py -m stage=answers answers.shard=0/4,1/4,2/4,3/4 [hydra/launcher=slurm]   # one job per shard
    python generate.py stage=merge-answers                                                      # same other settings

The split is by position in whole resume chunks (``chunks.py``): chunk ``k`` goes to shard ``k mod n``. The unsharded
run sends exactly those chunks to the engine, in the same batches, so with greedy or logprob decoding every answer of
a shard is bitwise the unsharded run's. Each shard writes its own ``{name}.shard-{i}-of-{n}.jsonl`` (with its own
part file and sidecar), so it resumes on its own after a kill.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturespa.answers.chunks import resume_chunks
from culturespa.answers.records import answer_key
from culturespa.errors import CultureSPAError, fail
from culturespa.utils.jsonl import iter_jsonl, write_jsonl

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

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def path(self, path: Path) -> Path:
        """``unaware.jsonl`` → ``unaware.shard-1-of-4.jsonl``."""
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")

    def identity(self, fingerprint: str, chunk: int) -> dict[str, Any]:
        """What a shard's fingerprint hashes: the unsharded output's fingerprint plus how the questions were split."""
        return {"answers": fingerprint, "shard": [self.index, self.count], "chunk": chunk}

    def keys(self, keys: dict[str, Any], chunk: int, per_run: int | None = None) -> dict[str, Any]:
        """This shard's share of the (ordered) question keys: the chunks ``k`` with ``k mod count == index``."""
        mine = {
            k
            for i, members in enumerate(resume_chunks(list(keys), chunk, per_run))
            if i % self.count == self.index
            for k in members
        }
        return {k: v for k, v in keys.items() if k in mine}


def shard_counts(path: Path) -> list[int]:
    """The shard counts ``n`` of the shard files (finished or not) found next to ``path``."""
    pattern = re.compile(re.escape(path.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(path.suffix) + r"(\.part)?$")
    found = {int(m[2]) for f in path.parent.glob(f"{path.stem}.shard-*") if (m := pattern.match(f.name))}
    return sorted(found)


def finished_answers(path: Path, keys: dict[str, Any]) -> bool:
    """``path`` is a finished answers file holding exactly ``keys``, each for the same question (nothing to redo)."""
    if not path.is_file() or path.with_name(path.name + ".part").exists():
        return False
    got = {answer_key(r): r.get("question") for _, r in iter_jsonl(path)}
    return got == keys


def join_shards(path: Path, keys: dict[str, Any], count: int, chunk: int, per_run: int | None = None) -> list[Any]:
    """Write ``path`` from its ``count`` finished shard files, in ``keys`` order (the one-process file, byte for
    byte with greedy or logprob decoding); a shard missing, unfinished or holding other questions is a one-line
    error naming it, and nothing is written."""
    records: dict[str, Any] = {}
    for index in range(count):
        shard = Shard(index, count)
        shard_path = shard.path(path)
        if not finished_answers(shard_path, shard.keys(keys, chunk, per_run)):
            raise fail(shard_path, f"shard {shard.label} is missing, unfinished or of other questions; rerun to resume")
        records.update((answer_key(r), r) for _, r in iter_jsonl(shard_path))
    ordered = [records[k] for k in keys]
    write_jsonl(path, ordered)
    return ordered
