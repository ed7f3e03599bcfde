# %% [markdown]
# # Interpretability: integrated gradients
#
# Which parts of a scan push a model's predicted age up or down? Integrated gradients answers
# it against a reference volume, here the mean training scan: the attribution of a voxel is its
# difference from the reference times the gradient of the predicted age averaged along the
# straight path from the reference to the scan, and a subject's attributions add up to its
# predicted age minus the reference's. A positive (red) voxel pushes the prediction above the
# reference's, a negative (blue) one below. The maps have the model's input grid. For RNC the
# predicted age is the frozen encoder followed by the linear regressor.
#
# (Grad-RAM, the signed Grad-CAM of the first version of this study, has no reference point:
# its feature maps are ReLU outputs, so its sign says where positively weighted channels are
# active, not whether a region raises the age, and its resolution is that of the chosen layer.
# `brainage.models.saliency.grad_ram` keeps it; this notebook reports its layer's resolution
# only.)
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
null_epochs = 3
truth_threshold = 0.2
disease_threshold = 0.05
display_threshold = 0.2

# %%
import time

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.inference.model_folder import CHECKPOINT_FILE
from brainage.models import saliency
from brainage.models.checkpoint import read_checkpoint
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, load_model, train_permuted_age_model
from brainage.study import figures, runs
from brainage.study.profiles import resolve_path
from brainage.study.runs import RunFolder
from brainage.study.tables import report_table

run = RunFolder(resolve_path(run_dir))
reference = run.reference_image()
train_rows = run.rows("train")
baseline = run.volumes(train_rows).mean(axis=0)  # (D, H, W): the mean training scan
test = run.dataset("test")
has_patients = (run.cohort()["split"] == "clinical").any()
patients = run.dataset("clinical") if has_patients else None
truth_dir = run.truth_dir()
models = {name: load_model(run.models / name / CHECKPOINT_FILE) for name in ("rnc", "l1")}
seconds = {}

# %% [markdown]
# ## The permuted-age control
#
# The L1 network, trained for a few epochs on the same scans with their ages shuffled (training
# and validation ages each permuted). It knows nothing of age, so its maps show what an
# attribution map of this architecture looks like without the age signal. Only the simulated
# cohort, whose truth the maps are compared with, needs it.

# %%
if truth_dir is not None and null_epochs > 0:
    start = time.perf_counter()
    payload = read_checkpoint(run.models / "l1" / CHECKPOINT_FILE)
    null_cfg = TrainConfig.from_dict({**payload["train_config"], "epochs": null_epochs,
                                      "augment": None, "progress": False, "resume": False})
    null = train_permuted_age_model(run.dataset("train"), run.dataset("val"),
                                    ModelConfig.from_dict(payload["model_config"]), null_cfg,
                                    run.saliency / "permuted_age_model")
    models["permuted"] = load_model(null.best_checkpoint)
    seconds["permuted-age training"] = time.perf_counter() - start
    glue("null_val_mae", f"{null.best_val_mae:.1f}", display=False)
    display(Markdown(f"Permuted-age control: {null_epochs} epochs, validation MAE against the "
                     f"permuted ages {null.best_val_mae:.1f} years."))

# %% [markdown]
# ## Maps, and whether they add up

# %%
brain_mask = (baseline > 0)
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
    """Median of a share, in %, over the rows selected by ``where`` ("n/a" if none)."""
    values = rows.loc[where, column]
    return f"{100 * values.median():.0f} %" if len(values) else "n/a"


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
    glue("region_ratio_text", "n/a", display=False)
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
    region_text = "n/a"
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
    glue("truth_coverage", "n/a", display=False)
    glue("truth_threshold", "n/a", display=False)
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
    rows = []
    for name in ("rnc", "l1"):
        group_auc = saliency.enrichment_auc(magnitude[name], ageing, brain, tissue=tissue)["auc"]
        row = {"model": name.upper(), "group-map AUC": group_auc,
               "median subject AUC": float(np.median(auc[name]))}
        if "permuted" in auc:
            test_result = saliency.compare_enrichment(auc[name], auc["permuted"], paired=True)
            row.update({"permuted-age median AUC": test_result["median_b"],
                        "p (vs permuted)": test_result["p"]})
            glue(f"ageing_p_{name}", f"{test_result['p']:.2g}", display=False)
        rows.append(row)
        glue(f"ageing_auc_{name}", f"{np.median(auc[name]):.2f}", display=False)
    if "permuted" in auc:
        glue("ageing_auc_permuted", f"{np.median(auc['permuted']):.2f}", display=False)
    enrichment = pd.DataFrame(rows)
    enrichment.to_csv(run.saliency / "enrichment.csv", index=False)
    display(Markdown(f"Ageing mask: {int(ageing.sum())} of {int(brain.sum())} brain voxels "
                     f"({100 * ageing.sum() / brain.sum():.0f} %); {len(test)} test subjects."))
    glue("tab_04_enrichment", report_table(enrichment, labels={
        "p (vs permuted)": "p (one-sided, vs permuted)"}, p_columns=["p (vs permuted)"]),
        display=False)

# %% [markdown]
# ```{glue:figure} tab_04_enrichment
# :name: tab-04-enrichment
#
# Do the maps find the simulated ageing regions? AUC (no unit; 0.5: no preference) of
# |attribution| in the ageing mask against same-tissue voxels outside it: of the group map, and
# the median over the {glue:text}`n_test_maps` test subjects, beside the permuted-age
# control's median, with the one-sided Wilcoxon signed-rank p.
# ```

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
                if process.upper() == group:
                    glue(f"disease_auc_{group.lower()}_{name}",
                         f"{result['median_a']:.2f} against {result['median_b']:.2f}",
                         display=False)
                    glue(f"disease_p_{group.lower()}_{name}", f"{result['p']:.2g}",
                         display=False)
    disease = pd.DataFrame(rows)
    disease.to_csv(run.saliency / "disease_enrichment.csv", index=False)
    for process, mask in masks.items():
        glue(f"{process}_mask_voxels", int(mask.sum()), display=False)
glue("tab_04_disease", report_table(disease if not disease.empty else pd.DataFrame(
    {"comparison": ["none: too few patients or age-matched test controls"]})), display=False)

# %% [markdown]
# ```{glue:figure} tab_04_disease
# :name: tab-04-disease
#
# Do the patients' maps find the simulated disease regions? Median AUC (no unit) of the signed
# attribution in each disease mask against same-tissue voxels, patients against the test
# controls within the patients' age range (one-sided Mann-Whitney p); n subjects per group.
# ```

# %%
# One sentence for the Discussion, from whatever this dataset allowed.
parts = [f"integrated-gradients maps add up to each prediction's difference from the "
         f"reference's within a median {100 * relative.median():.0f} % (median absolute "
         f"error {real['delta'].abs().median():.2f} years, {ig_steps} quadrature nodes)"]
if truth_dir is not None:
    ageing_text = (f"the median AUC of the test subjects' |attribution| in the simulated ageing "
                   f"regions against same-tissue voxels (0.5: no preference) was "
                   f"{np.median(auc['rnc']):.2f} for RNC and {np.median(auc['l1']):.2f} for L1")
    if "permuted" in auc:
        p_values = enrichment["p (vs permuted)"].to_numpy()
        verdict = ("both above" if (p_values < 0.05).all() else
                   "neither above" if (p_values >= 0.05).all() else "not both above")
        ageing_text += (f", {verdict} the permuted-age control's {np.median(auc['permuted']):.2f} "
                        f"(one-sided paired p = {p_values[0]:.2g} and {p_values[1]:.2g})")
    parts.append(ageing_text)
if truth_dir is not None and not disease.empty:
    own = disease[disease["patients"] == disease["mask"]]
    n_significant = int((own["p"] < 0.05).sum())
    parts.append(f"in their own disease's regions, the patients' signed attribution exceeded "
                 f"that of age-matched controls (one-sided p < 0.05) in {n_significant} of "
                 f"{len(own)} model and disease comparisons (" + "; ".join(
                     f"{r['model']} {r['patients']}: median AUC {r['patients median AUC']:.2f} "
                     f"vs {r['controls median AUC']:.2f}, p = {r['p']:.2g}"
                     for _, r in own.iterrows()) + ")")
glue("saliency_sentence", "; ".join(parts), display=False)
