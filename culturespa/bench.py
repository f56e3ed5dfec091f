"""`make bench`: the speed and memory figures of the inference engine and of SFT, printed, on the embedded model."""

from __future__ import annotations

import sys


def main() -> int:
    from culturespa.infer.bench import main as inference_bench
    from culturespa.train.bench import main as training_bench

    inference_bench()
    training_bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
