"""`make bench`: the speed and memory figures of the inference engine, of N-worker answering and of SFT, printed, on
the embedded model."""

from __future__ import annotations

import sys


def main() -> int:
    from culturespa.infer.bench import main as inference_bench
    from culturespa.infer.bench_workers import main as workers_bench
    from culturespa.train.bench import main as training_bench

    inference_bench()
    workers_bench([])  # engine.devices: 1 process against 2 workers (spawned: this module keeps its main guard)
    training_bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
