"""`make bench`: the speed and memory figures of the inference engine, of N-worker answering and of SFT, printed, on
the embedded model. One entry: ``python -m culturespa.bench [inference] [workers] [training]`` runs the named
sub-benches (all of them by default); each takes its own flags as ``python -m culturespa.bench.<name> --help``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from culturespa.bench import inference, training, workers

SUB_BENCHES: dict[str, Callable[[], Any]] = {
    "inference": lambda: inference.main([]),
    "workers": lambda: workers.main([]),  # engine.devices: 1 process against 2 spawned workers
    "training": training.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or list(SUB_BENCHES)
    unknown = [name for name in names if name not in SUB_BENCHES]
    if unknown:
        print(
            f"culturespa.bench: unknown sub-bench {unknown[0]!r}; choose from: {', '.join(SUB_BENCHES)}",
            file=sys.stderr,
        )
        return 2
    for name in names:
        SUB_BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
