"""Benchmark the preprocessing of raw (native-space) T1w scans, step by step, and the cache.

Run from the repository root::

    python benchmarks/bench_preprocess.py                     # the ten IXI scans, 1 ITK thread
    python benchmarks/bench_preprocess.py --subjects 3 --threads 2

For each scan of ``../shared/data/ixi10`` the cold call of ``PreprocessCache.get_or_compute``
(grid 2 mm) is timed, split into its steps by wrapping the step functions that
``brainage.imaging.preprocess`` calls (load + RAS, N4, registration, resampling onto the grid;
the rest -- masking, normalisation, checksums, cache write -- is "other"; "resample" includes the
brain mask's resampling onto the grid); then the warm call (a cache read,
including the decompression of the volume) is timed and the speed-up reported, with the scan's
alignment score. With one ITK thread per scan (the library's default, reproducible bit for
bit), two cores preprocess two scans at once: ``preprocess_cohort(..., n_jobs=2)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

IXI10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi10"
#: (module, function) -> column: the steps preprocess_file calls, looked up at call time.
STEPS = {("preprocess", "load_scan"): "load", ("registration", "n4_correct"): "N4",
         ("registration", "register_to_template"): "register",
         ("preprocess", "resample_to_grid"): "resample"}


def timed(fn: Callable, name: str, record: dict[str, float]) -> Callable:
    """``fn`` wrapped to add its wall time (s) to ``record[name]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record[name] += time.perf_counter() - start
    return wrapper


def bench_scan(pp, cache, path: Path) -> dict[str, float | str]:
    """Cold (computed) and warm (cached) preprocessing of one scan, with step times."""
    modules = {"preprocess": pp,
               "registration": importlib.import_module("brainage.imaging.registration")}
    record: dict[str, float] = defaultdict(float)
    originals = {key: getattr(modules[key[0]], key[1]) for key in STEPS}
    for key, label in STEPS.items():
        setattr(modules[key[0]], key[1], timed(originals[key], label, record))
    try:
        start = time.perf_counter()
        img = cache.get_or_compute(path, pp.PreprocessParams())
        img.get_fdata()
        cold = time.perf_counter() - start
    finally:
        for key, fn in originals.items():
            setattr(modules[key[0]], key[1], fn)
    start = time.perf_counter()
    cache.get_or_compute(path, pp.PreprocessParams()).get_fdata()
    warm = time.perf_counter() - start
    row: dict[str, float | str] = {"scan": path.name.split("_")[0], **record}
    row["other"] = cold - sum(record.values())
    row.update(total=cold, cached=warm, speedup=cold / warm,
               score=modules["registration"].alignment_score(img))
    return row


def print_table(rows: list[dict], threads: int, threshold: float) -> None:
    cols = ["load", "N4", "register", "resample", "other", "total", "cached", "speedup", "score"]
    print(f"\nPreprocessing of raw IXI scans (2 mm grid), ITK threads = {threads}, "
          f"torch threads = 1; times in s")
    print(f"{'scan':<12}" + "".join(f"{c:>10}" for c in cols))
    for row in rows:
        print(f"{row['scan']:<12}" + "".join(
            f"{row[c]:>9.0f}x" if c == "speedup" else f"{row[c]:>10.3f}" if c == "score"
            else f"{row[c]:>10.2f}" for c in cols))
    median = {c: statistics.median(r[c] for r in rows) for c in cols}
    print(f"{'median':<12}" + "".join(
        f"{median[c]:>9.0f}x" if c == "speedup" else f"{median[c]:>10.3f}" if c == "score"
        else f"{median[c]:>10.2f}" for c in cols))
    print(f"min alignment score {min(r['score'] for r in rows):.3f} "
          f"(threshold {threshold}); {sum(r['score'] > threshold for r in rows)}/{len(rows)} above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10, help="how many IXI scans (max 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ITK threads (default: 1, the library's reproducible default)")
    parser.add_argument("--data", default=str(IXI10), help="BIDS folder of raw T1w scans")
    args = parser.parse_args()
    # ITK reads its thread count when ANTs is first loaded: set it before the import.
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(1)
    from brainage.imaging import preprocess as pp
    from brainage.imaging import registration as reg

    paths = sorted(Path(args.data).glob("sub-*/anat/*_T1w.nii*"))[: args.subjects]
    if not paths:
        raise SystemExit(f"no scans under {args.data}: the IXI scans live in ../shared/data/ixi10")
    reg.template_grid(2.0)  # load the templates once, outside the timings
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as folder:
        cache = pp.PreprocessCache(folder)
        rows = []
        for path in paths:
            rows.append(bench_scan(pp, cache, path))
            print(f"{rows[-1]['scan']}: {rows[-1]['total']:.1f} s, score {rows[-1]['score']:.3f}",
                  flush=True)
    print_table(rows, args.threads, reg.ALIGNMENT_THRESHOLD)

if __name__ == "__main__":
    main()
