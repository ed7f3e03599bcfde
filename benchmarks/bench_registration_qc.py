"""Benchmark the registration QC figure: does it measure registration, or atrophy?

Run from the repository root (after a quick build, so that the simulated cohort exists)::

    python benchmarks/bench_registration_qc.py
    python benchmarks/bench_registration_qc.py --sim-root data/simulated/quick \\
        --cache .cache/brainage/preprocessed --n-perturbed 8

Compares the figure every command uses now, :func:`brainage.imaging.registration.outline_misfit`
(mm; fails above :data:`~brainage.imaging.registration.MISFIT_THRESHOLD_MM`), with the one used
before, :func:`~brainage.imaging.registration.alignment_score` (correlation with the template;
failed below :data:`~brainage.imaging.registration.ALIGNMENT_THRESHOLD`), on

1. the simulated cohort, aligned by construction (scans written on the template grid), read
   from the preprocessing cache of a build (nothing is written; a scan not in the cache is
   preprocessed in memory): Spearman correlation with age among the controls, with the
   simulator's brain loss and ventricle ratio, and the share failing per group and age band;
2. deliberate misregistrations (:data:`brainage.imaging.perturb.MISREGISTRATIONS`: shifts of 6
   and 12 mm, rotations of 10 and 20 degrees about each axis, a flipped anterior-posterior or
   superior-inferior axis) of young controls (< 40 y), old controls (>= 80 y) and AD patients,
   and of real scans: share detected per kind and the ROC AUC between aligned and misaligned;
3. the real scans of ``../shared/data/ixi10`` and ``ixi40`` (raw IXI T1w, 23-74 y), preprocessed
   as the quick model's native scans (deepbet, ANTs affine, 4 mm cropped grid) through the
   user's cache (``~/.cache/brainage/preprocessed``; computed there if absent, 15-20 s a scan):
   every one should pass.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from brainage._utils import default_cache_dir
from brainage.imaging import perturb
from brainage.imaging import preprocess as pp
from brainage.imaging import registration as reg

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AGE_BANDS = (20.0, 40.0, 60.0, 80.0, 100.1)
FIGURES = {"misfit": reg.outline_misfit, "correlation": reg.alignment_score}


def passes(figure: str, value: float) -> bool:
    """Whether a value of ``figure`` passes its threshold."""
    if figure == "misfit":
        return reg.registration_passes(value)
    return bool(value >= reg.ALIGNMENT_THRESHOLD)


def volume(path: str, params: pp.PreprocessParams, cache: pp.PreprocessCache) -> nib.Nifti1Image:
    """The preprocessed volume of ``path``: read from ``cache`` if there (never written),
    else computed in memory."""
    target = cache.path_for(path, params)
    if target.is_file():
        return nib.load(target)
    return pp.preprocess_file(path, **asdict(params))


def simulated(sim_root: Path, cache: pp.PreprocessCache) -> tuple[pd.DataFrame, dict]:
    """Both figures of every simulated scan, with the simulator's truth."""
    truth = pd.read_csv(sim_root / "derivatives" / "ground_truth" / "participants_truth.tsv",
                        sep="\t")
    params = pp.PreprocessParams(space="MNI152NLin2009cSym", grid_mm=4.0, skull_stripped=True,
                                 crop_to_brain=True)
    rows, images = [], {}
    for record in truth.itertuples():
        path = sim_root / record.participant_id / "anat" / f"{record.participant_id}_T1w.nii.gz"
        img = volume(str(path), params, cache)
        images[record.participant_id] = img
        rows.append({"participant_id": record.participant_id,
                     **{name: fn(img) for name, fn in FIGURES.items()}})
    return truth.merge(pd.DataFrame(rows), on="participant_id"), images


def real(shared: Path, cache: pp.PreprocessCache) -> tuple[pd.DataFrame, dict]:
    """Both figures of the shared real scans, preprocessed as the quick model's native scans."""
    params = pp.PreprocessParams(space="native", grid_mm=4.0, crop_to_brain=True)
    rows, images = [], {}
    for name in ("ixi10", "ixi40"):
        for path in sorted((shared / name).glob("sub-*/anat/*_T1w.nii.gz")):
            img = cache.get_or_compute(path, params)
            key = path.name.split("_")[0]
            images[key] = img
            rows.append({"participant_id": key, "dataset": name,
                         **{f: fn(img) for f, fn in FIGURES.items()}})
    return pd.DataFrame(rows), images


def atrophy_table(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlations of each figure among the controls, and medians per group."""
    controls = table[table["group"] == "HC"]
    rows = []
    for figure in FIGURES:
        row = {"figure": figure}
        for column in ("age", "brain_loss", "ventricle_ratio", "contrast_factor", "scan_noise",
                       "scan_mask_margin_mm"):
            if column in controls:
                row[f"rho {column}"] = stats.spearmanr(controls[figure], controls[column])[0]
        for group, data in table.groupby("group"):
            row[f"median {group}"] = data[figure].median()
        rows.append(row)
    return pd.DataFrame(rows).set_index("figure")


def failing_table(table: pd.DataFrame) -> pd.DataFrame:
    """Share of aligned simulated scans failing each figure, per group and age band (%)."""
    labels = [f"{a:g}-{b:.0f}" for a, b in zip(AGE_BANDS, AGE_BANDS[1:])]
    bands = pd.cut(table["age"], AGE_BANDS, right=False, labels=labels)
    rows = []
    for (group, band), data in table.groupby([table["group"], bands], observed=True):
        row = {"group": group, "age": band, "n": len(data)}
        for figure in FIGURES:
            row[f"{figure} failing %"] = 100 * np.mean([not passes(figure, v)
                                                        for v in data[figure]])
        rows.append(row)
    return pd.DataFrame(rows)


def misregistration_table(sets: dict[str, list[nib.Nifti1Image]]) -> pd.DataFrame:
    """Per set and kind of misregistration: detection rate of each figure (%), and per set the
    ROC AUC between aligned and misaligned volumes."""
    rows = []
    for label, images in sets.items():
        values = {f: {"aligned": []} for f in FIGURES}
        for img in images:
            for f, fn in FIGURES.items():
                values[f]["aligned"].append(fn(img))
            for kind, cases in perturb.MISREGISTRATIONS.items():
                for kwargs in cases:
                    moved = perturb.misregister(img, **kwargs)
                    for f, fn in FIGURES.items():
                        values[f].setdefault(kind, []).append(fn(moved))
        for kind in ["aligned", *perturb.MISREGISTRATIONS]:
            row = {"set": label, "kind": kind, "n": len(values["misfit"][kind])}
            for f in FIGURES:
                v = values[f][kind]
                flagged = 100 * np.mean([not passes(f, x) for x in v])
                row[f"{f} median"] = np.median(v)
                row[f"{f} range"] = f"{np.min(v):.2f}-{np.max(v):.2f}"
                row[f"{f} {'failing' if kind == 'aligned' else 'detected'} %"] = flagged
            rows.append(row)
        for f in FIGURES:
            good = values[f]["aligned"]
            bad = [x for kind in perturb.MISREGISTRATIONS for x in values[f][kind]]
            sign = 1.0 if f == "correlation" else -1.0  # higher = better aligned
            auc = roc_auc_score([1] * len(good) + [0] * len(bad),
                                sign * np.asarray(good + bad, dtype=float))
            rows.append({"set": label, "kind": f"ROC AUC ({f})", "n": len(good) + len(bad),
                         f"{f} median": auc})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sim-root", type=Path, default=Path("data/simulated/quick"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/brainage/preprocessed"),
                        help="the build's preprocessing cache (read only)")
    parser.add_argument("--n-perturbed", type=int, default=8,
                        help="volumes per set that are misregistered (default: 8)")
    parser.add_argument("--shared", type=Path, default=SHARED,
                        help=f"folder of ixi10/ and ixi40/ (default: {SHARED})")
    parser.add_argument("--no-real", action="store_true", help="skip the shared real scans")
    parser.add_argument("--no-sim", action="store_true",
                        help="skip the simulated cohort (real scans only)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # nilearn resampling notes
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.float_format", lambda x: f"{x:.2f}")

    print(f"figure now: outline misfit (mm), fails above {reg.MISFIT_THRESHOLD_MM} mm; "
          f"before: correlation with the template, failed below {reg.ALIGNMENT_THRESHOLD}\n")
    n, sets = args.n_perturbed, {}
    if not args.no_sim:
        table, images = simulated(args.sim_root, pp.PreprocessCache(args.cache))
        print(f"1. simulated cohort, aligned by construction ({len(table)} scans)")
        print(atrophy_table(table).to_string(), "\n")
        print(failing_table(table).to_string(index=False), "\n")
        young = table[(table["group"] == "HC") & (table["age"] < 40)]["participant_id"][:n]
        old = table[(table["group"] == "HC") & (table["age"] >= 80)]["participant_id"][:n]
        ad = table[table["group"] == "AD"].sort_values("age")["participant_id"][-n:]
        sets = {"sim HC < 40 y": [images[p] for p in young],
                "sim HC >= 80 y": [images[p] for p in old],
                "sim AD (oldest)": [images[p] for p in ad]}
    if not args.no_real and args.shared.is_dir():
        real_table, real_images = real(args.shared, pp.PreprocessCache(default_cache_dir()))
        print(f"3. real scans (ixi10 + ixi40, {len(real_table)} scans, 4 mm native)")
        for figure in FIGURES:
            v = real_table[figure]
            failing = [p for p, x in zip(real_table["participant_id"], v)
                       if not passes(figure, x)]
            print(f"   {figure}: {v.min():.2f}-{v.max():.2f} (median {v.median():.2f}); "
                  f"failing: {len(failing)} {failing}")
        print()
        sets["IXI (real)"] = list(real_images.values())[::max(1, len(real_images) // n)][:n]
    print("2. deliberate misregistrations (share detected, %; aligned: share failing, %)")
    print(misregistration_table(sets).to_string(index=False))


if __name__ == "__main__":
    main()
