# %% [markdown]
# # The brain-age gap in AD and PD: recovering the simulated disease effects
#
# The cohort is simulated, and so are its patients: the simulator gave every Alzheimer's (AD)
# and Parkinson's disease (PD) patient an older-looking brain and tied it to clinical scores
# with correlations it was configured with. This page therefore does not discover clinical
# effects; it checks whether the models *recover* the effects that were put in, each estimate
# beside its true value. The question it asks of the models is the reference study's clinical
# claim: the bias-corrected brain-age gap is larger in AD and PD than in healthy controls, and
# tracks disease severity. Controls are
# the held-out test subjects; patients never entered training, validation or bias-correction
# fitting. Group differences are tested by ANCOVA with age, sex and site (one-hot) as
# covariates: the sites differ in intensity, contrast, bias and resolution, and patients and
# controls need not come from them in the same shares. Controls span the whole adult age range
# while patients are older, and the corrected gap may keep some age dependence, so pairwise
# effect sizes are reported adjusted (the covariate-adjusted mean difference, and the adjusted
# Hedges' g on the scale of the pooled SD) beside the unadjusted g. Severity is tested by partial
# Spearman correlation with the clinical scores (controlling age, sex and site) within each
# patient group; p-values are corrected by Benjamini-Hochberg over the family of clinical tests.
# On the simulated cohort each estimate is shown beside its true value: the same statistic
# computed on the subjects' true brain-age gap, and, for the score correlations, the value the
# simulator was configured with. An age-matched control comparison checks the ANCOVA's age
# adjustment, a power calculation says what a missed recovery means, and the intervals'
# coverage in patients says how far the conformal guarantee reaches.
#
# Writes `clinical.json`.

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
seed = 0
n_boot = 2000

# %%
import json

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.analysis import clinical, uncertainty
from brainage.study import figures, runs, sentences
from brainage.study.profiles import resolve_path
from brainage.study.runs import RunFolder
from brainage.study.sentences import (
    closing_sentence,
    correlation_text,
    fdr_sentence,
    group_effect_sentence,
    summary_sentence,
)
from brainage.study.tables import report_table

run = RunFolder(resolve_path(run_dir))
scores = [s for scores in clinical.SCORES_BY_GROUP.values() for s in scores]
predictions = runs.predictions_with_scores(run, scores)
analysed = predictions[predictions["split"].isin(["test", "clinical"])]
truth = run.ground_truth()
truth_values = None
settings = clinical.ClinicalSettings(n_boot=n_boot)
if truth is not None:
    truth_values = clinical.truth_from_simulation(truth[0], predictions, settings)
    truth_values["configured_correlation"] = {
        score: values["configured"]
        for score, values in clinical.configured_correlations(truth[1]).items()}
results = clinical.clinical_summary(predictions, truth=truth_values, seed=seed, settings=settings)
results.to_json(run.clinical_json)
subjects = analysed.drop_duplicates("participant_id")
glue("n_analysed", len(subjects), display=False)
glue("tab_05_subjects", report_table(
    pd.crosstab(subjects["group"], subjects["site"].fillna("not recorded"), margins=True,
                margins_name="all"), index="group"), display=False)

# %% [markdown]
# ```{glue:figure} tab_05_subjects
# :name: tab-05-subjects
#
# The {glue:text}`n_analysed` subjects of the clinical analysis (test controls and patients),
# by group and site.
# ```

# %% [markdown]
# ## The gap by group
#
# {numref}`fig-05-groups` shows the gap of each group.

# %%
figures.glue_figure("fig-05-groups", figures.gap_by_group(analysed))
glue("groups_n_text", ", ".join(f"{group} {n}" for group, n in subjects["group"].value_counts()
                                .reindex(["HC", "AD", "PD"]).dropna().astype(int).items()),
     display=False)

# %% [markdown]
# ```{glue:figure} fig-05-groups
# :name: fig-05-groups
#
# Bias-corrected brain-age gap (years) by group ({glue:text}`groups_n_text` subjects: test
# controls and patients), one colour per model: violins with the quartiles (boxes) and every
# subject (points). Grey line: no gap.
# ```

# %%
upper = {"model": lambda t: t["model"].str.upper()}
glue("tab_05_group_stats", report_table(
    results.group_stats.assign(**upper), drop=["estimable"],
    intervals={"mean": ("ci_low", "ci_high")},
    labels={"mean": "mean gap (years) [95% CI]", "sd": "SD (years)",
            "age_mean": "mean age (years)", "n_female": "women"}), display=False)
ancova = results.ancova.assign(**upper).astype({"p_fdr": object})
ancova.loc[ancova["source"] != "group", "p_fdr"] = "covariate, not corrected"
glue("tab_05_ancova", report_table(
    ancova, drop=["estimable", "groups", "SS"],
    labels={"DF": "df", "df_resid": "residual df", "np2": "partial η²"}), display=False)
posthoc = results.posthoc.assign(**upper, n=lambda t: [f"{a} / {b}" for a, b in zip(t["n_a"],
                                                                                   t["n_b"])])
glue("tab_05_posthoc", report_table(
    posthoc[[c for c in ("model", "contrast", "n", "adj_diff", "adj_ci_low", "adj_ci_high",
                         "adj_g", "adj_g_ci_low", "adj_g_ci_high", "hedges_g", "p", "p_fdr", "note")
             if c in posthoc.columns]],
    intervals={"adj_diff": ("adj_ci_low", "adj_ci_high"), "adj_g": ("adj_g_ci_low", "adj_g_ci_high")},
    labels={"n": "n (first / second)", "adj_diff": "adjusted difference (years) [95% CI]",
            "adj_g": "adjusted Hedges' g [95% CI]", "hedges_g": "unadjusted Hedges' g"}),
    display=False)
covariates = sorted({c.split("_")[0] for cs in results.posthoc.get("covariates", pd.Series(dtype=str))
                     .dropna() for c in str(cs).split(",") if c})
glue("covariates_text", ", ".join(covariates) if covariates else "none", display=False)

# %% [markdown]
# ```{glue:figure} tab_05_group_stats
# :name: tab-05-group-stats
#
# The bias-corrected brain-age gap (years) by model and group: n, mean [95% bootstrap CI], SD,
# mean chronological age (years) and number of women.
# ```
#
# ```{glue:figure} tab_05_ancova
# :name: tab-05-ancova
#
# ANCOVA of the corrected gap on group with the covariates ({glue:text}`n_analysed` subjects):
# F, its degrees of freedom, p, p after Benjamini-Hochberg correction over the clinical family
# (group effects only), and partial η².
# ```
#
# ```{glue:figure} tab_05_posthoc
# :name: tab-05-posthoc
#
# Pairwise contrasts of the corrected gap: the covariate-adjusted difference of the group means
# (years) and adjusted Hedges' g [95% CI], the unadjusted g, p and FDR-corrected p; n subjects
# in the first and second group. Covariates: {glue:text}`covariates_text`.
# ```

# %% [markdown]
# ## The gap and disease severity
#
# {numref}`fig-05-severity` shows each tested association.

# %%
residuals = {(model, group, score): clinical.partial_rank_residuals(predictions, model, group,
                                                                    score, settings)
             for model in settings.models for group, group_scores in clinical.SCORES_BY_GROUP.items()
             for score in group_scores}
figures.glue_figure("fig-05-severity", figures.severity_residuals(residuals,
                                                                  results.correlations))
glue("n_fdr_family", results.meta["fdr_family_size"], display=False)

# %% [markdown]
# ```{glue:figure} fig-05-severity
# :name: fig-05-severity
#
# The partial Spearman correlations that were tested: within each patient group, the
# bias-corrected gap against each clinical score, controlling age, sex and site, one row per
# test and one column per model. Each point is a patient: its gap's rank against its score's
# rank, each after the covariates' ranks were regressed out (rank units), so that their
# correlation is the partial rho; line: least-squares fit. Panel titles: rho, the uncorrected
# p, the Benjamini-Hochberg p over the {glue:text}`n_fdr_family` clinical tests
# (p{sub}`FDR`), and n.
# ```

# %%
correlations = results.correlations.assign(**upper)
glue("tab_05_correlations", report_table(
    correlations, drop=["estimable", "expected_sign"], intervals={"rho": ("ci_low", "ci_high")},
    labels={"rho": "partial Spearman ρ [95% CI]", "n_missing": "n without the score"}),
    display=False)

# %% [markdown]
# ```{glue:figure} tab_05_correlations
# :name: tab-05-correlations
#
# Partial Spearman correlation of the corrected gap with each clinical score within the patient
# group (controlling the covariates), [95% bootstrap CI], p and FDR-corrected p; n patients with
# the score.
# ```

# %% [markdown]
# ## Which model's gap tracks severity better?
#
# The difference of the two models' partial Spearman correlations on the same patients, signed
# so that a positive value means RNC tracks severity more strongly, with a paired bootstrap CI.

# %%
glue("tab_05_model_comparison", report_table(
    results.model_comparison.assign(model_a=lambda t: t["model_a"].str.upper(),
                                    model_b=lambda t: t["model_b"].str.upper()),
    drop=["estimable", "expected_sign", "n_boot_valid"], intervals={"diff": ("ci_low", "ci_high")},
    labels={"rho_a": "ρ (first)", "rho_b": "ρ (second)", "diff": "difference [95% CI]",
            "model_a": "first", "model_b": "second"}), display=False)

# %% [markdown]
# ```{glue:figure} tab_05_model_comparison
# :name: tab-05-model-comparison
#
# The difference of the two models' partial Spearman correlations with each score on the same
# n patients (signed so that a positive value means RNC tracks severity more strongly), with a
# paired bootstrap 95% CI and p.
# ```

# %%
if not results.truth_comparison.empty:
    display(Markdown(
        "## Estimates against the simulated truth\n\nThe true gap of a subject is its realised "
        "brain age minus its chronological age: the age at which a healthy brain has lost as much "
        "tissue, so the regional disease losses count (`truth_global` leaves them out: the "
        "simulator's biological age alone). Each truth is the estimate's own statistic computed "
        "on the true gap of the same subjects, with the same covariates: the value a perfect "
        "predictor would reach. A gap measured with error attenuates a correlation a little, so "
        "an interval may fall short of it."))
# A note shared by many rows reads as a sentence under the caption, not as a narrow column.
truth_table = results.truth_comparison
truth_notes = sorted({n for n in truth_table.get("note", pd.Series(dtype=str)).dropna()
                      if str(n).strip()})
glue("truth_notes", " ".join(f"Note ({i + 1}): {n}." for i, n in enumerate(truth_notes))
     or "No estimate carries a note.", display=False)
if "configured" in truth_table.columns:  # mean gaps have no configured value: does not apply
    truth_table = truth_table.assign(configured=[
        f"{v:.2f}" if pd.notna(v) else "—" for v in truth_table["configured"]])
if truth_notes:
    truth_table = truth_table.assign(note=truth_table["note"].map(
        lambda n: f"({truth_notes.index(n) + 1})" if n in truth_notes else ""))
elif "note" in truth_table.columns:  # an empty column only widens the table past the page
    truth_table = truth_table.drop(columns="note")
glue("tab_05_truth", report_table(
    truth_table.assign(model=lambda t: t["model"].str.upper())
    if not truth_table.empty
    else pd.DataFrame({"comparison": ["none: not a simulated cohort"]}),
    intervals={"estimate": ("ci_low", "ci_high")} if not results.truth_comparison.empty else None,
    # short headers: with the configured column the eleven columns ran 57 px past the page
    labels={"estimate": "estimate [95% CI]", "truth": "truth", "truth_global":
            "global truth", "error": "error", "covered": "covered",
            "configured": "configured"}),
    display=False)

# %% [markdown]
# ```{glue:figure} tab_05_truth
# :name: tab-05-truth
#
# Each clinical estimate beside the same statistic computed on the subjects' true gap (the
# realised truth): group mean gaps in years, score correlations as ρ; the estimate's 95% CI,
# whether it covers the truth, its error (estimate − truth), and the global truth (the truth
# without the regional losses). For the scores, the configured value is the correlation of the
# score with the patient's latent severity that the simulator was set to; the severity drives
# the accelerated ageing, and the realised truth is its partial correlation with the true gap,
# lower because the gap also varies for other reasons. {glue:text}`truth_notes`
# ```
#
# ## What was recovered and what was missed

# %%
hc = analysed[(analysed["group"] == "HC") & (analysed["model"] == "rnc")][settings.gap_column]
counts = analysed.drop_duplicates("participant_id")["group"].value_counts()
if truth_values is not None and "PD" in truth_values["mean_gap"] and counts.get("PD", 0) >= 2:
    effect = truth_values["mean_gap"]["PD"]
    pd_power = {**clinical.gap_power(effect, float(hc.std()), int(counts["PD"]),
                                     int(counts["HC"])), "effect": effect, "sd": float(hc.std())}
    pd_truths = [truth_values["score_correlation"][s] for s in clinical.SCORES_BY_GROUP["PD"]
                 if s in truth_values["score_correlation"]]
    n_covariates = 2 + max(analysed["site"].nunique() - 1, 0) if "site" in analysed else 2
    rho = float(np.mean(pd_truths)) if pd_truths else float("nan")
    rho_power = ({**clinical.correlation_power(rho, int(counts["PD"]),
                                               n_covariates=n_covariates), "rho": rho}
                 if pd_truths else {})
    table = results.truth_comparison
    recovery = sentences.pd_recovery_sentence(table[table["group"] == "PD"], pd_power, rho_power)
    glue("pd_power_n", f"{pd_power['n_per_group']:.0f}", display=False)
    glue("pd_power_now", f"{100 * pd_power['power_now']:.0f} %", display=False)
    glue("hc_gap_sd", f"{pd_power['sd']:.1f}", display=False)
    glue("pd_true_gap", f"{effect:.1f}", display=False)
    glue("pd_corr_n", f"{rho_power['n_needed']:.0f}" if rho_power else "—", display=False)
else:
    recovery = "There are no simulated PD patients whose recovery could be checked"
    for key in ("pd_power_n", "pd_power_now", "hc_gap_sd", "pd_true_gap", "pd_corr_n"):
        glue(key, "—", display=False)  # the abstract pastes them in every simulated run
glue("pd_recovery_sentence", recovery, display=False)
display(Markdown(recovery + "."))

# %% [markdown]
# ## Age-matched controls
#
# Patients are older than most test controls, so the ANCOVA's adjustment extrapolates the
# controls' age trend. Pairs need no such model: each patient, oldest first, is paired with the
# free test control nearest in age (within 3 years), and the pairs' gaps are compared by a
# paired t-test.

# %%
matched = pd.DataFrame([clinical.age_matched_comparison(predictions, model, group,
                                                        settings=settings)
                        for model in settings.models for group in clinical.SCORES_BY_GROUP
                        if (analysed["group"] == group).any()])
if matched.empty:
    glue("matched_sentence", "No patients: no age-matched comparison", display=False)
    glue("tab_05_matched", report_table(pd.DataFrame({"comparison": ["none: no patients"]})),
         display=False)
else:
    glue("matched_sentence", sentences.matched_sentence(matched), display=False)
    glue("tab_05_matched", report_table(
        matched.assign(model=lambda t: t["model"].str.upper()), drop=["estimable", "caliper"],
        intervals={"diff": ("ci_low", "ci_high")},
        labels={"n_pairs": "pairs", "n_patients": "patients", "age_patients":
                "mean age, patients (years)", "age_controls": "mean age, controls (years)",
                "diff": "gap difference (years) [95% CI]"}), display=False)
    for r in matched.itertuples():
        glue(f"matched_{r.group.lower()}_{r.model}", f"{r.diff:.1f} years (95% CI "
             f"{r.ci_low:.1f} to {r.ci_high:.1f})" if r.estimable else "—", display=False)

# %% [markdown]
# ```{glue:figure} tab_05_matched
# :name: tab-05-matched
#
# Patients against age-matched test controls (1:1, nearest age within 3 years, without
# replacement): the pairs, their mean ages, and the mean gap difference (patient − control,
# years) with its paired-t 95% CI and p.
# ```
#
# {glue:text}`matched_sentence`.

# %% [markdown]
# ## Individual evidence: gap intervals above 0
#
# Each scan's bias-corrected gap has a conformal interval (notebook 03). When it lies entirely
# above 0, that scan on its own is evidence of an older-looking brain. Among healthy controls
# this is a false positive, expected in about (1 - level) / 2 of them.

# %%
evidence = uncertainty.evidence_table(analysed)
levels = analysed["interval_level"].dropna()
expected = f"{(1 - levels.iloc[0]) / 2:.0%}" if len(levels) else "—"
display(Markdown(f"Interval level {levels.iloc[0]:.0%}: expected share of controls above 0 "
                 f"about {expected}." if len(levels) else "No gap intervals: the validation "
                 "split was too small to calibrate them (notebook 03)."))
glue("evidence_expected_hc", expected, display=False)
shares = evidence.set_index(["model", "group"])
for model in ("rnc", "l1"):
    for group in ("HC", "AD", "PD"):
        row = shares.loc[(model, group)] if (model, group) in shares.index else None
        glue(f"evidence_{group.lower()}_{model}", "—" if row is None or not row["n"] else
             f"{int(row['above'])} of {int(row['n'])} ({row['share']:.0%})", display=False)
glue("tab_05_evidence", report_table(evidence.assign(model=lambda t: t["model"].str.upper()),
                                     intervals={"share": ("ci_low", "ci_high")},
                                     labels={"above": "interval above 0",
                                             "share": "share [95% CI]"}), display=False)

# %% [markdown]
# ```{glue:figure} tab_05_evidence
# :name: tab-05-evidence
#
# Scans whose corrected-gap interval lies entirely above 0, by model and group: how many of n,
# and the share with its exact 95% CI. Among controls these are false positives.
# ```
#
# ## How far the intervals' guarantee reaches
#
# The intervals are split-conformal, calibrated on the validation scans (healthy controls; the
# same split also picked the checkpoints and fitted the bias correction). Their coverage is
# guaranteed only for scans exchangeable with those, not for patients, whose brains look older
# than their age by design.

# %%
if len(levels) and {"age_lower", "age_upper"} <= set(analysed.columns):
    coverage = uncertainty.coverage_table(analysed, truth="age", lower="age_lower",
                                          upper="age_upper", by=("model", "group"),
                                          level=float(levels.iloc[0]))
    coverage.to_csv(run.path / "clinical_coverage.csv", index=False)
    glue("patient_coverage_sentence", sentences.patient_coverage_sentence(
        coverage, float(levels.iloc[0])), display=False)
    for r in coverage.itertuples():
        glue(f"coverage_{r.group.lower()}_{r.model}", f"{r.coverage:.2f}", display=False)
    glue("tab_05_coverage", report_table(
        coverage.assign(model=lambda t: t["model"].str.upper()),
        drop=["confidence", "nominal_in_ci"], intervals={"coverage": ("ci_low", "ci_high")},
        labels={"covered": "intervals holding the age", "coverage": "coverage [95% CI]",
                "mean_width": "mean width (years)", "nominal": "nominal level"}),
        display=False)
else:
    glue("patient_coverage_sentence", "No intervals: their coverage was not measured",
         display=False)
    glue("tab_05_coverage", report_table(pd.DataFrame({"coverage": ["no intervals"]})),
         display=False)

# %% [markdown]
# ```{glue:figure} tab_05_coverage
# :name: tab-05-coverage
#
# Coverage of the chronological age by the conformal age intervals, by model and group: how
# many of n intervals hold the age, the share with its exact 95% CI, and the mean width.
# ```
#
# {glue:text}`patient_coverage_sentence`.

# %%

# %%
glue("clinical_sentence", summary_sentence(results, "rnc"), display=False)
glue("group_effect_sentence", group_effect_sentence(results, "rnc"), display=False)
glue("group_effect_sentence_l1", group_effect_sentence(results, "l1"), display=False)
glue("fdr_sentence", fdr_sentence(results, "rnc"), display=False)
glue("fdr_sentence_l1", fdr_sentence(results, "l1"), display=False)
comparison = json.loads(run.metrics_json.read_text())["comparison"]
glue("closing_sentence", closing_sentence(comparison, results, "rnc"), display=False)
table = results.truth_comparison
for quantity in ("mean_gap", "score_correlation"):
    rows = table[(table["quantity"] == quantity) & table["covered"].notna()]
    glue(f"covered_{quantity}", f"{int(rows['covered'].sum())} of {len(rows)}" if len(rows)
         else "0 of 0", display=False)
ancova_age = results.ancova.query("model == 'rnc' and source == 'age'")
glue("ancova_age_p", f"{ancova_age['p'].iloc[0]:.2g}" if len(ancova_age) else "—",
     display=False)
for model in ("rnc", "l1"):
    row = results.posthoc.query("model == @model and contrast == 'AD vs HC'")
    glue(f"adjusted_ad_{model}",
         f"{row['adj_diff'].iloc[0]:.1f} years (95% CI {row['adj_ci_low'].iloc[0]:.1f} to "
         f"{row['adj_ci_high'].iloc[0]:.1f}; adjusted g {row['adj_g'].iloc[0]:.2f}, unadjusted "
         f"{row['hedges_g'].iloc[0]:.2f})" if len(row) and row["estimable"].iloc[0] else "—",
         display=False)
if truth is not None and truth[1].get("patients_max_biological_age") is not None:
    meta = truth[1]
    glue("patients_max_biological_age", f"{meta['patients_max_biological_age']:.1f}",
         display=False)
    glue("controls_max_age", f"{meta['controls_age_range'][1]:g}", display=False)
else:
    glue("patients_max_biological_age", "—", display=False)
    glue("controls_max_age", "—", display=False)
for model in ("rnc", "l1"):
    stats = results.group_stats.query("model == @model").set_index("group")
    for group in ("HC", "AD", "PD"):
        value = f"{stats.loc[group, 'mean']:.1f}" if stats.loc[group, "n"] > 0 else "—"
        glue(f"gap_{group.lower()}_{model}", value, display=False)
    for group, group_scores in clinical.SCORES_BY_GROUP.items():
        for score in group_scores:
            glue(f"corr_{score}_{model}", correlation_text(results, model, group, score),
                 display=False)
