"""Benchmark the memory of one resampling against the estimate that refuses scans (issue 26).

:func:`brainage.imaging.preprocess.preprocess_file` refuses, from the header alone, a scan whose
resampling onto the grid would need more memory than the machine has; the estimate is about
100 bytes per scan voxel when the scan is smoothed first (anti-aliasing onto a coarser grid),
8 when not, and 32 per voxel of the output grid. This script measures the peak resident memory
of :func:`brainage.imaging.preprocess.resample_to_grid` (each case in a fresh process, one torch
thread; the peak minus the resident memory before the call) and prints it beside the
estimate, which must be above it. Run from the repository root::

    python benchmarks/bench_resample_memory.py
"""

from __future__ import annotations

import math
import subprocess
import sys

from brainage.imaging import preprocess as pp
from brainage.imaging.registration import template_grid

_PROBE = """
import resource, sys, numpy as np, nibabel as nib, torch
from brainage.imaging.preprocess import resample_to_grid
from brainage.imaging.registration import template_grid
torch.set_num_threads(1)
n, vox, grid_mm = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
grid = template_grid(grid_mm)
affine = np.diag([vox, vox, vox, 1.0]); affine[:3, 3] = -n * vox / 2
img = nib.Nifti1Image(np.random.default_rng(0).random((n, n, n), dtype=np.float32), affine)
small = nib.Nifti1Image(np.ones((12, 12, 12), np.float32), np.diag([12.0, 12.0, 12.0, 1.0]))
resample_to_grid(small, template_grid(8.0))  # imports and caches: not part of the peak
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
resample_to_grid(img, grid)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""

CASES = [(160, 1.0, 4.0), (240, 0.8, 4.0), (240, 1.0, 2.0), (160, 1.0, 1.0), (120, 1.0, 0.5)]


def _estimate(n: int, vox: float, grid_mm: float) -> int:
    shape, _ = template_grid(grid_mm)
    smoothed = grid_mm**2 - vox**2 > (0.5 * grid_mm) ** 2
    per_voxel = pp._SMOOTHED_BYTES if smoothed else pp._UNSMOOTHED_BYTES
    return n**3 * per_voxel + math.prod(shape) * pp._GRID_BYTES


def main() -> None:
    print(f"{'scan':>14} {'grid_mm':>7} {'smoothed':>8} {'measured_MB':>11} {'estimate_MB':>11}")
    for n, vox, grid_mm in CASES:
        out = subprocess.run([sys.executable, "-c", _PROBE, str(n), str(vox), str(grid_mm)],
                             capture_output=True, text=True, check=True).stdout.split()
        measured = int(out[-1]) * 1024  # ru_maxrss is in kB on Linux
        smoothed = grid_mm**2 - vox**2 > (0.5 * grid_mm) ** 2
        print(f"{f'{n}^3 at {vox:g} mm':>14} {grid_mm:>7g} {str(smoothed):>8} "
              f"{measured / 1e6:>11.0f} {_estimate(n, vox, grid_mm) / 1e6:>11.0f}")


if __name__ == "__main__":
    main()
