"""Which simulated ageing process makes the CSF fraction inside the brain mask rise with age?

Run from the repository root::

    python benchmarks/bench_csf_trend.py [--people 6] [--resolution-mm 4]

The same simulated people (every individual ageing rate 1) are synthesised at 25 and at 75
years under variants of the varied preset (``VARIED_SETTINGS``, an opt-in experiment: the
default simulator is the first row's, the young brain's mask, apart from the preset's gamma,
finer shape and ventricular asymmetry), one process changed at a time (the last row is the
preset's own: ``template_contraction_share`` 0, the affine registration removes the whole
brain's contraction, ``benchmarks/bench_registered_contraction.py``), and the
CSF fraction inside each brain mask (:func:`brainage.data.audit.tissue_fractions`, intensity
bands) is compared: the table prints its mean at both ages, the rise per decade and the
whole-brain tissue loss at 75. The real IXI scans' trend (about 0.01 per decade, 23-74 y) is
printed by ``benchmarks/bench_sim2real.py --equivalent-ages`` (issue 28).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

HEDMAN = {"brain_rate": [[18.3, 0.0], [60.0, 0.005], [100.0, 0.006]]}
YOUNG_MASK = {"mask_contraction_share": 0.0, "template_contraction_share": 1.0}

#: label: configuration on top of the varied preset with every individual rate 1
VARIANTS = {
    "young brain's mask (the default's)": {"anatomy": YOUNG_MASK},
    "  ... no ventricular growth": {"anatomy": YOUNG_MASK, "ageing": {"ventricle_gain": 0.0}},
    "  ... all loss by deformation (share 1)": {
        "anatomy": {**YOUNG_MASK, "deformation_share": 1.0}},
    "  ... parenchymal loss all contraction": {
        "anatomy": YOUNG_MASK, "ageing": {"wm_share": [[40, 1.0], [70, 1.0]]}},
    "  ... parenchymal loss all cortical": {
        "anatomy": YOUNG_MASK, "ageing": {"wm_share": [[40, 0.0], [70, 0.0]]}},
    "  ... whole-brain rates x 0.3 (issue-28 branch)": {
        "anatomy": YOUNG_MASK,
        "ageing": {"brain_rate": [[18.3, 0.0], [60.0, 0.0015], [100.0, 0.0018]]}},
    "mask follows 0.25 of the contraction": {"anatomy": {
        "mask_contraction_share": 0.25, "template_contraction_share": 1.0}},
    "mask follows the contraction": {"anatomy": {
        "mask_contraction_share": 1.0, "template_contraction_share": 1.0}},
    "registration removes the contraction (varied preset)": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--resolution-mm", type=float, default=4.0)
    args = parser.parse_args()

    import nibabel as nib
    import numpy as np

    from brainage.data import simulate as sim
    from brainage.data._anatomy import build_anatomy
    from brainage.data.audit import tissue_fractions

    anat = build_anatomy(args.resolution_mm)
    flat = {f"{m}_sd": 0 for m in sim.INDIVIDUAL_MARKERS}
    print(f"CSF fraction inside the brain mask, the same {args.people} simulated people at 25 and "
          f"75 y ({args.resolution_mm:g} mm, every individual rate 1)")
    print(f"{'variant':<54}{'at 25':>8}{'at 75':>8}{'per decade':>12}{'brain loss 75':>15}")
    for label, variant in VARIANTS.items():
        ageing = {**HEDMAN, **variant.get("ageing", {})}
        cfg = sim.varied_config({"individual": flat, "ageing": ageing,
                                  **({"anatomy": variant["anatomy"]}
                                     if "anatomy" in variant else {})})
        people = sim.draw_cohort(args.people, 0, 0, cfg, np.random.default_rng(12))
        csf, loss = {}, 0.0
        for age in (25.0, 75.0):
            rows = sim.add_doses(people.assign(biological_age=age), cfg, anat)
            csf[age] = np.array([tissue_fractions(nib.Nifti1Image(sim.synthesise_subject(
                anat, row, cfg, np.zeros(9), np.random.SeedSequence(i)), anat.affine))[
                "csf_fraction"] for i, row in enumerate(rows.to_dict("records"))])
            loss = float(rows["brain_loss"].mean())
        rise = float((csf[75.0] - csf[25.0]).mean() / 5)
        print(f"{label:<54}{csf[25.0].mean():>8.3f}{csf[75.0].mean():>8.3f}{rise:>12.4f}"
              f"{loss:>15.3f}")


if __name__ == "__main__":
    main()
