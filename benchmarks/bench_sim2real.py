"""Sim-to-real: how simulated scans differ from real ones after the same preprocessing, and how
a model trained on the simulated cohort predicts real ages.

Run from the repository root::

    python benchmarks/bench_sim2real.py                                   # realism table only
    python benchmarks/bench_sim2real.py --models runs/quick/models        # and the model's ages
    python benchmarks/bench_sim2real.py --simulated data/simulated/quick --n-sim 20
    python benchmarks/bench_sim2real.py --profile quick      # also at the quick model's grid

**Realism table.** ``--n-sim`` scans of the simulated cohort (``--simulated``, default
``data/simulated/quick``; a small cohort is simulated into a temporary folder when it is
absent), healthy controls within the real scans' age range, and the real scans
(``../shared/data/ixi10``) are preprocessed as the project does (simulated: template space,
skull-stripped; real: native, the default brain extraction) onto the ``--grid-mm`` MNI152 grids
(default 2 mm; with ``--profile``, also the profile's model grid, ``grid_mm`` and
``crop_to_brain``, where a small cohort is simulated at the profile's ``sim_resolution_mm``),
and each is summarised by:

* ``noise``: robust SD (1.4826 x MAD) of the high-pass image (the volume minus its Gaussian
  smoothing, sigma one voxel) in white matter, over the white-matter median;
* ``wm_cv``: white-matter intensity SD over its mean;
* ``contrast``: (WM - GM) / (WM + GM) of the tissue medians;
* ``p95``: 95th percentile of the normalised intensity inside the brain (the brain's mean is 1);
* ``gm_level``, ``wm_level``: grey- and white-matter medians of the normalised intensity
  (the histogram's two peaks);
* ``csf_fraction``, ``gm_fraction``: :func:`brainage.data.audit.tissue_fractions` (intensity
  bands);
* ``mask_cm3``: volume of the brain mask on the grid (MNI space, cm³).

White matter is where nilearn's MNI152 white-matter probability exceeds 0.9 and grey matter
where its grey-matter probability exceeds 0.7 (both scans are in MNI space), inside the brain.

**Model.** With ``--models`` (a model folder, e.g. ``runs/quick/models``), the ten real scans
are predicted with every head (``brainage.inference.predict.predict_scans``), and each head's
Pearson r (with its 95 % confidence interval, Fisher z), MAE and mean gap (predicted - age)
are printed against two constant predictors: the training cohort's mean age (from the
checkpoint) and the real scans' own mean age (an oracle). Without the folder the model part is
skipped with the reason. Nothing is tuned on these ages.

**Simulated reference.** With ``--models`` and the run's ``splits.csv`` beside the model folder
(``runs/<profile>/splits.csv``), the same statistics on the simulated cohort's (``--simulated``,
the run's cohort) test-split controls aged within the real scans' range: what the model reaches
on simulated scans of those ages it never saw, the ceiling a perfect sim-to-real transfer would
give.

**Mask sensitivity.** With ``--models``, also each head's mean change of predicted age when the
brain mask of a preprocessed scan is one grid voxel tighter
(:func:`brainage.imaging.perturb.erode_brain`), on the simulated controls (simulated at the
model's grid) and on the real scans: a model that reads age from the mask's edge, the dark CSF
rim a brain extraction keeps, moves by years; brain extractions differ by about that much.

**Where the real scans' offset sits** (with ``--models``; issue 28). *Intensity swap*: each
real scan's brain intensities mapped rank for rank onto the histogram of simulated controls of
its age, and each simulated control's onto the real scans'; a gap that follows the histogram is
read from global intensities. *Region swap*: one tissue class of each real scan (MNI152 priors:
white matter, grey matter, the rest, split into its outer 8 mm and the deeper part) replaced by
that of each of the three simulated controls nearest its age. *Warp sensitivity*: the change of
predicted age under a smooth random displacement of SD 2, 4 and 6 mm (12 mm control grid).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from brainage.inference.model_folder import MODEL_CARD_FILE

ROOT = Path(__file__).resolve().parents[1]
IXI10 = ROOT.parent / "shared" / "data" / "ixi10"
IXI40 = ROOT.parent / "shared" / "data" / "ixi40"
METRICS = ("noise", "wm_cv", "contrast", "p95", "gm_level", "wm_level", "csf_fraction",
           "gm_fraction", "mask_cm3")


def tissue_masks(grid: tuple) -> tuple[np.ndarray, np.ndarray]:
    """White- and grey-matter masks on a template grid (from nilearn's probability maps)."""
    from brainage.data.audit import tissue_priors

    return tissue_priors(*grid)


def realism(img, wm_prior: np.ndarray, gm_prior: np.ndarray) -> dict[str, float]:
    """The realism metrics of one preprocessed volume (see the module docstring)."""
    from brainage.data.audit import realism_statistics

    return realism_statistics(img, wm_prior, gm_prior)


def real_folders(folders: list[Path]) -> list[Path]:
    """The folders that hold real scans and a participants.tsv; each other one is printed with
    the reason it is skipped."""
    kept = []
    for folder in folders:
        if not folder.is_dir():
            print(f"real scans: {folder} skipped (the folder does not exist)")
        elif not (folder / "participants.tsv").is_file():
            print(f"real scans: {folder} skipped (no participants.tsv: the ages are needed)")
        elif not real_scans(folder):
            print(f"real scans: {folder} skipped (no sub-*/anat/*_T1w.nii[.gz])")
        else:
            kept.append(folder)
    return kept


def real_scans(folder: Path) -> list[Path]:
    """The raw T1w scans of a BIDS folder."""
    return sorted(folder.glob("sub-*/anat/*_T1w.nii*"))


def real_age_table(folders: list[Path]):
    """``scan`` (participant id), ``folder`` and ``age`` of every real folder's participants."""
    import pandas as pd

    parts = []
    for folder in folders:
        table = pd.read_csv(folder / "participants.tsv", sep="\t", na_values="n/a")
        parts.append(pd.DataFrame({"scan": table["participant_id"].astype(str),
                                   "folder": folder.name, "age": table["age"].astype(float)}))
    return pd.concat(parts, ignore_index=True)


def simulated_scans(folder: Path | None, n: int, scratch: Path, resolution_mm: float = 2.0,
                    ages: tuple[float, float] = (0.0, 200.0), spread: bool = False) -> list[Path]:
    """The first ``n`` healthy controls of a simulated cohort aged within ``ages`` (the real
    scans' range, so that atrophy does not stand in for realism), simulated into ``scratch``
    (controls only, in that age range) when the folder holds no cohort; with ``spread``,
    ``n`` controls evenly spaced in age order instead of the first ones."""
    import pandas as pd

    meta = folder / "derivatives" / "ground_truth" / "simulation.json" if folder else None
    if meta is not None and meta.is_file() and \
            json.loads(meta.read_text())["resolution_mm"] != resolution_mm:
        print(f"simulated cohort {folder} is at another resolution than {resolution_mm:g} mm")
        folder = None
    if folder is None or not (folder / "participants.tsv").is_file():
        from brainage.data import simulate

        where = "no folder given" if folder is None else f"{folder} holds no cohort"
        print(f"simulated cohort: {where}; simulating {n} healthy subjects aged "
              f"{ages[0]:.0f}-{ages[1]:.0f} (seed 0, {resolution_mm:g} mm)")
        folder = scratch / f"simulated_{resolution_mm:g}mm_{n}_{ages[0]:g}-{ages[1]:g}"
        if not (folder / "participants.tsv").is_file():
            span = [max(ages[0], 0.0), min(ages[1], 100.0)]  # patients: none are simulated
            cfg = simulate.config_from_dict({
                "hc_age_range": span, "ad": {"age_range": span, "acceleration_max_years": 0},
                "pd": {"age_range": span, "acceleration_max_years": 0}})
            simulate.simulate_cohort(folder, n_healthy=n, seed=0, resolution_mm=resolution_mm,
                                     config=cfg)
    table = pd.read_csv(folder / "participants.tsv", sep="\t", na_values="n/a")
    keep = table[(table["group"] == "HC") & table["age"].between(*ages)]["participant_id"]
    if spread:
        order = table.loc[keep.index].sort_values("age")["participant_id"].tolist()
        keep = [order[int(k)] for k in np.unique(np.linspace(0, len(order) - 1, n).round())]
        return [folder / p / "anat" / f"{p}_T1w.nii.gz" for p in keep]
    return [folder / p / "anat" / f"{p}_T1w.nii.gz" for p in sorted(keep)[:n]]


def print_equivalent_ages(sim_rows: list[dict], sim_paths: list[Path], real_rows: list[dict],
                          real_ages, grid: str) -> None:
    """For each realism statistic: its age slope among simulated controls (all ages; a
    lowess-free straight line), the same line over the real scans' ages (all folders), and per
    real folder the real median, the simulated value at the
    folder's mean age, and the simulated age whose line gives the real median (the "equivalent
    age": a statistic whose equivalent age is far below the true one makes real brains look
    young wherever a model reads it)."""
    import pandas as pd

    ages: dict[str, float] = {}
    for folder in {path.parents[2] for path in sim_paths}:
        table = pd.read_csv(folder / "participants.tsv", sep="\t", na_values="n/a")
        ages.update(zip(table["participant_id"], table["age"].astype(float)))
    sim = pd.DataFrame(sim_rows)
    sim["age"] = sim["scan"].map(ages)
    real = pd.DataFrame(real_rows).merge(real_ages, on="scan", how="left")
    print(f"\nSimulated-age equivalents ({grid}): {len(sim)} simulated controls aged "
          f"{sim['age'].min():.0f}-{sim['age'].max():.0f}; per real folder: real median, "
          f"simulated line at the folder's mean age, equivalent simulated age")
    header = (f"{'metric':<14}{'sim slope/10y':>14}{'sim r(age)':>11}{'real slope/10y':>15}"
              f"{'real r(age)':>12}")
    for name, rows in real.groupby("folder", sort=False):
        header += f"{f'{name} (mean age {rows.age.mean():.0f})':>36}"
    print(header)
    for metric in METRICS:
        slope, intercept = np.polyfit(sim["age"], sim[metric], 1)
        r = float(np.corrcoef(sim["age"], sim[metric])[0, 1])
        # the same straight line over every real scan's age (all folders together)
        known = real.dropna(subset=["age", metric])
        real_slope = np.polyfit(known["age"], known[metric], 1)[0] if len(known) > 2 else np.nan
        real_r = float(np.corrcoef(known["age"], known[metric])[0, 1]) if len(known) > 2 \
            else float("nan")
        line = (f"{metric:<14}{10 * slope:>14.4g}{r:>11.2f}{10 * real_slope:>15.4g}"
                f"{real_r:>12.2f}")
        for _, rows in real.groupby("folder", sort=False):
            med, mean_age = float(rows[metric].median()), float(rows["age"].mean())
            equiv = (med - intercept) / slope if slope != 0 else float("nan")
            line += f"{f'{med:.4g} vs {intercept + slope * mean_age:.4g}: {equiv:.0f} y':>36}"
        print(line)


def realism_rows(label: str, paths: list[Path], params, cache, masks) -> list[dict]:
    from brainage.imaging.preprocess import preprocess_cohort

    rows = []
    for item in preprocess_cohort([str(p) for p in paths], params, cache):
        if not item.ok:
            print(f"  {label}: {item.error}")
            continue
        from brainage.data.audit import tissue_fractions

        rows.append({"data": label, "scan": item.path.name.split("_")[0],
                     **realism(item.image, *masks),
                     "gm_fraction": tissue_fractions(item.image)["gm_fraction"]})
    return rows


def print_realism(rows: list[dict], grid: str) -> None:
    print(f"\nRealism after the project's preprocessing ({grid}): median [min-max]")
    print(f"{'metric':<14}" + "".join(f"{label:>28}" for label in dict.fromkeys(
        r["data"] for r in rows)))
    for metric in METRICS:
        cells = []
        for label in dict.fromkeys(r["data"] for r in rows):
            values = [r[metric] for r in rows if r["data"] == label]
            digits = 0 if metric == "mask_cm3" else 3
            cells.append(f"{statistics.median(values):.{digits}f} "
                         f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")
        print(f"{metric:<14}" + "".join(f"{c:>28}" for c in cells))


def _loadable_folder(models: Path, scratch: Path) -> Path:
    """The model folder, or a copy whose card is relabelled when only its version differs in
    name: a model trained on template-space scans under preprocessing version 2 saw exactly
    what version 3 produces for them (tests/imaging/test_preprocess.py checks the outputs are
    byte-identical), so its card's version is set to the current one, and this is printed."""
    from brainage.imaging.preprocess import PREPROCESS_VERSION

    card = json.loads((models / MODEL_CARD_FILE).read_text(encoding="utf-8"))
    version, space = card["preprocess"].get("version"), card["preprocess"].get("space")
    if version == PREPROCESS_VERSION or version != "2" or space == "native":
        return models
    copy = scratch / "models"
    shutil.copytree(models, copy)
    card["preprocess"]["version"] = PREPROCESS_VERSION
    (copy / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2), encoding="utf-8")
    print(f"model card {models / MODEL_CARD_FILE}: preprocessing version 2 on {space} scans, "
          f"byte-identical in version {PREPROCESS_VERSION}: read as version "
          f"{PREPROCESS_VERSION} (a copy; the folder is not changed)")
    return copy


#: Header of an accuracy table (:func:`_accuracy_row`, :func:`_constant_row`).
ACCURACY_HEADER = (f"{'predictor':<34}{'r':>8}{'95% CI of r':>16}{'MAE':>8}{'mean gap':>10}"
                   f"{'slope':>7}{'n':>4}")


def _accuracy_row(label: str, age: np.ndarray, predicted: np.ndarray) -> str:
    """One row of an accuracy table: Pearson r (undefined for a constant) with its 95 %
    confidence interval (Fisher z, scipy; needs n >= 4), MAE, mean gap, n.

    The interval says what a handful of real scans can tell: on ten scans r = 0.2 is
    [-0.49, 0.74] and r = 0.6 is [-0.05, 0.89], so ten scans cannot tell r = 0.6 from none."""
    from scipy import stats

    r, ci = float("nan"), ""
    if np.ptp(predicted) > 0:
        result = stats.pearsonr(age, predicted)
        r = float(result.statistic)
        if len(age) >= 4:
            low, high = result.confidence_interval(confidence_level=0.95)
            ci = f"[{low:.2f}, {high:.2f}]"
    slope = float(np.polyfit(age, predicted, 1)[0]) if np.ptp(age) > 0 else float("nan")
    return (f"{label:<34}{r:>8.2f}{ci:>16}{np.abs(predicted - age).mean():>8.1f}"
            f"{(predicted - age).mean():>10.1f}{slope:>7.2f}{len(age):>4}")


def _constant_row(label: str, age: np.ndarray, constant: float) -> str:
    """A constant predictor's row of an accuracy table (r undefined): MAE, mean gap, n."""
    return (f"{label:<34}{'':>8}{'':>16}{np.abs(constant - age).mean():>8.1f}"
            f"{(constant - age).mean():>10.1f}{'':>7}{len(age):>4}")


def print_model(models: Path, folder, data: list[Path], cache) -> None:
    """Pearson r, MAE, mean gap and slope of every head on the real scans (all folders
    together, then each folder), against constant predictors (``folder``: the loaded model
    folder of ``models``)."""
    from brainage.inference.predict import predict_scans

    card = folder.card
    table = predict_scans([str(d) for d in data], folder, cache=cache)
    ok = table["error"].fillna("") == ""  # predict_scans: "" when the scan succeeded
    for row in table[~ok].itertuples():
        print(f"  {row.path} ({row.model}): {row.error}")
    print(f"\nModel {models} (profile {card.get('profile')}, trained on "
          f"{card['preprocess']['space']}) on {table['path'].nunique()} real scans "
          f"(ages {table['age'].min():.0f}-{table['age'].max():.0f}); r is undefined for a "
          f"constant")
    if "alignment" in table:
        align = table.drop_duplicates("path")["alignment"].astype(float)
        print(f"registration QC of the {len(align)} scans (outline misfit, the SD of the "
              f"distances from the brain outline to the template's, mm; column alignment): "
              f"median {align.median():.2f} [{align.min():.2f}-{align.max():.2f}]")
    table["folder"] = [Path(p).parents[2].name for p in table["path"]]
    subsets = [("all", table[ok])] + ([(f, rows) for f, rows in table[ok].groupby("folder")]
                                      if len(data) > 1 else [])
    for label_set, subset in subsets:
        print(f"\n{label_set} ({subset['path'].nunique()} scans)")
        print(ACCURACY_HEADER)
        for head, rows in subset.groupby("model", sort=False):
            age, predicted = rows["age"].to_numpy(float), rows["predicted"].to_numpy(float)
            print(_accuracy_row(head, age, predicted))
            train_mean = float(card["heads"][head]["age_mean"])
            for label, constant in ((f"  training mean age ({train_mean:.1f})", train_mean),
                                    (f"  real scans' mean age ({age.mean():.1f})",
                                     age.mean())):
                print(_constant_row(label, age, constant))


def _volumes(paths: list, params, cache) -> tuple[list[int], list[np.ndarray]]:
    """The scans ``paths`` preprocessed with ``params`` (through ``cache``): the positions of
    those that succeeded and their volumes."""
    from brainage.imaging.preprocess import preprocess_cohort

    items = preprocess_cohort([str(p) for p in paths], params, cache)
    ok = [k for k, item in enumerate(items) if item.ok]
    return ok, [np.asarray(items[k].image.dataobj, np.float32) for k in ok]


def _ages(folder, volumes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every head's predicted age (before bias correction) of preprocessed volumes, through the
    forward pass ``brainage predict`` uses."""
    import torch

    from brainage.inference.predict import _forward

    x = torch.from_numpy(np.stack(volumes).astype(np.float32))[:, None]  # (B, 1, D, H, W)
    return {head: _forward(model, x) for head, model in folder.models.items()}


def print_simulated_reference(models: Path, folder, simulated: Path | None,
                              ages: tuple[float, float], cache) -> None:
    """r, MAE and mean gap of every head on the run's simulated test-split controls aged within
    ``ages`` (module docstring); skipped with the reason without the splits or the cohort."""
    import pandas as pd

    splits = models.parent / "splits.csv"
    table = simulated / "participants.tsv" if simulated else None
    if not splits.is_file() or table is None or not table.is_file():
        print(f"\nSimulated reference: skipped (needs {splits} and the run's cohort "
              f"--simulated)")
        return
    cohort = pd.read_csv(table, sep="\t", na_values="n/a").merge(
        pd.read_csv(splits), on="participant_id")
    keep = cohort[(cohort["split"] == "test") & (cohort["group"] == "HC")
                  & cohort["age"].between(*ages)]
    if len(keep) < 3:
        print(f"\nSimulated reference: skipped ({len(keep)} test-split controls aged "
              f"{ages[0]:.0f}-{ages[1]:.0f} in {simulated}; is it the run's cohort?)")
        return
    paths = [simulated / p / "anat" / f"{p}_T1w.nii.gz" for p in keep["participant_id"]]
    ok, volumes = _volumes(paths, folder.params_for("MNI152NLin2009cSym", True), cache)
    age = keep["age"].to_numpy(float)[ok]
    predicted = _ages(folder, volumes)
    print(f"\nSimulated reference: {models} on its run's simulated test-split controls aged "
          f"{ages[0]:.0f}-{ages[1]:.0f} (never seen in training)")
    print(ACCURACY_HEADER)
    for head, values in predicted.items():
        print(_accuracy_row(head, age, values))
    print(_constant_row("  their own mean age", age, float(age.mean())))


def print_mask_sensitivity(models: Path, folder, real: list[Path], simulated: Path | None,
                           n_sim: int, ages: tuple[float, float], cache, scratch: Path) -> None:
    """Mean change of each head's age under a one-voxel tighter brain mask (module docstring)."""
    from brainage.imaging.perturb import erode_brain

    sim = simulated_scans(simulated, n_sim, scratch, folder.preprocess.grid_mm, ages)
    sets = (("simulated controls", sim, folder.params_for("MNI152NLin2009cSym", True)),
            ("real", real, folder.params_for("native", False)))
    print(f"\nMask sensitivity of {models}: mean change of predicted age (years) when the "
          f"brain mask is one voxel ({folder.preprocess.grid_mm:g} mm) tighter")
    print(f"{'scans':<22}" + "".join(f"{head:>10}" for head in folder.models) + f"{'n':>4}")
    for label, paths, params in sets:
        _, volumes = _volumes(paths, params, cache)
        if not volumes:
            print(f"{label:<22}  (no scan preprocessed)")
            continue
        before, after = _ages(folder, volumes), _ages(folder, [erode_brain(v) for v in volumes])
        print(f"{label:<22}" + "".join(f"{(after[h] - before[h]).mean():>+10.1f}"
                                       for h in folder.models) + f"{len(volumes):>4}")


def _quantile_map(volume: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``volume`` with its brain's intensities (> 0) replaced, rank for rank, by the quantiles of
    ``reference`` (sorted intensities): the same anatomy with another intensity histogram.
    (skimage's ``match_histograms`` maps whole arrays, background included; the brain's
    voxels alone are mapped here.)"""
    out = volume.copy()
    brain = volume > 0
    ranks = volume[brain].argsort().argsort()
    out[brain] = np.quantile(reference, (ranks + 0.5) / ranks.size)
    return out


def _pools(ages: np.ndarray, pool_ages: np.ndarray, pool: list[np.ndarray]) -> list[np.ndarray]:
    """For each age, the pooled brain intensities of the pool's volumes within 5 years of it
    (at least the 3 nearest)."""
    out = []
    for age in ages:
        near = np.flatnonzero(np.abs(pool_ages - age) <= 5)
        if near.size < 3:
            near = np.argsort(np.abs(pool_ages - age))[:3]
        out.append(np.sort(np.concatenate([pool[k][pool[k] > 0] for k in near])))
    return out


def aged_volumes(folder, real: list[Path], real_ages, simulated: Path | None, n_sim: int,
                 ages: tuple[float, float], cache, scratch: Path):
    """The preprocessed volumes and ages of ``4 n_sim`` simulated controls aged within ``ages``
    and of the real scans, at the model's grid: ``(sim_vols, sim_ages, real_vols,
    real_ages)``, loaded once for the intensity and region swaps."""
    import pandas as pd

    sim = simulated_scans(simulated, 4 * n_sim, scratch, folder.preprocess.grid_mm, ages)
    table = pd.read_csv(sim[0].parents[2] / "participants.tsv", sep="\t", na_values="n/a")
    sim_age_of = dict(zip(table["participant_id"], table["age"].astype(float)))
    ok, sim_vols = _volumes(sim, folder.params_for("MNI152NLin2009cSym", True), cache)
    sim_ages = np.array([sim_age_of[sim[k].parents[1].name] for k in ok])
    real_age_of = dict(zip(real_ages["scan"], real_ages["age"]))
    ok, real_vols = _volumes(real, folder.params_for("native", False), cache)
    real_age = np.array([real_age_of[real[k].parents[1].name] for k in ok])
    return sim_vols, sim_ages, real_vols, real_age


def print_intensity_swap(models: Path, folder, aged) -> None:
    """Which part of a scan carries the real scans' offset: intensities or anatomy? Each real
    scan's brain intensities are mapped, rank for rank, onto the histogram of simulated
    controls of its age (within 5 years), and each simulated control's onto the real scans'
    of its age; the mean gap of every head before and after. A gap that follows the histogram
    is read from global intensities (tissue fractions, levels); one that stays with the scan is
    read from its anatomy. ``aged``: :func:`aged_volumes`."""
    sim_vols, sim_ages, real_vols, ages_real = aged
    print(f"\nIntensity swap, {models}: mean gap (predicted - age, years, before bias "
          "correction) with each scan's own intensities and with the other data's histogram "
          "at its age (within 5 years)")
    print(f"{'scans':<44}" + "".join(f"{h + ', own':>12}{h + ', swapped':>16}"
                                      for h in folder.models) + f"{'n':>5}")
    for label, vols, age, pool, pool_age in (
            ("real, onto simulated controls' histograms", real_vols, ages_real, sim_vols,
             sim_ages),
            ("simulated, onto real scans' histograms", sim_vols, sim_ages, real_vols,
             ages_real)):
        refs = _pools(age, pool_age, pool)
        before = _ages(folder, vols)
        after = _ages(folder, [_quantile_map(v, r) for v, r in zip(vols, refs)])
        print(f"{label:<44}" + "".join(f"{(before[h] - age).mean():>+12.1f}"
                                       f"{(after[h] - age).mean():>+16.1f}"
                                       for h in folder.models) + f"{len(vols):>5}")


def print_region_swap(models: Path, folder, aged) -> None:
    """Where in the anatomy is the real scans' offset read? Each real scan's voxels in one
    tissue class (nilearn's MNI152 priors on the model's grid: white matter, grey matter, the
    rest: CSF spaces and partial volume) are replaced by those of each of the three simulated
    controls nearest its age (one at a time: a mean image would be blurred, and blur alone
    reads older), and every head's mean gap over the three is printed beside the real scans'
    own. A class whose replacement closes the gap carries the cue the model reads as age
    there. ``aged``: :func:`aged_volumes`."""
    from scipy import ndimage as ndi

    from brainage.imaging.registration import template_grid

    sim_vols, sim_ages, real_vols, age = aged
    wm, gm = tissue_masks(template_grid(folder.preprocess.grid_mm,
                                        crop_to_brain=folder.preprocess.crop_to_brain))
    donors = [np.argsort(np.abs(sim_ages - a))[:3] for a in age]

    def rest(v, d):
        return ((v > 0) | (d > 0)) & ~wm & ~gm

    def outer(v, d):  # within 8 mm of the brain's outline (the union of both masks)
        depth = ndi.distance_transform_edt((v > 0) | (d > 0)) * folder.preprocess.grid_mm
        return rest(v, d) & (depth <= 8)

    regions = {"white matter (WM prior > 0.9)": lambda v, d: wm,
               "grey matter (GM prior > 0.7)": lambda v, d: gm,
               "the rest (CSF, partial volume)": rest,
               "  its outer 8 mm (sulci, brain edge)": outer,
               "  deeper (ventricles, deep sulci)": lambda v, d: rest(v, d) & ~outer(v, d),
               "everything (the simulated scan)": lambda v, d: np.ones(v.shape, bool)}
    before = _ages(folder, real_vols)
    print(f"\nRegion swap, {models}: mean gap of the {len(real_vols)} real scans (predicted - "
          "age, years, before bias correction) with one tissue class replaced by that of each "
          "of the 3 simulated controls nearest the scan's age (mean over the 3)")
    print(f"{'replaced':<36}" + "".join(f"{h:>10}" for h in folder.models))
    print(f"{'nothing (the real scans)':<36}" + "".join(
        f"{(before[h] - age).mean():>+10.1f}" for h in folder.models))
    for label, region in regions.items():
        gaps = {h: [] for h in folder.models}
        for j in range(3):
            swapped = []
            for v, ks in zip(real_vols, donors):
                donor = sim_vols[ks[j]]
                where = region(v, donor)
                out = v.copy()
                out[where] = donor[where]
                swapped.append(out)
            after = _ages(folder, swapped)
            for h in folder.models:
                gaps[h].append((after[h] - age).mean())
        print(f"{label:<36}" + "".join(f"{np.mean(gaps[h]):>+10.1f}" for h in folder.models))


def _random_warp(volume: np.ndarray, sd_mm: float, spacing_mm: float, grid_mm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """``volume`` resampled (linear) through a smooth random displacement: independent normal
    values of SD ``sd_mm`` per axis on a control grid of ``spacing_mm``, upsampled cubically;
    renormalised to a brain mean of 1 as the preprocessing leaves it."""
    from scipy import ndimage as ndi

    shape = volume.shape
    knots = [max(2, int(np.ceil(n * grid_mm / spacing_mm)) + 1) for n in shape]
    field = [ndi.zoom(rng.normal(0, sd_mm / grid_mm, knots), [n / k for n, k in zip(shape, knots)],
                      order=3) for _ in range(3)]
    out = ndi.map_coordinates(volume, np.indices(shape).astype(np.float32) + np.stack(field),
                              order=1, mode="constant")
    return out / out[out > 0].mean()


def print_warp_sensitivity(models: Path, folder, real: list[Path], simulated: Path | None,
                           n_sim: int, ages: tuple[float, float], cache, scratch: Path) -> None:
    """Mean change of every head's age when preprocessed scans are moved by a smooth random
    displacement (SD 2, 4 and 6 mm on a 12 mm control grid; seeded): a model that reads age
    from where the template puts each structure reads misaligned anatomy (an affine
    registration leaves real brains' folds several millimetres from the template's) as
    another age. The linear resampling smooths a little as well; blur alone reads older."""
    sim = simulated_scans(simulated, n_sim, scratch, folder.preprocess.grid_mm, ages)
    sets = (("simulated controls", sim, folder.params_for("MNI152NLin2009cSym", True)),
            ("real", real, folder.params_for("native", False)))
    print(f"\nWarp sensitivity of {models}: mean change of predicted age (years) under a smooth "
          "random displacement (12 mm control grid)")
    print(f"{'scans':<22}{'SD (mm)':>8}" + "".join(f"{head:>10}" for head in folder.models)
          + f"{'n':>4}")
    for label, paths, params in sets:
        _, volumes = _volumes(paths, params, cache)
        before = _ages(folder, volumes)
        for sd in (2.0, 4.0, 6.0):
            rng = np.random.default_rng(0)
            after = _ages(folder, [_random_warp(v, sd, 12.0, folder.preprocess.grid_mm, rng)
                                   for v in volumes])
            print(f"{label:<22}{sd:>8g}" + "".join(f"{(after[h] - before[h]).mean():>+10.1f}"
                                                   for h in folder.models) + f"{len(volumes):>4}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None,
                        help="a model folder (e.g. runs/quick/models): also predict the real "
                             "scans (default: skipped)")
    parser.add_argument("--simulated", default=str(ROOT / "data" / "simulated" / "quick"),
                        help="a simulated cohort (default: data/simulated/quick)")
    parser.add_argument("--n-sim", type=int, default=20, help="simulated scans (default: 20)")
    parser.add_argument("--data", nargs="+", default=[str(IXI10), str(IXI40)],
                        help="BIDS folders of real raw T1w scans with participants.tsv ages "
                             "(default: ../shared/data/ixi10 and ixi40; an absent one is "
                             "skipped with the reason)")
    parser.add_argument("--grid-mm", type=float, nargs="*", default=[2.0],
                        help="grids of the realism table (default: 2 mm; none: only the "
                             "profile's grid)")
    parser.add_argument("--equivalent-ages", action="store_true",
                        help="also the simulated age at which each realism statistic of "
                             "simulated controls (all ages) equals the real scans' median, per "
                             "real folder (which cue makes real brains look young or old)")
    parser.add_argument("--profile", default=None,
                        help="also a realism table at this profile's model grid (grid_mm, "
                             "crop_to_brain), simulated at its sim_resolution_mm when no "
                             "cohort is given (a name, e.g. quick, or a YAML path)")
    parser.add_argument("--cache", default=None,
                        help="preprocessing cache folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from brainage.imaging.preprocess import PreprocessCache, PreprocessParams
    from brainage.imaging.registration import template_grid

    folders = real_folders([Path(d) for d in args.data])
    if not folders:
        raise SystemExit("no real scans under any --data folder: they live in "
                         "../shared/data/ixi10 and ../shared/data/ixi40")
    real = [p for folder in folders for p in real_scans(folder)]
    real_ages = real_age_table(folders)
    ages = (float(real_ages["age"].min()), float(real_ages["age"].max()))
    names = "+".join(f.name for f in folders)
    print(f"real scans aged {ages[0]:.0f}-{ages[1]:.0f}: simulated controls of those ages")
    # (label, grid_mm, crop_to_brain, simulation resolution when a cohort must be simulated)
    grids = [(f"{g:g} mm grid", float(g), False, 2.0) for g in args.grid_mm]
    if args.profile:
        from brainage.study.profiles import load_profile

        profile = load_profile(args.profile, ROOT / "notebooks" / "params")  # a name or a path
        prof = profile.params
        grids.append((f"profile {profile.name}'s model grid: {prof['grid_mm']:g} mm, crop "
                      f"{prof['crop_to_brain']}, simulated at {prof['sim_resolution_mm']:g} mm",
                      float(prof["grid_mm"]), bool(prof["crop_to_brain"]),
                      float(prof["sim_resolution_mm"])))
    with tempfile.TemporaryDirectory(prefix="bench_sim2real_") as tmp:
        scratch = Path(tmp)
        cache = PreprocessCache(args.cache or scratch / "cache")
        for label, grid_mm, crop, sim_mm in grids:
            masks = tissue_masks(template_grid(grid_mm, crop_to_brain=crop))
            sim = simulated_scans(Path(args.simulated) if args.simulated else None,
                                  args.n_sim, scratch, sim_mm, ages)
            rows = realism_rows("simulated", sim, PreprocessParams(
                space="MNI152NLin2009cSym", grid_mm=grid_mm, skull_stripped=True,
                crop_to_brain=crop), cache, masks)
            rows += realism_rows(f"real ({names}, deepbet)", real,
                                 PreprocessParams(grid_mm=grid_mm, crop_to_brain=crop), cache,
                                 masks)
            print_realism(rows, label)
            if args.equivalent_ages:
                every = simulated_scans(Path(args.simulated) if args.simulated else None,
                                        4 * args.n_sim, scratch, sim_mm, (20.0, 100.0),
                                        spread=True)
                sim_rows = realism_rows("simulated", every, PreprocessParams(
                    space="MNI152NLin2009cSym", grid_mm=grid_mm, skull_stripped=True,
                    crop_to_brain=crop), cache, masks)
                real_rows = [r for r in rows if r["data"] != "simulated"]
                print_equivalent_ages(sim_rows, every, real_rows, real_ages, label)
        if args.models is None:
            print("\nModel: skipped (no --models folder given, e.g. runs/quick/models)")
        elif not (Path(args.models) / MODEL_CARD_FILE).is_file():
            print(f"\nModel: skipped ({args.models} holds no model.json: train a profile first)")
        else:
            from brainage.inference.model_folder import load_model_folder

            models = Path(args.models)
            folder = load_model_folder(_loadable_folder(models, scratch))  # loaded once
            simulated = Path(args.simulated) if args.simulated else None
            print_model(models, folder, folders, cache)
            print_simulated_reference(models, folder, simulated, ages, cache)
            print_mask_sensitivity(models, folder, real, simulated, args.n_sim, ages, cache,
                                   scratch)
            aged = aged_volumes(folder, real, real_ages, simulated, args.n_sim, ages, cache,
                                scratch)
            print_intensity_swap(models, folder, aged)
            print_region_swap(models, folder, aged)
            print_warp_sensitivity(models, folder, real, simulated, args.n_sim, ages, cache,
                                   scratch)


if __name__ == "__main__":
    main()
