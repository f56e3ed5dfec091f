"""Read an offline W&B run's transaction log (``offline-run-*/run-*.wandb``) without a server.

``wandb.Api`` needs a server, and the SDK no longer ships a reader for this file, so this decodes it directly: a
7-byte header (``:W&B``, magic, version), then 32 KiB blocks of LevelDB-log records (CRC32, length, type: full,
first, middle, last), each payload a ``wandb_internal_pb2.Record``. Used by the tests and to check lineage before
syncing::

    python -m culturespa.utils.wandb_records outputs/pipeline/runs/<name>/wandb
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = 7
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (no ':W&B' header)")
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length:
            break  # a torn tail (run killed while writing)
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != checksum:
            raise ValueError(f"record at byte {pos}: CRC mismatch")
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_records(path: str | Path) -> list[Any]:
    """Every record of one ``.wandb`` file, as ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for payload in _payloads(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


@dataclass(frozen=True)
class ArtifactRecord:
    name: str
    type: str
    digest: str
    used: bool  # True: declared as an input (user-created, used after commit); False: logged as an output
    entries: tuple[tuple[str, str], ...]  # (entry path, reference URI or staged file)


@dataclass(frozen=True)
class OfflineRun:
    folder: Path
    name: str
    group: str
    job_type: str
    artifacts: tuple[ArtifactRecord, ...]

    @property
    def inputs(self) -> list[ArtifactRecord]:
        return [a for a in self.artifacts if a.used]

    @property
    def outputs(self) -> list[ArtifactRecord]:
        return [a for a in self.artifacts if not a.used]


def read_run(folder: str | Path) -> OfflineRun:
    """Name, group, job type and artifact records of one ``offline-run-*`` folder."""
    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder}: no run-*.wandb file")
    name = group = job_type = ""
    arts = []
    for record in read_records(logs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name, group, job_type = record.run.display_name, record.run.run_group, record.run.job_type
        elif kind == "artifact":
            a = record.artifact
            entries = tuple((c.path, c.ref or c.local_path) for c in a.manifest.contents)
            arts.append(ArtifactRecord(a.name, a.type, a.digest, bool(a.user_created and a.use_after_commit), entries))
    return OfflineRun(folder, name, group, job_type, tuple(arts))


def offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (any depth), oldest first."""
    folders = sorted(Path(root).rglob("offline-run-*"), key=lambda p: p.name)
    return [read_run(f) for f in folders if f.is_dir()]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m culturespa.utils.wandb_records DIR [DIR ...]", file=sys.stderr)
        return 2
    for root in args:
        for run in offline_runs(root):
            print(f"{run.name}  [{run.job_type}, group {run.group}]  {run.folder}")
            for art in run.inputs:
                print(f"    uses     {art.name} ({art.type}) {art.digest[:12]}")
            for art in (a for a in run.outputs if a.type != "run_table"):  # tables logged with run.log
                print(f"    produces {art.name} ({art.type}) {art.digest[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
