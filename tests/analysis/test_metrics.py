"""Tests of brainage.analysis.metrics: point metrics, bootstrap CIs, paired comparison, bias correction."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from brainage.analysis import metrics
from brainage.analysis.metrics import (
    AgeBiasCorrection,
    error_by_age_bin,
    fit_bias_correction_on_split,
    irreducible_error,
    mae,
    mean_age_baseline,
    paired_comparison,
    pearson_r,
    r2,
    regression_metrics,
    rmse,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def cohort(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ages 20-80 and predictions with regression-to-the-mean bias and noise."""
    age = rng.uniform(20, 80, 200)
    predicted = 0.7 * age + 15 + rng.normal(0, 4, 200)
    return age, predicted


# --- point metrics -------------------------------------------------------------------------------


def test_against_sklearn_and_scipy(cohort: tuple[np.ndarray, np.ndarray]) -> None:
    age, predicted = cohort
    assert mae(age, predicted) == pytest.approx(mean_absolute_error(age, predicted), rel=1e-12)
    assert rmse(age, predicted) == pytest.approx(root_mean_squared_error(age, predicted), rel=1e-12)
    assert r2(age, predicted) == pytest.approx(r2_score(age, predicted), rel=1e-12)
    assert pearson_r(age, predicted) == pytest.approx(stats.pearsonr(age, predicted).statistic,
                                                      rel=1e-12)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [
        # errors (1, 0, 2): MAE 1, RMSE sqrt(5/3); SS_res 5, SS_tot 2 -> R2 -1.5;
        # centred (-1, 0, 1) and (-1, -1, 2): r = 3 / sqrt(2 * 6) = sqrt(3) / 2.
        ([1, 2, 3], [2, 2, 5], {"mae": 1.0, "rmse": math.sqrt(5 / 3), "r2": -1.5,
                                "pearson_r": math.sqrt(3) / 2}),
        # perfect predictions
        ([10, 20], [10, 20], {"mae": 0.0, "rmse": 0.0, "r2": 1.0, "pearson_r": 1.0}),
        # reversed: errors (2, 0, 2): MAE 4/3, RMSE sqrt(8/3), R2 1 - 8/2 = -3, r = -1
        ([1, 2, 3], [3, 2, 1], {"mae": 4 / 3, "rmse": math.sqrt(8 / 3), "r2": -3.0,
                                "pearson_r": -1.0}),
    ],
)
def test_hand_checked(y_true: list, y_pred: list, expected: dict) -> None:
    for name, function in (("mae", mae), ("rmse", rmse), ("r2", r2), ("pearson_r", pearson_r)):
        assert function(y_true, y_pred) == pytest.approx(expected[name], abs=1e-14), name
        assert isinstance(function(y_true, y_pred), float)


def test_vectorised_statistics_match_rows(rng: np.random.Generator) -> None:
    # The bootstrap evaluates the statistics on (resamples, n) arrays along the last axis.
    y, p = rng.normal(50, 10, (5, 30)), rng.normal(50, 10, (5, 30))
    for name, statistic in metrics._STATISTICS.items():
        scalar = [getattr(metrics, name)(y[k], p[k]) for k in range(5)]
        np.testing.assert_allclose(statistic(y, p, axis=-1), scalar, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("function", [mae, rmse, r2, pearson_r])
@pytest.mark.parametrize(
    ("y_true", "y_pred", "error", "message"),
    [
        ([1, 2, 3], [1, 2], ValueError, "y_true and y_pred must have the same length, got 3 and 2"),
        ([1, np.nan, 3], [1, 2, 3], ValueError, r"y_true holds 1 NaN or infinite value\(s\) "
                                                r"\(first at index 1\)"),
        ([1, 2, 3], [1, 2, np.inf], ValueError, "y_pred holds 1 NaN or infinite"),
        ([1], [1], ValueError, r"y_true needs at least 2 value\(s\), got 1"),
        ([[1, 2], [3, 4]], [1, 2], ValueError, r"y_true must be 1-D, got shape \(2, 2\)"),
        (["a", "b"], [1, 2], TypeError, "y_true must be a 1-D array of numbers, got list"),
    ],
)
def test_bad_inputs(function, y_true, y_pred, error, message) -> None:
    with pytest.raises(error, match=message):
        function(y_true, y_pred)


def test_constant_inputs() -> None:
    with pytest.raises(ValueError, match="r2 is undefined when y_true is constant"):
        r2([5, 5, 5], [4, 5, 6])
    with pytest.raises(ValueError, match="pearson_r is undefined when y_pred is constant"):
        pearson_r([1, 2, 3], [4, 4, 4])


# --- bootstrap -----------------------------------------------------------------------------------


def test_regression_metrics_ci(cohort: tuple[np.ndarray, np.ndarray]) -> None:
    age, predicted = cohort
    result = regression_metrics(age, predicted, n_boot=500, seed=3)
    assert result["n"] == 200 and result["n_boot"] == 500 and result["confidence"] == 0.95
    for name, function in (("mae", mae), ("rmse", rmse), ("r2", r2), ("pearson_r", pearson_r)):
        entry = result[name]
        assert entry["value"] == pytest.approx(function(age, predicted), rel=1e-12)
        assert entry["ci_low"] < entry["value"] < entry["ci_high"], name
        assert entry["ci_method"] == "BCa"
    json.dumps(result)  # JSON-serialisable for metrics.json


def test_bootstrap_deterministic_and_seeded(cohort: tuple[np.ndarray, np.ndarray]) -> None:
    age, predicted = cohort
    first = regression_metrics(age, predicted, n_boot=300, seed=1)
    assert regression_metrics(age, predicted, n_boot=300, seed=1) == first
    other = regression_metrics(age, predicted, n_boot=300, seed=2)
    assert other["mae"]["ci_low"] != first["mae"]["ci_low"]


def test_bootstrap_matches_scipy_bca_of_sklearn_mae(cohort) -> None:
    # Same resamples, so the CI equals scipy's own BCa bootstrap of sklearn's MAE.
    age, predicted = cohort
    ours = regression_metrics(age, predicted, n_boot=300, seed=5)["mae"]
    theirs = stats.bootstrap((age, predicted), lambda y, p: mean_absolute_error(y, p),
                             n_resamples=300, paired=True, vectorized=False, method="BCa",
                             rng=np.random.default_rng(5)).confidence_interval
    assert ours["ci_low"] == pytest.approx(theirs.low, rel=1e-10)
    assert ours["ci_high"] == pytest.approx(theirs.high, rel=1e-10)


def test_bootstrap_falls_back_to_percentile_for_perfect_predictions() -> None:
    age = np.linspace(20, 80, 25)
    result = regression_metrics(age, age, n_boot=200)
    assert result["mae"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "ci_method": "percentile"}


def test_bootstrap_tiny_sample_is_finite() -> None:
    # n = 3: some resamples repeat one subject, so R2 and r are undefined there (NaN).
    result = regression_metrics([20, 40, 60], [25, 38, 66], n_boot=200)
    for name in ("r2", "pearson_r"):
        assert math.isfinite(result[name]["ci_low"]) and math.isfinite(result[name]["ci_high"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_boot": 10}, "n_boot must be an integer >= 100, got 10"),
     ({"confidence": 1.5}, "confidence must lie strictly between 0 and 1, got 1.5")],
)
def test_bootstrap_bad_settings(cohort, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        regression_metrics(*cohort, **kwargs)


# --- paired comparison ---------------------------------------------------------------------------


def test_paired_comparison_clear_winner(rng: np.random.Generator) -> None:
    age = rng.uniform(20, 80, 120)
    good = age + rng.normal(0, 2, 120)
    bad = age + rng.normal(0, 8, 120)
    result = paired_comparison(age, good, bad, n_boot=500, names=("rnc", "l1"))
    assert result["mae_a"] == pytest.approx(mae(age, good))
    assert result["mae_diff"] == pytest.approx(mae(age, good) - mae(age, bad))
    assert result["ci_low"] < result["mae_diff"] < result["ci_high"] < 0
    expected_p = stats.wilcoxon(np.abs(good - age), np.abs(bad - age)).pvalue
    assert result["p_value"] == pytest.approx(expected_p, rel=1e-12)
    assert result["significant"] is True and result["better"] == "rnc"
    flipped = paired_comparison(age, bad, good, n_boot=500, names=("rnc", "l1"))
    assert flipped["mae_diff"] == pytest.approx(-result["mae_diff"])
    assert flipped["better"] == "l1" and flipped["significant"] is True
    json.dumps(result)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_paired_comparison_same_quality_rule(seed: int) -> None:
    # Two equally good models: 'significant' is exactly (p < alpha and the CI excludes 0).
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, 60)
    result = paired_comparison(age, age + rng.normal(0, 5, 60), age + rng.normal(0, 5, 60),
                               n_boot=300)
    excludes_zero = result["ci_low"] > 0 or result["ci_high"] < 0
    assert result["significant"] == (result["p_value"] < 0.05 and excludes_zero)
    assert result["better"] == ("a" if result["mae_diff"] < 0 else "b")


def test_paired_comparison_identical_models(rng: np.random.Generator) -> None:
    age = rng.uniform(20, 80, 30)
    pred = age + rng.normal(0, 5, 30)
    with pytest.warns(UserWarning, match="identical absolute errors"):
        result = paired_comparison(age, pred, pred, n_boot=200)
    assert result["p_value"] == 1.0 and result["wilcoxon_statistic"] is None
    assert result["significant"] is False and result["better"] == "tie"


def test_paired_comparison_bad_inputs() -> None:
    with pytest.raises(ValueError, match="y_true and pred_b must have the same length, got 3 and"):
        paired_comparison([1, 2, 3], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1, got 0"):
        paired_comparison([1, 2, 3], [1, 2, 3], [1, 2, 4], alpha=0)


# --- age-bias correction -------------------------------------------------------------------------


def test_linear_recovers_known_bias(rng: np.random.Generator) -> None:
    age = rng.uniform(20, 80, 400)
    predicted = 0.7 * age + 15 + rng.normal(0, 0.5, 400)
    correction = AgeBiasCorrection.fit(age, predicted, method="linear")
    assert correction.coefficients["slope"] == pytest.approx(0.7, abs=0.01)
    assert correction.coefficients["intercept"] == pytest.approx(15, abs=0.5)
    corrected = correction.apply(age, predicted)
    gap = corrected - age
    assert abs(np.corrcoef(age, gap)[0, 1]) < 1e-10  # uncorrelated on the fitting data
    assert abs(gap.mean()) < 1e-10
    assert np.corrcoef(age, predicted - age)[0, 1] < -0.9  # the raw gap was strongly biased
    # de Lange & Cole: corrected = (predicted - b) / a, exactly
    c = correction.coefficients
    np.testing.assert_allclose(corrected, (predicted - c["intercept"]) / c["slope"], rtol=1e-15)


def test_linear_exact_bias_is_removed_exactly() -> None:
    age = np.array([20.0, 35.0, 50.0, 65.0, 80.0])
    predicted = 0.5 * age + 25  # no noise
    correction = AgeBiasCorrection.fit(age, predicted)
    np.testing.assert_allclose(correction.apply(age, predicted), age, rtol=1e-12)


def test_beheshti(cohort: tuple[np.ndarray, np.ndarray]) -> None:
    age, predicted = cohort
    correction = AgeBiasCorrection.fit(age, predicted, method="beheshti")
    slope, intercept = np.polyfit(age, predicted - age, 1)
    assert correction.coefficients == pytest.approx({"slope": slope, "intercept": intercept})
    gap = correction.apply(age, predicted) - age
    assert abs(np.corrcoef(age, gap)[0, 1]) < 1e-10 and abs(gap.mean()) < 1e-10


def test_quadratic_recovers_known_bias(rng: np.random.Generator) -> None:
    age = rng.uniform(20, 80, 400)
    predicted = age + 10 - 0.4 * age + 0.002 * age**2 + rng.normal(0, 0.1, 400)
    correction = AgeBiasCorrection.fit(age, predicted, method="quadratic")
    c = correction.coefficients
    assert (c["intercept"], c["age"], c["age2"]) == pytest.approx((10, -0.4, 0.002), rel=0.05)
    gap = correction.apply(age, predicted) - age
    assert abs(np.corrcoef(age, gap)[0, 1]) < 1e-8
    assert abs(np.corrcoef(age**2, gap)[0, 1]) < 1e-8


@pytest.mark.parametrize("method", ["linear", "beheshti", "quadratic"])
def test_json_round_trip(cohort: tuple[np.ndarray, np.ndarray], method: str) -> None:
    age, predicted = cohort
    correction = AgeBiasCorrection.fit(age, predicted, method=method)
    restored = AgeBiasCorrection.from_dict(json.loads(json.dumps(correction.to_dict())))
    assert restored == correction
    np.testing.assert_array_equal(restored.apply(age, predicted), correction.apply(age, predicted))


def test_unknown_method_suggests_closest(cohort) -> None:
    with pytest.raises(ValueError, match=r"method must be one of .*got 'quadratc'.*'quadratic'\?"):
        AgeBiasCorrection.fit(*cohort, method="quadratc")
    with pytest.raises(ValueError, match="did you mean 'linear'"):
        AgeBiasCorrection.from_dict({"method": "lineer", "coefficients": {}})


def test_from_dict_bad_keys() -> None:
    with pytest.raises(ValueError,
                       match=r"must have keys \['intercept', 'slope'\], got \['slope'\]"):
        AgeBiasCorrection.from_dict({"method": "linear", "coefficients": {"slope": 1.0}})
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['coefficients'\]"):
        AgeBiasCorrection.from_dict({"method": "linear"})


def test_bias_fit_bad_inputs() -> None:
    with pytest.raises(ValueError, match="needs at least 3 distinct ages in age, got 2"):
        AgeBiasCorrection.fit([20, 20, 30], [25, 26, 31], method="quadratic")
    with pytest.raises(ValueError, match="predictions that increase with age; the fitted slope"):
        AgeBiasCorrection.fit([20, 40, 60], [60, 40, 20])
    with pytest.raises(ValueError, match="age and predicted must have the same length, got 3 and"):
        AgeBiasCorrection.fit([20, 40, 60], [20, 40])


def test_apply_outside_range_warns(cohort) -> None:
    correction = AgeBiasCorrection.fit(*cohort)
    with pytest.warns(UserWarning, match=r"1 of 2 ages lie outside the fitting range"):
        correction.apply([50, 95], [50, 80])


def _predictions_table(rng: np.random.Generator) -> pd.DataFrame:
    age = rng.uniform(20, 80, 90)
    return pd.DataFrame({"split": ["train"] * 30 + ["val"] * 30 + ["test"] * 30, "age": age,
                         "predicted": 0.8 * age + 10 + rng.normal(0, 3, 90)})


def test_fit_on_split_ignores_test_rows(rng: np.random.Generator) -> None:
    table = _predictions_table(rng)
    correction = fit_bias_correction_on_split(table, "val")
    val = table[table.split == "val"]
    assert correction == AgeBiasCorrection.fit(val.age, val.predicted)
    changed = table.copy()
    test_rows = changed.split == "test"
    changed.loc[test_rows, "predicted"] = changed.loc[test_rows, "predicted"] * 3 - 40
    changed.loc[test_rows, "age"] = 99.0
    assert fit_bias_correction_on_split(changed, "val") == correction
    assert fit_bias_correction_on_split(table, "test") != correction  # the split does matter


def test_fit_on_split_bad_inputs(rng: np.random.Generator) -> None:
    table = _predictions_table(rng)
    with pytest.raises(ValueError, match=r"no rows with split == 'valid'; available splits: "
                                         r"\['test', 'train', 'val'\]"):
        fit_bias_correction_on_split(table, "valid")
    with pytest.raises(ValueError, match=r"predictions lacks column\(s\) \['predicted'\]"):
        fit_bias_correction_on_split(table.drop(columns="predicted"))
    with pytest.raises(TypeError, match="predictions must be a pandas DataFrame, got dict"):
        fit_bias_correction_on_split({"split": []})


# --- reference errors and bins -------------------------------------------------------------------


def test_irreducible_error_and_baseline() -> None:
    assert irreducible_error([30, 40, 50], [32, 40, 47]) == pytest.approx(5 / 3)
    # training mean 40; test errors |30-40|, |50-40|, |41-40| -> 21 / 3
    assert mean_age_baseline([30, 40, 50], [30, 50, 41]) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="chronological_age and biological_age must have the same"):
        irreducible_error([30, 40, 50], [30, 40])
    with pytest.raises(ValueError, match=r"train_age needs at least 1 value\(s\), got 0"):
        mean_age_baseline([], [30])
    with pytest.raises(ValueError, match="test_age holds 1 NaN"):
        mean_age_baseline([30], [np.nan])


def test_error_by_age_bin_hand_checked() -> None:
    age = [21, 25, 35, 39, 45]
    pred = [23, 24, 35, 45, 40]  # errors 2, -1 | 0, 6 | -5
    table = error_by_age_bin(age, pred, [20, 30, 40, 50, 60])
    assert table["age_bin"].tolist() == ["[20, 30)", "[30, 40)", "[40, 50)", "[50, 60)"]
    assert table["n"].tolist() == [2, 2, 1, 0]
    np.testing.assert_allclose(table["mae"][:3], [1.5, 3.0, 5.0])
    np.testing.assert_allclose(table["mean_error"][:3], [0.5, 3.0, -5.0])
    np.testing.assert_allclose(table["rmse"][:3], [math.sqrt(2.5), math.sqrt(18), 5.0])
    assert math.isnan(table["mae"][3])


def test_error_by_age_bin_integer_bins_keep_all(cohort) -> None:
    age, predicted = cohort
    table = error_by_age_bin(age, predicted, 4)
    assert len(table) == 4 and table["n"].sum() == age.size
    assert table["age_low"].iloc[0] == age.min()


def test_error_by_age_bin_bad_inputs() -> None:
    with pytest.warns(UserWarning, match=r"1 age\(s\) lie outside the bin edges \[20, 40\)"):
        table = error_by_age_bin([25, 35, 45], [25, 35, 45], [20, 30, 40])
    assert table["n"].sum() == 2
    with pytest.raises(ValueError,
                       match=r"bins must be strictly increasing edges, got \[20.0, 10.0\]"):
        error_by_age_bin([25], [25], [20, 10])
    with pytest.raises(ValueError, match="bins must be >= 1 when an integer, got 0"):
        error_by_age_bin([25], [25], 0)


def test_error_by_age_bin_bootstrap_ci() -> None:
    rng = np.random.default_rng(3)
    age = np.concatenate([rng.uniform(20, 40, 30), rng.uniform(40, 60, 2)])
    predicted = age + rng.normal(0, 4, age.size)
    table = error_by_age_bin(age, predicted, [20, 40, 60, 80], n_boot=500, seed=1)
    first = table.iloc[0]
    assert first["mae_ci_low"] < first["mae"] < first["mae_ci_high"]
    # the same interval regression_metrics gives the bin's scans
    inside = age < 40
    whole = regression_metrics(age[inside], predicted[inside], n_boot=500, seed=1)["mae"]
    assert (first["mae_ci_low"], first["mae_ci_high"]) == pytest.approx(
        (whole["ci_low"], whole["ci_high"]))
    assert table["mae_ci_low"].iloc[1:].isna().all()  # 2 scans, then none: no interval
    assert "mae_ci_low" not in error_by_age_bin(age, predicted, [20, 40, 60, 80]).columns
    with pytest.raises(ValueError, match="n_boot"):
        error_by_age_bin(age, predicted, [20, 40, 60, 80], n_boot=10)
