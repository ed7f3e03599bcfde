# %% [markdown]
# # Evaluation
#
# Both models predict the age of every validation, test and patient scan. The brain-age gap
# (predicted minus chronological age) regresses towards the mean: young brains are predicted
# older and old brains younger. That age bias is fitted on the **validation split only** and
# applied to test and patient scans. The validation split has three jobs: it selected each
# model's checkpoint (Training), it fits the age-bias correction, and it calibrates the
# prediction intervals whose coverage is reported below; so the correction and the intervals
# are fitted on the very scans each model was chosen on. The test split and the patients take
# part in none of them. Accuracy is reported on the **test split**, which no model or
# correction has seen, with 95% bootstrap confidence intervals; RNC and L1 are compared on the
# same test subjects with a paired test. Corrected accuracy is reported only for a correction
# that does not use the test subject's own age (the default linear one): the Beheshti and
# quadratic corrections subtract an offset computed from that age, which makes their corrected
# MAE and $R^2$ against it circular. Every prediction also carries a calibrated interval and an
# out-of-distribution flag (see the last sections).

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
seed = 0
n_boot = 2000
bias_method = "linear"
age_bins = [20, 30, 40, 50, 60, 70, 80, 90, 101]
interval_level = 0.9
interval_bins = 3
# test-retest: simulated rescans of this many test-split controls and patients (0: none)
rescan_controls = 30
rescan_patients = 20
rescan_jobs = 1
# predict the shared real scans beside the checkout (../shared/data/ixi10, ixi40) when present
real_scans_check = True
# site calibration on k of the real scans, measured on the others (random splits)
calibration_ks = [5, 10, 20]
calibration_repeats = 200

# %%
import json
import time

import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.analysis import benchmark, evaluation, metrics, uncertainty
from brainage.inference.model_folder import (
    BIAS_CORRECTION_FILE,
    CHECKPOINT_FILE,
    record_test_error,
)
from brainage.study import figures, runs, training, trust
from brainage.study.profiles import resolve_path
from brainage.study.runs import RunFolder
from brainage.study.sentences import bias_correction_text, gap_age_correlation, site_accuracy
from brainage.study.tables import format_number, p_text, report_table

run = RunFolder(resolve_path(run_dir))
cohort = run.cohort()
models = {name: run.models / name / CHECKPOINT_FILE for name in ("rnc", "l1")}
features = {}  # each model's feature statistics of the same scans, from the same forward pass
raw = runs.predict_run(run, models, features=features)
predictions, corrections = evaluation.correct_predictions(raw, method=bias_method)
for name, correction in corrections.items():
    (run.models / name / BIAS_CORRECTION_FILE).write_text(json.dumps(correction.to_dict(), indent=2))
start = time.perf_counter()  # intervals calibrated on the validation split, OOD scores
predictions, trusts = trust.calibrate_run(run, predictions, corrections, features,
                                          settings=trust.IntervalSettings(
                                              level=interval_level, n_bins=interval_bins, seed=seed))
trust_seconds = time.perf_counter() - start
predictions.to_csv(run.predictions_csv, index=False)
counts = predictions.groupby(["split", "model"]).size().unstack("model")
counts.columns = [c.upper() for c in counts.columns]
glue("tab_03_counts", report_table(counts[["RNC", "L1"]], index="split", order=["split"]),
     display=False)

# %% [markdown]
# ```{glue:figure} tab_03_counts
# :name: tab-03-counts
#
# Number of scans each model predicted, by split (validation, test and patients).
# ```

# %% [markdown]
# ## Test-set accuracy

# %%
truth = run.ground_truth()  # simulated cohort: the true biological ages; real data: None
train_ages = cohort.loc[cohort["split"] == "train", "age"].to_numpy()
results = evaluation.evaluate_predictions(predictions, train_ages=train_ages,
                                          truth=None if truth is None else truth[0],
                                          n_boot=n_boot, seed=seed, corrections=corrections)
run.metrics_json.write_text(json.dumps(results, indent=2))
# the card carries each head's test error: `brainage predict` prints it beside the domain
record_test_error(run.models, {
    name: {"mae_years": kinds["raw"]["mae"]["value"], "n": results["n_test"],
           "simulated": bool(run.dataset_info().get("simulated", False))}
    for name, kinds in results["models"].items()})

rows = []
statistics = ("mae", "rmse", "r2", "pearson_r")
for name, kinds in results["models"].items():
    for kind, m in kinds.items():
        row = {"model": name.upper(), "predicted age": kind, "note": m.get("omitted", "")}
        for k in statistics:
            value = m.get(k, {})
            row.update({k: value.get("value", float("nan")), f"{k}_low": value.get("ci_low"),
                        f"{k}_high": value.get("ci_high")})
        rows.append(row)
table = pd.DataFrame(rows)
floors = pd.DataFrame([{"reference": "mean-age predictor (training mean)",
                        "mae": results["baselines"]["mean_age_mae"]}])
if truth is not None:  # simulated: the true biological age b = a + delta of each test subject
    simulator = truth[1]["config"]
    sigma_bio, prior = simulator["sigma_bio"], tuple(simulator["hc_age_range"])
    tested = (predictions[predictions["split"] == "test"].drop_duplicates("participant_id")
              .merge(truth[0][["participant_id", "biological_age"]], on="participant_id"))
    floor_mae = float((metrics.posterior_median_age(tested["biological_age"], sigma_bio, prior)
                       - tested["age"]).abs().mean())
    results["baselines"]["floor_mae"] = floor_mae
    run.metrics_json.write_text(json.dumps(results, indent=2))
    floors.loc[len(floors)] = {"reference": "true biological age as the prediction",
                               "mae": results["baselines"]["irreducible_mae"]}
    floors.loc[len(floors)] = {"reference": "best prediction from the true biological age "
                                            "(the floor)", "mae": floor_mae}
    glue("sigma_bio", f"{sigma_bio:g}", display=False)
    glue("hc_age_prior", f"{prior[0]:g}-{prior[1]:g}", display=False)
glue("tab_03_accuracy", report_table(
    table, intervals={k: (f"{k}_low", f"{k}_high") for k in statistics},
    labels={"note": "why omitted"}), display=False)
glue("tab_03_baselines", report_table(floors), display=False)

# %% [markdown]
# ```{glue:figure} tab_03_accuracy
# :name: tab-03-accuracy
#
# Accuracy on the {glue:text}`n_test` healthy test subjects: mean absolute error (MAE) and root
# mean squared error (RMSE) in years, $R^2$ and Pearson's $r$ of predicted against
# chronological age, each as value [95% bootstrap CI], for the raw and the bias-corrected
# prediction.
# ```
#
# ```{glue:figure} tab_03_baselines
# :name: tab-03-baselines
#
# Reference errors on the same {glue:text}`n_test` test subjects (MAE, years): predicting the
# training mean for everyone; on simulated data, predicting each subject's true biological age
# $b$, and the best prediction that can be made from $b$ (the floor no model can beat).
# ```

# %%

# %%
rnc_m, l1_m = results["models"]["rnc"]["raw"], results["models"]["l1"]["raw"]
comparison = results["comparison"]
for name, m in (("rnc", rnc_m), ("l1", l1_m)):
    glue(f"mae_{name}", f"{m['mae']['value']:.2f}", display=False)
    glue(f"mae_{name}_ci", f"{m['mae']['ci_low']:.2f} to {m['mae']['ci_high']:.2f}", display=False)
    glue(f"r2_{name}", f"{m['r2']['value']:.2f}", display=False)
    glue(f"r_{name}", f"{m['pearson_r']['value']:.2f}", display=False)
glue("n_test", results["n_test"], display=False)
glue("bias_method", bias_method, display=False)
# The reference study (Crete et al. 2025) reports a test MAE of 4.27 years and R^2 0.93 for RNC at
# full resolution on real scans; the comparison below is computed, not written by hand.
reference_mae = 4.27
low, high = rnc_m["mae"]["ci_low"], rnc_m["mae"]["ci_high"]
relation = ("above" if low > reference_mae else "below" if high < reference_mae
            else "compatible with")
glue("reference_comparison",
     f"this build's RNC test MAE ({rnc_m['mae']['value']:.2f} years, 95% CI {low:.2f} to "
     f"{high:.2f}) is {relation} the {reference_mae} years that the reference study reports",
     display=False)
glue("mae_mean_age", f"{results['baselines']['mean_age_mae']:.2f}", display=False)
glue("floor_clause", (f"a floor of {floor_mae:.2f} years (best prediction from true biological "
                      "age) and " if truth is not None else "")
     + f"{results['baselines']['mean_age_mae']:.2f} years for the mean-age predictor",
     display=False)
if truth is not None:
    glue("mae_floor", f"{floor_mae:.2f}", display=False)
    glue("mae_biological", f"{results['baselines']['irreducible_mae']:.2f}", display=False)
    display(Markdown(
        "On the simulated cohort a healthy brain's biological age is $b = a + \\delta$: "
        "chronological age $a$ uniform over {glue:text}`hc_age_prior` years, "
        "$\\delta \\sim \\mathcal N(0, \\sigma^2)$ with $\\sigma$ = {glue:text}`sigma_bio` "
        "years. A model that reads the brain perfectly knows $b$, not $a$. The best it can then "
        "predict, for the MAE, is the median of $a$ given $b$: $b$ itself in the middle of the "
        "age range, pulled inwards near its ends, where no younger or older brains exist. Its "
        "MAE, the floor, is {glue:text}`mae_floor` years on these test subjects; predicting $b$ "
        "itself gives {glue:text}`mae_biological` years ({numref}`tab-03-baselines`)."))
diff, diff_low, diff_high = comparison["mae_diff"], comparison["ci_low"], comparison["ci_high"]
stated = (f"RNC minus L1 MAE {diff:+.2f} years, 95% CI {diff_low:.2f} to {diff_high:.2f}; "
          f"{p_text(comparison['p_value'], 'Wilcoxon p')}")
if comparison["significant"]:
    verdict = f"RNC was significantly {'better' if diff < 0 else 'worse'} than L1 ({stated})"
else:
    verdict = f"the difference between RNC and L1 was not significant ({stated})"
# what the interval rules out: an RNC advantage (negative difference) beyond its lower bound,
# an L1 advantage beyond its upper bound; inside it, neither equivalence nor a direction
glue("rnc_advantage_max", f"{max(-diff_low, 0):.2f}", display=False)
glue("l1_advantage_max", f"{max(diff_high, 0):.2f}", display=False)
if diff_low < 0 < diff_high:
    verdict += (f"; the interval rules out an RNC advantage above {-diff_low:.2f} years and an "
                f"L1 advantage above {diff_high:.2f} years but does not show equivalence")
glue("comparison_verdict", verdict, display=False)
display(Markdown(f"**Paired comparison on the {comparison['n']} test subjects:** {verdict}."))

# %% [markdown]
# ## Repeatability over training seeds
#
# One training run is one draw of initialisation, data order and augmentation; the spread of
# each model's test MAE and of the RNC − L1 difference over training seeds shows how much of
# the comparison above is that draw.

# %%
repeats = training.seed_repeats(run, raw)
spread = training.seed_summary(repeats)
results["seeds"] = spread
run.metrics_json.write_text(json.dumps(results, indent=2))


def _over_seeds(s):
    return (f"{s['mean']:.2f} years" if s["sd"] is None else
            f"{s['mean']:.2f} ± {s['sd']:.2f} years (range {s['min']:.2f} to {s['max']:.2f})")


n_seeds_run = spread["n_seeds"]
if n_seeds_run == 1:
    seeds_verdict = ("each model was trained with one seed, so the direction of the RNC − L1 "
                     "difference is not established")
else:
    d = spread["difference"]
    consistency = ("RNC lower in every seed" if d["max"] < 0 else
                   "RNC higher in every seed" if d["min"] > 0 else
                   "its sign changing between seeds")
    seeds_verdict = (f"over {n_seeds_run} training seeds the test MAE was "
                     f"{_over_seeds(spread['models']['rnc'])} for RNC and "
                     f"{_over_seeds(spread['models']['l1'])} for L1 (mean ± SD); RNC minus L1 was "
                     f"{_over_seeds(d)}, {consistency}")
glue("seeds_verdict", seeds_verdict, display=False)
glue("seeds_sentence", seeds_verdict[0].upper() + seeds_verdict[1:] + ".", display=False)
glue("n_seeds_run", n_seeds_run, display=False)
display(Markdown(seeds_verdict[0].upper() + seeds_verdict[1:] + "."))
if n_seeds_run > 1:  # one seed: the sentence above says why there is no table
    glue("tab_03_seeds", report_table(repeats.assign(model=repeats["model"].str.upper())),
         display=False)
    display(Markdown("```{glue:figure} tab_03_seeds\n:name: tab-03-seeds\n\nTest MAE (years) "
                     "of each model for each of the {glue:text}`n_seeds_run` training seeds, "
                     "uncorrected predictions on the {glue:text}`n_test` test subjects.\n```"))

# %% [markdown]
# ## Accuracy by site
#
# The sites differ in contrast, bias field, noise and resolution, so the error may differ
# between them.

# %%
test = predictions[predictions["split"] == "test"]
sites = site_accuracy(test, n_boot=n_boot, seed=seed).assign(model=lambda t: t["model"].str.upper())
sites.to_csv(run.path / "site_accuracy.csv", index=False)
glue("tab_03_site_mae", report_table(sites, order=["model", "site"],
                                     intervals={"mae": ("ci_low", "ci_high")},
                                     labels={"mae": "MAE (years) [95% CI]"}), display=False)
for name, rows in sites.groupby("model"):
    glue(f"site_mae_{name.lower()}", "; ".join(
        f"{r.site} {format_number(r.mae)} years (n = {r.n})" for r in rows.itertuples()),
        display=False)

# %% [markdown]
# ```{glue:figure} tab_03_site_mae
# :name: tab-03-site-mae
#
# Test MAE (years) of each model at each site, [95% bootstrap CI] (none for a site with a
# single test scan); n is the number of test scans at the site.
# ```

# %% [markdown]
# ## Predicted against chronological age
#
# {numref}`fig-03-predicted` plots every test subject's predicted against chronological age.

# %%
test = predictions[predictions["split"] == "test"]
figures.glue_figure("fig-03-predicted", figures.predicted_against_age(test))

# %% [markdown]
# ```{glue:figure} fig-03-predicted
# :name: fig-03-predicted
#
# Predicted against chronological age (years) of the {glue:text}`n_test` test subjects, one
# panel per model, before age-bias correction; dashed line: identity.
# ```

# %% [markdown]
# ## Error by age
#
# {numref}`fig-03-age-bins` shows the test MAE in each age bin.

# %%
by_bin = pd.concat([metrics.error_by_age_bin(rows["age"].to_numpy(), rows["predicted"].to_numpy(),
                                             age_bins, n_boot=n_boot, seed=seed).assign(model=name)
                    for name, rows in test.groupby("model")], ignore_index=True)
figures.glue_figure("fig-03-age-bins", figures.error_by_age(by_bin))

# %% [markdown]
# ```{glue:figure} fig-03-age-bins
# :name: fig-03-age-bins
#
# Test MAE (years, raw predictions) by age bin and model, {glue:text}`n_test` test subjects;
# the number of subjects in each bin is written on its bar. Error bars: 95% bootstrap CI
# (BCa), drawn for bins of at least three subjects.
# ```

# %% [markdown]
# ## The gap before and after age-bias correction
#
# The correction is fitted on the validation split; a good correction leaves the test gap flat
# against age. The Bland-Altman view plots the gap against the mean of predicted and
# chronological age, with the mean gap and its 95% limits of agreement.
#
# {numref}`fig-03-gap-age` and {numref}`fig-03-bland-altman` show the test gaps.

# %%
correlation = gap_age_correlation(test).assign(model=lambda t: t["model"].str.upper())
glue("tab_03_gap_age", report_table(correlation, order=["model"],
                                    intervals={"r": ("ci_low", "ci_high")},
                                    labels={"r": "Pearson r [95% CI]", "gap": "gap"}),
     display=False)
for r in correlation.itertuples():
    glue(f"gap_age_r_{r.model.lower()}_{'raw' if r.gap == 'raw' else 'corrected'}",
         f"r = {format_number(r.r, 2)}", display=False)
for name, correction in corrections.items():
    glue(f"bias_formula_{name}", bias_correction_text(correction.to_dict()), display=False)

# %% [markdown]
# ```{glue:figure} tab_03_gap_age
# :name: tab-03-gap-age
#
# Pearson correlation of the brain-age gap (predicted minus chronological age, years) with
# chronological age on the {glue:text}`n_test` test subjects, before and after the age-bias
# correction fitted on the validation split, [95% Fisher-z CI] and p. A gap that regresses to
# the mean correlates negatively with age; a correction that works leaves r near 0.
# ```

# %%
figures.glue_figure("fig-03-gap-age", figures.gap_against_age(test))
figures.glue_figure("fig-03-bland-altman", figures.bland_altman(test))

# %% [markdown]
# ```{glue:figure} fig-03-gap-age
# :name: fig-03-gap-age
#
# Brain-age gap (predicted minus chronological age, years) of the {glue:text}`n_test` test
# subjects against age, before (left) and after (right) the {glue:text}`bias_method`
# age-bias correction fitted on the validation split; lines: least-squares fit of the gap
# on age per model (descriptive).
# ```
#
# ```{glue:figure} fig-03-bland-altman
# :name: fig-03-bland-altman
#
# Bland-Altman plot of the {glue:text}`n_test` test subjects, one panel per model: the raw
# gap (years) against the mean of predicted and chronological age (years). Solid line: the
# mean gap; dotted lines: the 95% limits of agreement (mean ± 1.96 SD), each labelled with
# its value in years.
# ```

# %% [markdown]
# ## How far each prediction can be trusted: intervals
#
# Each prediction carries a split-conformal interval (crepes) at the nominal level: for the age,
# around the predicted age, calibrated on the validation split's residuals within bins of the
# predicted age (Mondrian); for the bias-corrected gap, calibrated on the validation split's
# cross-fitted gaps within bins of the age. Neither saw the test split, but the validation
# split that calibrates them also selected each model's checkpoint and fitted its age-bias
# correction. Below, on the test split: the share of intervals that hold the true value
# (coverage) with its exact 95% binomial CI, and the mean width. The gap interval is calibrated
# to hold 0 for a healthy control like the validation scans, and its coverage counts the
# intervals that do; a control's true gap in the simulation is not 0 but its own deviation
# $\delta \sim \mathcal N(0, \sigma^2)$. The guarantee holds for scans exchangeable with the
# calibration set, healthy controls of the training sites; patients' intervals carry none.

# %%
report = trust.coverage_report(test, level=interval_level, age_bins=age_bins,
                               truth=None if truth is None else truth[0])
calibrated = {h: t.calibration.age.n for h, t in trusts.items() if t.calibration is not None}
display(Markdown(f"Nominal level {interval_level:.0%}; " + (
    "validation scans calibrating each model: " + ", ".join(
        f"{n} ({h.upper()})" for h, n in calibrated.items()) if calibrated else
    "too few validation scans for intervals at this level") + "."))
coverage = pd.concat({"age interval": trust.coverage_text(report["age"]),
                     "corrected-gap interval (0 covered)": trust.coverage_text(report["gap"]),
                     **({"age interval, biological age (simulated truth)":
                         trust.coverage_text(report["biological"])} if "biological" in report
                        else {})}, names=["interval"]).reset_index(level=0)
glue("tab_03_coverage", report_table(coverage), display=False)
glue("interval_level_pct", f"{interval_level:.0%}", display=False)

# %% [markdown]
# ```{glue:figure} tab_03_coverage
# :name: tab-03-coverage
#
# Coverage of the {glue:text}`interval_level_pct` conformal intervals on the
# {glue:text}`n_test` test subjects: the share of intervals holding the true value [exact
# Clopper-Pearson 95% CI], how many of n, the mean width in years, and whether the CI holds the
# nominal level.
# ```

# %%
glue("tab_03_coverage_age", report_table(trust.coverage_text(report["by_age_bin"]),
                                         order=["model", "age_bin"],
                                         labels={"age_bin": "age bin (years)"}), display=False)
glue("tab_03_coverage_site", report_table(trust.coverage_text(report["by_site"]),
                                          order=["model", "site"]), display=False)

# %% [markdown]
# ```{glue:figure} tab_03_coverage_age
# :name: tab-03-coverage-age
#
# Coverage of the age intervals by bin of chronological age (years), on the test subjects; the
# intervals' categories are bins of the *predicted* age, so coverage within bins of the true age
# is not guaranteed. Columns as in {numref}`tab-03-coverage`.
# ```
#
# ```{glue:figure} tab_03_coverage_site
# :name: tab-03-coverage-site
#
# Coverage of the age intervals by site, on the test subjects. Columns as in
# {numref}`tab-03-coverage`.
# ```

# %%

# %%
figures.glue_figure("fig-03-intervals", figures.predicted_against_age(test, intervals=True))
glue("interval_level_text", f"{interval_level:.0%}", display=False)

# %% [markdown]
# ```{glue:figure} fig-03-intervals
# :name: fig-03-intervals
#
# Predicted age (years) of the {glue:text}`n_test` test subjects with its
# {glue:text}`interval_level_text` split-conformal interval (error bars), against
# chronological age (years), one panel per model; dashed line: identity.
# ```

# %% [markdown]
# ## How far each prediction can be trusted: out-of-distribution flags
#
# The out-of-distribution score of a scan is the distance of its features (the channel means and
# standard deviations of the encoder's four stages, standardised by the training scans') to those
# of its 5th nearest training scan, divided by the threshold that the profile's share of the
# validation scans exceeds (Training). A score above 1 flags the scan. Test scans come from the
# training distribution, so about that share of them should be flagged. Below the rates, the
# scores of deliberately broken versions of the first test scan.

# %%
rates = uncertainty.flag_rates(predictions[predictions["split"].isin(["val", "test"])])
glue("tab_03_flag_rates", report_table(rates.assign(model=rates["model"].str.upper()),
                                       order=["model", "split"],
                                       intervals={"rate": ("ci_low", "ci_high")},
                                       labels={"flagged": "flagged", "rate": "rate [95% CI]"}),
     display=False)
volume = run.volumes(run.rows("test").head(1))[0]  # (D, H, W)
broken = trust.score_volumes(models, trusts, trust.broken_versions(volume, seed=seed))
broken_wide = broken.pivot(index="volume", columns="model", values=["predicted", "ood_score", "ood"])
broken_wide.columns = [f"{model.upper()} {label}" for label, model in broken_wide.columns]
glue("tab_03_broken", report_table(broken_wide, index="volume", labels={
    **{f"{m} predicted": f"{m} predicted age (years)" for m in ("RNC", "L1")},
    **{f"{m} ood_score": f"{m} OOD score" for m in ("RNC", "L1")},
    **{f"{m} ood": f"{m} flagged" for m in ("RNC", "L1")}}), display=False)

# %% [markdown]
# ```{glue:figure} tab_03_flag_rates
# :name: tab-03-flag-rates
#
# Share of scans flagged out-of-distribution (OOD score above 1) by model and split, with its
# exact 95% CI; n scans per row. The validation split set the threshold, so its rate is the
# nominal one by construction; the test split checks it.
# ```
#
# ```{glue:figure} tab_03_broken
# :name: tab-03-broken
#
# Predicted age (years), OOD score (no unit; above 1 is flagged) and flag of the first test scan
# and of three broken versions of it.
# ```

# %%
summary = trust.summary(report, rates, trusts, seconds=trust_seconds)
(run.path / trust.TRUST_FILE).write_text(json.dumps(summary, indent=2))
for key, value in trust.glue_values(report, rates, trusts, broken).items():
    glue(key, value, display=False)
glue("trust_seconds", f"{trust_seconds:.2f}", display=False)

# %% [markdown]
# ## The OpenBHB benchmark

# %%
if (predictions["split"] == "external_test").any():
    display(Markdown(
        "For a dataset with an external test set (OpenBHB's scans from sites unseen in "
        "training), the benchmark's metrics: MAE on the internal and the external test set, and "
        "how much site information the learned representation keeps, as the balanced accuracy "
        "of a logistic regression that predicts the site from the encoder's features (fitted on "
        "the training scans, scored on the internal test scans; chance is one over the number "
        "of sites, lower is better). The challenge's combined score is external MAE x site "
        "accuracy + internal MAE / 64."))
    site_bacc = runs.run_site_balanced_accuracy(run, models, seed=seed)
    benchmark = benchmark.benchmark_metrics(predictions, site_bacc=site_bacc, n_boot=n_boot,
                                          seed=seed)
    benchmark.to_csv(run.path / "benchmark.csv", index=False)
    n_sites_train = cohort.loc[cohort["split"] == "train", "site"].nunique()
    display(Markdown(f"Chance level of the site accuracy: 1/{n_sites_train} = "
                     f"{1 / n_sites_train:.3f} ({n_sites_train} training sites)."))
    glue("tab_03_benchmark", report_table(benchmark), display=False)
    display(Markdown("```{glue:figure} tab_03_benchmark\n:name: tab-03-benchmark\n\nThe "
                     "OpenBHB benchmark's measures per model: MAE (years) on the internal and "
                     "external test sets, the balanced site accuracy and the challenge score."
                     "\n```"))
    for row in benchmark.itertuples():
        glue(f"{row.metric}_{row.model}", f"{row.value:.2f}", display=False)
else:
    display(Markdown("Not applicable here: the benchmark needs an external test set of sites "
                     "unseen in training, which only the OpenBHB dataset has."))

# %% [markdown]
# ## Reliability: the same brain scanned again
#
# A brain-age gap is only useful if a second scan of the same brain gives nearly the same
# value. On a simulated cohort the simulator scans held-out subjects again (test-split
# controls and patients, never a training, validation or calibration scan): a **repeat
# session** at the subject's own site (new head pose, bias field, noise and brain-mask
# variation) and a **travelling subject** session at another site (every scanner setting of
# that site). Every scan is predicted with `brainage predict`'s code and the stored age-bias
# correction, and each rescan is compared with the first scan: ICC(2,1) (absolute agreement)
# and ICC(3,1) (consistency) with pingouin, the Bland-Altman limits of agreement, the
# within-subject SD (SEM) and the smallest detectable change, 1.96 √2 SEM: the least change
# between two scans of one person that is real at 95%. The field measures public brain-age
# packages the same way {cite}`dorfel2023brainage`.

# %%
info = run.dataset_info()
if info.get("simulated") and rescan_controls + rescan_patients > 0:
    from brainage.inference.model_folder import record_retest
    from brainage.study import retest
    from brainage.study.profiles import find_project_root
    from brainage.study.sentences import icc_against_published, reliability_sentence

    chosen = retest.choose_rescan_subjects(cohort, n_controls=rescan_controls,
                                           n_patients=rescan_patients, seed=seed)
    retested = retest.run_retest(
        cohort, resolve_path(info["root"]), run.models, run.path / "rescans", participants=chosen,
        skull_stripped=bool(info.get("skull_stripped")), seed=seed, n_boot=n_boot,
        n_jobs=rescan_jobs, cache=find_project_root() / ".cache" / "brainage" / "preprocessed")
    retested.table.to_csv(run.path / "reliability.csv", index=False)
    record_retest(run.models, retest.card_values(retested.table))  # predict's retest_sd
    retested.predictions.to_csv(run.path / "rescan_predictions.csv", index=False)
    shown = retested.table[retested.table["subjects"] == "all"].assign(
        model=lambda t: t["model"].str.upper(),
        measure=lambda t: t["measure"].map({"predicted": "predicted age",
                                            "corrected_gap": "corrected gap"}))
    # two significant digits (pingouin gives ICC intervals to two decimals) and the limits of
    # agreement as the mean difference's interval: the table fits the page's column
    glue("tab_03_reliability", report_table(
        shown.drop(columns=["subjects", "sem"]), digits=2,
        drop=["n"] if shown["n"].nunique() == 1 else [],
        intervals={"icc2": ("icc2_low", "icc2_high"), "icc3": ("icc3_low", "icc3_high"),
                   "mean_diff": ("loa_low", "loa_high"), "mad": ("mad_low", "mad_high"),
                   "sdc": ("sdc_low", "sdc_high")},
        labels={"icc2": "ICC(2,1)", "icc3": "ICC(3,1)", "mean_diff": "mean difference [LoA]",
                "mad": "MAD", "sdc": "SDC"}), display=False)
    figures.glue_figure("fig-03-retest", figures.retest_bland_altman(retested.pairs))
    effects = {g: v for g, v in run.ground_truth()[1]["true_mean_brain_age_gap"].items()
               if g != "HC"}
    glue("reliability_sentence", reliability_sentence(retested.table, effects), display=False)
    glue("icc_published", icc_against_published(retested.table), display=False)
    comparison_rows = []
    for r in retested.comparison.itertuples():
        side = ("RNC more repeatable" if r.ci_high < 0 else "L1 more repeatable"
                if r.ci_low > 0 else "no difference shown")
        comparison_rows.append(f"{r.comparison}, {r.measure.replace('_', ' ')}: RNC - L1 SEM "
                               f"{format_number(r.difference, 2)} years (95% CI "
                               f"{format_number(r.ci_low, 2)} to {format_number(r.ci_high, 2)}; "
                               f"{side})")
    glue("retest_comparison", "; ".join(comparison_rows) or "not estimable", display=False)
    glue("n_retest", len(chosen), display=False)
    glue("retest_seconds", f"{sum(retested.seconds.values()):.0f}", display=False)
    display(Markdown(
        "```{glue:figure} tab_03_reliability\n:name: tab-03-reliability\n\nTest-retest "
        "agreement of the {glue:text}`n_retest` rescanned held-out subjects (controls and "
        "patients), by model, comparison (within site: repeat session; across sites: "
        "travelling subject) and measure (years): ICC(2,1) and ICC(3,1) [95% CI, pingouin, two "
        "decimals], the mean difference (rescan - first scan) [95% limits of agreement, LoA], "
        "the mean absolute difference (MAD) and the smallest detectable change (SDC, "
        "1.96 √2 SEM) [95% bootstrap CI over subjects].\n```\n\n"
        "```{glue:figure} fig-03-retest\n:name: fig-03-retest\n\nBland-Altman plot of the "
        "bias-corrected gap (years) of each rescanned subject: the rescan minus the first "
        "scan against their mean, within site (left) and across sites (right), one colour "
        "per model; solid lines: mean difference, dotted: 95% limits of agreement.\n```\n\n"
        "{glue:text}`reliability_sentence`. The within-site ICC(2,1) of RNC's gap lies "
        "{glue:text}`icc_published` the 0.94-0.98 that Dörfel et al. measured for the best "
        "public packages on real scan-rescan data {cite}`dorfel2023brainage`. Whether RNC is "
        "more repeatable than L1 (paired bootstrap over subjects of the difference in SEM): "
        "{glue:text}`retest_comparison`. Rescanning and predicting took "
        "{glue:text}`retest_seconds` s."))
else:
    display(Markdown("Not measured here: the test-retest check needs the simulator's rescans "
                     "(a simulated cohort with rescans requested)."))


# %% [markdown]
# ## Real scans
#
# Everything above is measured on the simulated cohort. The shared real scans beside the
# checkout (`../shared/data/ixi10` and `ixi40`: raw IXI T1w scans of healthy adults, one
# hospital, with their ages) are a **validation set**: no model is trained, tuned or selected on
# them. Both models predict them as `brainage predict` does (brain extraction, registration,
# the same preprocessing); a folder that is absent is named and left out.

# %%
from pathlib import Path

from brainage.analysis.transfer import transfer_table
from brainage.inference.model_folder import load_model_folder
from brainage.study import real_scans
from brainage.study.profiles import find_project_root

real_folders, real_skipped = (real_scans.shared_real_folders(find_project_root())
                               if real_scans_check else ([], []))
if real_folders:
    start = time.perf_counter()
    real = real_scans.predict_real_scans(run.models, real_folders)
    real_seconds = time.perf_counter() - start
    real_ok = real[real["error"].fillna("") == ""]
    heads = load_model_folder(run.models).card["heads"]
    real_summary = transfer_table(real_ok, train_means={h: float(v["age_mean"])
                                                        for h, v in heads.items()})
    real_summary.to_csv(run.path / "real_scans.csv", index=False)
    glue("tab_03_real", report_table(
        real_summary.assign(model=real_summary["model"].str.upper()), digits=3,
        drop=["intercept"], intervals={"r": ("r_low", "r_high")},
        labels={"r": "r [95% CI]", "mae": "MAE", "mean_gap": "mean gap",
                "mae_own_mean": "MAE of their own mean age",
                "mae_train_mean": "MAE of the training mean age"}), display=False)
    figures.glue_figure("fig-03-real", figures.predicted_against_age(real_ok))
    glue("real_sentence", real_scans.real_scans_sentence(real_summary), display=False)
    glue("n_real", int(real_ok["path"].nunique()), display=False)
    for row in real_summary.itertuples():  # the abstract's real-scan sentence
        glue(f"real_r_{row.model}", f"{row.r:.2f} (95% CI {row.r_low:.2f} to {row.r_high:.2f})",
             display=False)
        glue(f"real_gap_{row.model}", f"{row.mean_gap:+.1f}", display=False)
    glue("real_ages", f"{real_ok['age'].min():.0f}-{real_ok['age'].max():.0f}", display=False)
    glue("real_seconds", f"{real_seconds:.0f}", display=False)
    real_failed = sorted({Path(p).name for p in set(real["path"]) - set(real_ok["path"])})
    display(Markdown(
        "```{glue:figure} fig-03-real\n:name: fig-03-real\n\nPredicted against chronological "
        "age of the {glue:text}`n_real` shared real scans (ages {glue:text}`real_ages`), one "
        "panel per model; dashed: identity.\n```\n\n"
        "```{glue:figure} tab_03_real\n:name: tab-03-real\n\nAccuracy on the real scans: "
        "Pearson r [95% CI, Fisher z], MAE, mean gap (predicted - age) and slope of predicted "
        "on true age (years), beside the MAE of two constant predictors: the scans' own mean "
        "age (an oracle) and the training cohort's mean age.\n```\n\n"
        "{glue:text}`real_sentence`. Predicting them took {glue:text}`real_seconds` s. "
        "This shows whether a model trained on the simulated world orders real brains by age and "
        "at what level; it does not validate the simulated results above (a few dozen healthy "
        "adults from one hospital, no patients), and an interval that spans zero or a large "
        "mean gap says the model's ages of real scans cannot be taken at face value."
        + (f" Left out: {', '.join(real_skipped)}." if real_skipped else "")
        + (f" {len(real_failed)} scan(s) failed: {', '.join(real_failed)}."
           if real_failed else "")))
elif not real_scans_check:
    display(Markdown("This profile leaves the real-scan check out (it is the quick and paper "
                     "builds' check)."))
else:
    display(Markdown("The shared real scans are absent (" + "; ".join(real_skipped)
                     + "): the real-scan check is skipped."))

# %%
from brainage.analysis.site_calibration import calibration_curve, training_line
from brainage.study.sentences import calibration_goal_sentence, calibration_summary

if real_folders:
    real_folder = load_model_folder(run.models)
    real_known = real_ok.dropna(subset=["age", "predicted"])
    real_counts = real_known.groupby("model")["path"].nunique()
    fewest = min(calibration_ks) + 5  # calibration_curve leaves at least 5 scans to measure on
    curve_models = [m for m in ("rnc", "l1") if real_counts.get(m, 0) >= fewest
                    and real_folder.trust[m].calibration is not None]
if real_folders and curve_models:
    real_curve = pd.concat([calibration_curve(
        real_known.loc[real_known["model"] == m, "age"],
        real_known.loc[real_known["model"] == m, "predicted"],
        interval=real_folder.trust[m].calibration.age,
        prior=training_line(real_folder.corrections[m]), level=interval_level,
        ks=[k for k in calibration_ks if k + 5 <= real_counts[m]], repeats=calibration_repeats,
        seed=seed).assign(model=m) for m in curve_models], ignore_index=True)
    real_curve.to_csv(run.path / "real_calibration_curve.csv", index=False)
    shown_k = 10 if (real_curve["k"] == 10).any() else int(real_curve["k"].max())
    figures.glue_figure("fig-03-real-calibration",
                        figures.calibration_curve(real_curve, level=interval_level))
    glue("tab_03_real_calibration", report_table(
        calibration_summary(real_curve, k=shown_k), digits=3,
        intervals={"coverage": ("coverage_p10", "coverage_p90")},
        labels={"gap": "mean gap (years)", "gap_sd": "SD over splits (years)",
                "gap_within_3": "splits with |mean gap| ≤ 3 y", "r": "r",
                "coverage": "coverage [p10, p90]"}), display=False)
    glue("real_calibration_sentence",
         calibration_goal_sentence(real_curve, k=shown_k, level=interval_level), display=False)
    glue("real_calibration_k", str(shown_k), display=False)
    glue("real_calibration_repeats", str(calibration_repeats), display=False)
    display(Markdown(
        "A model meets a new scanner in every real use. The field's remedy is to calibrate it on "
        "a few healthy scans of that scanner with known ages: `brainage calibrate` fits the "
        "site's age-bias line (its slope shrunk towards the training correction's) and "
        "recalibrates the conformal interval on the site's cross-fitted residuals (Calibrating "
        "to a new scanner, in the appendix). How many local scans it needs is measured here by "
        "splitting the real scans {glue:text}`real_calibration_repeats` times at random into k "
        "calibration scans and the rest, and reading the rest four ways: the model as trained, "
        "a plain linear age-bias refit on the k scans (the model's own interval around it), "
        "the site calibration, and no model at all (the k scans' mean age).\n\n"
        "```{glue:figure} fig-03-real-calibration\n:name: fig-03-real-calibration\n\n"
        "Calibrating to the real scans' scanner: MAE (left, log scale) and coverage of the "
        "interval (right; shaded: the goal 0.85-0.95; band: the site calibration's 10th-90th "
        "percentiles over splits) on the scans not calibrated on, against the number k of "
        "calibration scans; means over random splits. The real scans are a validation set: "
        "each split fits on its k scans and measures on the others; no model, correction or "
        "setting was trained or chosen on them, and nothing is fitted on the simulated test "
        "scans. Below 10 scans no 90 % interval can be calibrated.\n```\n\n"
        "```{glue:figure} tab_03_real_calibration\n:name: tab-03-real-calibration\n\n"
        "Calibration on k = {glue:text}`real_calibration_k` real scans, measured on the "
        "others: means over splits of the MAE, the mean gap (estimate minus age) and its SD "
        "over splits, the share of splits whose mean gap is within 3 years, Pearson r, and "
        "the interval's coverage [10th, 90th percentile over splits] and width.\n```\n\n"
        "{glue:text}`real_calibration_sentence` The interval holds at its level only for scans "
        "exchangeable with its calibration scans (the same scanner and protocol, healthy, "
        "within their age range); a site calibration says nothing of scans from another site "
        "or of patients."))
elif real_folders:
    display(Markdown(f"Too few real scans for the site-calibration curve (it needs "
                     f"{min(calibration_ks) + 5} per model, k + 5): it is left out."))
