"""Inference: what a user runs on a trained model folder (MONAI's ``apps/`` and ``bundle/``).

The model folder (:mod:`~brainage.inference.model_folder`, the only owner of its layout),
predictions on new scans (``brainage predict``), trust in each prediction (domain, intervals,
OOD flags), the registration-QC picture and the BIDS App (``brainage bids``).

Imports ``data``, ``imaging``, ``models``, ``analysis`` and ``_utils``, never ``study``: a
user's tool does not depend on how the study was run.
"""

from __future__ import annotations

from brainage._utils.lazy import lazy_exports

#: Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "BidsAppError": "bids_app",
    "GroupReport": "bids_app",
    "ParticipantOptions": "bids_app",
    "ParticipantReport": "bids_app",
    "ScanOutputs": "bids_app",
    "check_dirs": "bids_app",
    "run_group_level": "bids_app",
    "run_participant_level": "bids_app",
    "select_scans": "bids_app",
    "CONTROL_LABELS": "calibrate",
    "BIAS_CORRECTION_FILE": "model_folder",
    "CALIBRATION_SPLIT": "model_folder",
    "CHECKPOINT_FILE": "model_folder",
    "CONFORMAL_FILE": "model_folder",
    "CONFORMAL_FORMAT": "model_folder",
    "DEFAULT_SALIENCY_LAYER": "model_folder",
    "DOMAIN_SCHEMA": "model_folder",
    "HISTORY_FILE": "model_folder",
    "IG_REFERENCE_FILE": "model_folder",
    "MODEL_CARD_FILE": "model_folder",
    "MODEL_CARD_FORMAT": "model_folder",
    "MODEL_CARD_SCHEMA": "model_folder",
    "OOD_FILE": "model_folder",
    "OOD_FORMAT": "model_folder",
    "OOD_MAX_BYTES": "model_folder",
    "REGISTRATION_QC_FIELD": "model_folder",
    "RETEST_FIELD": "model_folder",
    "INTERVAL_CONDITIONS": "model_folder",
    "SITE_CALIBRATION_FILE_FORMAT": "model_folder",
    "HeadCalibration": "model_folder",
    "HeadTrust": "model_folder",
    "ModelFolder": "model_folder",
    "ModelFolderError": "model_folder",
    "UnverifiedCheckpointWarning": "model_folder",
    "checkpoint_digest": "model_folder",
    "head_checkpoint_digest": "model_folder",
    "head_checkpoint_path": "model_folder",
    "head_dirs": "model_folder",
    "load_calibration": "model_folder",
    "load_head_trust": "model_folder",
    "load_ig_reference": "model_folder",
    "load_model_folder": "model_folder",
    "load_ood": "model_folder",
    "present": "model_folder",
    "pretrained_checkpoints": "model_folder",
    "read_card": "model_folder",
    "record_retest": "model_folder",
    "save_calibration": "model_folder",
    "save_ig_reference": "model_folder",
    "save_ood": "model_folder",
    "write_model_card": "model_folder",
    "SiteCalibrationFile": "model_folder",
    "calibrate_site": "calibrate",
    "load_site_calibration": "model_folder",
    "CsvRun": "predict",
    "collect_scans": "predict",
    "iter_predictions": "predict",
    "predict_scans": "predict",
    "predict_to_csv": "predict",
    "scan_space": "predict",
    "label_orientation": "qc_figures",
    "ortho_montage": "qc_figures",
    "panel_widths": "qc_figures",
    "registration_qc": "qc_figures",
    "save_registration_qc": "qc_figures",
    "DomainCheck": "trust",
    "DomainWarning": "trust",
    "add_trust_columns": "trust",
    "describe_model": "trust",
    "domain_summary": "trust",
    "is_simulated_scan": "trust",
    "site_columns": "trust",
    "BATCH_ALPHA": "trust",
    "MIN_BATCH": "trust",
    "batch_verdict": "trust",
    "verdict_line": "trust",
    "trust_columns": "trust",
}
_MODULES = ("bids_app", "calibrate", "model_folder", "predict", "qc_figures", "trust")

__all__ = sorted([*_EXPORTS, *_MODULES])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MODULES)
