"""Tests of brainage.study.sentences: the book's result sentences, from hand-made results."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from brainage.analysis import clinical
from brainage.analysis.clinical import ClinicalResults
from brainage.data import simulate as sim
from brainage.study import sentences
from tests.analysis.test_clinical import FAST, _confounded, make_predictions


@pytest.fixture
def predictions(rng: np.random.Generator) -> pd.DataFrame:
    return make_predictions(rng)


def _results(p_group=0.004, p_mmse=0.01, p_updrs=0.2, estimable=True):
    ancova = pd.DataFrame([
        {"model": "rnc", "source": "group", "DF": 2, "df_resid": 50, "F": 7.254, "p": 0.001,
         "p_fdr": p_group, "estimable": estimable},
        {"model": "rnc", "source": "age", "DF": 1, "df_resid": 50, "F": 1.0, "p": 0.3,
         "p_fdr": math.nan, "estimable": True}])
    posthoc = pd.DataFrame([
        {"model": "rnc", "contrast": "AD vs HC", "adj_g": 1.234, "adj_g_ci_low": 0.51,
         "adj_g_ci_high": 1.96, "p_fdr": 0.0004, "estimable": True},
        {"model": "rnc", "contrast": "PD vs HC", "adj_g": 0.3, "adj_g_ci_low": -0.2,
         "adj_g_ci_high": 0.8, "p_fdr": 0.31, "estimable": True}])
    correlations = pd.DataFrame([
        {"model": "rnc", "group": "AD", "score": "mmse", "rho": -0.61, "p_fdr": p_mmse,
         "estimable": True},
        {"model": "rnc", "group": "PD", "score": "updrs3", "rho": 0.2, "p_fdr": p_updrs,
         "estimable": True},
        {"model": "rnc", "group": "PD", "score": "hoehn_yahr", "rho": math.nan, "p_fdr": math.nan,
         "estimable": False}])
    empty = pd.DataFrame()
    return ClinicalResults(empty, ancova, posthoc, correlations, empty, empty)


def test_group_effect_sentence_states_f_fdr_p_and_hedges_g():
    text = sentences.group_effect_sentence(_results())
    assert text.startswith("the group effect on the RNC gap was F(2, 50) = 7.25 (p_FDR = 0.004)")
    assert "AD against controls adjusted Hedges' g 1.2 (95% CI 0.51 to 2.0; p_FDR < 0.001)" in text
    assert "PD against controls adjusted Hedges' g 0.30 (95% CI -0.20 to 0.80; p_FDR = 0.310)" in text
    assert "not estimable" in sentences.group_effect_sentence(_results(estimable=False))


def test_fdr_sentence_says_which_survive():
    text = sentences.fdr_sentence(_results())
    assert "MMSE in AD (ρ = -0.61, p_FDR = 0.010) survived FDR correction" in text
    assert "those with MDS-UPDRS-III in PD (ρ = 0.20, p_FDR = 0.200) were not significant " \
           "after FDR correction" in text
    assert "Hoehn" not in text  # not estimable: neither survived nor failed
    none_survive = sentences.fdr_sentence(_results(p_mmse=0.3))
    assert "survived" not in none_survive and "MMSE in AD" in none_survive


def test_closing_sentence_follows_the_tests():
    worse = {"significant": True, "mae_diff": 0.8}
    assert "RNC estimated age less accurately" in sentences.closing_sentence(worse, _results())
    tie = {"significant": False, "mae_diff": -0.2}
    text = sentences.closing_sentence(tie, _results(p_group=0.2))
    assert "no evidence that RNC estimates age more accurately" in text
    assert "did not differ significantly" in text
    # AD's adjusted interval excludes 0, PD's includes it: only AD is called different
    text = sentences.closing_sentence(tie, _results())
    assert "differed from the controls' in AD after adjustment" in text
    assert "while in PD the adjusted interval included 0" in text
    assert "PD after adjustment" not in text


def _posthoc_results(pd_low: float, pd_high: float) -> ClinicalResults:
    results = _results()
    posthoc = pd.DataFrame([
        {"model": "rnc", "contrast": "AD vs HC", "adj_diff": 8.0, "adj_ci_low": 5.1,
         "adj_ci_high": 10.9, "adj_g": 1.2, "covariates": "age,sex,site_B", "estimable": True},
        {"model": "rnc", "contrast": "PD vs HC", "adj_diff": (pd_low + pd_high) / 2,
         "adj_ci_low": pd_low, "adj_ci_high": pd_high, "adj_g": 0.2,
         "covariates": "age,sex,site_B", "estimable": True}])
    return ClinicalResults(results.group_stats, results.ancova, posthoc, results.correlations,
                           results.model_comparison, results.truth_comparison)


def test_adjusted_text_does_not_call_an_interval_with_0_exceeded():
    text = sentences._adjusted_text(_posthoc_results(-2.4, 5.5), "rnc")
    assert text.startswith(" Adjusted for age, sex and site, the gap exceeded the controls' by "
                           "8.0 years in AD (95% CI 5.1 to 10.9")
    assert "while the difference of 1.6 years in PD (95% CI -2.4 to 5.5; adjusted Hedges' g " \
           "0.20) has an interval that includes 0" in text
    assert "exceeded the controls' by 8.0 years in AD (95% CI 5.1 to 10.9; adjusted Hedges' g " \
           "1.20) and" not in text
    both = sentences._adjusted_text(_posthoc_results(0.4, 5.5), "rnc")
    assert "and 3.0 years in PD (95% CI 0.4 to 5.5" in both and "includes 0" not in both
    closing = sentences.closing_sentence({"significant": False}, _posthoc_results(0.4, 5.5))
    assert "in AD and PD after adjustment" in closing and "included 0" not in closing


def test_augmentation_text_lists_the_defaults_and_overrides():
    text = sentences.augmentation_text({})
    for part in ("random affine (p = 0.8; rotations up to 8°", "flip along axis 0 (left-right; p = 0.5)",
                 "γ in [0.98, 1.02]", "Gaussian noise (p = 0.3; SD up to 0.03",
                 "the defaults of `AugmentConfig`)"):
        assert part in text, part
    changed = sentences.augmentation_text({"rotate_deg": 3.0})
    assert "rotations up to 3°" in changed and "with rotate_deg set by the profile" in changed
    with pytest.raises(TypeError):
        sentences.augmentation_text({"no_such": 1})


def test_schedule_and_bias_text():
    text = sentences.schedule_text({"optimizer": "adamw", "lr": 0.001, "weight_decay": 1e-4,
                                    "batch_size": 16, "head_epochs": 100, "head_lr": 0.01})
    assert text.startswith("AdamW (weight decay 0.000100) at a learning rate of 0.00100, "
                           "annealed by a cosine schedule over the stage's steps to 0.00000100")
    assert "the RNC head: 100 epochs at 0.0100" in text
    assert "constant" in sentences.schedule_text({"optimizer": "sgd", "lr": 0.1,
                                                  "schedule": "constant", "batch_size": 4})
    bias = sentences.bias_correction_text({"method": "linear", "n_fit": 60,
                                           "coefficients": {"slope": 0.8, "intercept": 10.0}})
    assert bias.startswith("ŷ′ = (ŷ − 10.0) / 0.800") and "60 validation scans" in bias


def test_site_accuracy_and_gap_age_correlation(rng):
    age = rng.uniform(20, 80, 40)
    test = pd.DataFrame({"model": "rnc", "site": np.repeat(["siteA", "siteB"], 20), "age": age,
                         "predicted": age + np.r_[np.full(20, 2.0), np.full(20, -5.0)]})
    sites = sentences.site_accuracy(test, n_boot=200)
    assert list(sites["site"]) == ["siteA", "siteB"] and list(sites["n"]) == [20, 20]
    assert np.allclose(sites["mae"], [2.0, 5.0])
    one = sentences.site_accuracy(test.iloc[:21], n_boot=200)
    assert one.loc[one["site"] == "siteB", "ci_low"].isna().all()  # one scan: no CI
    regressed = age.mean() + 0.5 * (age - age.mean())  # regression to the mean
    gaps = pd.DataFrame({"model": "l1", "age": age, "gap": regressed - age,
                         "corrected_gap": rng.normal(0, 1, 40)})
    table = sentences.gap_age_correlation(gaps).set_index("gap")
    assert table.loc["raw", "r"] == pytest.approx(-1.0)
    assert abs(table.loc["bias-corrected", "r"]) < 0.5
    assert table.loc["bias-corrected", "ci_low"] < table.loc["bias-corrected", "r"]
    with pytest.raises(ValueError, match="lacks the column"):
        sentences.site_accuracy(test.drop(columns="site"))


def test_alignment_by_site_and_sentence():
    table = pd.DataFrame({"site": ["A"] * 4 + ["B"] * 4,
                          "registration_misfit_mm": [6.0, 5.8, 5.6, 4.9, 3.0, 3.1, 3.2, 3.3]})
    by_site = sentences.alignment_by_site(table, 5.0)
    assert list(by_site["failed"]) == [3, 0] and list(by_site["n"]) == [4, 4]
    eta = sentences.eta_squared(table["registration_misfit_mm"], table["site"])
    assert 0.8 < eta < 1
    text = sentences.alignment_sentence(by_site, 5.0, simulated=True, eta_squared=eta)
    assert text.startswith("Scans failing the registration QC by site (A: 3 of 4 above 5 mm")
    assert "not misregistration" in text and "% of the figures' variance" in text
    assert "misregistration" not in sentences.alignment_sentence(by_site, 5.0, simulated=False)
    truth = pd.DataFrame({"site": ["A", "A", "B"], "rotation_x_deg": [3.0, 1.0, 0.0],
                          "rotation_y_deg": [4.0, 0.0, 0.0], "rotation_z_deg": [0.0, 0.0, 2.0]})
    rotation = sentences.pose_by_site(truth)
    assert rotation.to_dict() == {"A": 3.0, "B": 2.0}  # medians of 5 and 1; of 2
    text = sentences.alignment_sentence(by_site, 5.0, simulated=True, rotation=rotation)
    assert "(median head rotation A 3.0°, B 2.0°)" in text
    with pytest.raises(ValueError, match="lacks the column"):
        sentences.pose_by_site(truth.drop(columns="site"))


# moved from tests/analysis/test_clinical.py with summary_sentence (issue 27, item 4)
def test_summary_sentence_with_patients_names_every_group_and_score(predictions):
    results = clinical.clinical_summary(predictions, seed=0, settings=FAST)
    text = sentences.summary_sentence(results, "rnc")
    stats = results.group_stats.query("model == 'rnc'").set_index("group")
    assert text.startswith(
        f"The bias-corrected gap of the RNC model averaged {stats.loc['HC', 'mean']:.1f} years in "
        f"healthy test subjects (n = 30), {stats.loc['AD', 'mean']:.1f} years in AD (n = 20) and "
        f"{stats.loc['PD', 'mean']:.1f} years in PD (n = 20).")
    mmse = results.correlations.query("model == 'rnc' and group == 'AD' and score == 'mmse'").iloc[0]
    p = "< 0.001" if mmse["p_fdr"] < 0.001 else f"= {mmse['p_fdr']:.3f}"
    assert (f"Within AD, the gap's partial Spearman correlation was rho = {mmse['rho']:.2f} (95% "
            f"CI {mmse['ci_low']:.2f} to {mmse['ci_high']:.2f}, FDR p {p}, "
            f"n = 20) with MMSE and rho = ") in text
    assert re.search(r"Within PD, the gap's partial Spearman correlation was rho = \S+ \(95% CI "
                     r"[^)]*\) with MDS-UPDRS-III and rho = [^)]*\) with Hoehn and Yahr stage\.$",
                     text)


def test_summary_sentence_without_patients(predictions):
    controls = predictions[predictions["group"] == "HC"]
    results = clinical.clinical_summary(controls, seed=0, settings=FAST)
    hc = results.group_stats.query("model == 'l1' and group == 'HC'").iloc[0]
    assert sentences.summary_sentence(results, "l1") == (
        "This dataset has no AD or PD patients, so the clinical part of the question was not "
        f"addressed; the bias-corrected gap of the L1 model averaged {hc['mean']:.1f} years in "
        "healthy test subjects (n = 30).")
    with pytest.raises(ValueError, match=r"model 'cnn' has no rows in group_stats; models: "
                                         r"\['l1', 'rnc'\]"):
        sentences.summary_sentence(results, "cnn")


def test_summary_sentence_reports_a_correlation_without_estimate(predictions):
    few = predictions[(predictions["group"] != "AD") | predictions["participant_id"].isin(
        [f"sub-AD{i:03d}" for i in range(3)])]
    results = clinical.clinical_summary(few, seed=0, settings=FAST)
    assert "Within AD, the gap's partial Spearman correlation was not estimable (n = 3) with MMSE" in (
        sentences.summary_sentence(results, "rnc"))


def test_summary_sentence_gives_the_adjusted_contrasts(predictions):
    results = clinical.clinical_summary(predictions, seed=0, settings=FAST)
    text = sentences.summary_sentence(results, "rnc")
    ad = results.posthoc.query("model == 'rnc' and contrast == 'AD vs HC'").iloc[0]
    assert (f" Adjusted for age and sex, the gap exceeded the controls' by "
            f"{ad['adj_diff']:.1f} years in AD (95% CI {ad['adj_ci_low']:.1f} to "
            f"{ad['adj_ci_high']:.1f}; adjusted Hedges' g {ad['adj_g']:.2f}) and ") in text
    with_site = clinical.clinical_summary(_confounded(np.random.default_rng(0)), settings=FAST)
    assert "Adjusted for age, sex and site, the gap" in sentences.summary_sentence(with_site)


def test_p_values_in_sentences_share_the_tables_formatter():
    # issue 27, item 4: one p-value formatter; an FDR p below 0.001 reads "< 0.001", not "0.000"
    # or three significant digits, and a missing one reads "not estimable"
    text = sentences.group_effect_sentence(_results(p_group=0.00012))
    assert "(p_FDR < 0.001)" in text
    assert "(p_FDR not estimable)" in sentences.group_effect_sentence(_results(p_group=math.nan))
    results = _results(p_mmse=0.01234)
    results.correlations["ci_low"], results.correlations["ci_high"] = -0.8, -0.3
    results.correlations["n"] = 20
    assert sentences.correlation_text(results, "rnc", "AD", "mmse") == (
        "rho = -0.61 (95% CI -0.80 to -0.30, FDR p = 0.012, n = 20)")


# moved from tests/data/test_simulate.py with model_summary (issue 27, item 4)
def test_simulation_model_table_reads_the_configuration():
    # the book's Methods table of the ageing, anatomy and scanner model comes from here
    table = sentences.simulation_model_table(sim.SimulationConfig()).set_index("quantity")["value"]
    assert table.iloc[0] == "0.2 / 0.5 / 0.55"  # whole-brain %/y at 35 / 60 / 80
    changed = sentences.simulation_model_table({"ageing": {"brain_rate": [[20, 0], [60, 0.01]]}})
    assert changed["value"].iloc[0] == "0.38 / 1 / 1"
    truth = pd.DataFrame({"tiv_cm3": [1500.0, 1600.0, 1700.0, 1800.0],
                          "sex": ["F", "F", "M", "M"]})
    realised = sentences.simulation_model_table(sim.SimulationConfig(), truth)["value"].iloc[-1]
    assert realised.startswith("1650,") and realised.endswith("men over women 1.13")  # 1750 / 1550


def test_simulation_model_table_refuses_a_bad_configuration():
    with pytest.raises(sim.SimulationConfigError, match="brain_rate"):
        sentences.simulation_model_table({"ageing": {"brain_rate": "fast"}})


# --- issue 32: saliency truth test, Grad-RAM claim, recovery sentences ------------------------

def _truth_table(diff_rnc: float, p_rnc: float, p_l1: float = 0.9) -> pd.DataFrame:
    return pd.DataFrame([
        {"model": "rnc", "median": 0.562, "ci_low": 0.55, "ci_high": 0.57, "p_half": 1e-6,
         "diff_null": diff_rnc, "diff_low": diff_rnc - 0.01, "diff_high": diff_rnc + 0.01,
         "p_null": p_rnc, "p_null_holm": min(1.0, 2 * p_rnc)},
        {"model": "l1", "median": 0.559, "ci_low": 0.55, "ci_high": 0.57, "p_half": 1e-6,
         "diff_null": -0.014, "diff_low": -0.02, "diff_high": -0.004, "p_null": p_l1,
         "p_null_holm": min(1.0, 2 * p_l1)},
        {"model": "permuted", "median": 0.573, "ci_low": 0.56, "ci_high": 0.58, "p_half": 1e-6,
         "diff_null": math.nan, "diff_low": math.nan, "diff_high": math.nan, "p_null": math.nan,
         "p_null_holm": math.nan}])


def test_saliency_truth_sentence_leads_with_the_null():
    text = sentences.saliency_truth_sentence(_truth_table(-0.011, 0.99), "integrated-gradients")
    assert "RNC 0.56 (95% CI 0.55 to 0.57) and L1 0.56" in text
    assert "above 0.5 (no preference)" in text
    assert "permuted ages, which knows nothing of age, reached 0.57" in text
    assert "neither model's maps found them better than that null" in text
    assert "p = 1" not in text
    better = sentences.saliency_truth_sentence(_truth_table(0.05, 0.001), "Grad-RAM")
    assert "only RNC's maps found them better than that null" in better
    assert "RNC +0.050 (95% CI 0.040 to 0.060)" in better


def _differences(auc: float, entropy: float) -> pd.DataFrame:
    return pd.DataFrame([
        {"measure": "auc", "median_a": 0.6, "median_b": 0.6 - auc, "diff": auc,
         "ci_low": auc - 0.01, "ci_high": auc + 0.01, "n": 60},
        {"measure": "entropy", "median_a": 0.9, "median_b": 0.9 - entropy, "diff": entropy,
         "ci_low": entropy - 0.01, "ci_high": entropy + 0.01, "n": 60}])


def test_gradram_claim_sentence_verdicts():
    null = _truth_table(-0.011, 0.99)
    assert "is not reproduced here: no interval" in sentences.gradram_claim_sentence(
        _differences(0, 0), null)
    spread_only = sentences.gradram_claim_sentence(_differences(0.0, 0.05), null)
    assert "is not reproduced here: RNC's Grad-RAM maps are more spread out, but they favour " \
           "the simulated ageing regions no more than L1's and no better than the permuted-age " \
           "network" in spread_only
    worse = sentences.gradram_claim_sentence(_differences(-0.1, 0.05), null)
    assert "favour the simulated ageing regions less than L1's" in worse
    partly = sentences.gradram_claim_sentence(_differences(0.05, 0.0), null)
    assert "is only partly reproduced here" in partly and "not more spread out" in partly
    full = sentences.gradram_claim_sentence(_differences(0.05, 0.05), _truth_table(0.05, 0.001))
    assert "is reproduced here" in full
    assert "normalised entropy 0.9 against 0.85 (paired difference +0.05, 95% CI 0.040 to " \
           "0.060)" in full


def test_disease_saliency_sentence_counts_holm_survivors():
    own = pd.DataFrame([
        {"model": "RNC", "patients": "AD", "patients median AUC": 0.6,
         "controls median AUC": 0.5, "p": 0.01, "p (Holm)": 0.04},
        {"model": "L1", "patients": "PD", "patients median AUC": 0.52,
         "controls median AUC": 0.5, "p": 0.03, "p (Holm)": 0.09}])
    text = sentences.disease_saliency_sentence(own)
    assert text.startswith("after Holm correction over the 2 model and disease comparisons, 1 "
                           "showed")
    assert "L1 PD: median AUC 0.52 against 0.50, p_Holm = 0.090" in text


def test_pd_recovery_sentence_says_missed_and_power():
    truth = pd.DataFrame([
        {"quantity": "score_correlation", "model": "rnc", "group": "PD", "score": "hoehn_yahr",
         "configured": 0.6, "estimate": 0.06, "truth": 0.38, "covered": False},
        {"quantity": "mean_gap", "model": "rnc", "group": "PD", "score": None,
         "configured": math.nan, "estimate": 5.1, "truth": 3.2, "covered": True}])
    power = {"effect": 3.2, "sd": 8.7, "d": 0.37, "power_now": 0.43, "n_per_group": 116}
    text = sentences.pd_recovery_sentence(truth, power, {"rho": 0.38, "n_needed": 56,
                                                         "power_now": 0.64})
    assert text.startswith("PD is a missed recovery, not an absent effect")
    assert "Hoehn and Yahr stage 0.38" in text and "configured to correlate 0.6" in text
    assert "(the interval of RNC Hoehn and Yahr stage excludes the truth)" in text
    assert "43 % power for it, and 80 % power needs about 116 patients" in text


def test_matched_and_coverage_sentences():
    rows = pd.DataFrame([{"model": "rnc", "group": "PD", "estimable": True, "diff": 2.3,
                          "ci_low": -2.6, "ci_high": 7.3, "n_pairs": 29, "n_patients": 40,
                          "caliper": 3.0, "age_patients": 66.6, "age_controls": 65.5,
                          "note": ""},
                         {"model": "rnc", "group": "AD", "estimable": False, "diff": math.nan,
                          "ci_low": math.nan, "ci_high": math.nan, "n_pairs": 1,
                          "n_patients": 40, "caliper": 3.0, "age_patients": math.nan,
                          "age_controls": math.nan, "note": "1 pairs within 3 years"}])
    text = sentences.matched_sentence(rows)
    assert "+2.3 years in PD for RNC (95% CI -2.6 to 7.3; 29 of 40 patients" in text
    assert "RNC AD: not estimable (1 pairs within 3 years)" in text
    coverage = pd.DataFrame([{"model": "rnc", "group": "PD", "coverage": 0.85, "ci_low": 0.70,
                              "ci_high": 0.94, "n": 40}])
    text = sentences.patient_coverage_sentence(coverage, 0.9)
    assert "90 % coverage is guaranteed only for scans exchangeable with the calibration" in text
    assert "RNC PD 0.85 (95% CI 0.70 to 0.94, n = 40)" in text


# --- site calibration on k real scans (issue 29) -----------------------------------------------


def _curves(rng: np.random.Generator, noise: float) -> pd.DataFrame:
    """calibration_curve tables of two models on a site ~35 years too young (``noise``: SD of
    the predictions around their line; large noise leaves each split's mean gap large)."""
    from brainage.analysis.site_calibration import calibration_curve
    from brainage.analysis.uncertainty import ConformalInterval

    age = rng.uniform(23.0, 74.0, 40)
    interval = ConformalInterval.fit(rng.normal(0.0, 3.0, 40), level=0.9)
    tables = []
    for model in ("rnc", "l1"):
        predicted = 0.7 * age - 20.0 + rng.normal(0.0, noise, age.size)
        tables.append(calibration_curve(age, predicted, interval=interval, prior=(0.9, 5.0),
                                        ks=(5, 10, 20), repeats=40, seed=0).assign(model=model))
    return pd.concat(tables, ignore_index=True)


@pytest.mark.filterwarnings("ignore:.*outside the fitting range")
def test_calibration_goal_sentence_met(rng) -> None:
    table = _curves(rng, noise=1.0)
    text = sentences.calibration_goal_sentence(table, k=10)
    site = table[(table["k"] == 10) & (table["method"] == "site")].set_index("model")
    assert site["coverage"].between(0.85, 0.95).all() and (site["abs_gap"] <= 3).all()
    assert text.startswith("Site calibration on 10 of the real scans, measured on the others "
                           "(40 random splits). RNC: 90 % interval coverage ")
    assert text.count("(goal 0.85-0.95: met)") == 2 and text.count("(goal at most 3: met;") == 2
    assert "missed" not in text
    assert f"coverage {site.loc['rnc', 'coverage']:.2f}" in text
    none = table[(table["k"] == 10) & (table["method"] == "none")].set_index("model")
    assert f"coverage {none.loc['l1', 'coverage']:.2f} and mean gap {none.loc['l1', 'gap']:+.1f} years uncalibrated" in text


@pytest.mark.filterwarnings("ignore:.*outside the fitting range")
def test_calibration_goal_sentence_missed(rng) -> None:
    table = _curves(rng, noise=25.0)  # calibrated, but each split's mean gap stays large
    site = table[(table["k"] == 10) & (table["method"] == "site")].set_index("model")
    assert (site["abs_gap"] > 3).all()
    text = sentences.calibration_goal_sentence(table, k=10)
    assert text.count("(goal at most 3: missed;") == 2
    pct = f"{100 * site.loc['rnc', 'gap_within_3']:.0f} % of splits"
    assert pct in text
    low = table.copy()
    low.loc[(low["k"] == 10) & (low["method"] == "site") & (low["model"] == "l1"),
            "coverage"] = 0.7
    assert "coverage 0.70 (goal 0.85-0.95: missed)" in sentences.calibration_goal_sentence(
        low, k=10)
    # k = 5 is below a 90 % interval's minimum: no interval, which misses the coverage goal
    assert sentences.calibration_goal_sentence(table, k=5).count(
        "interval coverage no interval (goal 0.85-0.95: missed)") == 2


def test_calibration_goal_sentence_compares_with_the_mean_age(rng) -> None:
    table = _curves(rng, noise=1.0)
    at10 = table[table["k"] == 10]
    mean_mae = float(at10.loc[at10["method"] == "mean age", "mae"].iloc[0])
    site = at10[at10["method"] == "site"].set_index("model")["mae"]
    text = sentences.calibration_goal_sentence(table, k=10)
    assert (f"own mean age, which reads no scan, has MAE {mean_mae:.1f} years on the others "
            f"against RNC {site['rnc']:.1f}, L1 {site['l1']:.1f} years calibrated") in text
    if (site < mean_mae).all():  # the synthetic site orders its ages: both beat the mean age
        assert f"RNC is lower by {mean_mae - site['rnc']:.1f} years" in text
    worse = table.copy()
    worse.loc[worse["method"] == "mean age", "mae"] = 0.5  # the mean age better than any model
    assert sentences.calibration_goal_sentence(worse, k=10).endswith(
        "calibrated: no calibrated model is more accurate than the site's mean age.")
    assert "is lower by" not in sentences.calibration_goal_sentence(worse, k=10)


def test_calibration_goal_sentence_and_summary_refuse_a_missing_k(rng) -> None:
    table = _curves(rng, noise=1.0)
    with pytest.raises(ValueError, match=r"no site calibration of 'rnc' at k = 15.*\[5, 10, 20\]"):
        sentences.calibration_goal_sentence(table, k=15)
    with pytest.raises(ValueError, match="no row at k = 15"):
        sentences.calibration_summary(table, k=15)


def test_calibration_summary_names_methods_and_keeps_the_mean_age_once(rng) -> None:
    table = _curves(rng, noise=1.0)
    summary = sentences.calibration_summary(table, k=10)
    assert summary[["model", "method"]].values.tolist() == [
        ["RNC", "model as trained"], ["RNC", "plain linear refit"], ["RNC", "site calibration"],
        ["no model", "the k scans' mean age"], ["L1", "model as trained"],
        ["L1", "plain linear refit"], ["L1", "site calibration"]]
    site = table[(table["k"] == 10) & (table["method"] == "site") & (table["model"] == "l1")]
    assert summary.iloc[6]["mae"] == pytest.approx(site["mae"].iloc[0])
