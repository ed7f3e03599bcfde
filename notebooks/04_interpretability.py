# %% [markdown]
# # Interpretability: integrated gradients
#
# Which parts of a scan push a model's predicted age up or down? Integrated gradients answers
# it against a reference volume, here the most typical training scan of the mean training age
# (the model folder's `ig_reference.nii.gz`, the one `brainage predict --saliency` uses): the
# attribution of a voxel is its
# difference from the reference times the gradient of the predicted age averaged along the
# straight path from the reference to the scan, and a subject's attributions add up to its
# predicted age minus the reference's. A positive (red) voxel pushes the prediction above the
# reference's, a negative (blue) one below. The maps have the model's input grid. For RNC the
# predicted age is the frozen encoder followed by the linear regressor.
#
# Grad-RAM, the reference study's method, has no reference point: its feature maps are ReLU
# outputs, so its sign says where positively weighted channels are active, not whether a region
# raises the age, and its resolution is that of the chosen layer. Its unsigned maps go through
# the same truth test as integrated gradients below, with measures of how spread out they are,
# to test the reference study's claim that Grad-RAM shows more nuanced age features with RNC.
#
# Maps are computed for every test subject and every patient, written as NIfTI in template
# space (`saliency/<model>/`), checked (they must add up to the prediction's difference from the
# reference), averaged and summarised per region. On the simulated cohort the regions where
# ageing, AD and PD were simulated are known; the notebook tests whether attribution falls
# there more than on control voxels of the same tissue, against a network of the same
# architecture trained on permuted ages, and, for the disease effects, against age-matched
# controls. Subjects, not voxels, are the units of these tests.

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
seed = 0
saliency_layer = "encoder.layer2"
ig_steps = 8
null_epochs = None  # None: as many epochs as the L1 model
truth_threshold = 0.2
disease_threshold = 0.05
display_threshold = 0.2
spread_threshold = 0.5
n_boot = 2000

# %%
import time

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.inference.model_folder import CHECKPOINT_FILE, IG_REFERENCE_FILE, load_ig_reference
from brainage.models import saliency
from brainage.models.checkpoint import read_checkpoint
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, load_model, train_permuted_age_model
from brainage.study import figures, runs, sentences
from brainage.study.profiles import resolve_path
from brainage.study.runs import RunFolder
from brainage.study.tables import p_text, report_table

run = RunFolder(resolve_path(run_dir))
reference = run.reference_image()
train_rows = run.rows("train")
mean_scan = run.volumes(train_rows).mean(axis=0)  # (D, H, W): the mean training scan
test = run.dataset("test")
# the reference of every map: the model folder's, as `brainage predict --saliency` uses it
baseline = load_ig_reference(run.models, tuple(test[0]["image"].shape[1:]))
if baseline is None:
    raise FileNotFoundError(f"{run.models / IG_REFERENCE_FILE} is absent: run notebook 02, "
                            "which writes the integrated-gradients reference")
has_patients = (run.cohort()["split"] == "clinical").any()
patients = run.dataset("clinical") if has_patients else None
truth_dir = run.truth_dir()
models = {name: load_model(run.models / name / CHECKPOINT_FILE) for name in ("rnc", "l1")}
seconds = {}

# %% [markdown]
# ## The permuted-age control
#
# The L1 network, trained as long as the L1 model (the same epochs, schedule and augmentation)
# on the same scans with their ages shuffled (training and validation ages each permuted). It knows nothing of age, so its maps show what an
# attribution map of this architecture looks like without the age signal. Only the simulated
# cohort, whose truth the maps are compared with, needs it.

# %%
payload = read_checkpoint(run.models / "l1" / CHECKPOINT_FILE)
l1_epochs = int(payload["train_config"]["epochs"])
null_epochs = l1_epochs if null_epochs is None else int(null_epochs)
glue("null_epochs", null_epochs, display=False)
glue("null_l1_epochs", l1_epochs, display=False)
if truth_dir is not None and null_epochs > 0:
    start = time.perf_counter()
    null_cfg = TrainConfig.from_dict({**payload["train_config"], "epochs": null_epochs,
                                      "progress": False, "resume": False})
    null = train_permuted_age_model(run.dataset("train"), run.dataset("val"),
                                    ModelConfig.from_dict(payload["model_config"]), null_cfg,
                                    run.saliency / "permuted_age_model")
    models["permuted"] = load_model(null.best_checkpoint)
    seconds["permuted-age training"] = time.perf_counter() - start
    glue("null_val_mae", f"{null.best_val_mae:.1f}", display=False)
    display(Markdown(f"Permuted-age control: {null_epochs} epochs (the L1 model: {l1_epochs}), "
                     f"validation MAE against the permuted ages {null.best_val_mae:.1f} years."))

# %% [markdown]
# ## Maps, and whether they add up

# %%
brain_mask = (mean_scan > 0)
tables = []
for name, model in models.items():
    sets = [("test", test)] + ([("clinical", patients)] if has_patients and name != "permuted"
                               else [])
    for split, dataset in sets:
        start = time.perf_counter()
        table = saliency.save_attribution_maps(model, dataset, baseline, reference,
                                               run.saliency / name, n_steps=ig_steps,
                                               brain_mask=brain_mask)
        seconds[f"{name} maps ({split}, {len(dataset)} scans)"] = time.perf_counter() - start
        tables.append(table.assign(model=name, split=split))
checks = pd.concat(tables, ignore_index=True).merge(
    run.cohort()[["participant_id", "age", "group"]], on="participant_id")
checks.to_csv(run.saliency / "attribution_checks.csv", index=False)
timing = pd.DataFrame({"step": list(seconds), "seconds": list(seconds.values())})
glue("tab_04_timing", report_table(timing, labels={"seconds": "wall time (s)"}, digits=2),
     display=False)

# %% [markdown]
# ```{glue:figure} tab_04_timing
# :name: tab-04-timing
#
# Wall time (seconds) of each step of this notebook: training the permuted-age control and
# computing the maps of each model for the test subjects and the patients.
# ```

# %%

# %%
real = checks[checks["model"] != "permuted"]
offset = real["predicted"] - real["baseline_predicted"]
relative = (real["delta"].abs() / offset.abs().clip(lower=1.0))
figures.glue_figure("fig-04-completeness", figures.attribution_sums(real))
glue("n_maps", len(real), display=False)
glue("ig_steps", ig_steps, display=False)
glue("ig_median_delta", f"{real['delta'].abs().median():.2f}", display=False)
glue("ig_median_relative_delta", f"{100 * relative.median():.0f}", display=False)
for name in ("rnc", "l1"):
    rows = real["model"] == name
    glue(f"ig_reference_age_{name}",
         f"{real.loc[rows, 'baseline_predicted'].iloc[0]:.1f}", display=False)
glue("train_mean_age", f"{train_rows['age'].mean():.1f}", display=False)
sign_table = real.assign(prediction=saliency.offset_category(offset))
display(Markdown("Median positive share of the attribution (positive over total absolute "
                 "attribution in the brain, %), by how the prediction compares with the "
                 "reference's. One 4 mm voxel's sign mixes signal and noise, so the share of "
                 "positive *voxels* stays near half; the positive share of the attribution "
                 "follows the prediction."))
sign_summary = sign_table.groupby(["model", "prediction"])[["positive_share", "positive_fraction"]]
glue("tab_04_sign", report_table(
    sign_summary.median().mul(100).join(sign_summary.size().rename("n")).reset_index()
    .assign(model=lambda t: t["model"].str.upper()),
    labels={"positive_share": "positive share (%)", "positive_fraction": "positive voxels (%)",
            "prediction": "prediction against the reference"}, digits=2), display=False)

# %% [markdown]
# ```{glue:figure} tab_04_sign
# :name: tab-04-sign
#
# Median positive share of the integrated-gradients attribution (positive over total absolute
# attribution in the brain, %) and median share of positive voxels (%), by model and by how the
# prediction compares with the reference's; n maps per row (test subjects and patients).
# ```

# %% [markdown]
# ```{glue:figure} fig-04-completeness
# :name: fig-04-completeness
#
# Completeness of the {glue:text}`n_maps` integrated-gradients maps (test subjects and
# patients, both models): the sum of a map's attributions (years) against its prediction
# minus the reference's predicted age (years), one colour per model; dashed line: identity,
# where every map would lie with exact integration.
# ```
#
# ## Resolution

# %%
shape = tuple(baseline.shape)
voxel = float(np.abs(np.diag(reference.affine)[:3]).mean())
layer = saliency.layer_shape(models["rnc"], torch.from_numpy(baseline)[None, None], saliency_layer)
layer_mm = voxel * np.mean(np.divide(shape, layer))
glue("input_grid", "x".join(map(str, shape)), display=False)
glue("input_mm", f"{voxel:g}", display=False)
glue("gradram_layer", saliency_layer, display=False)
glue("gradram_grid", "x".join(map(str, layer)), display=False)
glue("gradram_mm", f"{layer_mm:.0f}", display=False)
display(Markdown(f"Integrated-gradients maps: the input grid, {'x'.join(map(str, shape))} "
                 f"voxels of {voxel:g} mm. A Grad-RAM map at `{saliency_layer}` would have "
                 f"{'x'.join(map(str, layer))} values, about {layer_mm:.0f} mm each."))

# %% [markdown]
# Grad-RAM's sign, for comparison: the share of brain voxels where the signed Grad-RAM map at the
# same layer is positive, in the same test subjects. Had its sign meant "raises the predicted age",
# the share would follow the prediction as the integrated-gradients share does.

# %%
gradram_rows = pd.concat([
    saliency.gradram_sign_table(models[name], test, saliency_layer, brain_mask).assign(model=name)
    for name in ("rnc", "l1")], ignore_index=True)
signs = gradram_rows.merge(
    real[real["split"] == "test"].assign(offset=lambda d: d["predicted"] - d["baseline_predicted"]),
    on=["model", "participant_id"])
signs["prediction"] = saliency.offset_category(signs["offset"])
columns = ["gradram_positive", "gradram_share", "positive_share"]
summary = signs.groupby(["model", "prediction"])[columns]
glue("tab_04_gradram", report_table(
    (summary.median() * 100).join(summary.size().rename("n")).reset_index()
    .assign(model=lambda t: t["model"].str.upper()), labels={
        "gradram_positive": "Grad-RAM: positive voxels (%)",
        "gradram_share": "Grad-RAM: positive share (%)",
        "positive_share": "integrated gradients: positive share (%)",
        "prediction": "prediction against the reference"}, digits=2), display=False)


def median_pct(rows, column, where):
    """Median of a share, in %, over the rows selected by ``where`` ("—" if none)."""
    values = rows.loc[where, column]
    return f"{100 * values.median():.0f} %" if len(values) else "—"


gradram_text, ig_text = [], []
for name in ("rnc", "l1"):
    rows = signs[signs["model"] == name]
    below, above = rows["offset"] < -10, rows["offset"] > 10
    gradram_text.append(f"{name.upper()} {median_pct(rows, 'gradram_positive', below)} in "
                        f"subjects predicted more than 10 years below the reference and "
                        f"{median_pct(rows, 'gradram_positive', above)} in those predicted "
                        "more than 10 years above it")
    ig_text.append(f"{name.upper()} {median_pct(rows, 'positive_share', below)} and "
                   f"{median_pct(rows, 'positive_share', above)}")
glue("gradram_sign_text", "; ".join(gradram_text), display=False)
glue("ig_sign_text", "; ".join(ig_text), display=False)

# %% [markdown]
# ```{glue:figure} tab_04_gradram
# :name: tab-04-gradram
#
# Grad-RAM's sign against integrated gradients' on the {glue:text}`n_test_maps` test subjects:
# median share of brain voxels where the Grad-RAM map is positive, Grad-RAM's positive share of
# its absolute values, and integrated gradients' positive share (all %), by how the prediction
# compares with the reference's; n subjects per row.
# ```

# %% [markdown]
# ## Group maps
#
# The mean magnitude of the test subjects' attributions (each subject's map scaled by its
# largest absolute value first): where each model looks, whichever way a region pushes.
#
# {numref}`fig-04-group-maps` shows the maps and {numref}`fig-04-viewer` one of them in three dimensions.

# %%
magnitude = {}
for name in models:
    paths = checks.loc[(checks["model"] == name) & (checks["split"] == "test"), "path"]
    stack = np.stack([np.abs(np.asarray(nib.load(p).dataobj)) for p in paths])  # (N, D, H, W)
    magnitude[name] = saliency.group_average(stack, normalise="maxabs")
    saliency.save_map(magnitude[name], reference, run.saliency / f"group_{name}.nii.gz")
# One mask, scale and threshold for every map: the background scan's brain (nothing is drawn
# outside it), the largest value of all maps, and display_threshold of it.
display_mask = brain_mask & (np.asarray(reference.dataobj) > 0)
shared_max = max(float(figures.masked_map(m, display_mask).max()) for m in magnitude.values())
figures.glue_figure("fig-04-group-maps", figures.attribution_montage(
    magnitude, reference, display_mask, threshold=display_threshold * shared_max,
    colourbar_label="mean |attribution|\n(each map scaled to max 1; no unit)"))
glue("n_group_maps", len(magnitude), display=False)
glue("n_test_maps", len(test), display=False)
glue("display_threshold_pct", f"{100 * display_threshold:.0f} %", display=False)

# %% [markdown]
# ```{glue:figure} fig-04-group-maps
# :name: fig-04-group-maps
#
# Mean |attribution| over the {glue:text}`n_test_maps` test subjects (each subject's map scaled
# by its largest absolute value first), one row per model ({glue:text}`n_group_maps` maps),
# over one preprocessed scan. Sagittal, coronal and axial slices, edges lettered P/A and
# L/R. All maps share one colour scale and are masked by that scan's brain and drawn above
# the same threshold, {glue:text}`display_threshold_pct` of the largest value of all maps
# (black line on the colour bar).
# ```

# %% [markdown]
# The mean signed map of the RNC model over the oldest third of the test subjects (their
# predictions lie above the reference's, so most attribution is positive), in an interactive
# viewer (click to move the cursor):

# %%
rnc_test = checks[(checks["model"] == "rnc") & (checks["split"] == "test")]
oldest = rnc_test[rnc_test["age"] >= rnc_test["age"].quantile(2 / 3)]
signed_old = saliency.group_average(list(oldest["path"]), normalise="maxabs")
signed_shown = figures.masked_map(signed_old, display_mask)
figures.glue_figure("fig-04-viewer", figures.attribution_viewer(
    signed_shown, reference, display_mask,
    threshold=display_threshold * float(np.abs(signed_shown).max()),
    title="RNC, oldest third: signed"))
glue("n_oldest", len(oldest), display=False)

# %% [markdown]
# ```{glue:figure} fig-04-viewer
# :name: fig-04-viewer
#
# Interactive viewer: the mean signed attribution of the RNC model over the
# {glue:text}`n_oldest` oldest test subjects (each map scaled by its largest absolute value
# first; no unit), masked by the brain, over one preprocessed scan. Red pushes the predicted
# age up, blue down; values under {glue:text}`display_threshold_pct` of the largest magnitude
# are not drawn. Click to move the cursor.
# ```

# %% [markdown]
# ## Attribution by region
#
# {numref}`fig-04-regions` shows each region's share.

# %%
regions = runs.region_labels(run, reference)
if regions is None:
    no_regions = ("No regions: the dataset is not simulated and the manifest names no atlas, "
                  "so the region table is skipped.")
    display(Markdown(no_regions))
    glue("region_ratio_text", "—", display=False)
    none = report_table(pd.DataFrame({"regions": ["none: no region labels for this dataset"]}))
    glue("tab_04_region_share", none, display=False)
    glue("tab_04_region_ratio", none, display=False)
    glue("fig-04-regions", Markdown(no_regions), display=False)
    glue("regions_source", "no atlas (this dataset has none)", display=False)
else:
    labels, names, source = regions
    table = pd.concat([saliency.region_summary(magnitude[name], labels, names)
                       .assign(model=name.upper()) for name in magnitude], ignore_index=True)
    table.to_csv(run.saliency / "regions.csv", index=False)
    glue("tab_04_region_share", report_table(
        table.pivot(index="region", columns="model", values="share_abs").mul(100),
        index="region", labels={m: f"{m} (%)" for m in table["model"].unique()}, digits=2),
        display=False)
    figures.glue_figure("fig-04-regions", figures.region_attribution(table))
    glue("regions_source", source, display=False)
    region_text = "—"
    if "permuted" in magnitude:
        shares = table.pivot(index="region", columns="model", values="share_abs")
        ratio = shares[["RNC", "L1"]].div(shares["PERMUTED"], axis=0).dropna()
        top = ratio.min(axis=1).sort_values(ascending=False).head(3).index
        glue("tab_04_region_ratio", report_table(ratio.sort_values("RNC", ascending=False),
                                                 index="region", digits=2), display=False)
        region_text = "; ".join(f"{region.replace('_', ' ')} {ratio.loc[region, 'RNC']:.1f} and "
                                f"{ratio.loc[region, 'L1']:.1f} times" for region in top)
    glue("region_ratio_text", region_text, display=False)
    if "permuted" not in magnitude:
        glue("tab_04_region_ratio", report_table(pd.DataFrame(
            {"regions": ["no permuted-age control in this run"]})), display=False)

# %% [markdown]
# ```{glue:figure} tab_04_region_share
# :name: tab-04-region-share
#
# Each region's share (%) of the mean |attribution| of the {glue:text}`n_test_maps` test
# subjects' maps, per model and for the permuted-age control; regions of
# {glue:text}`regions_source`.
# ```
#
# ```{glue:figure} tab_04_region_ratio
# :name: tab-04-region-ratio
#
# Each region's share of the mean |attribution| ({numref}`tab-04-region-share`) over the
# permuted-age control's share (a ratio, no unit; above 1: more than the control). Descriptive,
# no test.
# ```

# %% [markdown]
# ```{glue:figure} fig-04-regions
# :name: fig-04-regions
#
# Mean |attribution| per region of {glue:text}`regions_source` (each subject's map scaled by
# its largest absolute value; no unit) over the {glue:text}`n_test_maps` test subjects, one
# colour per model.
# ```
#
# ## Do the maps find where ageing was simulated?
#
# The ageing mask holds the brain voxels whose simulated ageing effect (local volume change,
# grey matter turned to CSF, white-matter hypointensity) exceeds `truth_threshold`. It leaves
# out the fall of grey/white contrast, which acts on every voxel. For each test subject, the
# AUC of |attribution| for mask voxels against voxels of the same tissue outside the mask
# (0.5: no preference); each model's AUCs against the permuted-age control's on the same
# subjects (Wilcoxon signed-rank, one-sided).

# %%
if truth_dir is None:
    display(Markdown("Not a simulated cohort: there is no ground truth of where ageing acts."))
    glue("truth_coverage", "—", display=False)
    glue("truth_threshold", "—", display=False)
    glue("tab_04_enrichment", report_table(pd.DataFrame(
        {"test": ["not run: no simulated ground truth"]})), display=False)
else:
    tissue = runs.tissue_labels(reference)
    ageing, brain = runs.effect_mask(run, reference, "ageing", truth_threshold)
    glue("truth_coverage", f"{100 * ageing.sum() / brain.sum():.0f}", display=False)
    glue("truth_threshold", f"{truth_threshold:g}", display=False)
    auc = {name: saliency.subject_enrichment(
        list(checks.loc[(checks["model"] == name) & (checks["split"] == "test"), "path"]),
        ageing, brain, tissue=tissue) for name in models}
    truth_ig = saliency.truth_test_table(auc, n_boot=n_boot, seed=seed)
    group_auc = {name: saliency.enrichment_auc(magnitude[name], ageing, brain,
                                               tissue=tissue)["auc"] for name in models}
    enrichment = truth_ig.assign(group_auc=truth_ig["model"].map(group_auc))
    enrichment.to_csv(run.saliency / "enrichment.csv", index=False)
    for row in truth_ig.itertuples():
        glue(f"ageing_auc_{row.model}", f"{row.median:.2f}", display=False)
        glue(f"ageing_auc_ci_{row.model}", f"{row.ci_low:.2f} to {row.ci_high:.2f}",
             display=False)
        if row.model != "permuted" and "p_null" not in truth_ig.columns:
            glue(f"ageing_p_{row.model}", "—", display=False)  # no null: the abstract pastes it
        elif row.model != "permuted":
            glue(f"ageing_p_{row.model}", p_text(row.p_null_holm, "p_Holm"), display=False)
            glue(f"ageing_diff_{row.model}", f"{row.diff_null:+.3f} (95% CI "
                 f"{row.diff_low:+.3f} to {row.diff_high:+.3f})", display=False)
    display(Markdown(f"Ageing mask: {int(ageing.sum())} of {int(brain.sum())} brain voxels "
                     f"({100 * ageing.sum() / brain.sum():.0f} %); {len(test)} test subjects."))
    shown = enrichment.assign(model=lambda t: t["model"].str.upper())
    if "diff_null" in shown.columns:  # the null's own row: a comparison that does not apply
        null_row = shown["diff_null"].isna()
        shown["diff_null"] = [
            "—" if missing else f"{r.diff_null:+.3g} [{r.diff_low:+.3g}, {r.diff_high:+.3g}]"
            for missing, r in zip(null_row, shown.itertuples())]
        for column in ("p_null", "p_null_holm"):
            shown[column] = shown[column].astype(object).where(~null_row, "—")
        shown = shown.drop(columns=["diff_low", "diff_high"])
    glue("tab_04_enrichment", report_table(
        shown, drop=["n"], intervals={"median": ("ci_low", "ci_high")},
        labels={"group_auc": "group-map AUC", "median": "median subject AUC [95% CI]",
                "p_half": "p (above 0.5)", "diff_null": "paired difference from the "
                "permuted-age network [95% CI]", "p_null": "p (above the permuted-age network)",
                "p_null_holm": "p (Holm)"}, p_columns=["p_half", "p_null", "p_null_holm"]),
        display=False)
glue("ig_truth_sentence", sentences.saliency_truth_sentence(
    truth_ig if truth_dir is not None else pd.DataFrame(), "integrated-gradients"),
    display=False)

# %% [markdown]
# ```{glue:figure} tab_04_enrichment
# :name: tab-04-enrichment
#
# Do the maps find the simulated ageing regions? AUC (no unit; 0.5: no preference) of
# |attribution| in the ageing mask against same-tissue voxels outside it: the median over the
# {glue:text}`n_test_maps` test subjects [95% bootstrap CI over subjects], its one-sided
# Wilcoxon p against 0.5, the median paired difference from the permuted-age network [95% CI]
# with its one-sided Wilcoxon signed-rank p, raw and Holm-corrected over the two models, and
# the AUC of the group map. The permuted-age network's row is the null: a network that knows
# nothing of age.
# ```
#
# {glue:text}`ig_truth_sentence`.

# %% [markdown]
# ## What the reference does to the maps
#
# The integrated-gradients reference is the point every map starts from. The mean training
# scan, an obvious choice, is blurred by the averaging, and a blurred brain reads as old: the
# models predict it far above the mean training age, so that every map would mostly explain
# "younger than the reference". The study's reference is instead the training scan, among
# those within 5 years of the mean training age, nearest to their voxelwise median: a real,
# unblurred brain of typical anatomy, chosen without looking at any model. What each reference
# is predicted at is computed here; the test subjects' maps from the mean scan (their positive
# share and ageing AUC) cost as much as the maps above and are left to
# `benchmarks/bench_ig_reference.py`, whose measured table is in the appendix's
# [Build time and reproducibility](../guide/benchmarks.md).

# %%
candidates = {"typical scan": baseline, "mean scan": mean_scan}
reference_ages = saliency.reference_prediction_table(models, candidates).set_index("reference")
reference_effect = pd.DataFrame([{"model": name, "reference": label,
                                  "reference predicted": reference_ages.loc[label, name]}
                                 for name in ("rnc", "l1") for label in candidates])
reference_effect.to_csv(run.saliency / "reference_effect.csv", index=False)
glue("tab_04_reference", report_table(
    reference_effect.assign(model=lambda t: t["model"].str.upper()),
    labels={"reference predicted": "reference's predicted age (years)"}, digits=3),
    display=False)
for label, key in (("typical scan", "ig_reference"), ("mean scan", "mean_scan")):
    for name in models:
        glue(f"{key}_predicted_{name}", f"{reference_ages.loc[label, name]:.1f}", display=False)
glue("reference_sentence", sentences.reference_sentence(
    {m: reference_ages.loc["typical scan", m] for m in ("rnc", "l1")},
    {m: reference_ages.loc["mean scan", m] for m in ("rnc", "l1")},
    float(train_rows["age"].mean()), pd.DataFrame()), display=False)

# %% [markdown]
# ```{glue:figure} tab_04_reference
# :name: tab-04-reference
#
# The two candidate references of integrated gradients: each model's predicted age of the
# reference (years; training mean {glue:text}`train_mean_age`). The maps from each are
# compared by `benchmarks/bench_ig_reference.py`.
# ```
#
# {glue:text}`reference_sentence`.

# %% [markdown]
# ## The reference study's Grad-RAM claim, tested
#
# The reference study reports that Grad-RAM "revealed more nuanced features related to age
# regression with the RNC loss than conventional deep regression". Its maps are Grad-RAM's
# rectified form (per subject scaled to [0, 1]; the form MONAI's `GradCAM` gives) at the
# layer above. Each test subject's map goes through the truth test of integrated gradients
# (AUC in the ageing regions against same-tissue voxels, against 0.5 and against the
# permuted-age network), and three measures of what "more nuanced" could mean: the normalised
# entropy of the map over the brain (1: uniform), the number of distinct regions (connected,
# 26-neighbourhood) above half the map's maximum, and the share of brain voxels that holds half
# of the map's total. Intervals are bootstrap intervals over subjects; RNC and L1 are compared
# on the same subjects (paired differences).

# %%
if truth_dir is None:
    display(Markdown("Not a simulated cohort: the Grad-RAM maps cannot be tested against a "
                     "ground truth."))
    glue("gradram_claim_sentence", "The Grad-RAM claim was not tested: no simulated ground "
         "truth", display=False)
    glue("gradram_truth_sentence", "", display=False)
    glue("tab_04_gradram_truth", report_table(pd.DataFrame(
        {"test": ["not run: no simulated ground truth"]})), display=False)
else:
    gradram = {name: saliency.gradram_truth_table(model, test, saliency_layer, ageing, brain,
                                                  tissue=tissue, threshold=spread_threshold)
               for name, model in models.items()}
    pd.concat([t.assign(model=n) for n, t in gradram.items()]).to_csv(
        run.saliency / "gradram_truth.csv", index=False)
    truth_gradram = saliency.truth_test_table({n: t["auc"] for n, t in gradram.items()},
                                              n_boot=n_boot, seed=seed)
    measures = pd.DataFrame([{"model": name.upper(), "measure": m,
                              **saliency.median_interval(t[m].dropna(), n_boot=n_boot,
                                                         seed=seed)}
                             for name, t in gradram.items() for m in saliency.MAP_MEASURES])
    differences = saliency.paired_differences(gradram["rnc"], gradram["l1"],
                                              saliency.MAP_MEASURES, n_boot=n_boot, seed=seed)
    differences.to_csv(run.saliency / "gradram_rnc_vs_l1.csv", index=False)
    wide = measures.assign(value=[f"{r.median:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]"
                                  for r in measures.itertuples()]).pivot(
        index="measure", columns="model", values="value")
    wide = wide.join(differences.set_index("measure").apply(
        lambda r: f"{r['diff']:+.3g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]", axis=1)
        .rename("RNC − L1 (paired)"))
    wide.index = [m.replace("_", " ") for m in wide.index]
    glue("tab_04_gradram_truth", report_table(wide.reset_index(names="measure")),
         display=False)
    glue("gradram_truth_sentence", sentences.saliency_truth_sentence(truth_gradram, "Grad-RAM"),
         display=False)
    glue("gradram_claim_sentence", sentences.gradram_claim_sentence(differences, truth_gradram),
         display=False)
    for row in truth_gradram.itertuples():
        glue(f"gradram_auc_{row.model}", f"{row.median:.2f}", display=False)
    glue("spread_threshold_pct", f"{100 * spread_threshold:.0f} %", display=False)

# %% [markdown]
# ```{glue:figure} tab_04_gradram_truth
# :name: tab-04-gradram-truth
#
# The unsigned Grad-RAM maps of the {glue:text}`n_test_maps` test subjects: median [95%
# bootstrap CI] of the AUC in the simulated ageing regions, the normalised entropy, the number
# of regions above half the maximum and the share of brain voxels holding half of the map, per
# model and for the permuted-age network; last column: the median paired difference RNC − L1
# [95% CI].
# ```
#
# {glue:text}`gradram_truth_sentence`. {glue:text}`gradram_claim_sentence`.

# %% [markdown]
# ## Do the patients' maps find where AD and PD were simulated?
#
# Each disease mask holds the voxels whose simulated disease effect exceeds
# `disease_threshold`. A patient's extra atrophy there should make those voxels push the
# prediction up, more than in controls of the same ages, whose same regions only age. For each
# subject, the AUC of the signed attribution for mask voxels against same-tissue voxels outside
# it; patients against the test controls within the patients' age range (Mann-Whitney U,
# one-sided). The other disease's mask is the specificity check.

# %%
if truth_dir is None or not has_patients:
    display(Markdown("No simulated patients: the disease effect maps cannot be tested."))
    disease = pd.DataFrame()
else:
    masks = {process: runs.effect_mask(run, reference, process, disease_threshold)[0]
             for process in ("ad", "pd")}
    rows = []
    for name in ("rnc", "l1"):
        maps_of = checks[checks["model"] == name]
        for group in ("AD", "PD"):
            cases = maps_of[maps_of["group"] == group]
            if len(cases) < 2:
                continue
            controls = maps_of[(maps_of["group"] == "HC") & maps_of["age"].between(
                cases["age"].min(), cases["age"].max())]
            if len(controls) < 2:
                display(Markdown(f"{name.upper()}, {group}: {len(controls)} test control(s) in "
                                 "the patients' age range, too few to compare."))
                continue
            for process, mask in masks.items():
                a = saliency.subject_enrichment(list(cases["path"]), mask, brain, tissue=tissue,
                                                signed=True)
                b = saliency.subject_enrichment(list(controls["path"]), mask, brain,
                                                tissue=tissue, signed=True)
                result = saliency.compare_enrichment(a, b, paired=False)
                rows.append({"model": name.upper(), "patients": group,
                             "mask": process.upper(), "n patients": len(cases),
                             "n age-matched controls": len(controls),
                             "patients median AUC": result["median_a"],
                             "controls median AUC": result["median_b"], "p": result["p"]})
    disease = pd.DataFrame(rows)
    if not disease.empty:
        # the four own-disease comparisons (2 models x 2 diseases) are one family: Holm
        own_rows = disease["patients"] == disease["mask"]
        disease["p (Holm)"] = pd.Series("— (specificity check)", index=disease.index,
                                        dtype=object)
        disease.loc[own_rows, "p (Holm)"] = saliency.holm(disease.loc[own_rows, "p"])
        for _, r in disease[own_rows].iterrows():
            key = f"{r['patients'].lower()}_{r['model'].lower()}"
            glue(f"disease_auc_{key}", f"{r['patients median AUC']:.2f} against "
                 f"{r['controls median AUC']:.2f}", display=False)
            glue(f"disease_p_{key}", p_text(r["p (Holm)"], "p_Holm"), display=False)
    disease.to_csv(run.saliency / "disease_enrichment.csv", index=False)
    for process, mask in masks.items():
        glue(f"{process}_mask_voxels", int(mask.sum()), display=False)
glue("tab_04_disease", report_table(disease if not disease.empty else pd.DataFrame(
    {"comparison": ["none: too few patients or age-matched test controls"]}),
    p_columns=["p", "p (Holm)"]), display=False)

# %% [markdown]
# ```{glue:figure} tab_04_disease
# :name: tab-04-disease
#
# Do the patients' maps find the simulated disease regions? Median AUC (no unit) of the signed
# attribution in each disease mask against same-tissue voxels, patients against the test
# controls within the patients' age range (one-sided Mann-Whitney p; Holm-corrected over the
# four comparisons of a disease's own mask, the other mask being the specificity check); n
# subjects per group.
# ```

# %%
# The page's summary and one sentence for the Discussion, from whatever this dataset allowed.
completeness = (f"integrated-gradients maps add up to each prediction's difference from the "
                f"reference's within a median {100 * relative.median():.0f} % (median absolute "
                f"error {real['delta'].abs().median():.2f} years, {ig_steps} quadrature nodes)")
own = (disease[disease["patients"] == disease["mask"]] if not disease.empty
       else pd.DataFrame())
parts = [completeness]
if truth_dir is not None:
    parts.append(sentences.saliency_truth_sentence(truth_ig, "integrated-gradients")
                 .replace("The ", "the ", 1))
    if has_patients:
        parts.append(sentences.disease_saliency_sentence(own))
glue("saliency_sentence", "; ".join(parts), display=False)
summary = [sentences.saliency_truth_sentence(truth_ig, "integrated-gradients") + "."
           if truth_dir is not None else
           "Without a simulated ground truth, the maps could not be tested against one."]
if truth_dir is not None:
    summary.append(sentences.gradram_claim_sentence(differences, truth_gradram) + ".")
    if has_patients:
        text = sentences.disease_saliency_sentence(own)
        summary.append(text[0].upper() + text[1:] + ".")
glue("saliency_summary", " ".join(summary), display=False)

# %% [markdown]
# ## Summary
#
# {glue:text}`saliency_summary`
