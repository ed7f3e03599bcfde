"""Benchmark the preprocessing of raw (native-space) T1w scans, stage by stage, before and after.

Run from the repository root::

    python benchmarks/bench_preprocess.py                     # the ten IXI scans, both methods
    python benchmarks/bench_preprocess.py --subjects 3 --methods deepbet
    python benchmarks/bench_preprocess.py --robustness        # and the robustness cases

For each scan of ``../shared/data/ixi10`` and each skull-removal method (``template``: the
head-aware path of preprocessing version 2, "before"; ``deepbet``: brain extraction, N4 in the
brain and a brain-to-brain registration, "after") the cold call of
``PreprocessCache.get_or_compute`` (grid 2 mm) is timed, split into its stages by wrapping the
functions that ``brainage.imaging.preprocess`` calls (load + RAS, brain extraction, N4,
registration, resampling onto the grid; the rest -- masking, normalisation, checksums, cache
write -- is "other"); then the warm call (a cache read) is timed, and the scan's alignment
score reported. Each stage is timed twice: wall time and the process's CPU time. With one ITK
and one torch thread the CPU time is the stage's own work, while the wall time also holds
whatever else the machine runs; on a shared machine read the CPU times (and wall-time ratios).

``--robustness`` also preprocesses, for every scan, the variants of
:data:`brainage.imaging.perturb.ROBUSTNESS_CASES` (world origin moved 300 mm, voxel axes
permuted and reversed, 80 mm more neck, all three) with each method, and prints their
alignment scores.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

IXI10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi10"
#: (module, function) -> stage: the functions preprocess_file calls, looked up at call time.
STEPS = {("preprocess", "load_scan"): "load",
         ("brain_extraction", "extract_brain"): "extract",
         ("registration", "n4_correct"): "N4",
         ("registration", "register_to_template"): "register",
         ("preprocess", "resample_to_grid"): "resample"}
STAGES = ["load", "extract", "N4", "register", "resample", "other", "total"]
METHODS = ("template", "deepbet")


def timed(fn: Callable, name: str, wall: dict[str, float], cpu: dict[str, float]) -> Callable:
    """``fn`` wrapped to add its wall and CPU time (s) to ``wall[name]`` and ``cpu[name]``."""
    def wrapper(*args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    return wrapper


def _modules() -> dict[str, object]:
    return {name: importlib.import_module(f"brainage.imaging.{name}")
            for name in ("preprocess", "registration", "brain_extraction")}


def bench_scan(cache, path: Path, method: str) -> dict[str, float | str]:
    """Cold (computed) and warm (cached) preprocessing of one scan, with stage times."""
    modules = _modules()
    pp, reg = modules["preprocess"], modules["registration"]
    params = pp.PreprocessParams(brain_extraction=method)
    wall: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    originals = {key: getattr(modules[key[0]], key[1]) for key in STEPS}
    for key, label in STEPS.items():
        setattr(modules[key[0]], key[1], timed(originals[key], label, wall, cpu))
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        img = cache.get_or_compute(path, params)
        img.get_fdata()
        cold, cold_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        for key, fn in originals.items():
            setattr(modules[key[0]], key[1], fn)
    start = time.perf_counter()
    cache.get_or_compute(path, params).get_fdata()
    warm = time.perf_counter() - start
    row: dict[str, float | str] = {"scan": path.name.split("_")[0], "method": method}
    for prefix, record, total in (("", wall, cold), ("cpu_", cpu, cold_cpu)):
        for stage in STAGES[:-2]:
            row[prefix + stage] = record.get(stage, 0.0)
        row[prefix + "other"] = total - sum(record.values())
        row[prefix + "total"] = total
    row.update(cached=warm, score=reg.alignment_score(img), tiv=pp.header_tiv(img))
    return row


def _line(label: str, values: list[float], fmt: str = "{:>9.2f}") -> str:
    return f"{label:<22}" + "".join(fmt.format(v) for v in values)


def print_stage_table(rows: list[dict], methods: list[str], threads: int) -> None:
    """Median wall and CPU time per stage and method (before: template; after: deepbet)."""
    print(f"\nNative preprocessing of raw IXI scans (2 mm grid), ITK threads = {threads}, "
          f"torch threads = 1; median over {len({r['scan'] for r in rows})} scans, s")
    print(f"{'method / clock':<22}" + "".join(f"{s:>9}" for s in STAGES) + f"{'N4+reg':>9}")
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        for prefix, clock in (("", "wall"), ("cpu_", "CPU")):
            medians = [statistics.median(r[prefix + s] for r in mine) for s in STAGES]
            n4_reg = statistics.median(r[prefix + "N4"] + r[prefix + "register"] for r in mine)
            print(_line(f"{method} ({clock})", [*medians, n4_reg]))


def print_score_table(rows: list[dict], methods: list[str]) -> None:
    """Every scan's alignment score (and TIV) per method, and the change."""
    by_scan: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_scan[row["scan"]][row["method"]] = row
    print("\nAlignment score per scan (correlation with the 2 mm MNI152 template, eroded mask)")
    change = len(methods) == 2
    print(f"{'scan':<14}" + "".join(f"{m:>10}" for m in methods)
          + (f"{'change':>10}" if change else "") + f"{'TIV cm3':>10}")
    for scan, found in sorted(by_scan.items()):
        scores = [found[m]["score"] if m in found else float("nan") for m in methods]
        tivs = [found[m]["tiv"] for m in methods if m in found and math.isfinite(found[m]["tiv"])]
        tiv = tivs[0] if tivs else float("nan")  # measured by brain extraction only
        extra = [scores[1] - scores[0]] if change else []
        print(f"{scan:<14}" + "".join(f"{s:>10.3f}" for s in [*scores, *extra])
              + f"{tiv:>10.0f}")
    for m in methods:
        scores = [found[m]["score"] for found in by_scan.values() if m in found]
        print(f"{m}: min {min(scores):.3f}, median {statistics.median(scores):.3f}")
    if change:
        lower = [s for s, f in by_scan.items()
                 if len(f) == 2 and f[methods[1]]["score"] < f[methods[0]]["score"]]
        print(f"scans scoring lower with {methods[1]} than {methods[0]}: {lower or 'none'}")


def bench_robustness(paths: list[Path], methods: list[str], folder: Path) -> list[dict]:
    """Alignment of every robustness case of every scan, per method."""
    import nibabel as nib

    modules = _modules()
    pp, reg = modules["preprocess"], modules["registration"]
    from brainage.imaging.perturb import ROBUSTNESS_CASES, robustness_case

    rows = []
    for path in paths:
        for case in ROBUSTNESS_CASES:
            variant = folder / f"{path.name.split('_')[0]}_{case}.nii.gz"
            nib.save(robustness_case(nib.load(path), case), variant)
            for method in methods:
                start = time.process_time()
                try:
                    img = pp.preprocess_file(variant, brain_extraction=method)
                    score = reg.alignment_score(img)
                except pp.PreprocessError as err:
                    print(f"  {variant.name} {method}: FAILED: {err}")
                    score = float("nan")
                rows.append({"scan": path.name.split("_")[0], "case": case, "method": method,
                             "score": score, "cpu": time.process_time() - start})
                print(f"{rows[-1]['scan']} {case} {method}: score {score:.3f}", flush=True)
    return rows


def print_robustness_table(rows: list[dict], methods: list[str], threshold: float) -> None:
    from brainage.imaging.perturb import ROBUSTNESS_CASES

    print(f"\nRobustness cases: alignment score (min over scans / how many above {threshold})")
    print(f"{'case':<24}" + "".join(f"{m:>20}" for m in methods))
    for case in ROBUSTNESS_CASES:
        cells = []
        for m in methods:
            scores = [r["score"] for r in rows if r["case"] == case and r["method"] == m]
            above = sum(s > threshold for s in scores)
            cells.append(f"{min(scores):.3f} ({above}/{len(scores)})")
        print(f"{case:<24}" + "".join(f"{c:>20}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10, help="how many IXI scans (max 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ITK threads (default: 1, the library's reproducible default)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="skull-removal methods, comma-separated (default: template,deepbet)")
    parser.add_argument("--robustness", action="store_true",
                        help="also preprocess the robustness cases of every scan")
    parser.add_argument("--only-robustness", action="store_true",
                        help="the robustness cases only (no stage timings)")
    parser.add_argument("--data", default=str(IXI10), help="BIDS folder of raw T1w scans")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    # ITK reads its thread count when ANTs is first loaded: set it before the import.
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(1)
    from brainage.imaging import registration as reg

    paths = sorted(Path(args.data).glob("sub-*/anat/*_T1w.nii*"))[: args.subjects]
    if not paths:
        raise SystemExit(f"no scans under {args.data}: the IXI scans live in ../shared/data/ixi10")
    reg.template_grid(2.0)  # load the templates once, outside the timings
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as folder:
        cache = _modules()["preprocess"].PreprocessCache(folder)
        rows = []
        for path in [] if args.only_robustness else paths:  # methods interleaved: both see
            for method in methods:                          # the same load on the machine
                rows.append(bench_scan(cache, path, method))
                r = rows[-1]
                print(f"{r['scan']} {method}: {r['total']:.1f} s wall, {r['cpu_total']:.1f} s "
                      f"CPU, score {r['score']:.3f}", flush=True)
        robust = (bench_robustness(paths, methods, Path(folder))
                  if args.robustness or args.only_robustness else [])
    if rows:
        print_stage_table(rows, methods, args.threads)
        print_score_table(rows, methods)
    if robust:
        print_robustness_table(robust, methods, reg.ALIGNMENT_THRESHOLD)


if __name__ == "__main__":
    main()
