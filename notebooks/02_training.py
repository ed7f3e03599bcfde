# %% [markdown]
# # Training
#
# Two models share one backbone, a MONAI 3D ResNet whose globally pooled features feed a linear
# regressor:
#
# - **RNC**: stage 1 trains the encoder with the Rank-N-Contrast loss on two random augmentations
#   of every training scan; stage 2 freezes it and fits the linear regressor with the L1 loss.
# - **L1 baseline**: the same backbone and head trained end to end with the L1 loss, on the same
#   scans and augmentations. The two models share the architecture, the training and validation
#   scans, the augmentations, the optimiser and learning-rate schedule, the batch size, the seed
#   and the rule that picks the checkpoint; they do not share the number of epochs: RNC's encoder
#   sees two augmented views of each scan per epoch and L1 one, so the profile gives L1 the
#   epochs that make the number of augmented volumes each sees equal (stated below from this
#   run's parameters).
#
# Only the training split is used for fitting and the validation split for model selection; the
# test split and the patients are not read here. Checkpoints (plain state dicts with metadata)
# are written every epoch to the run's model folder, and an interrupted run resumes from the
# last one. The
# model card records the training domain, and each model keeps its training scans' features as
# the reference of its out-of-distribution score, thresholded on the validation scans.

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
seed = 0
model_depth = 10
model_widths = [16, 32, 64, 128]
conv1_stride = 2
epochs = 15
l1_epochs = 15
head_epochs = 100
batch_size = 16
optimizer = "adamw"
lr = 0.001
head_lr = 0.01
weight_decay = 0.0001
temperature = 2.0
augment = {}
device = "auto"
torch_threads = 0
grid_mm = 4.0
crop_to_brain = True
saliency_layer = "encoder.layer2"
ood_rate = 0.05
n_seeds = 1
init_from = None
probe_every = 1
# a line the model card carries and `brainage predict` prints (the starter profile's: what it is)
model_note = None

# %%
import json

import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from brainage.analysis import metrics
from brainage.imaging.preprocess import PreprocessParams
from brainage.inference.model_folder import (
    HISTORY_FILE,
    pretrained_checkpoints,
    save_ig_reference,
    write_model_card,
)
from brainage.models.network import ModelConfig
from brainage.models.saliency import typical_scan
from brainage.models.train import TrainConfig
from brainage.study import figures
from brainage.study import trust as study_trust
from brainage.study.profiles import display_path, resolve_path
from brainage.study.runs import RunFolder
from brainage.study.sentences import augmentation_text, schedule_text
from brainage.study.tables import report_table
from brainage.study.training import train_study_models

if torch_threads:
    torch.set_num_threads(torch_threads)
run = RunFolder(resolve_path(run_dir))
run.require_no_errors()  # training refuses to start on an unresolved audit error
train_ds, val_ds = run.dataset("train"), run.dataset("val")
display(Markdown(f"{len(train_ds)} training and {len(val_ds)} validation scans of shape "
                 f"{tuple(train_ds[0]['image'].shape)}; device: "
                 f"{'CUDA' if torch.cuda.is_available() and device != 'cpu' else 'CPU'}, "
                 f"{torch.get_num_threads()} threads."))

# %%
model_cfg = ModelConfig(depth=model_depth, widths=tuple(model_widths), conv1_stride=conv1_stride)
common = dict(batch_size=batch_size, optimizer=optimizer, lr=lr, head_lr=head_lr,
              weight_decay=weight_decay, temperature=temperature, seed=seed, device=device,
              augment=augment or {}, progress=False)
rnc_only = dict(probe_every=probe_every)  # the ridge probe of the RNC encoder stage
# init_from: a model folder whose encoders start both models (fine-tuning, e.g. the quick
# model on a small real cohort); None trains from scratch. n_seeds repeats both trainings over
# seeds seed, seed + 1, ...: the first seed's models are the study's, notebook 03 reports the
# spread of the others' test MAE.
pretrained = (None if init_from is None else
              pretrained_checkpoints(resolve_path(init_from), grid_mm=grid_mm,
                                     crop_to_brain=crop_to_brain))
trained = train_study_models(
    train_ds, val_ds, model_cfg, models_dir=run.models, n_seeds=n_seeds, init_from=pretrained,
    rnc_cfg=TrainConfig(epochs=epochs, head_epochs=head_epochs, **rnc_only, **common),
    l1_cfg=TrainConfig(epochs=l1_epochs, head_epochs=0, **common))
rnc, l1 = trained.rnc, trained.l1
if pretrained is not None:
    display(Markdown(f"Both encoders start from `{display_path(resolve_path(init_from))}` "
                     f"(fine-tuning): {', '.join(f'{h.upper()} from `{display_path(p)}`' for h, p in pretrained.items())}."))
# The model folder carries what `brainage predict` needs on another machine: weights (above),
# preprocessing parameters and grid, the saliency layer and versions (model.json); the age-bias
# correction is added by 03_evaluation.
info = run.dataset_info()
card = write_model_card(run.models, preprocess=PreprocessParams(
    space=info["space"], grid_mm=grid_mm, skull_stripped=info["skull_stripped"],
    crop_to_brain=crop_to_brain), saliency_layer=saliency_layer, profile=profile,
    domain=study_trust.training_domain(run), note=model_note)
# The reference of `brainage predict --saliency` and of notebook 04's integrated gradients: the
# most typical training scan of the mean training age (a mean of scans is blurred and reads as
# old; notebook 04 reports what each reference is predicted at).
train_rows = run.rows("train")
train_volumes = run.volumes(train_rows)
save_ig_reference(run.models, train_volumes[typical_scan(train_volumes, train_rows["age"])],
                  run.reference_image().affine)
del train_volumes
# Out-of-distribution reference of each model: its training scans' features, and the threshold
# that flags a share ood_rate of the validation scans (notebook 03 reports the test split's rate).
references = study_trust.fit_ood_references(run, run.models, rate=ood_rate, device=device)
domain = json.loads(card.read_text())["domain"]
display(Markdown(
    f"The model folder, which a user's prediction reads, records the training domain: "
    f"{'the simulated cohort' if domain['simulated'] else 'the ' + domain['dataset'] + ' dataset'}, "
    f"{domain['n_train']} training scans aged {domain['age_range'][0]:.0f}-"
    f"{domain['age_range'][1]:.0f} years from {len(domain['sites'])} "
    f"site{'s' if len(domain['sites']) != 1 else ''}, on a {grid_mm:g} mm grid."))

# %% [markdown]
# ## Training curves
#
# Stage 1 of RNC logs the validation MAE of a ridge-regression probe on the encoder's features
# (the head is not trained yet) every few epochs and after the last; stage 2 and the
# L1 baseline log the validation MAE of the model itself after every epoch. The dashed line is
# the validation MAE of predicting the mean training age.
#
# {numref}`fig-02-validation` shows the validation curves and {numref}`fig-02-loss` the training losses.

# %%
mean_age_mae = metrics.mean_age_baseline(train_ds.ages, val_ds.ages)
history = pd.concat([rnc.history.assign(model="RNC"), l1.history.assign(model="L1")],
                    ignore_index=True)
history.to_csv(run.models / HISTORY_FILE, index=False)
figures.glue_figure("fig-02-validation", figures.training_curves(history.dropna(subset=["val_mae"]), mean_age_mae))
figures.glue_figure("fig-02-loss", figures.training_loss(history))
glue("n_val_curves", len(val_ds), display=False)
glue("probe_every", probe_every, display=False)

# %% [markdown]
# ```{glue:figure} fig-02-validation
# :name: fig-02-validation
#
# Validation MAE (years, {glue:text}`n_val_curves` validation scans) by epoch, one colour
# per model and one dash per stage: RNC stage 1 (a ridge probe on the encoder's features, every
# {glue:text}`probe_every` epochs and after the last),
# RNC stage 2 (the linear head) and the L1 baseline. Dotted line: the validation MAE of
# predicting the mean training age.
# ```
#
# ```{glue:figure} fig-02-loss
# :name: fig-02-loss
#
# Training loss by epoch, one panel per stage, each on its own y scale: the Rank-N-Contrast
# loss (no unit) in RNC stage 1, the L1 loss (years) in RNC stage 2 and the L1 baseline.
# ```

# %%
summary = pd.DataFrame([  # no checkpoint paths: they wrapped mid-word in the column
    {"model": "RNC", "best validation MAE (years)": rnc.best_val_mae,
     "best epoch (head)": rnc.best_epoch,
     **{f"s/epoch {k}": v for k, v in rnc.seconds_per_epoch.items()}},
    {"model": "L1", "best validation MAE (years)": l1.best_val_mae, "best epoch (head)": l1.best_epoch,
     **{f"s/epoch {k}": v for k, v in l1.seconds_per_epoch.items()}},
    {"model": "mean age", "best validation MAE (years)": mean_age_mae},
])
glue("tab_02_summary", report_table(summary, labels={
    "s/epoch rnc_encoder": "s/epoch (RNC encoder)", "s/epoch rnc_head": "s/epoch (RNC head)",
    "s/epoch l1": "s/epoch (L1)"}), display=False)

# %%
glue("val_mae_rnc", f"{rnc.best_val_mae:.2f}", display=False)
glue("val_mae_l1", f"{l1.best_val_mae:.2f}", display=False)
glue("val_mae_mean", f"{mean_age_mae:.2f}", display=False)
glue("s_per_epoch_rnc", f"{rnc.seconds_per_epoch['rnc_encoder']:.1f}", display=False)
glue("s_per_epoch_l1", f"{l1.seconds_per_epoch['l1']:.1f}", display=False)
glue("n_train", len(train_ds), display=False)
views_rnc, views_l1 = 2 * epochs * len(train_ds), l1_epochs * len(train_ds)
budget = (f"RNC's encoder was trained for {epochs} epochs of two augmented views per scan "
          f"({views_rnc} augmented volumes) and L1 for {l1_epochs} epochs of one view "
          f"({views_l1} volumes)")
budget += (": both saw the same number of augmented volumes" if views_rnc == views_l1 else
           f": L1 saw {views_l1 / views_rnc:.2g} times as many augmented volumes as RNC")
glue("training_budget", budget, display=False)
display(Markdown(budget + "."))
glue("n_val", len(val_ds), display=False)
glue("augmentation_text", augmentation_text(augment), display=False)
glue("schedule_text", schedule_text({**common, "head_epochs": head_epochs, "schedule":
                                     TrainConfig(epochs=epochs).schedule}), display=False)
glue("epochs_rnc", epochs, display=False)
glue("epochs_l1", l1_epochs, display=False)
glue("l1_best_epoch", int(l1.best_epoch), display=False)
glue("l1_spikes", int((l1.history["val_mae"] > 2 * l1.best_val_mae).sum()), display=False)
glue("n_seeds", n_seeds, display=False)
glue("seeds_text", (f"each model was trained once (seed {seed})" if n_seeds == 1 else
                    f"each model was trained {n_seeds} times (seeds {seed} to {seed + n_seeds - 1}); "
                    f"the first seed's models are the ones evaluated below, the others give the "
                    f"spread over seeds in the evaluation"), display=False)
glue("init_text", "from a random initialisation" if init_from is None else
     f"from the encoders of `{display_path(resolve_path(init_from))}` (fine-tuning)", display=False)

# %% [markdown]
# The L1 baseline's validation error jumps from epoch to epoch while the learning rate is high
# (in {glue:text}`l1_spikes` of its {glue:text}`epochs_l1` epochs it was more than twice its
# best) and is lowest late, at epoch {glue:text}`l1_best_epoch`: its schedule may end before it
# has converged. Trained for twice the epochs on this cohort, outside the build, the same L1
# baseline reached a lower validation and test error (README, "Is the L1 baseline
# under-trained?"). An under-trained baseline favours RNC in the comparison of the next
# notebook; RNC's own schedule was not lengthened there, so that comparison is open.
#
# ```{glue:figure} tab_02_summary
# :name: tab-02-summary
#
# The selected checkpoint of each model: its validation MAE (years) on the
# {glue:text}`n_val` validation scans, the epoch it comes from (of the head for RNC), the
# seconds per epoch of each stage; the mean-age predictor (the
# training mean, {glue:text}`n_train` scans) for comparison.
# ```
