"""Tests of brainage.analysis.clinical: brain-age-gap statistics against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from brainage.analysis import clinical
from brainage.analysis.clinical import ClinicalResults, ClinicalSettings

#: Small bootstrap: the tests check the mechanics, not the precision of the interval.
FAST = ClinicalSettings(n_boot=200)
N_GROUPS = {"HC": 30, "AD": 20, "PD": 20}


def make_predictions(rng: np.random.Generator, offsets: dict[str, float] | None = None,
                     noise: dict[str, float] | None = None) -> pd.DataFrame:
    """Synthetic predictions: gap = group offset + 2 * severity (patients) + model noise.

    Scores follow the latent severity (MMSE falls with it). Both models share subjects, age, sex
    and scores; ``noise`` sets each model's gap noise (years).
    """
    offsets = {"HC": 0.0, "AD": 8.0, "PD": 3.0} if offsets is None else offsets
    noise = {"rnc": 2.0, "l1": 4.0} if noise is None else noise
    rows = []
    for group, n in N_GROUPS.items():
        severity = rng.normal(size=n) if group != "HC" else np.zeros(n)
        age = rng.uniform(55, 85, size=n)
        sex = rng.choice(["F", "M"], size=n)
        scores = {s: np.full(n, np.nan) for s in ("mmse", "cdr_sb", "updrs3", "hoehn_yahr")}
        if group == "AD":
            scores["mmse"] = np.clip(np.round(22 - 3 * severity + rng.normal(size=n)), 0, 30)
            scores["cdr_sb"] = np.round(4 + 1.5 * severity + rng.normal(size=n), 1)
        if group == "PD":
            scores["updrs3"] = np.round(25 + 8 * severity + rng.normal(0, 4, size=n))
            stage = np.round(2 + 0.7 * severity + rng.normal(0, 0.3, n))
            scores["hoehn_yahr"] = np.clip(stage, 1, 5)
        for model, sd in noise.items():
            gap = offsets[group] + 2.0 * severity + rng.normal(0, sd, size=n)
            rows.append(pd.DataFrame({
                "participant_id": [f"sub-{group}{i:03d}" for i in range(n)],
                "split": "test" if group == "HC" else "clinical", "group": group, "age": age,
                "sex": sex, "model": model, "gap": gap + 0.2 * (70 - age), "corrected_gap": gap,
                **scores,
            }))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture
def predictions(rng: np.random.Generator) -> pd.DataFrame:
    return make_predictions(rng)


def _rank_residual_partial_spearman(frame: pd.DataFrame, x: str, y: str, covar: list[str]):
    """Independent partial Spearman: rank every variable, residualise ranks, Pearson r."""
    ranks = {c: stats.rankdata(frame[c].to_numpy()) for c in (x, y, *covar)}
    design = np.column_stack([np.ones(len(frame)), *(ranks[c] for c in covar)])  # (n, 1 + k)
    resid = {}
    for c in (x, y):
        beta, *_ = np.linalg.lstsq(design, ranks[c], rcond=None)
        resid[c] = ranks[c] - design @ beta
    r = stats.pearsonr(resid[x], resid[y]).statistic
    dof = len(frame) - 2 - len(covar)
    p = 2 * stats.t.sf(abs(r) * math.sqrt(dof / (1 - r**2)), dof)
    half = stats.norm.ppf(0.975) / math.sqrt(len(frame) - len(covar) - 3)
    return r, p, (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half))


@pytest.mark.parametrize("covar", [[], ["age"], ["age", "sex"]])
def test_partial_spearman_matches_rank_residualisation(rng, covar):
    frame = pd.DataFrame({"x": rng.normal(size=25), "age": rng.uniform(50, 90, 25),
                          "sex": rng.integers(0, 2, 25).astype(float)})
    frame["y"] = 0.5 * frame["x"] + 0.05 * frame["age"] + rng.normal(size=25)
    frame.loc[:4, "y"] = frame.loc[0, "y"]  # ties, ranked as averages by both computations
    got = clinical.partial_spearman(frame, "x", "y", covar)
    r, p, (low, high) = _rank_residual_partial_spearman(frame, "x", "y", covar)
    assert got["n"] == 25
    assert got["rho"] == pytest.approx(r, abs=1e-10)
    assert got["p"] == pytest.approx(p, rel=1e-8)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), abs=1e-9)


def test_score_correlations_match_independent_computation(predictions):
    table = clinical.gap_score_correlations(predictions, FAST)
    assert len(table) == 8 and table["estimable"].all()
    for _, row in table.iterrows():
        mask = (predictions["model"] == row["model"]) & (predictions["group"] == row["group"])
        frame = predictions[mask].assign(sex=lambda d: d["sex"].map({"F": 0.0, "M": 1.0}))
        r, p, _ = _rank_residual_partial_spearman(frame, "corrected_gap", row["score"],
                                                  ["age", "sex"])
        assert row["n"] == N_GROUPS[row["group"]]
        assert row["rho"] == pytest.approx(r, abs=1e-10)
        assert row["p"] == pytest.approx(p, rel=1e-8)


def test_missing_scores_are_excluded_per_test(predictions):
    first_four = (predictions["group"] == "AD") & (predictions["participant_id"] <= "sub-AD003")
    ad = predictions.index[first_four]
    predictions.loc[ad, "mmse"] = np.nan  # four AD subjects lose MMSE (both models' rows)
    table = clinical.gap_score_correlations(predictions, FAST).set_index(["model", "score"])
    assert table.loc[("rnc", "mmse"), "n"] == N_GROUPS["AD"] - 4
    assert table.loc[("rnc", "mmse"), "n_missing"] == 4
    assert table.loc[("rnc", "cdr_sb"), "n"] == N_GROUPS["AD"]  # other tests keep them
    sub = predictions[(predictions["model"] == "rnc") & (predictions["group"] == "AD")].dropna(
        subset=["mmse"])
    sub = sub.assign(sex=sub["sex"].map({"F": 0.0, "M": 1.0}))
    r, _, _ = _rank_residual_partial_spearman(sub, "corrected_gap", "mmse", ["age", "sex"])
    assert table.loc[("rnc", "mmse"), "rho"] == pytest.approx(r, abs=1e-10)


def test_ancova_matches_statsmodels(predictions):
    table = clinical.gap_ancova(predictions, FAST)
    for model in ("rnc", "l1"):
        data = predictions[predictions["model"] == model].assign(
            sex=lambda d: d["sex"].map({"F": 0.0, "M": 1.0}))
        fit = smf.ols("corrected_gap ~ C(group) + age + sex", data=data).fit()
        expected = anova_lm(fit, typ=2)
        rows = table[table["model"] == model].set_index("source")
        assert rows.loc["group", "F"] == pytest.approx(expected.loc["C(group)", "F"], rel=1e-9)
        assert rows.loc["group", "p"] == pytest.approx(expected.loc["C(group)", "PR(>F)"], rel=1e-9)
        assert rows.loc["age", "F"] == pytest.approx(expected.loc["age", "F"], rel=1e-9)
        assert rows.loc["group", "DF"] == 2
        assert rows.loc["group", "df_resid"] == int(expected.loc["Residual", "df"])


@pytest.mark.parametrize(("x", "y", "expected"), [
    # pooled SD sqrt(15/7) = 1.46385, d = -2.5 / 1.46385 = -1.70783, J = 1 - 3/27; se = 0.76028,
    # t(0.975, 7) = 2.36462
    ([1, 2, 3, 4], [3, 4, 5, 6, 7], (-1.5180668, -3.3158489, 0.2797153)),
    # pooled SD sqrt(2.5), d = 2 / 1.58114 = 1.26491, J = 0.8; se = 0.86718, t(0.975, 4) = 2.77645
    ([2, 4, 6], [1, 2, 3], (1.0119289, -1.3957470, 3.4196047)),
])
def test_hedges_g_hand_checked(x, y, expected):
    assert clinical.hedges_g(x, y) == pytest.approx(expected, abs=1e-6)


def test_hedges_g_rejects_too_few_values():
    with pytest.raises(ValueError, match=r"hedges_g needs >= 2 values.*n_x=1"):
        clinical.hedges_g([1.0], [1.0, 2.0])


def test_fdr_matches_statsmodels(rng):
    p = rng.uniform(0, 0.2, size=12)
    p[[3, 7]] = np.nan
    got = clinical.fdr_correct(p)
    expected = multipletests(p[~np.isnan(p)], method="fdr_bh")[1]
    assert np.isnan(got[[3, 7]]).all()
    np.testing.assert_allclose(got[~np.isnan(p)], expected, rtol=1e-12)


def test_fdr_rejects_p_outside_unit_interval():
    with pytest.raises(ValueError, match=r"pvalues must lie in \[0, 1\].*1\.5"):
        clinical.fdr_correct([0.01, 1.5])


def test_summary_fdr_family_is_all_clinical_tests(predictions):
    res = clinical.clinical_summary(predictions, settings=FAST)
    group_rows = res.ancova[res.ancova["source"] == "group"]
    raw = np.concatenate([group_rows["p"], res.posthoc["p"], res.correlations["p"]])
    adjusted = multipletests(raw, method="fdr_bh")[1]
    got = np.concatenate([group_rows["p_fdr"], res.posthoc["p_fdr"], res.correlations["p_fdr"]])
    np.testing.assert_allclose(got, adjusted, rtol=1e-12)
    assert res.ancova.loc[res.ancova["source"] != "group", "p_fdr"].isna().all()
    assert res.meta["fdr_family_size"] == raw.size == 2 + 6 + 8


def test_known_effect_detected(predictions):
    res = clinical.clinical_summary(predictions, settings=FAST)
    ad_hc = res.posthoc[res.posthoc["contrast"] == "AD vs HC"]
    assert (ad_hc["p"] < 0.05).all() and (ad_hc["g_ci_low"] > 0).all()
    assert (res.ancova.loc[res.ancova["source"] == "group", "p"] < 0.05).all()
    stats_ad = res.group_stats[res.group_stats["group"] == "AD"]
    assert ((stats_ad["ci_low"] < 8.0) & (stats_ad["ci_high"] > 8.0)).all()


def test_null_effect_not_flagged():
    null = make_predictions(np.random.default_rng(1), offsets={"HC": 0.0, "AD": 0.0, "PD": 0.0})
    res = clinical.clinical_summary(null, settings=FAST)
    assert (res.ancova.loc[res.ancova["source"] == "group", "p"] > 0.05).all()
    assert (res.posthoc["p_fdr"] > 0.05).all()


def test_not_estimable_with_three_ad_subjects(predictions):
    keep = ~((predictions["group"] == "AD") & (predictions["participant_id"] > "sub-AD002"))
    res = clinical.clinical_summary(predictions[keep], settings=FAST)
    ad = res.correlations[res.correlations["group"] == "AD"]
    assert not ad["estimable"].any() and ad["rho"].isna().all() and (ad["n"] == 3).all()
    assert ad["note"].str.contains("not estimable: n=3 complete AD subjects").all()
    assert res.posthoc["estimable"].all()  # 3 per group is enough for a contrast
    comparison = res.model_comparison[res.model_comparison["group"] == "AD"]
    assert not comparison["estimable"].any() and comparison["note"].str.contains("n=3").all()
    assert res.correlations.loc[res.correlations["group"] == "PD", "estimable"].all()


def test_small_group_left_out_of_ancova(predictions):
    keep = ~((predictions["group"] == "AD") & (predictions["participant_id"] > "sub-AD001"))
    res = clinical.clinical_summary(predictions[keep], settings=FAST)
    group_rows = res.ancova[res.ancova["source"] == "group"]
    assert group_rows["estimable"].all() and (group_rows["groups"] == "HC,PD").all()
    assert group_rows["note"].str.contains(r"excluded groups with n < 3: AD \(n=2\)").all()
    ad_contrasts = res.posthoc[res.posthoc["group_a"] == "AD"]
    assert not ad_contrasts["estimable"].any() and ad_contrasts["hedges_g"].isna().all()


def test_ancova_not_estimable_with_one_group(predictions):
    table = clinical.gap_ancova(predictions[predictions["group"] == "HC"], FAST)
    assert list(table["estimable"]) == [False, False]
    assert table["note"].str.contains("fewer than 2 groups with >= 3 complete subjects").all()


def test_scores_all_missing_not_estimable(predictions, tmp_path):
    predictions["updrs3"] = np.nan
    res = clinical.clinical_summary(predictions, settings=FAST)
    rows = res.correlations[res.correlations["score"] == "updrs3"]
    assert not rows["estimable"].any() and (rows["n"] == 0).all()
    assert (rows["n_missing"] == N_GROUPS["PD"]).all()
    assert rows["note"].str.contains("n=0 complete PD subjects with updrs3").all()
    assert rows["p_fdr"].isna().all() and res.meta["fdr_family_size"] == 2 + 6 + 6
    text = res.to_json(tmp_path / "clinical.json").read_text()
    assert "NaN" not in text


def test_json_round_trip_has_no_nan(predictions, tmp_path):
    truth = {"mean_gap": {"HC": 0.0, "AD": 8.0, "PD": 3.0}, "score_correlation": {"mmse": -0.8}}
    res = clinical.clinical_summary(predictions, truth=truth, settings=FAST)
    path = res.to_json(tmp_path)  # a folder receives clinical.json
    assert path == tmp_path / clinical.CLINICAL_FILE

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    content = json.loads(path.read_text(), parse_constant=reject)
    assert set(content) == {"meta", *ClinicalResults.TABLES}
    first_gap = content["truth_comparison"][0]
    assert first_gap["quantity"] == "mean_gap" and first_gap["score"] is None
    assert isinstance(first_gap["covered"], bool)
    back = ClinicalResults.from_json(path)
    for name in ClinicalResults.TABLES:
        pd.testing.assert_frame_equal(back.__getattribute__(name), getattr(res, name),
                                      check_dtype=False, check_exact=False, rtol=1e-12)
    assert back.meta["settings"]["n_boot"] == 200


def test_from_json_rejects_other_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"group_stats": []}))
    with pytest.raises(ValueError, match=r"other\.json: not a clinical results file, missing"):
        ClinicalResults.from_json(path)


def test_batched_partial_spearman_matches_pingouin(rng):
    values = rng.normal(size=(3, 15, 4))
    values[1, :, 3] = 1.0  # a constant covariate: pseudo-inverse ignores it, as pingouin does
    got = clinical._batched_partial_spearman(values)
    for b in range(3):
        frame = pd.DataFrame(values[b], columns=["x", "y", "c1", "c2"])
        covar = ["c1", "c2"] if b != 1 else ["c1"]
        assert got[b] == pytest.approx(clinical.partial_spearman(frame, "x", "y", covar)["rho"],
                                       abs=1e-10)
    values[2, :, 0] = 0.0
    assert np.isnan(clinical._batched_partial_spearman(values)[2])


def test_compare_models_seeded_and_consistent(predictions):
    first = clinical.compare_models(predictions, FAST, seed=3)
    again = clinical.compare_models(predictions, FAST, seed=3)
    other = clinical.compare_models(predictions, FAST, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["ci_low"], other["ci_low"])
    corr = clinical.gap_score_correlations(predictions, FAST).set_index(["model", "score"])
    for _, row in first.iterrows():
        assert row["rho_a"] == pytest.approx(corr.loc[("rnc", row["score"]), "rho"], abs=1e-12)
        assert row["rho_b"] == pytest.approx(corr.loc[("l1", row["score"]), "rho"], abs=1e-12)
        assert row["diff"] == pytest.approx(row["expected_sign"] * (row["rho_a"] - row["rho_b"]))
        assert row["ci_low"] <= row["ci_high"] and 0 < row["p"] <= 1
    assert set(first["better"]) <= {"rnc", "l1", "neither (CI covers 0)"}


def test_compare_models_finds_the_less_noisy_model():
    # L1's gap is pure noise around the group mean, RNC's follows severity closely
    data = make_predictions(np.random.default_rng(2), noise={"rnc": 0.5, "l1": 30.0})
    table = clinical.compare_models(data, FAST, seed=0)
    mmse = table.set_index("score").loc["mmse"]
    assert mmse["diff"] > 0 and mmse["ci_low"] > 0 and mmse["better"] == "rnc"


def test_compare_models_needs_both_models(predictions):
    table = clinical.compare_models(predictions[predictions["model"] == "rnc"], FAST)
    assert not table["estimable"].any()
    assert table["note"].str.contains(r"model\(s\) \['l1'\] absent").all()


def test_truth_comparison_coverage():
    group_stats = pd.DataFrame({"model": ["rnc", "rnc"], "group": ["AD", "HC"], "mean": [7.0, 0.5],
                                "ci_low": [6.0, np.nan], "ci_high": [9.0, np.nan],
                                "note": ["", "not estimable: n=1"]})
    correlations = pd.DataFrame({"model": ["rnc"], "group": ["AD"], "score": ["mmse"],
                                 "rho": [-0.4], "ci_low": [-0.6], "ci_high": [-0.1],
                                 "estimable": [True], "note": [""]})
    table = clinical.compare_with_truth(group_stats, correlations,
                                        {"AD": 8.1, "HC": 0.0, "mmse": -0.7})  # flat form
    assert list(table["covered"]) == [True, None, False]
    assert table["error"].tolist() == pytest.approx([7.0 - 8.1, 0.5, -0.4 + 0.7])
    assert "attenuated" in table["note"].iloc[2]
    score_settings = {"group": "AD", "mean": 21.0, "sd": 4.0, "corr": -0.7, "low": 0, "high": 30}
    nested = clinical.compare_with_truth(group_stats, correlations,
                                         {"score_correlation": {"mmse": score_settings}})
    assert nested["quantity"].tolist() == ["score_correlation"] and nested["truth"].iloc[0] == -0.7


@pytest.mark.parametrize(("truth", "message"), [
    ({"mean_gap": {"XX": 1.0}}, r"truth\['mean_gap'\] keys must be among .*'XX'"),
    ({"score_correlation": [0.5]}, r"truth\['score_correlation'\] must be a dict, got list"),
    ({"seed": 3}, r"truth holds no true value.*got keys \['seed'\]"),
])
def test_truth_comparison_rejects_bad_truth(predictions, truth, message):
    with pytest.raises((ValueError, TypeError), match=message):
        clinical.clinical_summary(predictions, truth=truth, settings=FAST)


def test_other_splits_left_out(predictions):
    train = predictions[predictions["group"] == "HC"].assign(
        split="train", participant_id=lambda d: d["participant_id"] + "x", corrected_gap=50.0)
    with_train = pd.concat([predictions, train], ignore_index=True)
    pd.testing.assert_frame_equal(clinical.gap_group_stats(with_train, FAST),
                                  clinical.gap_group_stats(predictions, FAST))


@pytest.mark.parametrize(("change", "error", "message"), [
    (lambda d: d.drop(columns="age"), ValueError, r"predictions lacks required columns \['age'\]"),
    (lambda d: d.assign(group="MCI"), ValueError, r"'group' must be one of .*got \['MCI'\]"),
    (lambda d: d.assign(sex="female"), ValueError, r"'sex' must be one of \['F', 'M'\].*'female'"),
    (lambda d: pd.concat([d, d.iloc[:1]]), ValueError, r"several rows per \(participant_id, "),
    (lambda d: d.to_dict(), TypeError, r"predictions must be a pandas DataFrame, got dict"),
    (lambda d: d.assign(mmse="high"), ValueError, r"predictions 'mmse' must be numeric"),
])
def test_bad_predictions_rejected(predictions, change, error, message):
    with pytest.raises(error, match=message):
        clinical.clinical_summary(change(predictions), settings=FAST)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"confidence": 1.5}, r"confidence must be in \(0, 1\), got 1\.5"),
    ({"models": ("rnc", "rnc")}, r"models must name two different models"),
    # covariates age, sex and site since issue 15 (item 6): 3 + 4 = 7
    ({"min_corr_n": 4}, r"min_corr_n must be >= len\(covariates\) \+ 4 = 7.*got 4"),
])
def test_bad_settings_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClinicalSettings(**kwargs)


@pytest.mark.parametrize("spelling", ["p_unc", "p-unc"])
def test_pingouin_column_either_spelling(spelling):
    table = pd.DataFrame({"Source": ["group"], spelling: [0.01]})
    assert clinical._pg_column(table, clinical._P_UNC) == spelling


def test_pingouin_column_missing_named():
    with pytest.raises(KeyError, match=r"none of the columns \['p_unc', 'p-unc'\]; got \['Sou"):
        clinical._pg_column(pd.DataFrame({"Source": ["group"]}), clinical._P_UNC)


def _with_truth(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions whose gaps are the true gap plus noise, and the matching truth table."""
    predictions = make_predictions(rng)
    subjects = predictions.drop_duplicates("participant_id")
    # the true gap: the rnc gap without its model noise is not kept, so draw one that drives
    # the scores in the same way (severity is recovered from MMSE and UPDRS-III here)
    severity = np.where(subjects["group"] == "AD", (22 - subjects["mmse"]) / 3,
                        np.where(subjects["group"] == "PD", (subjects["updrs3"] - 25) / 8, 0.0))
    offset = subjects["group"].map({"HC": 0.0, "AD": 8.0, "PD": 3.0}).to_numpy()
    true_gap = offset + 2.0 * np.nan_to_num(severity) + rng.normal(0, 1.0, len(subjects))
    truth = pd.DataFrame({"participant_id": subjects["participant_id"].to_numpy(),
                          "group": subjects["group"].to_numpy(), "age": subjects["age"].to_numpy(),
                          "biological_age": subjects["age"].to_numpy() + true_gap - 0.5,
                          "realised_biological_age": subjects["age"].to_numpy() + true_gap})
    return predictions, truth


def test_truth_from_simulation_is_the_same_statistic_on_the_true_gap(rng):
    # issue 15, item 3: the truth of a correlation is that of the true gap with the score,
    # adjusted as the estimate is, not the configured corr(latent severity, score)
    predictions, truth = _with_truth(rng)
    out = clinical.truth_from_simulation(truth, predictions, FAST)
    ad = predictions[(predictions["model"] == "rnc") & (predictions["group"] == "AD")]
    ad = ad.merge(truth[["participant_id", "realised_biological_age"]], on="participant_id")
    frame = ad.assign(true_gap=ad["realised_biological_age"] - ad["age"],
                      sex=ad["sex"].map({"F": 0.0, "M": 1.0}))
    r, _, _ = _rank_residual_partial_spearman(frame, "true_gap", "mmse", ["age", "sex"])
    assert out["score_correlation"]["mmse"] == pytest.approx(r, abs=1e-10)
    assert set(out["score_correlation"]) == {"mmse", "cdr_sb", "updrs3", "hoehn_yahr"}
    # issue 15, item 4: the mean gap is the realised one; the global part is kept beside it
    assert out["mean_gap"]["AD"] == pytest.approx(frame["true_gap"].mean())
    assert out["global_mean_gap"]["AD"] == pytest.approx(frame["true_gap"].mean() - 0.5)
    # only the analysed subjects: a training subject's truth does not enter
    extra = truth.iloc[:1].assign(participant_id="sub-train", realised_biological_age=500.0)
    again = clinical.truth_from_simulation(pd.concat([truth, extra]), predictions, FAST)
    assert again["mean_gap"] == pytest.approx(out["mean_gap"])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['biological_age'\]"):
        clinical.truth_from_simulation(truth.drop(columns="biological_age"), predictions)
    with pytest.raises(ValueError, match="2 analysed subjects are missing"):
        clinical.truth_from_simulation(truth.iloc[2:], predictions)


def test_a_perfect_predictor_is_covered_by_the_truth(rng):
    # the covered column is computed against the realised truth: a gap that is the true gap
    # has error 0 on every row, and every interval covers its truth
    predictions, truth = _with_truth(rng)
    perfect = predictions.merge(truth[["participant_id", "realised_biological_age"]],
                                on="participant_id")
    perfect["corrected_gap"] = perfect["realised_biological_age"] - perfect["age"]
    perfect = perfect.drop(columns="realised_biological_age")
    values = clinical.truth_from_simulation(truth, perfect, FAST)
    res = clinical.clinical_summary(perfect, truth=values, settings=FAST)
    table = res.truth_comparison
    assert len(table) == 2 * (3 + 4) and table["covered"].all()
    np.testing.assert_allclose(table["error"], 0.0, atol=1e-9)
    gaps = table[table["quantity"] == "mean_gap"]
    np.testing.assert_allclose(gaps["truth"] - gaps["truth_global"], 0.5)


def _confounded(rng: np.random.Generator, n: int = 60) -> pd.DataFrame:
    """Gaps with an age slope and a site offset; AD older than HC and mostly from siteC.

    The true AD effect is +5 years; site C adds 4 years to every gap and each year of age 0.2.
    """
    rows = []
    for group, ages, sites, effect in (("HC", (20, 90), [1 / 3] * 3, 0.0),
                                       ("AD", (60, 90), [0.1, 0.2, 0.7], 5.0)):
        age = rng.uniform(*ages, n)
        site = rng.choice(["siteA", "siteB", "siteC"], size=n, p=sites)
        sex = rng.choice(["F", "M"], size=n)
        gap = effect + 0.2 * (age - 55) + 4.0 * (site == "siteC") + rng.normal(0, 2, n)
        mmse = np.where(group == "AD", np.round(22 - 0.5 * gap + rng.normal(0, 2, n)), np.nan)
        rows.append(pd.DataFrame({
            "participant_id": [f"sub-{group}{i:03d}" for i in range(n)],
            "split": "test" if group == "HC" else "clinical", "group": group, "age": age,
            "sex": sex, "site": site, "model": "rnc", "gap": gap, "corrected_gap": gap,
            "mmse": mmse, "cdr_sb": np.nan, "updrs3": np.nan, "hoehn_yahr": np.nan}))
    data = pd.concat(rows, ignore_index=True)
    return pd.concat([data, data.assign(model="l1")], ignore_index=True)


def test_site_enters_the_ancova_one_hot(rng):
    # issue 15, item 6: site drives intensity, contrast and resolution, and patients and
    # controls come from the sites in different shares
    data = _confounded(rng)
    table = clinical.gap_ancova(data, FAST).query("model == 'rnc'").set_index("source")
    frame = data[data["model"] == "rnc"].assign(sex=lambda d: d["sex"].map({"F": 0.0, "M": 1.0}))
    expected = anova_lm(smf.ols("corrected_gap ~ C(group) + age + sex + C(site)",
                                data=frame).fit(), typ=2)
    assert table.loc["group", "F"] == pytest.approx(expected.loc["C(group)", "F"], rel=1e-9)
    assert table.loc["group", "df_resid"] == int(expected.loc["Residual", "df"])
    assert {"site_siteB", "site_siteC"} <= set(table.index)


def test_site_enters_the_partial_correlations(rng):
    data = _confounded(rng)
    row = clinical.gap_score_correlations(data, FAST).query(
        "model == 'rnc' and score == 'mmse'").iloc[0]
    assert row["covariates"] == "age,sex,site_siteB,site_siteC"
    frame = data[(data["model"] == "rnc") & (data["group"] == "AD")].assign(
        sex=lambda d: d["sex"].map({"F": 0.0, "M": 1.0}),
        site_siteB=lambda d: (d["site"] == "siteB").astype(float),
        site_siteC=lambda d: (d["site"] == "siteC").astype(float))
    r, p, _ = _rank_residual_partial_spearman(frame, "corrected_gap", "mmse",
                                              ["age", "sex", "site_siteB", "site_siteC"])
    assert row["rho"] == pytest.approx(r, abs=1e-10) and row["p"] == pytest.approx(p, rel=1e-8)


def test_site_absent_is_named_not_silent(predictions):
    row = clinical.gap_score_correlations(predictions, FAST).iloc[0]
    assert "covariate(s) ['site'] absent from predictions: not adjusted for" in row["note"]


def test_adjusted_effect_size_removes_age_and_site_confounding(rng):
    # issue 15, item 7: patients are older and come from another site mix, and the gap keeps
    # an age slope, so the unadjusted difference overstates the +5-year AD effect
    data = _confounded(rng)
    row = clinical.gap_posthoc(data, FAST).query("model == 'rnc' and contrast == 'AD vs HC'")
    row = row.iloc[0]
    assert row["mean_diff"] > 9  # 5 + 0.2 * (75 - 55) + 4 * (0.7 - 1/3): about 10.5
    assert row["adj_ci_low"] < 5.0 < row["adj_ci_high"]
    frame = data[data["model"] == "rnc"].assign(sex=lambda d: d["sex"].map({"F": 0.0, "M": 1.0}))
    fit = smf.ols("corrected_gap ~ C(group, Treatment('HC')) + age + sex + C(site)",
                  data=frame).fit()
    coef = fit.params["C(group, Treatment('HC'))[T.AD]"]
    assert row["adj_diff"] == pytest.approx(coef, rel=1e-9)
    ad, hc = frame.loc[frame["group"] == "AD", "corrected_gap"], frame.loc[
        frame["group"] == "HC", "corrected_gap"]
    pooled = math.sqrt((59 * ad.var() + 59 * hc.var()) / 118)
    assert row["adj_g"] == pytest.approx(coef / pooled * (1 - 3 / (4 * 120 - 9)), rel=1e-9)
    assert row["adj_g"] < row["hedges_g"]


@pytest.mark.parametrize(("model", "group", "score"), [("rnc", "AD", "mmse"),
                                                       ("l1", "PD", "updrs3")])
def test_partial_rank_residuals_correlate_as_the_tested_rho(predictions, model, group, score):
    residuals = clinical.partial_rank_residuals(predictions, model, group, score, FAST)
    tested = clinical.gap_score_correlations(predictions, FAST).query(
        "model == @model and group == @group and score == @score").iloc[0]
    assert len(residuals) == tested["n"]
    r = stats.pearsonr(residuals["gap_residual"], residuals["score_residual"]).statistic
    assert r == pytest.approx(tested["rho"], abs=1e-10)
    assert abs(residuals["gap_residual"].mean()) < 1e-9  # regressed with an intercept
    assert set(residuals["participant_id"]) <= set(
        predictions.loc[predictions["group"] == group, "participant_id"])


def test_partial_rank_residuals_empty_when_not_estimable_and_bad_score(predictions):
    few = predictions[~((predictions["group"] == "AD")
                        & (predictions["participant_id"] > "sub-AD003"))]
    residuals = clinical.partial_rank_residuals(few, "rnc", "AD", "mmse", FAST)
    assert residuals.empty and list(residuals.columns) == ["participant_id", "gap_residual",
                                                           "score_residual"]
    with pytest.raises(ValueError, match="score 'updrs3' is not tested within group 'AD'"):
        clinical.partial_rank_residuals(predictions, "rnc", "AD", "updrs3", FAST)
