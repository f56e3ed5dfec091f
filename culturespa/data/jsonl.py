"""JSONL and JSON files that survive being killed: atomic writes and resumable appends.

Stages talk to each other only through these files. A stage appends finished records to ``<out>.part`` one whole line
at a time; when the stage is killed, the next run drops a torn last line, skips the records already there and carries
on. Only a finished stage renames its part file to the final name, so a failing run never replaces earlier output.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from culturespa.errors import fail
from culturespa.utils.failures import user_os_error


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


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise user_os_error(err, path.parent) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk: the old file stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise user_os_error(err, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class ResumableJsonl:
    """Append-only JSONL output that resumes after a kill.

    Records go to ``<path>.part``; ``done`` holds the keys already written. ``finish`` writes the final file in the
    order given by ``order`` (so a resumed run equals an uninterrupted one) and removes the part file.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], str]) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.key = key
        self.records: dict[str, dict[str, Any]] = {}
        self.dropped_torn_line = False
        self._recover()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.part.open("a", encoding="utf-8")

    @property
    def done(self) -> set[str]:
        return set(self.records)

    def _recover(self) -> None:
        if not self.part.exists():
            return
        data = self.part.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line: the process died mid-write
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            self.records[self.key(record)] = record
            good_end += len(line)
        if good_end != len(data):
            self.dropped_torn_line = True
            with self.part.open("r+b") as handle:
                handle.truncate(good_end)

    def append(self, record: dict[str, Any]) -> None:
        key = self.key(record)
        if key in self.records:
            return
        try:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
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

    def finish(self, order: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Write the final file atomically (in ``order`` when given) and delete the part file."""
        self._handle.close()
        keys = list(order) if order is not None else list(self.records)
        final = [self.records[k] for k in keys if k in self.records]
        write_jsonl(self.path, final)
        self.part.unlink(missing_ok=True)
        return final

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.close()
            except OSError:  # the flush failed as the append did (full disk); that error is already on its way
                pass
