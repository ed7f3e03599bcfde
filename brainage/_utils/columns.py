"""What every column of a brain-age table means, written once.

The descriptions follow BIDS's convention for a TSV file's JSON sidecar (``LongName``,
``Description``, ``Units``, ``Levels``): :func:`describe_columns` gives the sidecar of a table,
and refuses a column that has no description here, so that a column added to
:data:`brainage.inference.predict.PREDICTION_COLUMNS` cannot reach a BIDS derivative undocumented
(``tests/inference/test_bids_app.py`` checks every column of the BIDS App's tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["COLUMN_DESCRIPTIONS", "describe_columns"]

_YEARS = {"Units": "year"}

#: Column name -> its BIDS sidecar entry.
COLUMN_DESCRIPTIONS: dict[str, dict[str, Any]] = {
    "participant_id": {
        "LongName": "Participant identifier",
        "Description": "BIDS participant id (sub-<label>) of the scan.",
    },
    "session": {
        "LongName": "Session identifier",
        "Description": "BIDS session (ses-<label>) of the scan; n/a for a dataset without "
                       "sessions.",
    },
    "path": {
        "LongName": "Source scan",
        "Description": "The raw T1-weighted scan, as a BIDS URI into the raw dataset "
                       "(DatasetLinks 'raw' of dataset_description.json).",
    },
    "model": {
        "LongName": "Model head",
        "Description": "The head of the model folder that made the prediction (one row per "
                       "scan and head).",
        "Levels": {"rnc": "ResNet encoder trained with the Rank-N-Contrast loss, then a linear "
                          "regressor (Zha et al., NeurIPS 2023)",
                   "l1": "the same backbone trained end to end with L1 regression (baseline)"},
    },
    "space": {
        "LongName": "Space of the source scan",
        "Description": "How the scan was brought onto the model grid: 'native' scans were "
                       "bias-corrected (N4) and registered affinely to MNI152; scans in a "
                       "template space were only resampled.",
        "Levels": {"native": "scanner space: N4 and affine registration to MNI152",
                   "MNI152NLin2009cSym": "already on an MNI152 2009c template grid: resampled",
                   "MNI152Lin": "affinely aligned to MNI152 (OpenBHB quasi-raw): resampled"},
    },
    "age": {
        "LongName": "Chronological age",
        "Description": "Age at the scan, from the raw dataset's participants.tsv; n/a when "
                       "unknown.",
        **_YEARS,
    },
    "predicted": {
        "LongName": "Predicted brain age",
        "Description": "The age the model predicts from the scan.",
        **_YEARS,
    },
    "gap": {
        "LongName": "Brain-age gap",
        "Description": "Predicted minus chronological age (brain-age delta); n/a without an "
                       "age.",
        **_YEARS,
    },
    "corrected_predicted": {
        "LongName": "Bias-corrected predicted brain age",
        "Description": "The prediction after the head's age-bias correction, fitted on the "
                       "model's validation split (de Lange and Cole, 2020); n/a without an age "
                       "or a stored correction.",
        **_YEARS,
    },
    "corrected_gap": {
        "LongName": "Bias-corrected brain-age gap",
        "Description": "The bias-corrected prediction minus chronological age; n/a without an "
                       "age or a stored correction.",
        **_YEARS,
    },
    "interval_level": {
        "LongName": "Nominal level of the prediction intervals",
        "Description": "Share of scans like the calibration (validation) scans whose true age "
                       "lies inside [age_lower, age_upper]; n/a without a stored calibration.",
    },
    "age_lower": {
        "LongName": "Lower end of the age interval",
        "Description": "Split-conformal prediction interval of the age around predicted, at "
                       "interval_level; needs no chronological age.",
        **_YEARS,
    },
    "age_upper": {
        "LongName": "Upper end of the age interval",
        "Description": "See age_lower.",
        **_YEARS,
    },
    "corrected_gap_lower": {
        "LongName": "Lower end of the corrected-gap interval",
        "Description": "Interval of the bias-corrected gap at interval_level; above 0 means an "
                       "older-looking brain at that level. n/a without an age.",
        **_YEARS,
    },
    "corrected_gap_upper": {
        "LongName": "Upper end of the corrected-gap interval",
        "Description": "See corrected_gap_lower.",
        **_YEARS,
    },
    "retest_sd": {
        "LongName": "Test-retest SD of the bias-corrected gap",
        "Description": "Within-subject SD of this head's bias-corrected gap between two scans "
                       "of one person, as the study measured it (simulated repeat sessions, "
                       "model card); two scans' gaps differ by more than 2.77 times it (the "
                       "smallest detectable change) only by a real change, at 95%. n/a where "
                       "the card records none.",
        **_YEARS,
    },
    "ood_score": {
        "LongName": "Out-of-distribution score",
        "Description": "Distance of the scan's encoder features to the training scans' features, "
                       "in units of the threshold stored in the model folder (1 = threshold).",
    },
    "ood": {
        "LongName": "Out-of-distribution flag",
        "Description": "True when ood_score is above 1: the scan is unlike the training scans and "
                       "its predicted age should not be trusted.",
    },
    "outside_age_range": {
        "LongName": "Outside the training ages",
        "Description": "True when the age (or the predicted age, when the age is unknown) lies "
                       "outside the ages the model was trained on.",
    },
    "bias_correction": {
        "LongName": "Age-bias correction method",
        "Description": "The age-bias correction applied to the corrected columns.",
        "Levels": {"linear": "de Lange and Cole (2020): (predicted - intercept) / slope",
                   "beheshti": "Beheshti et al. (2019): the gap's linear trend with age "
                               "removed",
                   "quadratic": "after Smith et al. (2019): the gap's quadratic trend with "
                                "age removed",
                   "none": "the model folder stores no correction for this head"},
    },
    "alignment": {
        "LongName": "Registration QC: outline misfit",
        "Description": "Spread (standard deviation) of the signed distances from the "
                       "preprocessed scan's brain outline to the MNI152 template brain's "
                       "outline: registration quality control that atrophy does not move "
                       "(correctly aligned brains about 2.6-4.4 mm; a native scan above the "
                       "threshold of 5 mm fails; n/a where the brain was masked by the "
                       "template's own mask).",
        "Units": "mm",
    },
    "saliency": {
        "LongName": "Grad-RAM map",
        "Description": "Signed Grad-RAM map of the prediction on the model grid (a BIDS URI in "
                       "this dataset); n/a when not asked for.",
    },
    "error": {
        "LongName": "Error",
        "Description": "Why no age was predicted (names the file and the problem); n/a when "
                       "the scan succeeded.",
    },
    "preproc": {
        "LongName": "Preprocessed scan",
        "Description": "The scan on the model grid, skull-stripped and intensity-normalised "
                       "(brain mean 1), as the model saw it (a BIDS URI in this dataset).",
    },
    "brain_mask": {
        "LongName": "Brain mask",
        "Description": "The brain mask of the preprocessed scan (a BIDS URI in this dataset).",
    },
}


def describe_columns(columns: Iterable[str],
                     extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON sidecar of a table: every column's description, in the table's order.

    Parameters
    ----------
    columns : iterable of str
        The table's columns.
    extra : mapping, optional
        Descriptions of columns that are not brain-age columns (e.g. copied from the raw
        dataset's ``participants.json``); they take precedence.

    Raises
    ------
    ValueError
        A column has no description (named, with the columns that have one).
    """
    known = {**COLUMN_DESCRIPTIONS, **(extra or {})}
    columns = list(columns)
    missing = [c for c in columns if c not in known]
    if missing:
        raise ValueError(f"column(s) {missing} have no description: add them to "
                         f"brainage._utils.columns.COLUMN_DESCRIPTIONS (described: "
                         f"{sorted(known)})")
    return {c: dict(known[c]) for c in columns}
