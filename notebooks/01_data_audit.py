# %% [markdown]
# # Data audit
#
# This notebook reads the dataset named in the profile's data manifest, generating the
# simulated cohort first when that is the dataset, and checks every scan and every row of the
# participants table. Every problem found goes into one table; nothing is dropped silently.
# The scans are then preprocessed onto the profile's template grid, their alignment with the
# template is checked, and the healthy controls are split by subject into training, validation
# and test sets. Patients (AD, PD) are never part of those splits.

# %% tags=["parameters"]
profile = "quick"
run_dir = "runs/quick"
manifest = "data_manifest.yaml"
dataset = "simulated"
seed = 0
sim_n_healthy = 300
sim_n_ad = 40
sim_n_pd = 40
sim_resolution_mm = 4.0
sim_jobs = 2
sim_preset = None  # None: the default simulator; "varied": the opt-in varied preset
grid_mm = 4.0
crop_to_brain = True
preprocess_jobs = 1
preprocess_scheduler = None  # a Dask cluster instead of local processes: "local:N", an address
split_fractions = [0.6, 0.2, 0.2]
stratify_site = True
qc_max_scans = 12

# %%
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue
from nilearn import datasets

from brainage.data import audit, simulate, splits
from brainage.data import cohort as cohort_io
from brainage.data import manifest as manifest_io
from brainage.imaging import preprocess
from brainage.imaging.brain_extraction import TIV_RANGE_CM3
from brainage.imaging.registration import (
    MISFIT_THRESHOLD_MM,
    registration_passes,
    template_images,
)
from brainage.inference import qc_figures
from brainage.study import figures, provenance
from brainage.study.profiles import display_paths, find_project_root, resolve_path
from brainage.study.runs import RunFolder
from brainage.study.sentences import (
    alignment_by_site,
    alignment_sentence,
    eta_squared,
    planted_effects_sentence,
    pose_by_site,
)
from brainage.study.tables import report_table

root = find_project_root()
# the threshold of brainage predict and bids: the audit refuses the scans the tool refuses
alignment_threshold = MISFIT_THRESHOLD_MM
run = resolve_path(run_dir, root)
(run / "audit").mkdir(parents=True, exist_ok=True)
spec = manifest_io.load_manifest(resolve_path(manifest, root), profile=profile,
                                  dataset=dataset).dataset(dataset)
RunFolder(run).write_dataset(spec)
glue("dataset_name", spec.name, display=False)
display(Markdown(
    f"Dataset: {'the simulated cohort' if spec.simulated else spec.name}, "
    + (f"delivered in the {spec.space} template space" if spec.space != "native"
       else "raw scans in scanner space, registered here")
    + (", skull-stripped." if spec.skull_stripped else ", with skull (stripped here).")))

# %% [markdown]
# ## The cohort
#
# For the simulated cohort the generator runs here, with the profile's counts and seed; a cohort
# already on disk with the same settings is reused.

# %%
if spec.simulated:
    simulated = simulate.ensure_cohort(
        spec.root, n_healthy=sim_n_healthy, n_ad=sim_n_ad, n_pd=sim_n_pd, seed=seed,
        resolution_mm=sim_resolution_mm, n_jobs=sim_jobs,
        config=simulate.preset_config(sim_preset))
    truth = simulate.read_truth(spec.root)
    names = {"HC": "healthy controls", "AD": "AD patients", "PD": "PD patients"}
    display(Markdown(f"Simulated {sum(truth['counts'].values())} subjects ("
                     + ", ".join(f"{n} {names.get(g, g)}" for g, n in truth["counts"].items())
                     + f") on a {truth['resolution_mm']:g} mm grid, seed {truth['seed']}. "
                     + planted_effects_sentence(truth)))
    glue("planted_text", planted_effects_sentence(truth), display=False)
    glue("sigma_bio", f"{truth['config']['sigma_bio']:g}", display=False)
    for group, gap in truth["true_mean_brain_age_gap"].items():
        glue(f"planted_gap_{group.lower()}", f"{gap:+.1f}", display=False)
    for score, entry in truth["true_correlations"].items():
        glue(f"planted_corr_{score}", f"{entry['configured']:+.1f}", display=False)
else:
    glue("planted_text", "The dataset is real: no ground truth is known, so the checks against "
         "a simulated truth do not apply.", display=False)
loaded = cohort_io.load_cohort(spec)
table = loaded.table
glue("n_rows_shown", min(5, len(table)), display=False)
glue("tab_01_cohort", report_table(
    table.head()[[c for c in ("participant_id", "age", "sex", "site", "group", "path")
                  if c in table.columns]].assign(path=lambda t: t["path"].map(
                      lambda p: Path(p).name)), labels={"path": "scan file"}), display=False)

# %% [markdown]
# ```{glue:figure} tab_01_cohort
# :name: tab-01-cohort
#
# The first {glue:text}`n_rows_shown` rows of the cohort table as read from the participants
# table and the scans found on disk: chronological age in years, sex, acquisition site, group
# (HC healthy control, AD, PD) and the scan's file name.
# ```

# %% [markdown]
# ## Preprocessing and alignment with the template
#
# Each scan is brought onto the profile's MNI152 grid: scans in template space are resampled and
# intensity-normalised; native scans first get their own brain mask (deepbet), are bias-corrected
# (N4) inside it, registered brain to brain to the template and skull-stripped with their own
# mask, whose volume is the total intracranial volume (TIV). Results are cached on disk, keyed by the file's
# checksum and the parameters. The registration QC figure (outline misfit, mm) is the spread of
# the signed distances from each preprocessed scan's brain outline to the template brain's
# outline: a brain smaller than the template everywhere (atrophy) moves every distance alike and
# leaves the spread alone, a misregistered one sticks out on one side and falls short on the
# other. It is the figure the prediction tool and the BIDS App print and refuse a native scan
# by, with the same threshold. For scans registered here (native space) a figure above the
# threshold is an error; for scans delivered in template space it is a warning.
#
# {numref}`fig-01-alignment` shows every scan's figure.

# %%
params = preprocess.PreprocessParams(space=spec.space, grid_mm=grid_mm,
                                     skull_stripped=spec.skull_stripped, crop_to_brain=crop_to_brain)
cache = preprocess.PreprocessCache(root / ".cache" / "brainage" / "preprocessed")
paths = [str(p) for p in table["path"]]
items = preprocess.preprocess_cohort(paths, params, cache, n_jobs=preprocess_jobs,
                                     scheduler=preprocess_scheduler)
failed = {str(item.path): item.error for item in items if not item.ok}
scores = {str(item.path): item.alignment for item in items if item.ok}
table["preprocessed"] = [str(cache.path_for(p, params)) if p not in failed else "" for p in paths]
table["registration_misfit_mm"] = [scores.get(p, float("nan")) for p in paths]
tivs = {str(item.path): item.tiv_cm3 for item in items if item.ok}
table["tiv_cm3"] = [tivs.get(p, float("nan")) for p in paths]
table.to_csv(run / "audit" / "alignment.csv", index=False,
             columns=["participant_id", "group", "site", "path", "preprocessed", "registration_misfit_mm",
                      "tiv_cm3"])
figures.glue_figure("fig-01-alignment", figures.alignment_strip(table, alignment_threshold))
glue("n_aligned", int(table["registration_misfit_mm"].notna().sum()), display=False)
glue("alignment_threshold", f"{alignment_threshold:g}", display=False)

# %% [markdown]
# ```{glue:figure} fig-01-alignment
# :name: fig-01-alignment
#
# Registration QC figure (outline misfit, mm; lower is better) of each of the
# {glue:text}`n_aligned` preprocessed scans, by site, one colour per group. Dashed line: the
# threshold, {glue:text}`alignment_threshold` mm; scans above it fail.
# ```

# %%
by_site = alignment_by_site(table, alignment_threshold)
truth_table = RunFolder(run).ground_truth() if spec.simulated else None
glue("alignment_site_sentence", alignment_sentence(
    by_site, alignment_threshold, simulated=bool(spec.simulated),
    eta_squared=eta_squared(table["registration_misfit_mm"], table["site"]),
    rotation=None if truth_table is None else pose_by_site(truth_table[0])), display=False)
glue("tab_01_alignment_sites", report_table(by_site, order=["site"], labels={
    "n": "scans", "failed": "above threshold", "median": "median (mm)", "min": "lowest",
    "max": "highest"}, digits=2), display=False)

# %% [markdown]
# ```{glue:figure} tab_01_alignment_sites
# :name: tab-01-alignment-sites
#
# Registration QC figure (outline misfit, mm) of the {glue:text}`n_scans` preprocessed scans by
# site, and how many lie above the threshold of {glue:text}`alignment_threshold` mm.
# ```
#
# {glue:text}`alignment_site_sentence`
#
# A QC that removes old or demented brains more often than young healthy ones would bias every
# analysis of what is left. {numref}`tab-01-qc-removals` counts the scans that fail it by group
# and age band.

# %%
glue("tab_01_qc_removals", report_table(
    audit.qc_removals(table, alignment_threshold, registered=spec.space == "native"),
    order=["group", "age_band"], labels={"group": "group", "age_band": "age (years)", "n": "scans", "failed": "failed QC",
            "failed_percent": "failed (%)", "median": "median misfit (mm)"}, digits=2),
    display=False)

# %% [markdown]
# ```{glue:figure} tab_01_qc_removals
# :name: tab-01-qc-removals
#
# Scans failing the registration QC (outline misfit above {glue:text}`alignment_threshold` mm,
# or not preprocessed) by group and age band, and over all ages ("all"): for scans registered
# here they are removed from the study, for scans delivered in template space flagged.
# ```

# %% [markdown]
# ## Registration QC, scan by scan
#
# Each preprocessed scan with two outlines of the MNI152 template: its white-matter boundary in
# cyan, which should follow the scan's ventricles and grey-white border, and its brain mask in
# red; in yellow, the scan's own brain mask (for native scans the one extracted from the scan,
# which should hug its brain; for template-space scans the template's or the delivered one).
# A shifted, tilted or mis-scaled scan shows the cyan lines off the anatomy.
# Scans are ordered from the highest registration misfit
# down, so the doubtful ones come first; red titles mark figures above the threshold. Only the
# profile's number of highest-misfit scans is drawn; the run folder's audit keeps the figure of
# every scan.
#
# {numref}`fig-01-registration-qc` shows the panels.

# %%
qc = table[table["preprocessed"] != ""].sort_values("registration_misfit_mm", ascending=False).head(
    qc_max_scans)
if qc.empty:
    display(Markdown("No scan was preprocessed, so there is nothing to check."))
    glue("fig-01-registration-qc", Markdown("No scan was preprocessed."), display=False)
else:
    display(Markdown(f"The {len(qc)} scans with the highest misfit of {len(table)} "
                     f"({'registered here' if spec.space == 'native' else 'delivered in template space'})."))
    # two panels a row and larger titles: at three a row, scaled to the page's width, the
    # panel titles shrank to about 8 px, below reading size
    qc_figure = qc_figures.registration_qc(
        [(f"{r.participant_id}, {r.site}: {r.registration_misfit_mm:.2f} mm", r.preprocessed,
          not registration_passes(r.registration_misfit_mm)) for r in qc.itertuples()],
        [(datasets.load_mni152_wm_template(resolution=2), "cyan"),
         (template_images()[1], "red")], brain_colour="yellow", n_cols=2)
    for ax in qc_figure.axes:
        ax.title.set_fontsize(14)
    qc_figure.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.3)
    figures.glue_figure("fig-01-registration-qc", qc_figure)
glue("n_qc", len(qc), display=False)

# %% [markdown]
# ```{glue:figure} fig-01-registration-qc
# :name: fig-01-registration-qc
#
# Registration QC of the {glue:text}`n_qc` scans with the highest registration misfits (of
# {glue:text}`n_scans`), highest first: sagittal, coronal and axial slices (edges lettered
# P/A and L/R, left shown on the left) through the ventricles and hippocampi. Cyan: the
# template's white-matter boundary; red: its brain mask; yellow: the scan's own brain mask.
# Panel titles: subject, site and registration misfit (mm); red titles mark figures above the
# threshold, {glue:text}`alignment_threshold` mm.
# ```

# %% [markdown]
# ## Total intracranial volume
#
# The volume of each native scan's extracted brain mask, in its own space (cm³). Adult TIVs lie
# about 1100-2000 cm³ (larger in men); a value outside the plausible range is a warning below.
# Scans in a template space have none.

# %%
if table["tiv_cm3"].notna().any():
    glue("tab_01_tiv", report_table(audit.tiv_summary(table, by=["group", "sex"])),
         display=False)
    display(Markdown("```{glue:figure} tab_01_tiv\n:name: tab-01-tiv\n\nTotal intracranial "
                     "volume (cm³) of the extracted brain masks by group and sex.\n```"))
    figures.glue_figure("fig-01-tiv", figures.tiv_by_age(table))
    glue("tiv_caption", f"Total intracranial volume (cm³) of each of the "
         f"{int(table['tiv_cm3'].notna().sum())} extracted brain masks against age (years), "
         "one colour per sex.", display=False)
    display(Markdown("```{glue:figure} fig-01-tiv\n:name: fig-01-tiv\n\n"
                     "{glue:text}`tiv_caption`\n```"))
else:  # one line, no empty figure (issue 32)
    display(Markdown("Not measured here: no brain was extracted (the scans are in a template "
                     "space or delivered skull-stripped), so there is no TIV to report."))

# %%
glue("alignment_min", f"{table['registration_misfit_mm'].min():.2f}", display=False)
glue("alignment_median", f"{table['registration_misfit_mm'].median():.2f}", display=False)

# %% [markdown]
# ## Problems found
#
# Every check on every scan and participants row, and the preprocessing and alignment checks:
# errors keep a scan out of the study (training refuses to start while one is unresolved);
# warnings are kept for the reader; excluded subjects were dropped on purpose in the manifest.

# %%
problems = pd.concat([loaded.problems,
                      audit.alignment_problems(table, failed, scores, alignment_threshold,
                                               registered=spec.space == "native"),
                      audit.tiv_problems(table, tivs, TIV_RANGE_CM3)],
                     ignore_index=True)
problems.to_csv(run / "audit" / "problems.csv", index=False)
glue("n_problems", len(problems), display=False)
glue("n_errors", int((problems["severity"] == "error").sum()), display=False)
if problems.empty:  # one line, no table of nothing
    display(Markdown("No problems found: every scan and every participants row passed all checks."))
else:
    glue("tab_01_problem_summary", report_table(audit.problem_summary(problems)), display=False)
    problem_table = display_paths(problems, ["path", "message"], root)[
        [c for c in ("participant_id", "check", "severity", "message") if c in problems.columns]]
    glue("tab_01_problems", report_table(problem_table, labels={"message": "problem"}),
         display=False)
    # the summary, and the full list folded: a long warnings table would fill the page
    display(Markdown(
        "```{glue:figure} tab_01_problem_summary\n:name: tab-01-problem-summary\n\n"
        "Problems found, by check and severity: {glue:text}`n_problems` in all, "
        "{glue:text}`n_errors` of them errors. Counts of scans or participants rows.\n```\n\n"
        f"::::{{dropdown}} The {len(problems)} problems, one row per subject and check\n"
        "```{glue:figure} tab_01_problems\n:name: tab-01-problems\n\nEvery problem of "
        "{numref}`tab-01-problem-summary`, one row per subject and check (paths relative to "
        "the project).\n```\n::::"))
errors = problems[problems["severity"] == "error"]
if not errors.empty:
    raise cohort_io.CohortError(errors)  # names every subject, file and reason

# %% [markdown]
# ## Example scans
#
# The youngest and the oldest healthy control and a patient of median age from each group, as
# read from disk and after preprocessing.
#
# {numref}`fig-01-examples` shows them.

# %%
examples = audit.example_subjects(table)
figures.glue_figure("fig-01-examples", figures.example_slices(
    [(f"{r.example}\n{r.participant_id}, {r.age:.0f} y", r.path, r.preprocessed)
     for r in examples.itertuples()]))
glue("n_examples", len(examples), display=False)

# %% [markdown]
# ```{glue:figure} fig-01-examples
# :name: fig-01-examples
#
# {glue:text}`n_examples` example scans (rows: subject, group and age in years), as read
# (left, cut through the scan's centre) and after preprocessing (right, on the model's MNI152
# grid, cut through the ventricles and hippocampi). Sagittal, coronal and axial slices, edges
# lettered P/A and L/R; column titles give the voxel size (mm). Grey scale: intensity over the
# image's 99.5th percentile (MRI intensities have no absolute unit).
# ```

# %% [markdown]
# ## Tissue by age
#
# CSF and grey-matter fractions of each preprocessed brain, from intensity bands (an index of
# atrophy, not a segmentation): CSF should rise and grey matter fall with age, more so in AD.
#
# {numref}`fig-01-tissue` plots both fractions against age.

# %%
tissue = audit.tissue_table(table, path_column="preprocessed")
figures.glue_figure("fig-01-tissue", figures.tissue_by_age(tissue))
glue("n_tissue", len(tissue), display=False)

# %% [markdown]
# ```{glue:figure} fig-01-tissue
# :name: fig-01-tissue
#
# CSF (left) and grey-matter (right) fraction of the brain voxels of each of the
# {glue:text}`n_tissue` preprocessed scans against age (years), from intensity bands, one
# colour per group; lines: LOWESS fits per group. Each panel has its own y scale.
# ```

# %% [markdown]
# ## Demographics
#
# {numref}`fig-01-ages` shows the ages of each group.

# %%
glue("tab_01_demographics", report_table(audit.demographics(table), order=["group"], labels={
    "age_mean": "mean age (years)", "age_sd": "SD of age (years)", "age_min": "youngest (years)",
    "age_max": "oldest (years)", "female_%": "female (%)"}), display=False)
figures.glue_figure("fig-01-ages", figures.age_histogram(table))

# %% [markdown]
# ```{glue:figure} fig-01-ages
# :name: fig-01-ages
#
# Age (years) of the {glue:text}`n_scans` scans by group (overlaid histograms), one panel
# per site ({glue:text}`sites_text`); y axis: number of scans.
# ```

# %% [markdown]
# ```{glue:figure} tab_01_demographics
# :name: tab-01-demographics
#
# Demographics of the {glue:text}`n_scans` subjects by group: number, age (years) and the share
# of women (%).
# ```

# %%
counts = table.groupby("group").size()
glue("n_scans", len(table), display=False)
for group in ("HC", "AD", "PD"):
    glue(f"n_{group.lower()}", int(counts.get(group, 0)), display=False)
glue("age_min", f"{table['age'].min():.0f}", display=False)
glue("age_max", f"{table['age'].max():.0f}", display=False)
n_sites = int(table["site"].nunique())
glue("n_sites", n_sites, display=False)
glue("sites_text", f"{n_sites} site{'s' if n_sites != 1 else ''}", display=False)
# The abstract's first sentence, for this dataset: a simulated cohort says so first (the
# abstract's sentences on the truth: brainage.study.sentences.abstract_truth_markdown).
people = (f"{int(counts.get('HC', 0))} healthy controls, {int(counts.get('AD', 0))} AD and "
          f"{int(counts.get('PD', 0))} PD patients, aged {table['age'].min():.0f} to "
          f"{table['age'].max():.0f} years, from {n_sites} site{'s' if n_sites != 1 else ''}")
glue("cohort_sentence", f"This study runs on a simulated cohort: {people}, with known brain "
     "ages and planted disease effects." if spec.simulated else f"This build used the dataset {spec.name}: {people}.",
     display=False)

# %% [markdown]
# ## Subject-level splits
#
# Healthy controls only, stratified by age (and site), fixed by the seed; patients form the
# separate clinical set. A dataset with an official split (OpenBHB) keeps it: its internal
# test set is the test split, its external test set (sites unseen in training) stays apart as
# the external test split, and the validation split is drawn from its training set by subject,
# in the proportion the profile gives validation to training.
#
# {numref}`fig-01-splits` shows the ages in each split.

# %%
if "official_split" in table.columns:
    val_fraction = split_fractions[1] / (split_fractions[0] + split_fractions[1])
    split_table = splits.benchmark_splits(table, seed=seed, val_fraction=val_fraction,
                                          stratify_site=stratify_site)
else:
    split_table = splits.make_splits(table, seed=seed, fractions=tuple(split_fractions),
                                     stratify_site=stratify_site)
splits.save_splits(split_table, run / "splits.csv")
merged = table.merge(split_table, on="participant_id")
ages = merged.groupby("split")["age"].describe()
glue("tab_01_splits", report_table(ages, index="split", order=["split"], labels={
    "count": "n", "mean": "mean age (years)", "std": "SD (years)", "min": "youngest (years)",
    "25%": "25th percentile (years)", "50%": "median (years)", "75%": "75th percentile (years)",
    "max": "oldest (years)"}), display=False)
figures.glue_figure("fig-01-splits", figures.split_ages(merged))

# %% [markdown]
# ```{glue:figure} fig-01-splits
# :name: fig-01-splits
#
# Age (years) of the {glue:text}`n_scans` subjects by split: training, validation and test
# (healthy controls) and the patients (clinical); boxes: quartiles, points: subjects.
# ```

# %% [markdown]
# ```{glue:figure} tab_01_splits
# :name: tab-01-splits
#
# Chronological age (years) of the subjects in each split: training, validation and test
# controls, and the patients (clinical), who are in none of them.
# ```

# %% [markdown]
# ## Data checksums
#
# The SHA-256 of every file read; the book's appendix shows the combined digest.

# %%
files = [*table["path"], spec.root / spec.participants]
digest = provenance.digest_files(files, root=spec.root)
(run / "checksums.json").write_text(json.dumps(digest, indent=2))
provenance.update_provenance(run, data={spec.name: {"n_files": digest["n_files"],
                                                    "sha256": digest["sha256"],
                                                    "root": str(spec.root)}})
merged.to_csv(run / "cohort.csv", index=False)
display(Markdown(f"{digest['n_files']} files read; their combined SHA-256 is in the appendix."))
