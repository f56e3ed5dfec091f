"""JSONL and JSON files that survive being killed: atomic writes and resumable appends.

Stages talk to each other only through these files. A stage appends finished records to ``<out>.part`` one whole line
at a time; when the stage is killed, the next run drops a torn last line, skips the records already there and carries
on. Only a finished stage renames its part file to the final name, so a failing run never replaces earlier output.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from culturespa.errors import fail
from culturespa.utils import chaos
from culturespa.utils.failures import user_os_error
from culturespa.utils.perms import fix_file

log = logging.getLogger(__name__)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)``; a malformed line is a one-line error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise fail(f"{path}:{number}", f"malformed JSON: {err.msg}") from None
            if not isinstance(record, dict):
                raise fail(f"{path}:{number}", "expected a JSON object per line")
            yield number, record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [record for _, record in iter_jsonl(path)]


def read_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Records of a JSON list or a JSONL file, each with a ``file:line``/``file: item i`` locator for error messages."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    data = path.read_bytes()
    text = _decode(data, path, None)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise fail(path, f"malformed JSON at line {err.lineno}: {err.msg}") from None
        out = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise fail(f"{path}: item {index}", "expected a JSON object")
            out.append((f"{path}: item {index}", item))
        return out
    return [(f"{path}:{number}", record) for number, record in iter_jsonl(path)]


def _decode(data: bytes, path: Path, number: int | None) -> str:
    """UTF-8 text of a line (``number``) or a whole file; other bytes are a one-line error naming line and byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = number if number is not None else data.count(b"\n", 0, err.start) + 1
        column = err.start + 1 if number is not None else err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise fail(
            f"{path}:{line}",
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}); re-save the file as UTF-8",
        ) from None


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write to a temporary file beside ``path`` and rename it into place: readers (and a killed run) see the old file
    or the new one; a full disk leaves the old file as it was and ends in one line naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise user_os_error(err, path.parent) from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        fix_file(tmp)  # mkstemp made it 0600: honour the umask so a shared group can read stage outputs
        chaos.point("atomic.write")
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise user_os_error(err, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data), binary=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    _atomic_write(Path(path), lambda h: (json.dump(obj, h, indent=2, ensure_ascii=False), h.write("\n")))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write JSONL atomically."""

    def write(handle: Any) -> None:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    _atomic_write(Path(path), write)


def write_text(path: str | Path, text: str) -> None:
    _atomic_write(Path(path), lambda h: h.write(text))


def count_records(path: str | Path) -> int:
    """Non-blank lines of a JSONL file (0 when there is none)."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def refuse_fewer(path: str | Path, count: int, how: str) -> None:
    """A finished stage file is never replaced by fewer records: when ``path`` holds more than the ``count`` this run
    would write, stop with one line naming the file, both counts and the ways forward (``how``); nothing is written."""
    held = count_records(path)
    if count < held:
        raise fail(path, f"holds {held} records; this run would replace it with {count}; {how}")


class ResumableJsonl:
    """Append-only JSONL output that resumes after a kill.

    Records go to ``<path>.part``; ``done`` holds the keys already written. ``finish`` writes the final file in the
    order given by ``order`` (so a resumed run equals an uninterrupted one) and removes the part file. With
    ``never_fewer`` (the ways forward, for the message) ``finish`` refuses to replace a final file holding more records
    (:func:`refuse_fewer`), keeping the part file, so the records of this run are not lost either.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], str], never_fewer: str | None = None) -> None:
        self.path = Path(path)
        self.never_fewer = never_fewer
        self.part = self.path.with_name(self.path.name + ".part")
        self.key = key
        self.records: dict[str, dict[str, Any]] = {}
        self.dropped_torn_line = False
        self.bad_lines: list[int] = []
        self.bad_file = self.part.with_name(self.part.name + ".bad")
        self._recover()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.part.open("a", encoding="utf-8")

    @property
    def done(self) -> set[str]:
        return set(self.records)

    def _recover(self) -> None:
        """Load the part file: a torn last line is dropped; a corrupt line elsewhere is moved to ``<part>.bad`` with a
        warning naming it, and every good line after it is kept."""
        if not self.part.exists():
            return
        data = self.part.read_bytes()
        good: list[bytes] = []
        bad: list[tuple[int, bytes]] = []
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                self.dropped_torn_line = True  # torn last line: the process died mid-write
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = self.key(record)
            except (ValueError, KeyError, TypeError) as err:
                reason = err.msg if isinstance(err, json.JSONDecodeError) else f"not a record ({err!r})"
                log.warning("%s:%d: corrupt line skipped (%s); moved to %s", self.part, number, reason, self.bad_file)
                bad.append((number, line))
                continue
            self.records[key] = record
            good.append(line)
        self.bad_lines = [n for n, _ in bad]
        if bad:
            with self.bad_file.open("ab") as handle:
                handle.writelines(line for _, line in bad)
        if bad or self.dropped_torn_line:
            _atomic_write_bytes(self.part, b"".join(good))

    def append(self, record: dict[str, Any]) -> None:
        key = self.key(record)
        if key in self.records:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        chaos.point("jsonl.torn", lambda: (self._handle.write(line[: len(line) // 2]), self._handle.flush()))
        try:
            self._handle.write(line)
            self._handle.flush()
        except OSError as err:  # full disk: earlier lines stay; a torn last line is dropped on resume
            raise user_os_error(err, self.part) from None
        self.records[key] = record

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.append(record)
        try:
            os.fsync(self._handle.fileno())
        except OSError as err:
            raise user_os_error(err, self.part) from None
        chaos.point("jsonl.append")

    def finish(self, order: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Write the final file atomically (in ``order`` when given) and delete the part file."""
        self._handle.close()
        keys = list(order) if order is not None else list(self.records)
        final = [self.records[k] for k in keys if k in self.records]
        if self.never_fewer is not None:
            refuse_fewer(self.path, len(final), f"this run's records stay in {self.part}; {self.never_fewer}")
        write_jsonl(self.path, final)
        self.part.unlink(missing_ok=True)
        return final

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.close()
            except OSError:  # the flush failed as the append did (full disk); that error is already on its way
                pass
