"""The column registry: every column of a brain-age table, its type and what it means, written
once; the evaluation, prediction and BIDS tables take their columns from here.

Tables (each a tuple of names, in order):

- :data:`EVALUATION_COLUMNS`: the study's predictions of its own cohort
  (:func:`brainage.analysis.evaluation.correct_predictions`, ``runs/<profile>/predictions.csv``);
- :data:`PREDICTION_COLUMNS`: ``brainage predict`` on new scans
  (:func:`brainage.inference.predict.predict_scans`);
- :data:`BIDS_COLUMNS`: the BIDS App's per-scan tables (``brainage bids``), the prediction
  columns plus the derivatives' URIs.

The descriptions follow BIDS's convention for a TSV file's JSON sidecar (``LongName``,
``Description``, ``Units``, ``Levels``): :func:`describe_columns` gives the sidecar of a table,
and refuses a column that has no description here, so that a column cannot reach a BIDS
derivative undocumented (``tests/inference/test_bids_app.py`` checks every column of the BIDS
App's tables; ``tests/test_columns.py`` that every table's column has a type and a description).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from brainage._utils.constants import PREDICTION_VALUES, TRUST_VALUES

__all__ = [
    "BIDS_COLUMNS",
    "COLUMN_DESCRIPTIONS",
    "COLUMN_TYPES",
    "EVALUATION_COLUMNS",
    "PREDICTION_COLUMNS",
    "describe_columns",
]

_YEARS = {"Units": "year"}

#: Column name -> its BIDS sidecar entry.
COLUMN_DESCRIPTIONS: dict[str, dict[str, Any]] = {
    "participant_id": {
        "LongName": "Participant identifier",
        "Description": "BIDS participant id (sub-<label>) of the scan.",
    },
    "split": {
        "LongName": "Data split",
        "Description": "The split of the study's cohort the scan belongs to.",
        "Levels": {"train": "training", "val": "validation (bias correction, calibration)",
                   "test": "held-out test"},
    },
    "group": {
        "LongName": "Diagnostic group",
        "Description": "HC (healthy control), AD (Alzheimer's disease) or PD (Parkinson's "
                       "disease).",
    },
    "sex": {
        "LongName": "Sex",
        "Description": "Sex of the participant as the cohort's participants.tsv gives it.",
    },
    "site": {
        "LongName": "Acquisition site",
        "Description": "Site (scanner) the scan was acquired at.",
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
                   "none": "the model folder stores no correction for this head",
                   "site": "the site calibration's line (brainage calibrate): "
                           "(predicted - intercept) / slope, fitted on the site's healthy "
                           "controls"},
    },
    "calibration": {
        "LongName": "Calibration used",
        "Description": "Which calibration the corrected columns and the intervals of the row "
                       "come from: 'training' (the model folder's, fitted on its validation "
                       "scans) or 'site:<name>' (a site calibration of brainage calibrate; its "
                       "intervals hold for scans of that site, healthy, in its calibration "
                       "scans' age range).",
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


_FLOAT = "float64"
#: Column name -> its pandas dtype in the tables (``string`` columns may hold ``""``, float
#: columns NaN, ``boolean`` columns NA for unknown).
COLUMN_TYPES: dict[str, str] = {
    "participant_id": "string", "split": "string", "group": "string", "sex": "string",
    "site": "string", "session": "string", "path": "string", "model": "string",
    "space": "string", "age": _FLOAT, **dict.fromkeys(PREDICTION_VALUES, _FLOAT),
    "interval_level": _FLOAT, "age_lower": _FLOAT, "age_upper": _FLOAT,
    "corrected_gap_lower": _FLOAT, "corrected_gap_upper": _FLOAT, "ood_score": _FLOAT,
    "ood": "boolean", "outside_age_range": "boolean", "retest_sd": _FLOAT,
    "bias_correction": "string", "calibration": "string", "alignment": _FLOAT,
    "saliency": "string", "error": "string",
    "preproc": "string", "brain_mask": "string",
}

#: Columns of the study's prediction table of its own cohort (one row per scan and head).
EVALUATION_COLUMNS = ("participant_id", "split", "group", "age", "sex", "site", "model",
                      *PREDICTION_VALUES)
#: Columns of ``brainage predict``'s table (one row per scan and head).
PREDICTION_COLUMNS = ("participant_id", "session", "path", "model", "space", "age",
                      *PREDICTION_VALUES, *TRUST_VALUES, "retest_sd", "bias_correction",
                      "calibration", "alignment", "saliency", "error")
#: Columns of the BIDS App's per-scan tables: the prediction columns and the derivatives.
BIDS_COLUMNS = (*PREDICTION_COLUMNS, "preproc", "brain_mask")
