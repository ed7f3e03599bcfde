"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_s(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``fn`` in seconds, after one warm-up call.

    CUDA work is waited for before each clock read, so GPU timings are not just launch times.
    """
    import torch

    def run() -> None:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
