"""Tests of the recovery checks of brainage.analysis.clinical: configured truths, power,
age-matched controls (issue 32)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainage.analysis import clinical
from tests.analysis.test_clinical import FAST, make_predictions


def _t_power(d: float, n1: int, n2: int, alpha: float = 0.05) -> float:
    """Two-sided two-sample t-test power from the noncentral t (independent of statsmodels)."""
    df = n1 + n2 - 2
    nc = d / np.sqrt(1 / n1 + 1 / n2)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def test_configured_correlations_reads_simulation_json():
    meta = {"true_correlations": {
        "updrs3": {"score_group": "PD", "configured": 0.6, "realised_sample": 0.67},
        "mmse": {"configured": -0.7}}}
    out = clinical.configured_correlations(meta)
    assert out["updrs3"] == {"configured": 0.6, "realised_sample": 0.67}
    assert out["mmse"]["configured"] == -0.7 and np.isnan(out["mmse"]["realised_sample"])
    assert clinical.configured_correlations({"seed": 0}) == {}


@pytest.mark.parametrize("meta, error, message", [
    ({"true_correlations": {"mmse": {"realised_sample": 0.5}}}, ValueError, "lacks 'configured'"),
    ([("mmse", 0.5)], TypeError, "simulation must be a dict"),
])
def test_configured_correlations_rejects_bad_input(meta, error, message):
    with pytest.raises(error, match=message):
        clinical.configured_correlations(meta)


def test_compare_with_truth_puts_configured_beside_realised(rng):
    predictions = make_predictions(rng)
    results = clinical.clinical_summary(predictions, settings=FAST, truth={
        "mean_gap": {"HC": 0.0, "AD": 8.0, "PD": 3.0},
        "score_correlation": {"updrs3": 0.38, "mmse": -0.5},
        "configured_correlation": {"updrs3": 0.6}})
    table = results.truth_comparison
    updrs = table[(table["score"] == "updrs3") & (table["model"] == "rnc")].iloc[0]
    assert updrs["configured"] == 0.6 and updrs["truth"] == 0.38
    assert table.loc[table["score"] == "mmse", "configured"].isna().all()
    assert table.loc[table["quantity"] == "mean_gap", "configured"].isna().all()


def test_gap_power_matches_the_noncentral_t():
    # d = 0.5 needs 64 per group for 80 % power (Cohen 1988, table 2.4.1)
    result = clinical.gap_power(4.0, 8.0, n_patients=40, n_controls=60)
    assert result["d"] == pytest.approx(0.5)
    assert result["n_per_group"] == 64
    assert result["power_now"] == pytest.approx(_t_power(0.5, 40, 60), abs=1e-3)
    needed = int(result["n_patients_needed"])
    assert _t_power(0.5, needed, 60) >= 0.8 - 1e-4 and _t_power(0.5, needed - 1, 60) < 0.8


def test_gap_power_says_when_the_controls_cap_it():
    # d = 0.2 with 10 controls: even infinitely many patients stay below 80 % power
    assert clinical.gap_power(1.0, 5.0, n_patients=10, n_controls=10)["n_patients_needed"] \
        == np.inf


@pytest.mark.parametrize("kwargs, message", [
    ({"effect": 3.0, "sd": 0.0, "n_patients": 40, "n_controls": 60}, "sd > 0"),
    ({"effect": np.nan, "sd": 8.0, "n_patients": 40, "n_controls": 60}, "effect must be finite"),
    ({"effect": 3.0, "sd": 8.0, "n_patients": 1, "n_controls": 60}, ">= 2"),
])
def test_gap_power_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        clinical.gap_power(**kwargs)


def test_correlation_power_known_value():
    # rho = 0.3 needs 85 subjects for 80 % power, two-sided alpha 0.05 (Fisher z)
    assert clinical.correlation_power(0.3, 40)["n_needed"] == 85
    # 3 covariates cost 3 subjects
    assert clinical.correlation_power(0.3, 40, n_covariates=3)["n_needed"] == 88
    z = np.arctanh(0.3) * np.sqrt(37)
    assert clinical.correlation_power(0.3, 40)["power_now"] == pytest.approx(
        stats.norm.sf(1.959964 - z) + stats.norm.cdf(-1.959964 - z), abs=1e-5)


@pytest.mark.parametrize("rho, n", [(1.0, 40), (np.nan, 40), (0.3, 3)])
def test_correlation_power_rejects_bad_input(rho, n):
    with pytest.raises(ValueError):
        clinical.correlation_power(rho, n)


def _matched_frame(rng, patient_ages, control_ages, patient_gap=5.0):
    rows = []
    for group, ages, offset in (("PD", patient_ages, patient_gap), ("HC", control_ages, 0.0)):
        for i, age in enumerate(ages):
            rows.append({"participant_id": f"sub-{group}{i:03d}", "model": "rnc", "group": group,
                         "split": "clinical" if group == "PD" else "test", "age": age,
                         "sex": "F", "corrected_gap": offset + rng.normal(0, 0.5)})
    return pd.DataFrame(rows)


def test_age_matched_comparison_recovers_a_known_difference(rng):
    patient_ages = rng.uniform(60, 80, size=15)
    controls = np.concatenate([patient_ages + rng.uniform(-1, 1, size=15),
                               rng.uniform(20, 40, size=30)])
    out = clinical.age_matched_comparison(_matched_frame(rng, patient_ages, controls), "rnc",
                                          "PD", settings=FAST)
    assert out["estimable"] and out["n_pairs"] == 15 and out["n_patients"] == 15
    assert abs(out["age_patients"] - out["age_controls"]) < 1.0
    assert out["diff"] == pytest.approx(5.0, abs=0.6)
    assert out["ci_low"] > 3.5 and out["ci_high"] < 6.5 and out["p"] < 1e-6


def test_age_matched_comparison_matches_without_replacement(rng):
    # three patients of 70 y, one control of 70 y, the rest far: one pair only
    frame = _matched_frame(rng, [70.0, 70.5, 69.5], [70.0, 20.0, 25.0, 30.0])
    out = clinical.age_matched_comparison(frame, "rnc", "PD", settings=FAST)
    assert out["n_pairs"] == 1 and not out["estimable"]
    assert "1 pairs within 3 years" in out["note"]


def test_age_matched_comparison_rejects_bad_caliper(rng):
    with pytest.raises(ValueError, match="caliper must be > 0"):
        clinical.age_matched_comparison(_matched_frame(rng, [70.0], [70.0]), "rnc", "PD",
                                        caliper=0.0)
