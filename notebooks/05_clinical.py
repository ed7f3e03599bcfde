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
import plotly.express as px
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.analysis import clinical, uncertainty
from brainage.study import runs
from brainage.study.figures import show
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
show(px.violin(analysed, x="group", y="corrected_gap", color="model", box=True, points="all",
               hover_name="participant_id", category_orders={"group": ["HC", "AD", "PD"]},
               title="Bias-corrected brain-age gap by group",
               labels={"corrected_gap": "corrected gap (years)"}))

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
for group, group_scores in clinical.SCORES_BY_GROUP.items():
    rows = analysed[analysed["group"] == group]
    for score in group_scores:
        data = rows.dropna(subset=[score])
        if data.empty:
            display(Markdown(f"No {group} subject has a {score} score."))
            continue
        stats = results.correlations.query("group == @group and score == @score")
        title = ", ".join(
            f"{r.model.upper()}: rho {r.rho:.2f}, p {r.p:.3g} (n {r.n})" if r.estimable
            else f"{r.model.upper()}: not estimable (n {r.n})" for r in stats.itertuples())
        show(px.scatter(data, x=score, y="corrected_gap", color="model", trendline="ols",
                        hover_name="participant_id", title=f"{group}: gap against {score}<br><sup>{title}</sup>",
                        labels={"corrected_gap": "corrected gap (years)"}))

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
