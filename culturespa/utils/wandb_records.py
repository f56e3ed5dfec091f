"""Read an offline W&B run's transaction log (``offline-run-*/run-*.wandb``) without a server.

``wandb.Api`` needs a server, and the SDK no longer ships a reader for this file, so this decodes it directly: a
7-byte header (``:W&B``, magic, version), then 32 KiB blocks of LevelDB-log records (CRC32, length, type: full,
first, middle, last), each payload a ``wandb_internal_pb2.Record``. Used by the tests and to check lineage before
syncing::

    python -m culturespa.utils.wandb_records outputs/pipeline/runs/<name>/wandb
    python -m culturespa.utils.wandb_records --sync logs outputs     # upload every offline run, oldest first
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
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
    from wandb.proto import wandb_internal_pb2 as pb  # W&B's protobufs load slowly: only when records are read

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


def _finished_records(log: Path, wait: float) -> list[Any]:
    """The records of ``log``; with ``wait`` > 0, first wait (up to ``wait`` seconds) for the run's exit record:
    ``run.finish()`` can return before W&B's service has written the end of the file."""
    deadline = time.monotonic() + wait
    while True:
        try:
            records = read_records(log)
            if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() >= deadline:
                return records
        except ValueError:  # a record half written
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.1)


def read_run(folder: str | Path, wait: float = 0.0) -> OfflineRun:
    """Name, group, job type and artifact records of one ``offline-run-*`` folder (``wait``: see
    :func:`_finished_records`)."""
    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder}: no run-*.wandb file")
    name = group = job_type = ""
    arts = []
    for record in _finished_records(logs[0], wait):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name, group, job_type = record.run.display_name, record.run.run_group, record.run.job_type
        elif kind == "artifact":
            a = record.artifact
            entries = tuple((c.path, c.ref or c.local_path) for c in a.manifest.contents)
            arts.append(ArtifactRecord(a.name, a.type, a.digest, bool(a.user_created and a.use_after_commit), entries))
    return OfflineRun(folder, name, group, job_type, tuple(arts))


def offline_runs(root: str | Path, wait: float = 0.0) -> list[OfflineRun]:
    """Every offline run under ``root`` (any depth), oldest first."""
    return [read_run(f, wait) for f in run_folders([root])]


def run_folders(roots: Sequence[str | Path]) -> list[Path]:
    """Every ``offline-run-*`` folder under ``roots``, in start-time order (the folder name starts with it)."""
    found = {p.resolve() for root in roots if Path(root).exists() for p in Path(root).rglob("offline-run-*")}
    return sorted((p for p in found if p.is_dir()), key=lambda p: (p.name, str(p)))


def sync(roots: Sequence[str | Path], dry_run: bool = False) -> int:
    """``wandb sync`` every offline run under ``roots``, one at a time, oldest first: a stage's artifact is then on
    the server before a later run declares it as input (``wandb sync`` itself uploads several runs in parallel, in no
    set order). Runs already synced are skipped by ``wandb sync``. Returns the first non-zero exit status."""
    wandb_cli = [shutil.which("wandb")] if shutil.which("wandb") else [sys.executable, "-m", "wandb"]
    status = 0
    for folder in run_folders(roots):
        command = [*wandb_cli, "sync", str(folder)]
        print(" ".join(command), flush=True)
        if not dry_run:
            code = subprocess.call(command)
            status = status or code
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: python -m culturespa.utils.wandb_records [--sync [--dry-run]] DIR [DIR ...]\n"
            "  lists the offline runs under DIR with the artifacts each uses and produces;\n"
            "  --sync uploads them with `wandb sync`, oldest first",
            file=sys.stderr,
        )
        return 0 if args else 2
    if args[0] == "--sync":
        dry = "--dry-run" in args
        return sync([a for a in args[1:] if a != "--dry-run"], dry_run=dry)
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
