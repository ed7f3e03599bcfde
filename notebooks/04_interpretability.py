# %% [markdown]
# # Interpretability: Grad-RAM
#
# Grad-RAM is Grad-CAM for a regression output: the feature maps of one layer, weighted by the
# spatial mean of the gradient of the predicted age, summed and upsampled to the scan. The sign
# is kept: red regions raise the predicted age, blue ones lower it. For RNC the predicted age is
# the frozen encoder followed by the linear regressor.
#
# Maps are computed for every test subject, written as NIfTI in template space
# (`saliency/<model>/`), averaged per model, and summarised per region. On the simulated cohort
# the regions where ageing was simulated are known, so the notebook measures how much of each
# model's attribution falls inside them, against a null of shifted regions.

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
seed = 0
saliency_layer = "encoder.layer2"
n_perm = 1000
truth_threshold = 0.05
display_threshold = 0.2

# %%
import nibabel as nib
import numpy as np
import pandas as pd
import plotly.express as px
from IPython.display import Markdown, display
from myst_nb import glue
from nilearn import plotting

from brainage.models import saliency
from brainage.models.train import load_model
from brainage.study import runs
from brainage.study.figures import show
from brainage.study.profiles import resolve_path
from brainage.study.runs import RunFolder

run = RunFolder(resolve_path(run_dir))
reference = run.reference_image()
test = run.dataset("test")
maps = {}
for name in ("rnc", "l1"):
    model = load_model(run.models / name / "best.pt")
    paths = saliency.save_subject_maps(model, test, saliency_layer, reference, run.saliency / name)
    maps[name] = saliency.group_average(paths, normalise="maxabs")
    saliency.save_map(maps[name], reference, run.saliency / f"group_{name}.nii.gz")
display(Markdown(f"Signed Grad-RAM at `{saliency_layer}` for {len(test)} test subjects per model; "
                 "each subject's map is scaled by its largest absolute value before averaging."))

# %% [markdown]
# ## Group maps

# %%
for name, group_map in maps.items():
    img = nib.Nifti1Image(group_map.astype(np.float32), reference.affine)
    plotting.plot_stat_map(img, bg_img=reference, display_mode="ortho", cut_coords=(0, -18, 4),
                           title=f"{name.upper()}: mean signed Grad-RAM (test subjects)",
                           threshold=display_threshold * float(np.abs(group_map).max()),
                           cmap="cold_hot", symmetric_cbar=True, draw_cross=False)

# %% [markdown]
# The RNC group map in an interactive viewer (click to move the cursor):

# %%
plotting.view_img(nib.Nifti1Image(maps["rnc"].astype(np.float32), reference.affine),
                  bg_img=reference, cmap="cold_hot", symmetric_cmap=True,
                  threshold=display_threshold * float(np.abs(maps["rnc"]).max()),
                  title="RNC: mean signed Grad-RAM", width_view=640)

# %% [markdown]
# ## Attribution by region

# %%
regions = runs.region_labels(run, reference)
if regions is None:
    display(Markdown("No regions: the dataset is not simulated and the manifest names no atlas, "
                     "so the region table is skipped."))
else:
    labels, names, source = regions
    table = pd.concat([saliency.region_summary(maps[name], labels, names).assign(model=name.upper())
                       for name in maps], ignore_index=True)
    table.to_csv(run.saliency / "regions.csv", index=False)
    display(Markdown(f"Mean attribution per region of {source}:"))
    display(table.pivot(index="region", columns="model", values=["mean_signed", "share_abs"]).round(4))
    show(px.bar(table, x="region", y="mean_signed", color="model", barmode="group",
                title="Mean signed attribution per region (positive: raises the predicted age)",
                labels={"mean_signed": "mean signed Grad-RAM"}))

# %% [markdown]
# ## Does Grad-RAM find the regions where ageing was simulated?
#
# The truth mask holds the voxels whose simulated ageing effect exceeds `truth_threshold`. For
# each model's group map, the AUC of |map| for truth voxels against the other brain voxels, the
# enrichment (mean |map| inside the truth over mean |map| in the brain), and a permutation
# p-value against the same region shifted around the brain.

# %%
masks = runs.ageing_truth_mask(run, reference, truth_threshold)
if masks is None:
    display(Markdown("Not a simulated cohort: there is no ground truth of where ageing acts."))
else:
    truth_mask, brain_mask = masks
    rows = []
    for name, group_map in maps.items():
        result = saliency.ground_truth_enrichment(group_map, truth_mask, brain_mask,
                                                  n_perm=n_perm, seed=seed)
        rows.append({"model": name.upper(), "AUC |map|": result["auc_abs"],
                     "AUC signed": result["auc_signed"], "enrichment": result["enrichment"],
                     "p (AUC |map|)": result["p_value"]})
        glue(f"auc_{name}", f"{result['auc_abs']:.2f}", display=False)
        glue(f"enrichment_{name}", f"{result['enrichment']:.2f}", display=False)
        glue(f"auc_p_{name}", f"{result['p_value']:.3g}", display=False)
    enrichment = pd.DataFrame(rows).round(3)
    enrichment.to_csv(run.saliency / "enrichment.csv", index=False)
    display(Markdown(f"Truth mask: {int(truth_mask.sum())} of {int(brain_mask.sum())} brain voxels."))
    display(enrichment)
