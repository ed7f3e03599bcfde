"""Analysis: metrics, evaluation, clinical statistics, uncertainty, site calibration, shift tests,
reliability and benchmark scores of predictions.

Imports only :mod:`brainage._utils` of brainage: it works on tables and arrays, not files of
a run or models.
"""

from __future__ import annotations

from brainage._utils.lazy import lazy_exports

#: Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "C_GRID": "benchmark",
    "N_SITES": "benchmark",
    "benchmark_metrics": "benchmark",
    "challenge_score": "benchmark",
    "site_balanced_accuracy": "benchmark",
    "CLINICAL_FILE": "clinical",
    "ClinicalResults": "clinical",
    "ClinicalSettings": "clinical",
    "EXPECTED_SIGN": "clinical",
    "SCORES_BY_GROUP": "clinical",
    "clinical_summary": "clinical",
    "compare_models": "clinical",
    "compare_with_truth": "clinical",
    "fdr_correct": "clinical",
    "gap_ancova": "clinical",
    "gap_group_stats": "clinical",
    "gap_posthoc": "clinical",
    "gap_score_correlations": "clinical",
    "hedges_g": "clinical",
    "partial_rank_residuals": "clinical",
    "partial_spearman": "clinical",
    "truth_from_simulation": "clinical",
    "EVALUATION_COLUMNS": "evaluation",
    "correct_predictions": "evaluation",
    "evaluate_predictions": "evaluation",
    "AGE_DEPENDENT_METHODS": "metrics",
    "AgeBiasCorrection": "metrics",
    "BIAS_CORRECTION_METHODS": "metrics",
    "error_by_age_bin": "metrics",
    "fit_bias_correction_on_split": "metrics",
    "irreducible_error": "metrics",
    "mae": "metrics",
    "mean_age_baseline": "metrics",
    "paired_comparison": "metrics",
    "pearson_r": "metrics",
    "posterior_median_age": "metrics",
    "r2": "metrics",
    "regression_metrics": "metrics",
    "rmse": "metrics",
    "ConformalInterval": "uncertainty",
    "FeatureOOD": "uncertainty",
    "assign_bins": "uncertainty",
    "binomial_ci": "uncertainty",
    "coverage_table": "uncertainty",
    "cross_fitted_gaps": "uncertainty",
    "evidence_table": "uncertainty",
    "flag_rates": "uncertainty",
    "interval_coverage": "uncertainty",
    "min_calibration_size": "uncertainty",
    "quantile_edges": "uncertainty",
    "RELIABILITY_COLUMNS": "reliability",
    "agreement": "reliability",
    "icc": "reliability",
    "pair_sessions": "reliability",
    "paired_sem_difference": "reliability",
    "reliability_table": "reliability",
    "sdc_from_sem": "reliability",
    "BatchShift": "shift",
    "GapTest": "shift",
    "batch_shift": "shift",
    "MMDTest": "shift",
    "gap_test": "shift",
    "mmd_statistic": "shift",
    "mmd_test": "shift",
    "MIN_SITE_SCANS": "site_calibration",
    "SITE_CALIBRATION_FORMAT": "site_calibration",
    "SiteCalibration": "site_calibration",
    "SiteCorrection": "site_calibration",
    "fit_site_calibration": "site_calibration",
    "fit_site_correction": "site_calibration",
    "training_line": "site_calibration",
}
_MODULES = (
    "benchmark", "clinical", "evaluation", "metrics", "reliability", "shift", "site_calibration",
    "uncertainty",
)

__all__ = sorted([*_EXPORTS, *_MODULES])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MODULES)
