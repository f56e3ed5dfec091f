"""Fault injection for the chaos test: ``CULTURESPA_CHAOS=N`` SIGKILLs this process at the N-th kill point it passes.

Kill points sit where a real crash hurts most: right after answers are appended (``jsonl.append``) or mid-line
(``jsonl.torn``), between writing a temp file and renaming it (``atomic.write``), after a training checkpoint
(``ckpt.saved``), with ``last.ckpt`` half written (``ckpt.torn``) and as validation starts (``val.start``).
``CULTURESPA_CHAOS=site:N`` counts only that site. ``CULTURESPA_CHAOS_COUNT=<file>`` appends the name of every point
passed to ``<file>`` (how the test sizes its random draws). Unset (always, outside tests), a point costs one dict
lookup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV = "CULTURESPA_CHAOS"
COUNT_ENV = "CULTURESPA_CHAOS_COUNT"
_seen: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    site, _, n = spec.rpartition(":")
    return (site or "any", int(n))


def point(site: str, before_kill: Callable[[], None] | None = None) -> None:
    """Pass kill point ``site``; SIGKILL here when it is the armed one (``before_kill`` first, e.g. tear a file)."""
    if ENV not in os.environ and COUNT_ENV not in os.environ:
        return
    _seen["any"] = _seen.get("any", 0) + 1
    _seen[site] = _seen.get(site, 0) + 1
    count_file = os.environ.get(COUNT_ENV)
    if count_file:
        with open(count_file, "a", encoding="utf-8") as handle:
            handle.write(site + "\n")
    target = _target()
    if target is None or _seen.get(target[0], 0) != target[1]:
        return
    if before_kill is not None:
        before_kill()
    os.kill(os.getpid(), signal.SIGKILL)
