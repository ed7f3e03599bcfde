"""Benchmark of brainage.data.simulate: subjects per second on the 2 mm template grid.

Run: ``python benchmarks/bench_simulate.py [--subjects 60] [--jobs 2] [--resolution-mm 2]``.
Prints a table (setup time, per-subject time, subjects/s, projected time for 300 subjects, and
the CPU seconds per subject of this process and its workers, which a busy machine changes less
than the wall time); the target is >= 2.5 subjects/s at 2 mm on 2 cores (300 subjects in under
2 minutes).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=60)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--resolution-mm", type=float, default=2.0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from brainage.data import simulate
    from brainage.data._anatomy import build_anatomy

    t0 = time.perf_counter()
    build_anatomy(args.resolution_mm)
    setup = time.perf_counter() - t0
    rows = []
    n = args.subjects
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), _cpu_seconds()
            simulate.simulate_cohort(Path(tmp) / "bids", n_healthy=n // 2, n_ad=n // 4,
                                     n_pd=n - n // 2 - n // 4, seed=0,
                                     resolution_mm=args.resolution_mm, n_jobs=jobs)
            elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        rows.append((jobs, elapsed, n / elapsed, 300 / (n / elapsed) + setup, cpu / n))
    print(f"brainage.data.simulate at {args.resolution_mm:g} mm, {n} subjects "
          f"(template anatomy setup {setup:.1f} s, once per process)")
    print(f"{'jobs':>4} | {'total s':>8} | {'s/subject':>9} | {'subjects/s':>10} | "
          f"{'300 subjects (s)':>16} | {'CPU s/subject':>13}")
    for jobs, elapsed, rate, projected, cpu in rows:
        print(f"{jobs:>4} | {elapsed:8.1f} | {elapsed / n:9.3f} | {rate:10.2f} | "
              f"{projected:16.0f} | {cpu:13.3f}")


if __name__ == "__main__":
    main()
