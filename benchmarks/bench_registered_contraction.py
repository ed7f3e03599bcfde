"""Does the affine registration remove a simulated brain's contraction? Which template-space
simulation stands for a registered scan?

Run from the repository root::

    python benchmarks/bench_registered_contraction.py [--people 8] [--grid-mm 4]

Template-space simulated images stand for scans after the project's affine registration, which
rescales every brain to the template's size: the simulator removes a head's size from them for
that reason (``anatomy.registered_scale_sd`` is what is left). This benchmark measures what the
registration does to the whole brain's contraction with age, on simulated scans only (no real
age is looked at). The same seeded people are simulated at 25 and at 75 years (one seed, the
healthy controls' age range narrowed to each age, so every other draw is the same person's)

* in native space (``native_space``: the whole contraction, the brain mask outlining the
  contracted brain as a brain extraction would, a random head size and pose), then
  preprocessed as the project preprocesses a native skull-stripped scan (N4, the affine
  registration to MNI152, resampling onto the ``--grid-mm`` cropped grid; the registration
  path with its own alignment check);
* in template space (the grid directly) with the contraction kept
  (``template_contraction_share`` 1) and the young brain's mask outline (the simulator's
  default until issue 28), with the contraction kept and the mask following it (the varied
  preset's mask), and with the contraction removed (``template_contraction_share`` 0);

and for each variant the table prints the mean change per decade between the two ages (with the
SD over people) of the brain mask's volume on the grid (cm³) and of the CSF fraction inside it
(:func:`brainage.data.audit.tissue_fractions`): the template-space variant whose changes the
registered native scans show is the one that stands for a registered scan.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: label: (native space, simulator settings on top of the defaults)
VARIANTS = {
    "native, registered (the reference)": (
        True, {"anatomy": {"mask_contraction_share": 1.0}}),
    "template: contraction kept, young mask": (
        False, {"anatomy": {"template_contraction_share": 1.0, "mask_contraction_share": 0.0}}),
    "template: contraction kept, mask follows": (
        False, {"anatomy": {"template_contraction_share": 1.0, "mask_contraction_share": 1.0}}),
    "template: contraction removed": (
        False, {"anatomy": {"template_contraction_share": 0.0}}),
}


def measure(native: bool, settings: dict, age: float, args: argparse.Namespace,
            folder: Path) -> tuple[list[float], list[float]]:
    """Mask volumes (cm³) and CSF fractions, on the grid, of the people simulated at ``age``."""
    import nibabel as nib
    import numpy as np

    from brainage.data import simulate as sim
    from brainage.data.audit import tissue_fractions
    from brainage.imaging.preprocess import preprocess_file

    # no patients: their age ranges only need to fit under the controls' (narrowed) range
    patients = {"age_range": [age - 1, age], "acceleration_max_years": 0.0}
    cfg = sim.config_from_dict({**settings, "native_space": native, "ad": patients,
                                "pd": patients, "hc_age_range": [age, age + 0.01]})
    cohort = sim.simulate_cohort(folder, n_healthy=args.people, seed=args.seed,
                                 resolution_mm=args.sim_mm if native else args.grid_mm,
                                 config=cfg, n_jobs=args.jobs)
    volumes, csf = [], []
    for sub in cohort.participants["participant_id"]:
        path = folder / sub / "anat" / f"{sub}_T1w.nii.gz"
        img = preprocess_file(path, space="native" if native else "MNI152NLin2009cSym",
                              grid_mm=args.grid_mm, skull_stripped=True, crop_to_brain=True)
        data = np.asarray(img.dataobj, dtype=np.float32)
        volumes.append(float((data > 0).sum() * np.prod(img.header.get_zooms()[:3])) / 1000)
        csf.append(tissue_fractions(nib.Nifti1Image(data, img.affine))["csf_fraction"])
    return volumes, csf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--grid-mm", type=float, default=4.0)
    parser.add_argument("--sim-mm", type=float, default=2.0,
                        help="grid of the native scans' simulation (a scanner's finer voxels)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    print(f"The same {args.people} simulated people (seed {args.seed}) at 25 and 75 y, on the "
          f"{args.grid_mm:g} mm cropped MNI152 grid: mean change per decade (SD over people)")
    print(f"{'variant':<44}{'mask volume (cm³)':>22}{'CSF fraction':>24}")
    with tempfile.TemporaryDirectory(prefix="bench_contraction_") as tmp:
        for k, (label, (native, settings)) in enumerate(VARIANTS.items()):
            (v25, c25), (v75, c75) = (
                measure(native, settings, age, args, Path(tmp) / f"{k}_{age:g}")
                for age in (25.0, 75.0))
            dv, dc = (np.subtract(v75, v25) / 5), (np.subtract(c75, c25) / 5)
            print(f"{label:<44}{f'{dv.mean():+.1f} ({dv.std(ddof=1):.1f})':>22}"
                  f"{f'{dc.mean():+.4f} ({dc.std(ddof=1):.4f})':>24}", flush=True)


if __name__ == "__main__":
    main()
