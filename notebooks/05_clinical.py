# %% [markdown]
# # Clinical correlation of the brain-age gap
#
# The study's clinical claim: the bias-corrected brain-age gap is larger in Alzheimer's (AD) and
# Parkinson's disease (PD) than in healthy controls, and tracks disease severity. Controls are
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
# computed on the subjects' true brain-age gap.
#
# Writes `clinical.json`.

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
seed = 0
n_boot = 2000

# %%
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.analysis import clinical, uncertainty
from brainage.study import figures, runs
from brainage.study.profiles import resolve_path
from brainage.study.runs import RunFolder

run = RunFolder(resolve_path(run_dir))
scores = [s for scores in clinical.SCORES_BY_GROUP.values() for s in scores]
predictions = runs.predictions_with_scores(run, scores)
analysed = predictions[predictions["split"].isin(["test", "clinical"])]
truth = run.ground_truth()
truth_values = None
settings = clinical.ClinicalSettings(n_boot=n_boot)
if truth is not None:
    truth_values = clinical.truth_from_simulation(truth[0], predictions, settings)
results = clinical.clinical_summary(predictions, truth=truth_values, seed=seed, settings=settings)
results.to_json(run.clinical_json)
subjects = analysed.drop_duplicates("participant_id")
display(Markdown("Subjects analysed, by group and site:"))
pd.crosstab(subjects["group"], subjects["site"].fillna("n/a"), margins=True)

# %% [markdown]
# ## The gap by group

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
display(results.group_stats.round(2))
display(results.ancova.round(4))
display(Markdown("Pairwise contrasts: adjusted difference (years) and adjusted Hedges' g "
                 "(covariates as in the ANCOVA), beside the unadjusted g."))
results.posthoc[["model", "contrast", "n_a", "n_b", "mean_diff", "adj_diff", "adj_ci_low",
                 "adj_ci_high", "adj_g", "adj_g_ci_low", "adj_g_ci_high", "hedges_g", "p",
                 "p_fdr", "covariates", "note"]].round(3)

# %% [markdown]
# ## The gap and disease severity

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
results.correlations.round(4)

# %% [markdown]
# ## Which model's gap tracks severity better?
#
# The difference of the two models' partial Spearman correlations on the same patients, signed
# so that a positive value means RNC tracks severity more strongly, with a paired bootstrap CI.

# %%
results.model_comparison.round(3)

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
    display(results.truth_comparison.round(3))

# %% [markdown]
# ## Individual evidence: gap intervals above 0
#
# Each scan's bias-corrected gap has a conformal interval (notebook 03). When it lies entirely
# above 0, that scan on its own is evidence of an older-looking brain. Among healthy controls
# this is a false positive, expected in about (1 - level) / 2 of them.

# %%
evidence = uncertainty.evidence_table(analysed)
levels = analysed["interval_level"].dropna()
expected = f"{(1 - levels.iloc[0]) / 2:.0%}" if len(levels) else "n/a"
display(Markdown(f"Interval level {levels.iloc[0]:.0%}: expected share of controls above 0 "
                 f"about {expected}." if len(levels) else "No gap intervals: the validation "
                 "split was too small to calibrate them (notebook 03)."))
glue("evidence_expected_hc", expected, display=False)
shares = evidence.set_index(["model", "group"])
for model in ("rnc", "l1"):
    for group in ("HC", "AD", "PD"):
        row = shares.loc[(model, group)] if (model, group) in shares.index else None
        glue(f"evidence_{group.lower()}_{model}", "n/a" if row is None or not row["n"] else
             f"{row['above']} of {row['n']} ({row['share']:.0%})", display=False)
evidence.round(3)

# %%
glue("clinical_sentence", clinical.summary_sentence(results, "rnc"), display=False)
table = results.truth_comparison
for quantity in ("mean_gap", "score_correlation"):
    rows = table[(table["quantity"] == quantity) & table["covered"].notna()]
    glue(f"covered_{quantity}", f"{int(rows['covered'].sum())} of {len(rows)}" if len(rows)
         else "n/a", display=False)
ancova_age = results.ancova.query("model == 'rnc' and source == 'age'")
glue("ancova_age_p", f"{ancova_age['p'].iloc[0]:.2g}" if len(ancova_age) else "n/a",
     display=False)
for model in ("rnc", "l1"):
    row = results.posthoc.query("model == @model and contrast == 'AD vs HC'")
    glue(f"adjusted_ad_{model}",
         f"{row['adj_diff'].iloc[0]:.1f} years (95% CI {row['adj_ci_low'].iloc[0]:.1f} to "
         f"{row['adj_ci_high'].iloc[0]:.1f}; adjusted g {row['adj_g'].iloc[0]:.2f}, unadjusted "
         f"{row['hedges_g'].iloc[0]:.2f})" if len(row) and row["estimable"].iloc[0] else "n/a",
         display=False)
if truth is not None and truth[1].get("patients_max_biological_age") is not None:
    meta = truth[1]
    glue("patients_max_biological_age", f"{meta['patients_max_biological_age']:.1f}",
         display=False)
    glue("controls_max_age", f"{meta['controls_age_range'][1]:g}", display=False)
else:
    glue("patients_max_biological_age", "n/a", display=False)
    glue("controls_max_age", "n/a", display=False)
for model in ("rnc", "l1"):
    stats = results.group_stats.query("model == @model").set_index("group")
    for group in ("HC", "AD", "PD"):
        value = f"{stats.loc[group, 'mean']:.1f}" if stats.loc[group, "n"] > 0 else "n/a"
        glue(f"gap_{group.lower()}_{model}", value, display=False)
    for group, group_scores in clinical.SCORES_BY_GROUP.items():
        for score in group_scores:
            glue(f"corr_{score}_{model}", clinical.correlation_text(results, model, group, score),
                 display=False)
