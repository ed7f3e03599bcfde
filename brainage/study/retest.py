"""Test-retest of a run: simulated rescans of held-out subjects, their predictions, the table.

The study's reliability check (notebook 03 and ``benchmarks/bench_retest.py`` call this):
held-out subjects of a simulated cohort (test-split controls and patients; never a training,
validation or calibration scan) are scanned again by the simulator
(:func:`brainage.data.simulate.simulate_rescans`: a repeat session at the own site and a
travelling-subject session at another), every scan is predicted by the user's tool
(:func:`brainage.inference.predict.predict_scans`, the model folder's stored age-bias correction)
and each rescan is compared with the subject's first scan
(:mod:`brainage.analysis.reliability`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainage.analysis import reliability

logger = logging.getLogger(__name__)

__all__ = ["CASE_SESSIONS", "COMPARISONS", "RetestResult", "card_values", "choose_rescan_subjects",
           "perturbation_predictions", "perturbation_table", "retest_predictions", "run_retest",
           "site_offsets", "sem_comparison"]

#: Comparison name -> the rescan's BIDS session.
COMPARISONS = {"within site": "ses-repeat", "across sites": "ses-travel"}
MEASURES = ("predicted", "corrected_gap")


def choose_rescan_subjects(cohort: pd.DataFrame, *, n_controls: int, n_patients: int,
                           seed: int = 0) -> list[str]:
    """Test-split controls and patients to rescan, drawn at random (seeded).

    Parameters
    ----------
    cohort : DataFrame
        ``cohort.csv`` of a run (``participant_id``, ``group``, ``split``).
    n_controls, n_patients : int
        How many test-split controls and patients (split ``clinical``; AD and PD alternately,
        as far as each group has subjects). Fewer if the run has fewer.

    Returns
    -------
    list of str
        Participant ids, sorted.
    """
    for name, n in (("n_controls", n_controls), ("n_patients", n_patients)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{name} must be an int >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    controls = sorted(cohort.loc[(cohort["split"] == "test") & (cohort["group"] == "HC"),
                                 "participant_id"])
    chosen = list(rng.permutation(controls)[:n_controls]) if controls else []
    patients = cohort[cohort["split"] == "clinical"]
    groups = [list(rng.permutation(sorted(rows["participant_id"])))
              for _, rows in sorted(patients.groupby("group"))]
    taken = 0
    while taken < n_patients and any(groups):
        for group in groups:
            if group and taken < n_patients:
                chosen.append(group.pop(0))
                taken += 1
    if not chosen:
        raise ValueError("the cohort has no test-split controls or patients to rescan")
    return sorted(str(p) for p in chosen)


def retest_predictions(cohort: pd.DataFrame, participants: Sequence[str], rescans_root: Path,
                       models_dir: Path, *, skull_stripped: bool,
                       cache: Any = None, n_jobs: int = 1) -> pd.DataFrame:
    """Predictions of the subjects' first scans (session "") and of their rescans, by the
    user's tool with the model folder's stored corrections (one table, ``group`` added)."""
    from brainage.inference.predict import predict_scans

    first = cohort.set_index("participant_id").loc[list(participants)]
    common = {"skull_stripped": skull_stripped, "cache": cache, "n_jobs": n_jobs}
    original = predict_scans([str(p) for p in first["path"]], models_dir,
                             ages=first["age"].tolist(), **common)
    again = predict_scans([str(rescans_root)], models_dir, **common)
    table = pd.concat([original.assign(session=""), again], ignore_index=True)
    return table.merge(first[["group", "site"]].rename(columns={"site": "first_site"}),
                       left_on="participant_id", right_index=True, how="left")


def site_offsets(predictions: pd.DataFrame, truth: pd.DataFrame,
                 measure: str = "corrected_gap") -> pd.DataFrame:
    """Mean change of ``measure`` from the first scan's site to the travel rescan's, per
    model and site pair (n, mean, SD of the differences)."""
    pairs = reliability.pair_sessions(predictions, comparisons={"across sites": "ses-travel"},
                                      measures=[measure])
    sites = truth[truth["session"] == "travel"].set_index("participant_id")
    pairs["from"] = sites.loc[pairs["participant_id"], "original_site"].to_numpy()
    pairs["to"] = sites.loc[pairs["participant_id"], "site"].to_numpy()
    pairs["difference"] = pairs["second"] - pairs["first"]
    return (pairs.groupby(["model", "from", "to"])["difference"]
            .agg(n="size", mean="mean", sd="std").reset_index())


def sem_comparison(pairs: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                   models: tuple[str, str] = ("rnc", "l1")) -> pd.DataFrame:
    """RNC minus L1 SEM per comparison and measure on the subjects both have (paired)."""
    rows = []
    for (comparison, measure), group in pairs.groupby(["comparison", "measure"], sort=False):
        wide = group.pivot(index="participant_id", columns="model",
                           values=["first", "second"]).dropna()
        if not set(models) <= set(wide["first"].columns) or len(wide) < 3:
            continue
        a, b = models
        out = reliability.paired_sem_difference(
            wide[("first", a)], wide[("second", a)], wide[("first", b)], wide[("second", b)],
            n_boot=n_boot, seed=seed)
        rows.append({"comparison": comparison, "measure": measure, **out})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class RetestResult:
    """What :func:`run_retest` measured.

    Parameters
    ----------
    predictions : DataFrame
        Every scan's prediction (``session`` "" for the first scan).
    pairs : DataFrame
        :func:`brainage.analysis.reliability.pair_sessions` of them.
    table : DataFrame
        :func:`brainage.analysis.reliability.reliability_table` by model, comparison, measure
        (all subjects), then the same for controls only (``subjects`` column).
    comparison : DataFrame
        :func:`sem_comparison` (RNC minus L1).
    offsets : DataFrame
        :func:`site_offsets` of the corrected gap.
    seconds : dict
        Wall time of the rescans' simulation and of the predictions.
    """

    predictions: pd.DataFrame
    pairs: pd.DataFrame
    table: pd.DataFrame
    comparison: pd.DataFrame
    offsets: pd.DataFrame
    seconds: dict[str, float]


def run_retest(cohort: pd.DataFrame, cohort_root: Path, models_dir: Path, rescans_dir: Path, *,
               participants: Sequence[str], skull_stripped: bool, seed: int = 0,
               n_boot: int = 2000, n_jobs: int = 1, predict_jobs: int = 1,
               cache: Any = None, sessions: Sequence[str] = ("repeat", "travel"),
               redraw: Sequence[str] = ("pose", "scanner", "mask")) -> RetestResult:
    """Rescan ``participants`` (:func:`brainage.data.simulate.ensure_rescans` into
    ``rescans_dir``, ``n_jobs`` processes), predict every scan (``predict_jobs`` preprocessing
    processes: 1 is fastest for template-space scans, whose preprocessing is a resampling,
    since a pool starts per batch) and measure the agreement. ``sessions`` and ``redraw``:
    as for :func:`brainage.data.simulate.simulate_rescans`."""
    from brainage.data.simulate import ensure_rescans

    start = time.perf_counter()
    rescans = ensure_rescans(cohort_root, rescans_dir, participants=list(participants),
                             seed=seed, n_jobs=n_jobs, sessions=list(sessions), redraw=redraw)
    simulated = time.perf_counter() - start
    predictions = retest_predictions(cohort, participants, rescans.root, models_dir,
                                     skull_stripped=skull_stripped, cache=cache,
                                     n_jobs=predict_jobs)
    predicted = time.perf_counter() - start - simulated
    failed = predictions.loc[predictions["error"].fillna("") != "", "error"]
    for error in failed.unique():
        logger.warning("rescan prediction failed: %s", error)
    pairs = reliability.pair_sessions(
        predictions, comparisons={k: v for k, v in COMPARISONS.items()
                                  if v.removeprefix("ses-") in sessions}, measures=MEASURES)
    group = predictions.drop_duplicates("participant_id").set_index("participant_id")["group"]
    pairs["group"] = group.loc[pairs["participant_id"]].to_numpy()
    table = pd.concat([
        reliability.reliability_table(pairs, n_boot=n_boot, seed=seed).assign(subjects="all"),
        reliability.reliability_table(pairs[pairs["group"] == "HC"], n_boot=n_boot,
                                      seed=seed).assign(subjects="controls")],
        ignore_index=True)
    return RetestResult(predictions, pairs, table, sem_comparison(pairs, n_boot=n_boot,
                                                                  seed=seed),
                        site_offsets(predictions, rescans.truth) if "travel" in sessions
                        else pd.DataFrame(),
                        {"simulate_rescans": simulated, "predict": predicted})


#: BIDS session label of each acquisition change
#: (:data:`brainage.imaging.perturb.ACQUISITION_CASES`).
CASE_SESSIONS = {"moved_3deg_4mm": "moved", "voxel_1.5mm": "vox1p5", "voxel_3mm": "vox3",
                 "rician_2pct": "rician", "bias_0.15": "bias", "ghosting": "ghost",
                 "axes_reordered": "axes"}


def perturbation_predictions(scans: Sequence[Path], ages: Sequence[float], models_dir: Path,
                             out_dir: Path, *, cases: Sequence[str] = tuple(CASE_SESSIONS),
                             seed: int = 0, n_jobs: int = 1, cache: Any = None) -> pd.DataFrame:
    """Predictions of real scans and of their acquisition changes (predictions only).

    Each scan ``sub-X_T1w.nii.gz`` is written changed as ``out_dir/sub-X_ses-<label>_T1w.nii.gz``
    (:data:`CASE_SESSIONS`; the inputs are only read) and all are predicted by
    :func:`brainage.inference.predict.predict_scans` in native space.
    """
    import nibabel as nib

    from brainage.imaging.perturb import acquisition_case
    from brainage.inference.predict import predict_scans

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, all_ages = [str(p) for p in scans], list(ages)
    for path, age in zip(scans, ages):
        img = nib.load(path)
        stem = Path(path).name.removesuffix(".nii.gz").removesuffix("_T1w")
        for case in cases:
            target = out_dir / f"{stem}_ses-{CASE_SESSIONS[case]}_T1w.nii.gz"
            changed = acquisition_case(img, case, seed=seed)
            nib.save(nib.Nifti1Image(np.asarray(changed.dataobj, dtype=np.float32),
                                     changed.affine), target)
            paths.append(str(target))
            all_ages.append(age)
    return predict_scans(paths, models_dir, ages=all_ages, space="native", cache=cache,
                         n_jobs=n_jobs)


def perturbation_table(predictions: pd.DataFrame,
                       measures: Sequence[str] = MEASURES) -> pd.DataFrame:
    """Change of each measure from the original scan to each acquisition change, per model:
    n, mean change, mean and largest absolute change, SD of the change, ICC(3,1) (n >= 3)."""
    labels = {v: k for k, v in CASE_SESSIONS.items()}
    sessions = sorted(set(predictions["session"].fillna("")) - {""})
    pairs = reliability.pair_sessions(predictions, comparisons={
        labels.get(s.removeprefix("ses-"), s): s for s in sessions}, measures=list(measures))
    rows = []
    for (model, case, measure), g in pairs.groupby(["model", "comparison", "measure"],
                                                    sort=False):
        d = (g["second"] - g["first"]).to_numpy()
        row = {"model": model, "change": case, "measure": measure, "n": len(d),
               "mean_change": float(d.mean()), "mean_abs_change": float(np.abs(d).mean()),
               "max_abs_change": float(np.abs(d).max()),
               "sd_change": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
               "icc3": float("nan")}
        if len(d) >= 3:
            row["icc3"] = reliability.icc(g["first"], g["second"])["icc3"]
        rows.append(row)
    return pd.DataFrame(rows)


def card_values(table: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """The within-site agreement of each head for the model card
    (:func:`brainage.inference.model_folder.record_retest`): per head and measure the
    within-subject SD (``sd_years``), the smallest detectable change (``sdc_years``) and ``n``."""
    rows = table[(table["comparison"] == "within site")]
    if "subjects" in rows.columns:
        rows = rows[rows["subjects"] == "all"]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows.itertuples():
        out.setdefault(str(r.model), {})[str(r.measure)] = {
            "sd_years": round(float(r.sem), 4), "sdc_years": round(float(r.sdc), 4),
            "n": int(r.n), "source": "simulated repeat sessions of held-out subjects "
                                     "(brainage.study.retest)"}
    return out
