"""The column registry: every column of a brain-age table, its type and what it means, written
once; the evaluation, prediction and BIDS tables take their columns from here.

Tables (each a tuple of names, in order):

- :data:`EVALUATION_COLUMNS`: the study's predictions of its own cohort
  (:func:`brainage.analysis.evaluation.correct_predictions`, ``runs/<profile>/predictions.csv``);
- :data:`PREDICTION_COLUMNS`: ``brainage predict`` on new scans
  (:func:`brainage.inference.predict.predict_scans`);
- :data:`BIDS_COLUMNS`: the same, plus the derivatives' URIs (the BIDS App's rows);
- :data:`OUTPUT_COLUMNS` and :data:`BIDS_OUTPUT_COLUMNS`: what ``brainage predict`` and the BIDS
  App write: a view of the prediction tables with the field's names (:data:`OUTPUT_NAMES`),
  rounded (:data:`COLUMN_DECIMALS`), with the domain verdict; ``docs/outputs.md`` documents
  each column and its brainageR and BIDS names (``tests/test_columns.py`` checks it).

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
    "BIDS_OUTPUT_COLUMNS",
    "COLUMN_DECIMALS",
    "COLUMN_DESCRIPTIONS",
    "COLUMN_TYPES",
    "EVALUATION_COLUMNS",
    "OUTPUT_COLUMNS",
    "OUTPUT_NAMES",
    "PREDICTION_COLUMNS",
    "RECOMMENDED_HEAD",
    "RECOMMENDED_HEAD_REASON",
    "describe_columns",
]

_YEARS = {"Units": "year"}
#: When the tables' split-conformal intervals hold: the conformal guarantee's condition, as
#: ``brainage predict`` prints it (``brainage.inference.model_folder.INTERVAL_CONDITIONS``).
_HOLDS = (" It holds at interval_level only for scans exchangeable with the calibration scans "
          "the calibration column names (same site and protocol, healthy, within their age "
          "range): not for another scanner's scans without a site calibration, nor for "
          "patients.")

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
        "Description": "Nominal share of scans whose true age lies inside the age interval; "
                       "n/a without a stored calibration." + _HOLDS,
    },
    "age_lower": {
        "LongName": "Lower end of the age interval",
        "Description": "Split-conformal prediction interval of the age around predicted, at "
                       "interval_level; needs no chronological age." + _HOLDS,
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
                       "older-looking brain at that level. n/a without an age." + _HOLDS,
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
    "registration_misfit_mm": {
        "LongName": "Registration QC: outline misfit (mm)",
        "Description": "Spread (standard deviation) of the signed distances from the "
                       "preprocessed scan's brain outline to the MNI152 template brain's "
                       "outline: registration quality control that atrophy does not move "
                       "(correctly aligned brains about 2.6-4.4 mm; a native scan above the "
                       "threshold of 5.0 mm fails; the commands print it as 'registration "
                       "misfit 3.1 mm (threshold 5.0 mm)'; rounded to 0.1 mm; n/a where the "
                       "brain was masked by the "
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
    "bias_correction": "string", "calibration": "string", "registration_misfit_mm": _FLOAT,
    "saliency": "string", "error": "string",
    "preproc": "string", "brain_mask": "string",
}

#: Columns of the study's prediction table of its own cohort (one row per scan and head).
EVALUATION_COLUMNS = ("participant_id", "split", "group", "age", "sex", "site", "model",
                      *PREDICTION_VALUES)
#: Columns of :func:`brainage.inference.predict.predict_scans`'s table (one row per scan and
#: head, full precision); ``brainage predict`` writes its :data:`OUTPUT_COLUMNS` view.
PREDICTION_COLUMNS = ("participant_id", "session", "path", "model", "space", "age",
                      *PREDICTION_VALUES, *TRUST_VALUES, "domain", "retest_sd",
                      "bias_correction",
                      "calibration", "registration_misfit_mm", "saliency", "error")
#: Columns of the BIDS App's per-scan tables: the prediction columns and the derivatives.
BIDS_COLUMNS = (*PREDICTION_COLUMNS, "preproc", "brain_mask")


# --- the output tables of brainage predict and the BIDS App (issue 30) ----------------------
# The prediction tables above are the library's (every head, full precision, the study's
# names: brainage.inference.predict.predict_scans returns them). What a user reads, the
# predict CSV and the BIDS App's TSV files, is one view of them: one head by default,
# the field's names, values rounded to what they carry, and the domain verdict of each scan.

#: Library column -> its name in the output tables. brainageR (Cole et al.) writes
#: ``brain.predicted_age``, ``lower.CI``, ``upper.CI``; the brain-age literature says brain age
#: and brain-age gap (brainPAD, delta); BIDS derivatives use snake_case column names.
OUTPUT_NAMES: dict[str, str] = {
    "model": "head",
    "predicted": "brain_age",
    "gap": "brain_age_gap",
    "corrected_predicted": "brain_age_corrected",
    "corrected_gap": "brain_age_gap_corrected",
    "age_lower": "brain_age_lower",
    "age_upper": "brain_age_upper",
    "corrected_gap_lower": "brain_age_gap_corrected_lower",
    "corrected_gap_upper": "brain_age_gap_corrected_upper",
}

_OUTPUT_DESCRIPTIONS: dict[str, dict[str, Any]] = {
    "head": {
        "LongName": "Model head",
        "Description": "The head of the model folder that made the prediction: the "
                       "recommended one (rnc) unless all heads were asked for (--all-heads: "
                       "one row per scan and head).",
        "Levels": COLUMN_DESCRIPTIONS["model"]["Levels"],
    },
    "brain_age": {
        "LongName": "Predicted brain age",
        "Description": "The age the model predicts from the scan (brainageR: "
                       "brain.predicted_age); rounded to 0.1 year.",
        **_YEARS,
    },
    "brain_age_gap": {
        "LongName": "Brain-age gap",
        "Description": "brain_age minus chronological age (brainPAD, brain-age delta), "
                       "computed before rounding; n/a without an age.",
        **_YEARS,
    },
    "brain_age_corrected": {
        "LongName": "Bias-corrected brain age",
        "Description": "brain_age after the head's age-bias correction (de Lange and Cole, "
                       "2020; the site's with a site calibration); n/a without an age or a "
                       "stored correction.",
        **_YEARS,
    },
    "brain_age_gap_corrected": {
        "LongName": "Bias-corrected brain-age gap",
        "Description": "brain_age_corrected minus chronological age (corrected brainPAD); "
                       "n/a without an age or a stored correction.",
        **_YEARS,
    },
    "brain_age_lower": {
        "LongName": "Lower end of the brain-age interval",
        "Description": "Split-conformal prediction interval of the age around brain_age at "
                       "interval_level (brainageR: lower.CI); needs no chronological age."
                       + _HOLDS + " See domain.",
        **_YEARS,
    },
    "brain_age_upper": {
        "LongName": "Upper end of the brain-age interval",
        "Description": "See brain_age_lower (brainageR: upper.CI).",
        **_YEARS,
    },
    "brain_age_gap_corrected_lower": {
        "LongName": "Lower end of the corrected-gap interval",
        "Description": "Interval of brain_age_gap_corrected at interval_level; above 0 means "
                       "an older-looking brain at that level. n/a without an age." + _HOLDS,
        **_YEARS,
    },
    "brain_age_gap_corrected_upper": {
        "LongName": "Upper end of the corrected-gap interval",
        "Description": "See brain_age_gap_corrected_lower.",
        **_YEARS,
    },
    "domain": {
        "LongName": "Domain verdict",
        "Description": "Whether the scan is of the kind the model was trained on: the "
                       "warning brainage predict prints, per scan. n/a for a scan that "
                       "failed.",
        "Levels": {"ok": "no warning: the scan is of the training domain and the head's "
                         "OOD score does not flag it",
                   "sim2real": "the model was trained on simulated brains and the scan is "
                               "real (or in native space): expect large errors; the intervals "
                               "do not hold",
                   "ood": "the head's out-of-distribution score flags the scan (ood): its "
                          "age should not be trusted"},
    },
}
COLUMN_DESCRIPTIONS.update(_OUTPUT_DESCRIPTIONS)
COLUMN_TYPES.update({name: COLUMN_TYPES[internal] for internal, name in OUTPUT_NAMES.items()})
COLUMN_TYPES["domain"] = "string"

#: Columns of ``brainage predict``'s CSV (one row per scan with the recommended head, one per
#: scan and head with ``--all-heads``): what a user reads first comes first.
OUTPUT_COLUMNS = ("participant_id", "session", "age", "head", "brain_age", "brain_age_lower",
                  "brain_age_upper", "interval_level", "brain_age_gap", "brain_age_corrected",
                  "brain_age_gap_corrected", "brain_age_gap_corrected_lower",
                  "brain_age_gap_corrected_upper", "domain", "ood_score", "ood",
                  "outside_age_range", "retest_sd", "bias_correction", "calibration",
                  "registration_misfit_mm", "space", "path", "saliency", "error")
#: Columns of the BIDS App's per-scan TSV files (and of its group table, before the raw
#: dataset's participants.tsv columns): the output columns and the derivatives.
BIDS_OUTPUT_COLUMNS = (*OUTPUT_COLUMNS, "preproc", "brain_mask")

#: The head the output tables report unless all are asked for
#: (:func:`brainage.inference.predict.output_table`).
RECOMMENDED_HEAD = "rnc"
#: Why, stated once (``brainage predict --help`` and ``docs/outputs.md`` quote it).
RECOMMENDED_HEAD_REASON = (
    "rnc (the study's Rank-N-Contrast head) is reported by default: its bias-corrected gap is "
    "more repeatable between two scans of one person (benchmarks/bench_retest.py), and its "
    "simulated test MAE was lower than the L1 baseline's for 4 of 5 training seeds "
    "(bench_seeds.py), though an L1 baseline trained twice as long closed that difference "
    "(bench_l1_schedule.py), so accuracy alone does not decide it; --all-heads adds a row per "
    "scan for every other head")

#: Decimals of each rounded output column: years to 0.1 (a brain age carries no more: the
#: best models' errors are years), the chronological age as participants.tsv usually gives it
#: (0.01), millimetres to 0.1, scores and levels to 0.01.
COLUMN_DECIMALS: dict[str, int] = {
    "age": 2, **dict.fromkeys(("brain_age", "brain_age_gap", "brain_age_corrected",
                               "brain_age_gap_corrected", "brain_age_lower", "brain_age_upper",
                               "brain_age_gap_corrected_lower", "brain_age_gap_corrected_upper",
                               "retest_sd"), 1),
    "interval_level": 2, "ood_score": 2, "registration_misfit_mm": 1,
}
