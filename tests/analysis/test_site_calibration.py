"""Tests of brainage.analysis.site_calibration: a site's correction (shrinkage, intercept only),
the cross-fitted conformal interval, refusals of bad calibration sets, and JSON storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainage.analysis import site_calibration as sc
from brainage.analysis.metrics import AgeBiasCorrection

AGES = np.array([50.0, 60.0, 70.0, 80.0, 90.0])
LINE = 0.5 * AGES + 3.0  # predicted = 0.5 age + 3 exactly


# --- the correction -----------------------------------------------------------------------------


def test_correction_without_prior_is_the_least_squares_line() -> None:
    fit = sc.fit_site_correction(AGES, LINE)
    assert fit.slope == pytest.approx(0.5)
    assert fit.intercept == pytest.approx(3.0)
    assert (fit.fitted, fit.weight, fit.n, fit.age_range) == ("slope", 1.0, 5, (50.0, 90.0))
    assert fit.apply(np.array([38.0, np.nan]))[0] == pytest.approx(70.0)  # (38 - 3) / 0.5
    assert np.isnan(fit.apply(np.array([38.0, np.nan]))[1])


def test_correction_shrinks_the_slope_towards_the_prior_by_scan_count() -> None:
    # w = 5 / (5 + 5) = 0.5: slope 0.5 * 0.5 + 0.5 * 1.0 = 0.75; the line passes through the
    # controls' means (70, 38): intercept 38 - 0.75 * 70 = -14.5
    fit = sc.fit_site_correction(AGES, LINE, prior=(1.0, 0.0), prior_scans=5)
    assert (fit.slope, fit.intercept, fit.weight) == pytest.approx((0.75, -14.5, 0.5))
    more = np.repeat(AGES, 3)  # 15 scans: w = 0.75, slope 0.625
    assert sc.fit_site_correction(more, 0.5 * more + 3, prior=(1.0, 0.0),
                                  prior_scans=5).slope == pytest.approx(0.625)
    assert sc.fit_site_correction(AGES, LINE, prior=(1.0, 0.0),
                                  prior_scans=0).slope == pytest.approx(0.5)


def test_narrow_ages_fit_the_intercept_only_with_a_warning() -> None:
    ages = np.array([60.0, 62.0, 64.0, 61.0, 63.0])  # span 4 < 10
    predicted = np.array([40.0, 42.0, 44.0, 41.0, 43.0])
    with pytest.warns(UserWarning, match="span 4.0 years.*only the level"):
        fit = sc.fit_site_correction(ages, predicted, prior=(0.8, 2.0))
    assert (fit.fitted, fit.weight) == ("intercept", 0.0)
    assert fit.slope == pytest.approx(0.8)
    assert fit.intercept == pytest.approx(42.0 - 0.8 * 62.0)


def test_narrow_ages_without_a_prior_are_refused() -> None:
    with pytest.raises(ValueError, match="span 4.0 years.*no training correction"):
        sc.fit_site_correction([60, 62, 64, 61, 63], [40, 42, 44, 41, 43])


@pytest.mark.parametrize(("age", "predicted", "group", "match"), [
    (AGES[:4], LINE[:4], None, "at least 5 healthy controls.*got 4"),
    ([50, np.nan, 70, 80, 90], LINE, None, "age holds 1 NaN.*index 1.*known age"),
    (AGES, [28, 33, np.nan, 43, 48], None, "predicted holds 1 NaN.*index 2.*known prediction"),
    (AGES, LINE[:4], None, "one value per scan, got 5 and 4"),
    (AGES, LINE, ["HC", "HC", "AD", "HC", "PD"], r"2 of 5 scans are in group\(s\) \['AD', 'PD'\]"),
    (AGES, LINE, ["HC"] * 4, "one label per scan"),
    (AGES, -LINE, None, "do not increase with age"),
])
def test_bad_calibration_sets_are_refused(age, predicted, group, match) -> None:
    with pytest.raises(ValueError, match=match):
        sc.fit_site_correction(age, predicted, group=group)


def test_controls_labelled_hc_are_accepted() -> None:
    assert sc.fit_site_correction(AGES, LINE, group=["HC"] * 5).slope == pytest.approx(0.5)


def test_training_line_of_each_method() -> None:
    linear = AgeBiasCorrection("linear", {"slope": 0.7, "intercept": 9.0})
    beheshti = AgeBiasCorrection("beheshti", {"slope": -0.2, "intercept": 10.0})
    assert sc.training_line(linear) == (0.7, 9.0)
    assert sc.training_line(beheshti) == pytest.approx((0.8, 10.0))  # p = (1 - 0.2) age + 10
    with pytest.raises(ValueError, match="'quadratic'"):
        sc.training_line(AgeBiasCorrection("quadratic", {"intercept": 0, "age": 0, "age2": 0}))
    with pytest.raises(TypeError, match="AgeBiasCorrection, got tuple"):
        sc.training_line((0.7, 9.0))


# --- the calibration ----------------------------------------------------------------------------


def _site(rng: np.random.Generator, n: int, *, slope: float = 0.6, intercept: float = 0.0,
          noise: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    age = rng.uniform(50.0, 75.0, n)
    return age, slope * age + intercept + rng.normal(0.0, noise, n)


def test_residuals_are_leave_one_out_and_q_their_conformal_quantile(rng) -> None:
    age, predicted = _site(rng, 10)
    cal = sc.fit_site_calibration(age, predicted, site="HH", created="2026-12-07")
    expected = []
    for i in range(10):  # by hand: numpy's least-squares line on the other nine scans
        keep = np.arange(10) != i
        slope, intercept = np.polyfit(age[keep], predicted[keep], 1)
        expected.append(age[i] - (predicted[i] - intercept) / slope)
    assert np.sort(cal.interval.residuals) == pytest.approx(np.sort(expected))
    # level 0.9, n = 10: crepes takes the int(0.1 * 11) = 1st largest absolute residual
    assert cal.half_width == pytest.approx(np.max(np.abs(expected)))
    corrected, lower, upper = cal.predict(np.array([40.0]))
    assert corrected[0] == pytest.approx((40.0 - cal.correction.intercept) / cal.correction.slope)
    assert (upper - corrected)[0] == pytest.approx(cal.half_width)
    assert (corrected - lower)[0] == pytest.approx(cal.half_width)
    assert (cal.n, cal.level, cal.folds, cal.site) == (10, 0.9, 10, "HH")


@pytest.mark.filterwarnings("ignore:the controls' ages span")
def test_interval_covers_new_scans_of_the_site_at_its_level(rng) -> None:
    # 300 sites whose predictions are 26 years too young (slope 0.6), 10 controls each, prior
    # from a training line (slope 0.9) that does not fit them: coverage of 100 new scans each
    covered, widths = [], []
    for _ in range(300):
        age, predicted = _site(rng, 10, intercept=-10.0)
        cal = sc.fit_site_calibration(age, predicted, site="S", prior=(0.9, 5.0))
        new_age, new_predicted = _site(rng, 100, intercept=-10.0)
        _, lower, upper = cal.predict(new_predicted)
        covered.append(np.mean((lower <= new_age) & (new_age <= upper)))
        widths.append(cal.half_width)
    assert 0.85 <= np.mean(covered) <= 0.95
    # without recalibration, the training line's ages are 20-30 years off: nothing is covered
    assert np.mean(np.abs((new_predicted - 5.0) / 0.9 - new_age)) > 15


def test_calibration_needs_enough_scans_for_its_level(rng) -> None:
    age, predicted = _site(rng, 9)
    with pytest.raises(ValueError, match=r"level 0.9 needs at least 10 .* got 9"):
        sc.fit_site_calibration(age, predicted, site="HH")
    assert sc.fit_site_calibration(age, predicted, site="HH", level=0.8).n == 9


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"site": ""}, ValueError, "site must be a non-empty name"),
    ({"site": "HH", "folds": 1}, ValueError, "folds"),
    ({"site": "HH", "folds": 11}, ValueError, "folds"),
    ({"site": "HH", "level": 1.5}, ValueError, "level"),
    ({"site": "HH", "group": ["HC"] * 9 + ["AD"]}, ValueError, r"\['AD'\]"),
])
def test_bad_calibration_arguments_are_refused(rng, kwargs, error, match) -> None:
    age, predicted = _site(rng, 10)
    with pytest.raises(error, match=match):
        sc.fit_site_calibration(age, predicted, **kwargs)


def test_narrow_site_keeps_the_training_slope_in_every_fold(rng) -> None:
    age = rng.uniform(60.0, 64.0, 12)
    predicted = 0.6 * age - 10 + rng.normal(0, 2, 12)
    with pytest.warns(UserWarning, match="only the level"):
        cal = sc.fit_site_calibration(age, predicted, site="HH", prior=(0.9, 5.0))
    assert cal.correction.fitted == "intercept"
    assert cal.correction.slope == pytest.approx(0.9)
    expected = [age[i] - (predicted[i] - (np.mean(np.delete(predicted, i))
                                          - 0.9 * np.mean(np.delete(age, i)))) / 0.9
                for i in range(12)]
    assert np.sort(cal.interval.residuals) == pytest.approx(np.sort(expected))


# --- storage ------------------------------------------------------------------------------------


def test_json_round_trip_predicts_the_same(rng, tmp_path) -> None:
    age, predicted = _site(rng, 12)
    cal = sc.fit_site_calibration(age, predicted, site="HH", prior=(0.9, 5.0), folds=4,
                                  created="2026-12-07")
    path = cal.save(tmp_path / "site.json")
    data = json.loads(path.read_text())
    assert data["format"] == sc.SITE_CALIBRATION_FORMAT
    assert (data["n_scans"], data["site"], data["created"]) == (12, "HH", "2026-12-07")
    assert data["age_range"] == pytest.approx([age.min(), age.max()])
    back = sc.SiteCalibration.load(path)
    new = rng.uniform(20.0, 60.0, 7)
    for a, b in zip(cal.predict(new), back.predict(new)):
        assert a == pytest.approx(b)
    assert (back.site, back.created, back.folds, back.seed, back.correction.fitted) == (
        "HH", "2026-12-07", 4, 0, "slope")
    assert back.prior == pytest.approx((0.9, 5.0))
    assert (back.correction.slope, back.correction.intercept) == pytest.approx(
        (cal.correction.slope, cal.correction.intercept))
    with pytest.raises(FileExistsError):
        cal.save(path)  # never overwrites
    assert json.loads(path.read_text()) == data


def test_default_date_is_today_utc(rng) -> None:
    import datetime

    age, predicted = _site(rng, 10)
    created = sc.fit_site_calibration(age, predicted, site="HH").created
    today = datetime.datetime.now(datetime.UTC).date()
    assert abs((datetime.date.fromisoformat(created) - today).days) <= 1


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d.pop("interval"), "lacks the field 'interval'"),
    (lambda d: d.update(format="other/1"), "field 'format' must be"),
    (lambda d: d["correction"].update(slope=-1.0), "correction.slope"),
    (lambda d: d["correction"].update(fitted="both"), "correction.fitted"),
    (lambda d: d.update(created="yesterday"), "yesterday"),
    (lambda d: d.update(level=0.8), "level 0.8 differs"),
])
def test_malformed_files_name_the_file_and_field(rng, tmp_path, edit, match) -> None:
    age, predicted = _site(rng, 10)
    data = sc.fit_site_calibration(age, predicted, site="HH").to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        sc.SiteCalibration.load(path)
    assert str(path) in str(info.value)


def test_unreadable_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "site.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}.*cannot be read"):
        sc.SiteCalibration.load(path)


# --- the k-curve --------------------------------------------------------------------------------


def _shifted_site(rng: np.random.Generator, n: int = 40):
    """A site whose predictions keep the order of ages but sit about 35 years too young."""
    age = rng.uniform(23.0, 74.0, n)
    return age, 0.7 * age - 20.0 + rng.normal(0.0, 2.0, n)


@pytest.mark.filterwarnings("ignore:.*outside the fitting range")
def test_curve_site_calibration_restores_coverage_and_removes_the_gap(rng) -> None:
    age, predicted = _shifted_site(rng)
    interval = sc.ConformalInterval.fit(rng.normal(0.0, 3.0, 40), level=0.9)
    table = sc.calibration_curve(age, predicted, interval=interval, prior=(0.9, 5.0),
                                 ks=(5, 10, 20), repeats=30, seed=1)
    assert list(table["method"].unique()) == list(sc.CURVE_METHODS)
    assert list(table["k"].unique()) == [5, 10, 20]
    rows = table.set_index(["k", "method"])
    assert (table["n_eval"] == 40 - table["k"]).all()
    assert rows.loc[(10, "none"), "gap"] < -25 and rows.loc[(10, "none"), "coverage"] < 0.1
    site = rows.loc[(10, "site")]
    assert site["splits"] == 30 and abs(site["gap"]) < 2 and site["abs_gap"] < 3
    assert 0.8 <= site["coverage"] <= 1.0 and site["width"] > 0
    assert site["coverage_p10"] <= site["coverage"] <= site["coverage_p90"]
    assert site["mae"] < rows.loc[(10, "mean age"), "mae"]  # the model carries information
    assert np.isnan(rows.loc[(5, "site"), "coverage"])  # below 10 scans: no 90 % interval
    assert np.isfinite(rows.loc[(5, "site"), "mae"])
    assert np.isnan(rows.loc[(5, "mean age"), "coverage"])


def test_curve_none_is_the_model_read_as_is_by_hand(rng) -> None:
    # one split of 6 + 5 scans; the model's interval is predicted ± its quantile: the measures
    # of "none" are those of the raw predictions on the 5 held-apart scans, computed here
    age, predicted = _shifted_site(rng, 11)
    interval = sc.ConformalInterval.fit(np.linspace(-4.0, 4.0, 20), level=0.9)
    table = sc.calibration_curve(age, predicted, interval=interval, ks=(6,), repeats=1, seed=7)
    held = np.random.default_rng(7).permutation(11)[6:]
    y, p = age[held], predicted[held]
    q = float(interval.half_widths()[0])
    none = table.set_index("method").loc["none"]
    assert none["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert none["gap"] == pytest.approx(np.mean(p - y))
    assert none["r"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert none["width"] == pytest.approx(2 * q)
    assert none["coverage"] == pytest.approx(np.mean(np.abs(y - p) <= q))
    assert none["abs_gap"] == pytest.approx(abs(none["gap"]))
    assert np.isnan(none["gap_sd"])  # one split: no spread


def test_curve_mean_age_interval_by_hand() -> None:
    # 10 calibration ages 20..65 (mean 42.5); leave-one-out residuals (10 / 9) (a - 42.5), the
    # largest 25: the 90 % interval of 10 residuals is 42.5 ± 25 (crepes: int(0.1 * 11) = 1st)
    age = np.r_[np.arange(20.0, 70.0, 5.0), [30.0, 40.0, 50.0, 60.0, 70.0]]
    predicted = age.copy()
    table = sc.calibration_curve(age, predicted, ks=(10,), repeats=1, seed=0, min_eval=5)
    order = np.random.default_rng(0).permutation(15)
    cal, held = age[order[:10]], age[order[10:]]
    loo = cal - (cal.sum() - cal) / 9
    q = np.sort(np.abs(loo))[-1]
    mean = table.set_index("method").loc["mean age"]
    assert mean["width"] == pytest.approx(2 * q)
    assert mean["gap"] == pytest.approx(cal.mean() - held.mean())
    assert mean["coverage"] == pytest.approx(np.mean(np.abs(held - cal.mean()) <= q))


def test_curve_counts_refused_fits_and_no_interval_without_one(rng) -> None:
    age = rng.uniform(23.0, 74.0, 30)
    flat = rng.normal(40.0, 3.0, 30)  # predictions that do not rise with age
    table = sc.calibration_curve(age, flat, ks=(10,), repeats=20, seed=0).set_index("method")
    assert table.loc["refit", "splits"] < 20  # slopes <= 0 are refused, not divided by
    assert table.loc["site, own slope", "splits"] < 20
    assert np.isnan(table.loc["none", "coverage"])  # no model interval given
    assert table.loc["none", "splits"] == 20


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ks": (4, 10)}, "at least 5 scans"),
    ({"ks": (10, 20)}, r"22 scans are too few for k = 20.*n >= k \+ 5 = 25"),
    ({"ks": (10,), "min_eval": 15}, r"too few for k = 10.*at least 15 scans"),
    ({"ks": ()}, "non-empty sequence"),
    ({"ks": 10}, "non-empty sequence"),
    ({"ks": (10.5,)}, "ks"),
    ({"ks": (10,), "repeats": 0}, "repeats"),
    ({"ks": (10,), "level": 1.0}, "level"),
    ({"ks": (10,), "interval": "0.9"}, "ConformalInterval"),
])
def test_curve_refuses_bad_settings(rng, kwargs, message) -> None:
    age, predicted = _shifted_site(rng, 22)
    with pytest.raises((ValueError, TypeError), match=message):
        sc.calibration_curve(age, predicted, **kwargs)


def test_curve_refuses_bad_scans_and_a_mismatched_interval(rng) -> None:
    age, predicted = _shifted_site(rng, 30)
    with pytest.raises(ValueError, match="age and predicted must have one value per scan"):
        sc.calibration_curve(age, predicted[:-1])
    with pytest.raises(ValueError, match="age"):
        sc.calibration_curve(np.r_[age[:-1], np.nan], predicted)
    interval = sc.ConformalInterval.fit(rng.normal(0.0, 3.0, 40), level=0.8)
    with pytest.raises(ValueError, match="level 0.8, the curve at 0.9"):
        sc.calibration_curve(age, predicted, interval=interval, ks=(10,))
