"""Slim the bitsandbytes wheel for the carry to a GPU machine (``make wheels``).

Why: the 0.50.2 wheel is 41 MiB because it ships a native library per CUDA (11.8 … 13.2) and ROCm release; with
scipy (34 MiB) it breaks the 64 MiB carry. Only the libraries of the image's CUDA major version are needed, so the
wheel is rewritten with those (and the CPU one) kept, its RECORD listing just what remains.

Run: ``python -m culturespa.acceptance.wheels WHEEL cuda128 cuda130 cuda132``.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

LIBRARY_PREFIX = "libbitsandbytes_"


def dropped(name: str, keep: Sequence[str]) -> bool:
    """Whether ``name`` (a path inside the wheel) is a native library of a backend not in ``keep``."""
    base = name.rsplit("/", 1)[-1]
    if not base.startswith(LIBRARY_PREFIX):
        return False
    backend = base[len(LIBRARY_PREFIX) :].split(".", 1)[0]
    return backend != "cpu" and backend not in keep


def slim(wheel: Path, keep: Sequence[str]) -> tuple[int, int]:
    """Rewrite ``wheel`` in place without the other backends' libraries; returns (bytes before, after)."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if dropped(info.filename, keep):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(x for x in lines if not dropped(x.split(",", 1)[0], keep)) + "\n").encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return before, wheel.stat().st_size


if __name__ == "__main__":
    old, new = slim(Path(sys.argv[1]), sys.argv[2:])
    print(f"{sys.argv[1]}: {old / 2**20:.1f} MiB -> {new / 2**20:.1f} MiB (kept: cpu {' '.join(sys.argv[2:])})")
