"""Cheap checks that a weights file is whole before anything is loaded from it.

A safetensors file is an 8-byte header length, a JSON header giving each tensor's byte range, then the data: reading
the header (kilobytes, even for a 16 GB file) tells a truncated or foreign file apart from a good one, so a bad adapter
or model cache is reported as one line naming the file instead of a deserialisation traceback half-way into a run.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with the safetensors file at ``path`` (None: its header is sound and its size matches)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, not even a header)"
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER or 8 + length > size:
                return f"not a safetensors file or truncated (header of {length} bytes in a {size}-byte file)"
            header = json.loads(handle.read(length))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
            return f"not a safetensors file (tensor {name!r} has no byte range)"
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size != expected:
        return f"truncated ({size} of {expected} bytes)" if size < expected else f"has {size - expected} stray bytes"
    return None


def weights_problems(folder: str | Path) -> list[tuple[Path, str]]:
    """Every broken ``*.safetensors`` file directly in ``folder``, with what is wrong with it."""
    out = []
    for file in sorted(Path(folder).glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            out.append((file, problem))
    return out
