"""Summaries behind the data-audit notebook: problems, demographics, tissue volumes, examples.

The checks themselves live in :mod:`brainage.data.cohort` (tables and images) and
:mod:`brainage.imaging.preprocess` (registration quality); this module turns their results into the
tables and figures the audit shows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.data.cohort import PROBLEM_COLUMNS

logger = logging.getLogger(__name__)

__all__ = [
    "alignment_problems",
    "demographics",
    "example_subjects",
    "problem_summary",
    "qc_removals",
    "realism_statistics",
    "tissue_fractions",
    "tissue_priors",
    "tissue_table",
    "tiv_problems",
    "tiv_summary",
]

#: Relative-intensity bands of a T1w brain (intensity / 90th percentile inside the brain):
#: CSF is dark, grey matter intermediate, white matter bright. The bands separate the tissue
#: peaks of the simulated sites (CSF 0.18-0.30, GM 0.58-0.70, WM 1.0) and of normalised real
#: T1w scans; at a coarse grid, partial volume blurs them, so the fractions are indices of
#: atrophy rather than volumes in mL.
CSF_BAND = (0.0, 0.5)
GM_BAND = (0.5, 0.82)
#: Tissue masks of :func:`realism_statistics`: nilearn's MNI152 probability maps above these.
WM_PROBABILITY, GM_PROBABILITY = 0.9, 0.7


def problem_summary(problems: pd.DataFrame) -> pd.DataFrame:
    """Count problems by check and severity (one row per check)."""
    if problems.empty:
        return pd.DataFrame(columns=["check", "error", "warning", "excluded"])
    counts = (problems.groupby(["check", "severity"]).size().unstack(fill_value=0)
              .reindex(columns=["error", "warning", "excluded"], fill_value=0))
    return counts.reset_index().rename_axis(columns=None)


def demographics(table: pd.DataFrame, by: Iterable[str] = ("group",)) -> pd.DataFrame:
    """Number of scans, age (mean, SD, range) and share of women per group (and site).

    Parameters
    ----------
    table : DataFrame
        The Cohort table (columns ``age``, ``sex`` and the ``by`` columns).
    by : iterable of str, default=("group",)
        Columns to group by, e.g. ``("group", "site")``.
    """
    by = list(by)
    missing = [c for c in [*by, "age", "sex"] if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the column(s) {missing}; it has {list(table.columns)}")
    grouped = table.groupby(by)
    out = pd.DataFrame({
        "n": grouped.size(),
        "age_mean": grouped["age"].mean(),
        "age_sd": grouped["age"].std(),
        "age_min": grouped["age"].min(),
        "age_max": grouped["age"].max(),
        "female_%": grouped["sex"].apply(lambda s: 100.0 * (s == "F").sum() / max(len(s), 1)),
    })
    return out.round(1).reset_index()


def tissue_fractions(image: nib.Nifti1Image | str | Path,
                     mask: np.ndarray | None = None) -> dict[str, float]:
    """CSF and grey-matter fractions of the brain, from intensity bands.

    Parameters
    ----------
    image : Nifti1Image or path
        A skull-stripped (or masked) T1w image; voxels <= 0 are background unless ``mask``.
    mask : ndarray of bool, optional
        Brain mask on the image's grid (default: voxels > 0).

    Returns
    -------
    dict
        ``csf_fraction``, ``gm_fraction`` (shares of brain voxels) and ``brain_voxels``.
    """
    img = nib.load(image) if isinstance(image, (str, Path)) else image
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"tissue_fractions needs a 3D image, got shape {data.shape}")
    brain = data > 0 if mask is None else np.asarray(mask, dtype=bool)
    if brain.shape != data.shape:
        raise ValueError(f"mask shape {brain.shape} does not match image shape {data.shape}")
    if not brain.any():
        raise ValueError("the brain mask is empty: no voxel > 0")
    values = data[brain]
    rel = values / np.percentile(values, 90)
    csf = (rel >= CSF_BAND[0]) & (rel < CSF_BAND[1])
    gm = (rel >= GM_BAND[0]) & (rel < GM_BAND[1])
    return {"csf_fraction": float(csf.mean()), "gm_fraction": float(gm.mean()),
            "brain_voxels": int(brain.sum())}


def tissue_priors(shape: tuple[int, int, int],
                  affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """White- and grey-matter masks on a template grid: nilearn's MNI152 2 mm probability maps
    resampled there, above :data:`WM_PROBABILITY` and :data:`GM_PROBABILITY`."""
    from nilearn import datasets, image

    target = nib.Nifti1Image(np.zeros(shape, np.float32), affine)
    masks = []
    for load, level in ((datasets.load_mni152_wm_template, WM_PROBABILITY),
                        (datasets.load_mni152_gm_template, GM_PROBABILITY)):
        prob = image.resample_to_img(load(resolution=2), target, interpolation="continuous",
                                     force_resample=True, copy_header=True)
        masks.append(np.asarray(prob.dataobj) > level)
    return masks[0], masks[1]


def realism_statistics(image: nib.Nifti1Image, wm_prior: np.ndarray,
                       gm_prior: np.ndarray) -> dict[str, float]:
    """Image statistics that tell a simulated from a real preprocessed T1w scan (issue 19).

    For a scan preprocessed onto a template grid (normalised, 0 outside the brain):

    * ``noise``: robust SD (1.4826 x MAD) of the high-pass image (the volume minus its
      Gaussian smoothing, sigma one voxel) in white matter, over the white-matter median;
    * ``wm_cv``: white-matter intensity SD over its mean;
    * ``contrast``: (WM - GM) / (WM + GM) of the tissue medians;
    * ``p95``: 95th percentile of the intensity inside the brain;
    * ``gm_level``, ``wm_level``: the grey- and white-matter medians (the histogram's peaks);
    * ``csf_fraction``: :func:`tissue_fractions`;
    * ``mask_cm3``: volume of the brain (voxels > 0), cm³.

    White and grey matter are the brain's voxels inside ``wm_prior`` and ``gm_prior``
    (:func:`tissue_priors`).
    """
    from scipy import ndimage

    data = np.asarray(image.dataobj, dtype=np.float64)
    brain = data > 0
    wm, gm = wm_prior & brain, gm_prior & brain
    hp = (data - ndimage.gaussian_filter(data, sigma=1.0))[wm]
    wm_median = float(np.median(data[wm]))
    gm_median = float(np.median(data[gm]))
    voxel_cm3 = float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    return {"noise": 1.4826 * float(np.median(np.abs(hp - np.median(hp)))) / wm_median,
            "wm_cv": float(data[wm].std() / data[wm].mean()),
            "contrast": (wm_median - gm_median) / (wm_median + gm_median),
            "p95": float(np.percentile(data[brain], 95)),
            "gm_level": gm_median, "wm_level": wm_median,
            "csf_fraction": tissue_fractions(image)["csf_fraction"],
            "mask_cm3": float(brain.sum()) * voxel_cm3}


def tissue_table(table: pd.DataFrame, path_column: str = "path") -> pd.DataFrame:
    """:func:`tissue_fractions` of every scan in a Cohort table, joined to its rows."""
    rows = [tissue_fractions(path) for path in table[path_column]]
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def example_subjects(table: pd.DataFrame) -> pd.DataFrame:
    """One row each: the youngest and the oldest control, and the median-age AD and PD patient.

    Groups that are absent are left out.
    """
    picks = []
    hc = table[table["group"] == "HC"]
    if not hc.empty:
        picks += [("youngest control", hc["age"].idxmin()), ("oldest control", hc["age"].idxmax())]
    for group in ("AD", "PD"):
        sub = table[table["group"] == group]
        if not sub.empty:
            median_index = (sub["age"] - sub["age"].median()).abs().idxmin()
            picks.append((f"{group} patient", median_index))
    out = table.loc[[index for _, index in picks]].copy()
    out.insert(0, "example", [label for label, _ in picks])
    return out.reset_index(drop=True)


def alignment_problems(table: pd.DataFrame, errors: dict[str, str], scores: dict[str, float],
                       threshold: float, *, registered: bool = True) -> pd.DataFrame:
    """Problems from preprocessing: scans that failed, and scans that align badly with the template.

    Parameters
    ----------
    table : DataFrame
        The Cohort table (``dataset``, ``participant_id``, ``path``).
    errors : dict
        ``path -> message`` of scans whose preprocessing failed.
    scores : dict
        ``path -> registration QC figure`` of preprocessed scans (outline misfit in mm,
        :func:`brainage.imaging.registration.outline_misfit`; NaN: not measured).
    threshold : float
        Figures above it are flagged
        (:data:`brainage.imaging.registration.MISFIT_THRESHOLD_MM`, the threshold of
        ``brainage predict``, so that the audit and the tool refuse the same scans).
    registered : bool, default=True
        Whether the scans were registered by the pipeline (``space: native``). Then a high
        figure means a failed registration and is an error: a misregistered scan would train
        the model on noise (add the subject to the manifest's ``exclude`` list to drop it on
        purpose). Scans delivered in template space were not registered here, so a high one
        is a warning for the reader. A figure that could not be measured (NaN: the brain was
        masked by the template's own mask) is an error for registered scans (``brainage
        predict`` refuses them too) and no problem for the others.

    Returns
    -------
    DataFrame
        Rows in the layout of :data:`brainage.data.cohort.PROBLEM_COLUMNS`.
    """
    rows = []
    for record in table.to_dict("records"):
        path = str(record["path"])
        base = {"dataset": record.get("dataset"), "participant_id": record["participant_id"],
                "path": path, "severity": "error"}
        if path in errors:
            rows.append({**base, "check": "preprocessing", "message": errors[path]})
        elif path in scores and registered and np.isnan(scores[path]):
            rows.append({**base, "check": "alignment", "message":
                         f"{path}: registration misfit not measured (no brain outline of the "
                         f"subject's own): the registration cannot be checked"})
        elif path in scores and scores[path] > threshold:
            cause = ("registration probably failed" if registered else
                     "check the scan's space and brain mask")
            rows.append({**base, "severity": "error" if registered else "warning",
                         "check": "alignment", "message":
                         f"{path}: registration misfit {scores[path]:.2f} mm is above the "
                         f"threshold {threshold:.1f} mm: {cause}"})
    return pd.DataFrame(rows, columns=list(PROBLEM_COLUMNS))


#: Age bands (years, left-closed) of :func:`qc_removals`.
QC_AGE_BANDS = (0.0, 40.0, 60.0, 80.0, 200.0)


def qc_removals(table: pd.DataFrame, threshold: float, *, registered: bool = True,
                bands: Iterable[float] = QC_AGE_BANDS) -> pd.DataFrame:
    """How many subjects per group and age band the registration QC removes (or flags).

    A QC that drops old or demented brains more often than young healthy ones biases every
    analysis done with what is left; this table shows whether it does.

    Parameters
    ----------
    table : DataFrame
        ``group``, ``age`` and ``alignment`` (the registration QC figure, mm; NaN where the
        scan was not preprocessed or the figure not measured).
    threshold : float
        Figures above it fail (:data:`brainage.imaging.registration.MISFIT_THRESHOLD_MM`).
    registered : bool, default=True
        The scans were registered here: a NaN figure fails too (as in ``brainage predict``).
    bands : iterable of float, default=QC_AGE_BANDS
        Edges of the age bands (years); ages outside them are left out.

    Returns
    -------
    DataFrame
        One row per group and age band: ``group``, ``age_band`` (e.g. ``"60-80"``), ``n``,
        ``failed`` (count), ``failed_percent`` and ``median`` (the figure, mm); then one row
        per group over all ages (``age_band == "all"``).
    """
    missing = [c for c in ("group", "age", "registration_misfit_mm") if c not in table.columns]
    if missing:
        raise ValueError(f"qc_removals needs the column(s) {missing}; got {list(table.columns)}")
    edges = [float(b) for b in bands]
    if len(edges) < 2 or any(high <= low for low, high in zip(edges, edges[1:])):
        raise ValueError(f"bands must be at least two increasing edges; got {edges}")
    data = table[["group", "age", "registration_misfit_mm"]].copy()
    score = pd.to_numeric(data["registration_misfit_mm"], errors="coerce")
    data["failed"] = (score > threshold) | (score.isna() if registered else False)
    labels = [f"{a:g}-{b:g}" if b < 200 else f"{a:g}+" for a, b in zip(edges, edges[1:])]
    data["age_band"] = pd.cut(data["age"], edges, right=False, labels=labels)
    data["registration_misfit_mm"] = score
    summary = _qc_summary
    by_band = (data.dropna(subset=["age_band"])
               .groupby(["group", "age_band"], observed=True, sort=True)
               .apply(summary, include_groups=False).reset_index())
    overall = data.groupby("group", sort=True).apply(summary, include_groups=False).reset_index()
    overall["age_band"] = "all"
    out = pd.concat([by_band.assign(age_band=by_band["age_band"].astype(str)), overall],
                    ignore_index=True)
    out = out.sort_values(["group"], kind="stable").reset_index(drop=True)
    out[["n", "failed"]] = out[["n", "failed"]].astype(int)
    return out[["group", "age_band", "n", "failed", "failed_percent", "median"]]


def _qc_summary(rows: pd.DataFrame) -> pd.Series:
    """n, failed, failed_percent and median figure of some rows of :func:`qc_removals`."""
    n = len(rows)
    return pd.Series({"n": n, "failed": int(rows["failed"].sum()),
                      "failed_percent": 100.0 * rows["failed"].mean() if n else np.nan,
                      "median": float(rows["registration_misfit_mm"].median()) if n else np.nan})


def tiv_summary(table: pd.DataFrame, by: Iterable[str] = ("group",),
                column: str = "tiv_cm3") -> pd.DataFrame:
    """Total intracranial volume (cm³, from each subject's extracted brain mask) per group.

    Parameters
    ----------
    table : DataFrame
        The Cohort table with a ``column`` of TIVs (NaN where the brain was not extracted:
        scans in a template space or delivered skull-stripped).
    by : iterable of str, default=("group",)
        Columns to group by, e.g. ``("group", "sex")``.
    column : str, default="tiv_cm3"
        The TIV column.

    Returns
    -------
    DataFrame
        ``n`` (scans with a TIV), ``tiv_mean``, ``tiv_sd``, ``tiv_min``, ``tiv_max`` per group;
        empty when no scan has a TIV.
    """
    by = list(by)
    missing = [c for c in [*by, column] if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the column(s) {missing}; it has {list(table.columns)}")
    known = table[np.isfinite(table[column].astype(float))]
    grouped = known.groupby(by)[column]
    out = pd.DataFrame({"n": grouped.size(), "tiv_mean": grouped.mean(), "tiv_sd": grouped.std(),
                        "tiv_min": grouped.min(), "tiv_max": grouped.max()})
    return out.round(1).reset_index()


def tiv_problems(table: pd.DataFrame, tivs: dict[str, float],
                 tiv_range: tuple[float, float]) -> pd.DataFrame:
    """Warnings for scans whose TIV (extracted brain mask, cm³) is outside a plausible range.

    A TIV far from the adult range means a brain mask that took in skull or neck, or lost part
    of the brain, or a header with wrong voxel sizes; the scan is kept for the reader to check
    (its registration misfit says whether the registration still landed).

    Parameters
    ----------
    table : DataFrame
        The Cohort table (``dataset``, ``participant_id``, ``path``).
    tivs : dict
        ``path -> TIV`` in cm³ (NaN or absent: not extracted, not checked).
    tiv_range : (float, float)
        Plausible TIVs, e.g. :data:`brainage.imaging.brain_extraction.TIV_RANGE_CM3`.

    Returns
    -------
    DataFrame
        Rows in the layout of :data:`brainage.data.cohort.PROBLEM_COLUMNS`.
    """
    low, high = tiv_range
    rows = []
    for record in table.to_dict("records"):
        path = str(record["path"])
        tiv = tivs.get(path, float("nan"))
        if np.isfinite(tiv) and not low <= tiv <= high:
            rows.append({"dataset": record.get("dataset"),
                         "participant_id": record["participant_id"], "path": path,
                         "severity": "warning", "check": "tiv",
                         "message": f"{path}: total intracranial volume {tiv:.0f} cm³ of the "
                                    f"extracted brain mask is outside {low:.0f}-{high:.0f} cm³: "
                                    f"check the mask in the registration QC"})
    return pd.DataFrame(rows, columns=list(PROBLEM_COLUMNS))
