"""Study: the run folder, prediction on new scans, figures, profiles, provenance, the book.

May import every other subpackage.
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
    "TABLE_COLUMNS": "bids_app",
    "check_dirs": "bids_app",
    "run_group_level": "bids_app",
    "run_participant_level": "bids_app",
    "select_scans": "bids_app",
    "BuildError": "book",
    "BuildReport": "book",
    "build": "book",
    "build_book": "book",
    "convert_notebook": "book",
    "discover_notebooks": "book",
    "execute_notebooks": "book",
    "render_generated_pages": "book",
    "COLUMN_DESCRIPTIONS": "columns",
    "describe_columns": "columns",
    "PlotlyFigure": "figures",
    "example_slices": "figures",
    "registration_qc": "figures",
    "show": "figures",
    "BIAS_CORRECTION_FILE": "predict",
    "CsvRun": "predict",
    "DEFAULT_SALIENCY_LAYER": "predict",
    "MODEL_CARD_FILE": "predict",
    "MODEL_CARD_FORMAT": "predict",
    "MODEL_CARD_SCHEMA": "predict",
    "ModelFolder": "predict",
    "ModelFolderError": "predict",
    "PREDICTION_COLUMNS": "predict",
    "collect_scans": "predict",
    "iter_predictions": "predict",
    "load_model_folder": "predict",
    "predict_scans": "predict",
    "predict_to_csv": "predict",
    "scan_space": "predict",
    "write_model_card": "predict",
    "Profile": "profiles",
    "ProfileError": "profiles",
    "display_path": "profiles",
    "display_paths": "profiles",
    "find_project_root": "profiles",
    "list_profiles": "profiles",
    "load_profile": "profiles",
    "resolve_path": "profiles",
    "PROVENANCE_FILE": "provenance",
    "collect_environment": "provenance",
    "digest_files": "provenance",
    "git_commit": "provenance",
    "read_provenance": "provenance",
    "update_provenance": "provenance",
    "HELD_OUT": "runs",
    "RunFolder": "runs",
    "ageing_truth_mask": "runs",
    "predict_run": "runs",
    "predictions_with_scores": "runs",
    "region_labels": "runs",
    "run_site_balanced_accuracy": "runs",
    "LABELS": "tables",
    "format_number": "tables",
    "format_p": "tables",
    "report_table": "tables",
}
_MODULES = (
    "bids_app", "book", "columns", "figures", "predict", "profiles", "provenance", "runs",
    "tables",
)

__all__ = sorted([*_EXPORTS, *_MODULES])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MODULES)
