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
from nilearn import datasets, image, plotting

from brainage import saliency
from brainage.figures import show
from brainage.profiles import resolve_path
from brainage.runs import RunFolder
from brainage.train import load_model

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
truth = run.ground_truth()
info = run.dataset_info()
regions = None
if truth is not None:
    truth_dir = resolve_path(info["root"]) / "derivatives" / "ground_truth"
    labels = image.resample_to_img(str(truth_dir / "regions.nii.gz"), reference,
                                   interpolation="nearest", force_resample=True, copy_header=True)
    names = pd.read_csv(truth_dir / "regions.tsv", sep="\t")
    regions = (labels, dict(zip(names["index"], names["name"])))
    source = "the simulated cohort's ground-truth regions"
elif info.get("atlas"):
    labels = image.resample_to_img(info["atlas"]["image"], reference, interpolation="nearest",
                                   force_resample=True, copy_header=True)
    names = pd.read_csv(info["atlas"]["labels"], sep="\t")
    regions = (labels, dict(zip(names.iloc[:, 0], names.iloc[:, 1])))
    source = f"the atlas {info['atlas']['image']}"
if regions is None:
    display(Markdown("No regions: the dataset is not simulated and the manifest names no atlas, "
                     "so the region table is skipped."))
else:
    table = pd.concat([saliency.region_summary(maps[name], *regions).assign(model=name.upper())
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
if truth is None:
    display(Markdown("Not a simulated cohort: there is no ground truth of where ageing acts."))
else:
    effect = image.resample_to_img(str(truth_dir / "ageing_effect.nii.gz"), reference,
                                   interpolation="continuous", force_resample=True, copy_header=True)
    brain = image.resample_to_img(datasets.load_mni152_brain_mask(resolution=2), reference,
                                  interpolation="nearest", force_resample=True, copy_header=True)
    brain_mask = np.asarray(brain.dataobj) > 0
    truth_mask = (np.asarray(effect.dataobj) > truth_threshold) & brain_mask
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
