"""One exception type for every user-facing failure.

Entry points catch :class:`CultureSPAError` and print its message as a single line before exiting non-zero, so a bad
file, field or value is reported as ``file: item: problem`` rather than as a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class CultureSPAError(Exception):
    """A problem with the user's input (file, config value, data record) rather than a bug in culturespa."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def fail(where: object, problem: str) -> CultureSPAError:
    """Build an error that names the place (file, field or record) first, e.g. ``fail(path, "record 3: no options")``."""
    return CultureSPAError(f"{where}: {problem}")


def run_cli(main: Callable[[], object]) -> None:
    """Run a module's command-line ``main``: a :class:`CultureSPAError` ends as one line on stderr and exit 1."""
    try:
        main()
    except CultureSPAError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
