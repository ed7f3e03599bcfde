"""Tests of brainage.analysis.uncertainty: conformal intervals (coverage, Mondrian categories,
storage), cross-fitted gaps, coverage and evidence tables, and the feature OOD score."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from crepes import ConformalRegressor
from scipy import stats

from brainage.analysis import uncertainty as u
from brainage.analysis.metrics import AgeBiasCorrection

# --- Mondrian categories ------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "n"), [(0.5, 1), (0.8, 5), (0.9, 10), (0.95, 19)])
def test_min_calibration_size_is_where_crepes_turns_finite(level: float, n: int) -> None:
    assert u.min_calibration_size(level) == n
    residuals = np.arange(1.0, n + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = ConformalRegressor().fit(residuals[:-1]).predict_int(np.zeros(1),
                                                                       confidence=level)
    enough = ConformalRegressor().fit(residuals).predict_int(np.zeros(1), confidence=level)
    assert np.isinf(short).all() and np.isfinite(enough).all()


def test_quantile_edges_merge_bins_until_each_is_large_enough() -> None:
    values = np.arange(30.0)
    edges = u.quantile_edges(values, 3, min_per_bin=10)  # tertiles (numpy's quantiles)
    assert edges == pytest.approx((29 / 3, 58 / 3))
    assert np.bincount(u.assign_bins(values, edges)).tolist() == [10, 10, 10]
    edges = u.quantile_edges(values, 5, min_per_bin=10)  # 5 bins of 6 would be too small
    assert len(edges) == 2
    assert np.bincount(u.assign_bins(values, edges)).min() >= 10
    assert u.quantile_edges(values, 3, min_per_bin=20) == ()
    assert u.quantile_edges(values, 1, min_per_bin=1) == ()


def test_assign_bins_outer_bins_are_open() -> None:
    np.testing.assert_array_equal(u.assign_bins([-5, 10, 15, 20, 99], (10.0, 20.0)),
                                  [0, 1, 1, 2, 2])


# --- conformal intervals ------------------------------------------------------------------------


def test_interval_is_the_conformal_quantile_hand_checked() -> None:
    residuals = np.array([1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0, -10.0])
    interval = u.ConformalInterval.fit(residuals, level=0.8)
    # n = 10: the int(0.2 * 11) = 2nd largest absolute residual, 9
    lower, upper = interval.predict([50.0, 60.0])
    np.testing.assert_allclose(lower, [41.0, 51.0])
    np.testing.assert_allclose(upper, [59.0, 69.0])
    np.testing.assert_allclose(interval.half_widths(), [9.0])


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_marginal_coverage_on_synthetic_residuals(level: float) -> None:
    rng = np.random.default_rng(0)
    coverage = []
    for _ in range(200):
        calibration, test = rng.standard_t(5, 60), rng.standard_t(5, 500)
        lower, upper = u.ConformalInterval.fit(calibration, level=level).predict(np.zeros(500))
        coverage.append(np.mean((lower <= test) & (test <= upper)))
    # split conformal: E[coverage] = ceil(level (n + 1)) / (n + 1) >= level
    assert level <= np.mean(coverage) <= level + 0.03


def test_mondrian_bins_give_coverage_within_each_age_bin() -> None:
    """Errors grow with age: one pooled interval under-covers the old and over-covers the
    young; per-bin intervals cover at the level in every bin."""
    rng = np.random.default_rng(1)
    pooled, binned = [], []
    for _ in range(100):
        age = rng.uniform(20, 90, 1300)
        error = rng.normal(0, 1 + (age - 20) / 10)  # SD 1 at 20, 8 at 90
        cal, new = slice(0, 300), slice(300, None)
        old = age[new] > 70
        for store, bins in ((pooled, 1), (binned, 3)):
            interval = u.ConformalInterval.fit(error[cal], level=0.9, bin_values=age[cal],
                                               n_bins=bins)
            lower, upper = interval.predict(np.zeros(1000), age[new])
            inside = (lower <= error[new]) & (error[new] <= upper)
            store.append((inside[old].mean(), inside[~old].mean()))
    pooled_old, pooled_young = np.mean(pooled, axis=0)
    binned_old, binned_young = np.mean(binned, axis=0)
    assert pooled_old < 0.85 and pooled_young > 0.95
    assert abs(binned_old - 0.9) < 0.03 and abs(binned_young - 0.9) < 0.03


def test_interval_nan_inputs_and_clipping() -> None:
    interval = u.ConformalInterval.fit(np.linspace(-5, 5, 20), level=0.9, y_range=(0.0, 120.0))
    lower, upper = interval.predict([2.0, np.nan, 118.0])
    assert lower[0] == 0.0 and upper[2] == 120.0
    assert np.isnan(lower[1]) and np.isnan(upper[1])
    binned = u.ConformalInterval.fit(np.linspace(-5, 5, 40), level=0.8,
                                     bin_values=np.arange(40.0), n_bins=2)
    lower, _ = binned.predict([1.0, 1.0], [5.0, np.nan])  # unknown bin value: no interval
    assert np.isfinite(lower[0]) and np.isnan(lower[1])
    with pytest.raises(ValueError, match="bin_values are needed"):
        binned.predict([1.0])


def test_interval_round_trip_through_json() -> None:
    rng = np.random.default_rng(2)
    interval = u.ConformalInterval.fit(rng.normal(0, 4, 60), level=0.9,
                                       bin_values=rng.uniform(20, 90, 60), n_bins=3,
                                       y_range=(0.0, 120.0))
    again = u.ConformalInterval.from_dict(json.loads(json.dumps(interval.to_dict())))
    values, y_hat = rng.uniform(10, 100, 50), rng.uniform(10, 100, 50)
    for a, b in zip(interval.predict(y_hat, values), again.predict(y_hat, values)):
        np.testing.assert_array_equal(a, b)
    assert again.edges == interval.edges and again.level == 0.9


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("residuals"), r"src lacks the field\(s\) \['residuals'\]"),
    (lambda d: d.update(bins=[0.5] * d["n"]), "src.bins must be a list of integers"),
    (lambda d: d.update(level=1.5), "src: level must be a finite number > 0 and < 1"),
    (lambda d: d.update(residuals=d["residuals"][:-1]), "src: bins must be integers, one per"),
    (lambda d: d.update(edges=[80.0, 20.0]), "src: edges must increase strictly"),
    (lambda d: d.update(bins=[0] * d["n"]), r"src: bins must cover every category 0\.\.2"),
    (lambda d: d.update(residuals=[float("nan")] * d["n"]), "src: residuals holds 60 NaN"),
    (lambda d: d.update(y_range=[5]), r"src.y_range must be \[low, high\]"),
])
def test_interval_from_bad_dict_names_the_field(change, message: str) -> None:
    rng = np.random.default_rng(3)
    data = u.ConformalInterval.fit(rng.normal(0, 4, 60), level=0.9,
                                   bin_values=rng.uniform(20, 90, 60), n_bins=3).to_dict()
    change(data)
    with pytest.raises(ValueError, match=message):
        u.ConformalInterval.from_dict(data, source="src")


def test_too_few_residuals_for_the_level() -> None:
    with pytest.raises(ValueError, match="at level 0.9 needs at least 10 calibration residuals, "
                                         "got 9"):
        u.ConformalInterval.fit(np.ones(9), level=0.9)


# --- cross-fitting ------------------------------------------------------------------------------


def test_cross_fitted_gaps_come_from_corrections_that_did_not_see_them() -> None:
    rng = np.random.default_rng(4)
    age = rng.uniform(20, 90, 60)
    predicted = 0.7 * age + 16 + rng.normal(0, 4, 60)
    gaps = u.cross_fitted_gaps(age, predicted, folds=5, seed=0)
    from sklearn.model_selection import KFold

    fit_rows, held_rows = next(KFold(5, shuffle=True, random_state=0).split(age))
    correction = AgeBiasCorrection.fit(age[fit_rows], predicted[fit_rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = correction.apply(age[held_rows], predicted[held_rows]) - age[held_rows]
    np.testing.assert_allclose(gaps[held_rows], expected)
    in_sample = AgeBiasCorrection.fit(age, predicted).apply(age, predicted) - age
    assert np.mean(np.abs(gaps)) > np.mean(np.abs(in_sample))  # out of fold: larger residuals


def test_cross_fitting_falls_back_on_a_fold_that_cannot_fit() -> None:
    age = np.array([20.0, 30, 40, 50, 60, 70, 80])
    predicted = np.array([30.0, 50, 50, 50, 50, 50, 49])  # without the first: decreasing
    with pytest.warns(UserWarning, match=r"cross-fitting fold \d of 7: method 'linear' needs "
                                         r".*its gaps use the correction fitted on all 7 scans"):
        gaps = u.cross_fitted_gaps(age, predicted, folds=7)
    assert np.isfinite(gaps).all()


# --- coverage, evidence, flags --------------------------------------------------------------------


def test_interval_coverage_hand_checked() -> None:
    result = u.interval_coverage([1.0, 2.0, 3.0, 4.0, np.nan], [0, 0, 0, 5, 0], [2, 2, 2, 6, 9])
    assert result["n"] == 4 and result["covered"] == 2 and result["coverage"] == 0.5
    ci = stats.binomtest(2, 4).proportion_ci(method="exact")
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert result["mean_width"] == pytest.approx(1.75)
    assert math.isnan(u.interval_coverage([np.nan], [0], [1])["coverage"])


def test_coverage_table_flags_a_nominal_level_outside_the_ci() -> None:
    frame = pd.DataFrame({"model": ["a"] * 100 + ["b"] * 100, "y": 0.0,
                          "lo": np.r_[np.full(100, -1.0), np.full(100, -1.0)],
                          "hi": np.r_[np.full(90, 1.0), np.full(10, -0.5),
                                      np.full(60, 1.0), np.full(40, -0.5)]})
    table = u.coverage_table(frame, truth="y", lower="lo", upper="hi", level=0.9)
    assert table["coverage"].tolist() == [0.9, 0.6]
    assert table["nominal_in_ci"].tolist() == [True, False]
    with pytest.raises(ValueError, match=r"frame lacks column\(s\) \['nope'\]"):
        u.coverage_table(frame, truth="nope", lower="lo", upper="hi")


def test_evidence_table_counts_intervals_above_zero() -> None:
    frame = pd.DataFrame({"model": "rnc", "group": ["HC"] * 4 + ["AD"] * 3,
                          "corrected_gap_lower": [-1.0, 0.5, -2.0, np.nan, 1.0, 2.0, -1.0]})
    table = u.evidence_table(frame).set_index("group")
    assert table.loc["HC", ["n", "above"]].tolist() == [3, 1]
    assert table.loc["AD", "share"] == pytest.approx(2 / 3)


def test_flag_rates_leave_out_missing_flags() -> None:
    frame = pd.DataFrame({"model": "l1", "split": "test",
                          "ood": pd.array([True, False, False, None], dtype="boolean")})
    row = u.flag_rates(frame).iloc[0]
    assert (row["n"], row["flagged"]) == (3, 1) and row["rate"] == pytest.approx(1 / 3)


def test_binomial_ci_bad_counts() -> None:
    with pytest.raises(ValueError, match=r"successes \(5\) cannot exceed n \(4\)"):
        u.binomial_ci(5, 4)


# --- out-of-distribution score ------------------------------------------------------------------


def _features(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    mixing = np.random.default_rng(99).normal(size=(dim, dim))  # correlated features
    return rng.normal(size=(n, dim)) @ mixing + 5.0


def test_ood_flags_in_distribution_scans_at_about_the_rate() -> None:
    rng = np.random.default_rng(5)
    ood = u.FeatureOOD.fit(_features(rng, 300), _features(rng, 1000), rate=0.05, k=5)
    _, flagged = ood.flag(_features(rng, 5000))
    assert 0.035 <= flagged.mean() <= 0.065
    _, calibration_flagged = ood.flag(_features(rng, 1))
    assert calibration_flagged.dtype == bool


def test_ood_flags_scans_far_from_the_training_features() -> None:
    rng = np.random.default_rng(6)
    train, val = _features(rng, 200), _features(rng, 100)
    ood = u.FeatureOOD.fit(train, val, rate=0.05)
    far = _features(rng, 10) * 3.0  # another scale and centre
    score, flagged = ood.flag(far)
    assert flagged.all() and (score > 1).all()
    assert ood.k == 5 and u.FeatureOOD.fit(train[:3], val, rate=0.05, k=5).k == 3


def test_ood_constant_feature_does_not_dominate() -> None:
    rng = np.random.default_rng(7)
    train, val, new = _features(rng, 200), _features(rng, 100), _features(rng, 100)
    for x in (train, val):
        x[:, 0] = 0.0  # a dead feature in the training distribution
    new[:, 0] = 1e-9
    ood = u.FeatureOOD.fit(train, val, rate=0.1)
    assert ood.flag(new)[1].mean() < 0.3


def test_ood_round_trip_and_bad_arrays() -> None:
    rng = np.random.default_rng(8)
    ood = u.FeatureOOD.fit(_features(rng, 50), _features(rng, 40), rate=0.1)
    arrays = ood.to_arrays()
    again = u.FeatureOOD.from_arrays(arrays)
    x = _features(rng, 7)
    np.testing.assert_allclose(again.score(x), ood.score(x), rtol=1e-5)
    with pytest.raises(ValueError, match=r"src lacks the array\(s\) \['threshold'\]"):
        u.FeatureOOD.from_arrays({k: v for k, v in arrays.items() if k != "threshold"},
                                 source="src")
    with pytest.raises(ValueError, match="src: k must be a scalar"):
        u.FeatureOOD.from_arrays({**arrays, "k": np.array([1, 2])}, source="src")
    with pytest.raises(ValueError, match="src: mean and scale must hold 16 values"):
        u.FeatureOOD.from_arrays({**arrays, "mean": np.zeros(3)}, source="src")
    with pytest.raises(ValueError, match="features must have 16 features per row"):
        ood.score(np.zeros((2, 3)))


def test_ood_needs_enough_calibration_scans() -> None:
    rng = np.random.default_rng(9)
    with pytest.raises(ValueError, match="a flag rate of 0.05 needs at least 19 calibration "
                                         "scans, got 18"):
        u.FeatureOOD.fit(_features(rng, 50), _features(rng, 18), rate=0.05)
    u.FeatureOOD.fit(_features(rng, 50), _features(rng, 19), rate=0.05)
