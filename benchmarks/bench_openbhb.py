"""Benchmark the OpenBHB path on full-size quasi-raw arrays: reading, checking, preprocessing.

Run from the repository root::

    python benchmarks/bench_openbhb.py            # 3 arrays, grid 4 mm cropped (the profile's)
    python benchmarks/bench_openbhb.py --arrays 5 --grid-mm 2

The real dataset is not needed: nilearn's 1 mm MNI152 template is resampled onto OpenBHB's
quasi-raw grid (FSL's 182 x 218 x 182 at 1 mm) and saved in the dataset's layout, each copy with
its own intensity scale and 2% noise. For each array the script times the audit's image check
(``cohort.check_image``: load and data checks), the load alone, and a cold preprocessing
(resample onto the grid, mask, normalise: no registration, the arrays are already aligned),
then the cached read, on one thread; and the site balanced accuracy of 5,300 x 128 features
(the quick model's width) over 64 sites, the benchmark's debiasing score.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_s


def make_arrays(root: Path, n: int) -> list[Path]:
    """``n`` template-derived arrays of shape (1, 182, 218, 182) in the OpenBHB layout."""
    import nibabel as nib
    from nilearn import datasets, image

    from brainage.data import openbhb

    template = datasets.load_mni152_template(resolution=1)
    grid = nib.Nifti1Image(np.zeros(openbhb.SHAPE, dtype=np.float32), openbhb.AFFINE)
    on_grid = image.resample_to_img(template, grid, interpolation="continuous",
                                    force_resample=True, copy_header=True)
    base = np.asarray(on_grid.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = (root / "train" / "derivatives" / f"sub-{i}" / "ses-1" /
                f"sub-{i}_preproc-quasiraw_T1w.npy")
        path.parent.mkdir(parents=True)
        noise = rng.normal(0, 0.02 * float(base.max()), base.shape).astype(np.float32)
        data = (base + noise) * rng.uniform(0.5, 2.0)  # 2% noise, a scanner-like scale
        np.save(path, np.clip(data, 0, None)[None])  # (1, X, Y, Z)
        paths.append(path)
    return paths


def bench_arrays(paths: list[Path], grid_mm: float) -> list[dict[str, float]]:
    from brainage.data import cohort, openbhb
    from brainage.imaging import preprocess as pp

    params = pp.PreprocessParams(space="MNI152Lin", grid_mm=grid_mm, skull_stripped=True,
                                 crop_to_brain=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cache = pp.PreprocessCache(folder)
        for path in paths:
            row = {"load": median_s(lambda p=path: openbhb.load_openbhb_array(p).get_fdata()),
                   "check": median_s(lambda p=path: cohort.check_image(p))}
            start = time.perf_counter()
            cache.get_or_compute(path, params).get_fdata()
            row["preprocess"] = time.perf_counter() - start
            row["cached read"] = median_s(
                lambda p=path: cache.get_or_compute(p, params).get_fdata())
            row["score"] = cache.alignment(path, params)
            row["cache KB"] = cache.path_for(path, params).stat().st_size / 1024
            rows.append(row)
    return rows


def bench_site_score(n: int = 5300, dim: int = 128, n_sites: int = 64) -> tuple[float, float]:
    """Seconds and balanced accuracy of the site score on features that hold a weak site signal."""
    from brainage.data.openbhb import site_balanced_accuracy

    rng = np.random.default_rng(0)
    sites = rng.integers(0, n_sites, n)
    offsets = rng.normal(0, 1, (n_sites, dim))
    features = rng.normal(0, 3, (n, dim)) + offsets[sites]
    train = rng.random(n) < 0.8
    start = time.perf_counter()
    bacc = site_balanced_accuracy(features[train], sites[train], features[~train], sites[~train])
    return time.perf_counter() - start, bacc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", type=int, default=3)
    parser.add_argument("--grid-mm", type=float, default=4.0)
    parser.add_argument("--no-site-score", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        rows = bench_arrays(make_arrays(Path(folder), args.arrays), args.grid_mm)
    cols = ["load", "check", "preprocess", "cached read", "score", "cache KB"]
    print(f"\nOpenBHB quasi-raw arrays (1, 182, 218, 182) float32, grid {args.grid_mm} mm "
          f"cropped, 1 thread; seconds unless named")
    print(f"{'array':<8}" + "".join(f"{c:>13}" for c in cols))
    for i, row in enumerate(rows):
        print(f"{i:<8}" + "".join(f"{row[c]:>13.3f}" for c in cols))
    print(f"{'median':<8}" + "".join(f"{statistics.median(r[c] for r in rows):>13.3f}"
                                    for c in cols))
    per_scan = statistics.median(r["check"] + r["preprocess"] for r in rows)
    print(f"\n5,300 arrays, 2 workers: about {5300 * per_scan / 2 / 3600:.1f} h "
          f"(check + preprocess, median {per_scan:.2f} s per array)")
    if not args.no_site_score:
        seconds, bacc = bench_site_score()
        print(f"site balanced accuracy, 5,300 x 128 features, 64 sites, 5-fold CV over 5 C "
              f"values: {seconds:.1f} s (BAcc {bacc:.3f}, chance {1 / 64:.3f})")


if __name__ == "__main__":
    main()
