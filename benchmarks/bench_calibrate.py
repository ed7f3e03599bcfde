"""Site calibration and batch shift detection on the shared real scans.

Run from the repository root (the quick model of a build; nothing is trained or tuned here)::

    python benchmarks/bench_calibrate.py --models runs/quick/models
    python benchmarks/bench_calibrate.py --models runs/quick/models --repeats 200 --seed 0

**Calibration.** The real scans of ``../shared/data/ixi10`` and ``../shared/data/ixi40`` (or
the BIDS folders of ``--real``; each folder skipped with the reason when absent; all 50 IXI
scans are from one site, HH) are predicted with every head of the model folder (the
preprocessing and forward pass of ``brainage predict``). For ``k`` = 5, 10, 20, the scans
are split ``--repeats`` times at random into ``k`` calibration scans and the rest, and on the
rest are measured: MAE, mean gap (corrected minus chronological age), Pearson r, and the
coverage and width of the 90 % interval, for three ways of reading the model:

* ``none``: the model's predictions and its conformal interval (calibrated on simulated
  validation scans), as ``brainage predict`` gives them today;
* ``refit``: a plain linear age-bias correction (de Lange & Cole) refitted on the ``k`` scans,
  the model's interval around the corrected age (no conformal recalibration);
* ``site``: :func:`brainage.analysis.site_calibration.fit_site_calibration`: the correction
  with its slope shrunk towards the training correction's, and the interval recalibrated on
  the ``k`` scans' cross-fitted residuals. At ``k`` below the interval's minimum (10 at 0.9)
  only the correction is fitted and the interval is reported as missing; ``site, own slope``
  is the same without shrinkage (``prior_scans=0``; no interval below 10 scans either);
* ``mean age``: no model at all, the ``k`` scans' mean age for everyone (interval from its
  leave-one-out residuals): what a model must beat to be worth calibrating.

The splits and measures are :func:`brainage.analysis.site_calibration.calibration_curve` (the
one implementation; the evaluation notebook's real-scan section calls it too). The table gives
the mean over splits of each measure, the share of splits whose mean gap is within 3 years,
and the 10th-90th percentiles of the coverage over splits. The k-curve figure (k against MAE
and coverage; :func:`brainage.study.figures.calibration_curve`, the book's) is written to
``--out`` (default ``benchmarks/results/``).

**Batch shift.** The features the OOD score uses (:mod:`brainage.models.features`), standardised
as each head's ``ood.npz`` stores its training reference, are compared with that reference by
:func:`brainage.analysis.shift.mmd_test`: the real scans together, each folder, random batches
of 10 real scans (detection rate), and random batches of 10 simulated *test* scans of the run
(healthy controls; the false-positive rate at level 0.05, which must not exceed it beyond
chance). The controls' mean gap is tested against 0 (:func:`brainage.analysis.shift.gap_test`).

**Per-scan OOD score.** ROC AUC of the head's ``ood_score`` for real scans against the
simulated test controls (1: separates them; 0.5: cannot tell them apart), and the share flagged.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.inference.model_folder import MODEL_CARD_FILE

ROOT = Path(__file__).resolve().parents[1]
REAL = (ROOT.parent / "shared" / "data" / "ixi10", ROOT.parent / "shared" / "data" / "ixi40")
KS = (5, 10, 20)
LEVEL = 0.9
ALPHA = 0.05
BATCH = 10


def real_scans(folders: list[Path]) -> pd.DataFrame:
    """Scans and ages of the real BIDS folders that exist (an absent one is skipped, said)."""
    from brainage.inference.predict import collect_scans

    frames = []
    for folder in folders:
        if not folder.is_dir():
            print(f"skipped {folder}: absent (no such folder on this machine)")
            continue
        scans = collect_scans([str(folder)])
        scans["source"] = folder.name
        frames.append(scans)
    if not frames:
        raise SystemExit("no real scans: neither shared folder exists")
    return pd.concat(frames, ignore_index=True)


def outputs(folder, images: dict[int, object], n: int) -> tuple[dict, dict]:
    """Every head's predicted age (NaN where no image) and features (NaN rows) of ``images``."""
    from brainage.inference.predict import _infer

    ages, _, features = _infer(folder, images, [str(i) for i in range(n)], None)
    predicted, feats = {}, {}
    for head in folder.models:
        dim = len(next(iter(features[head].values())))
        predicted[head] = np.array([ages[head].get(i, np.nan) for i in range(n)])
        feats[head] = np.array([features[head].get(i, np.full(dim, np.nan)) for i in range(n)])
    return predicted, feats


def predict_real(folder, scans: pd.DataFrame, cache, skull_stripped: bool = False
                 ) -> tuple[dict, dict]:
    """Predictions and features of the scans (failures reported and left NaN), preprocessed as
    ``brainage predict`` does (``skull_stripped``: its ``--skull-stripped``, for brain-only
    scans such as the simulated ones: the build preprocesses them so)."""
    from brainage.inference.predict import _preprocess

    prepared = _preprocess(scans["path"].tolist(), range(len(scans)), folder, "auto",
                           skull_stripped, cache, 1)
    for _, error in sorted(prepared.errors.items()):
        print(f"  failed: {error}")
    return outputs(folder, prepared.images, len(scans))


def simulated_test(models: Path, folder) -> tuple[pd.DataFrame, dict, dict]:
    """The run's simulated test-split controls (their preprocessed volumes from the run's
    cohort table), predicted with every head."""
    import nibabel as nib

    cohort = pd.read_csv(models.parent / "cohort.csv")
    rows = cohort[(cohort["split"] == "test") & (cohort["group"] == "HC")].reset_index(drop=True)
    images = {}
    for i, path in enumerate(rows["preprocessed"]):
        img = nib.load(path)
        if tuple(img.shape) == folder.grid_shape:
            images[i] = img
    print(f"simulated test controls: {len(images)} of {len(rows)} at the model grid")
    predicted, features = outputs(folder, images, len(rows))
    return rows, predicted, features


def calibration_table(age, predicted: dict, folder, repeats: int, seed: int) -> pd.DataFrame:
    """:func:`brainage.analysis.site_calibration.calibration_curve` of every head (the scans a
    head could predict), one table with a ``head`` column."""
    from brainage.analysis.site_calibration import calibration_curve, training_line

    tables = []
    for head, p in predicted.items():
        usable = np.isfinite(p)
        table = calibration_curve(age[usable], p[usable],
                                  interval=folder.trust[head].calibration.age,
                                  prior=training_line(folder.corrections[head]), ks=KS,
                                  repeats=repeats, seed=seed, level=LEVEL)
        for row in table[table["splits"] == 0].itertuples():
            print(f"{head} {row.method} k={row.k}: no split could be fitted")
        tables.append(table.assign(model=head))
    return pd.concat(tables, ignore_index=True)


def print_calibration(table: pd.DataFrame, repeats: int) -> None:
    print(f"\nCalibration on k real scans, measured on the other scans ({repeats} random "
          f"splits; means over splits; coverage of the {LEVEL:.0%} interval, p10-p90 over "
          f"splits; 'fits': splits where the method could be fitted)")
    print(f"{'head':<5}{'method':<16}{'k':>3}{'fits':>6}{'MAE':>7}{'mean gap':>10}{'SD':>6}"
          f"{'|gap|<=3':>9}{'r':>6}{'coverage':>10}{'p10-p90':>12}{'width':>7}")
    for row in table[table["splits"] > 0].itertuples():
        band = (f"{row.coverage_p10:.2f}-{row.coverage_p90:.2f}"
                if np.isfinite(row.coverage_p10) else "-")
        coverage = f"{row.coverage:.3f}" if np.isfinite(row.coverage) else "-"
        width = f"{row.width:.1f}" if np.isfinite(row.width) else "-"
        print(f"{row.model:<5}{row.method:<16}{row.k:>3}{row.splits:>6}{row.mae:>7.1f}"
              f"{row.gap:>10.1f}{row.gap_sd:>6.1f}{row.gap_within_3:>9.2f}{row.r:>6.2f}"
              f"{coverage:>10}{band:>12}{width:>7}")


def plot_curve(table: pd.DataFrame, path: Path) -> None:
    """The book's k-curve figure (:func:`brainage.study.figures.calibration_curve`) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from brainage.study.figures import calibration_curve

    fig = calibration_curve(table, level=LEVEL)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nfigure: {path}")


def rejection_rate(ood, features: np.ndarray, draws: int, permutations: int, seed: int
                   ) -> tuple[int, int]:
    """Rejections at ALPHA among ``draws`` random batches of BATCH scans (with features)."""
    from brainage.analysis.shift import batch_shift

    pool = features[np.isfinite(features).all(axis=1)]
    rng = np.random.default_rng(seed)
    hits = 0
    for d in range(draws):
        batch = pool[rng.choice(pool.shape[0], BATCH, replace=False)]
        result = batch_shift(ood, batch, permutations=permutations, seed=d)
        hits += result.features.p_value <= ALPHA
    return hits, draws


def print_shift(folder, scans, real_features, real_predicted, sim_features, sim_predicted,
                sim_rows, draws: int, permutations: int, seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    from brainage.analysis.shift import batch_shift, gap_test
    from brainage.analysis.uncertainty import binomial_ci

    print(f"\nBatch shift: MMD permutation test ({permutations} permutations) of encoder "
          f"features against each head's training reference (ood.npz); level {ALPHA}")
    print(f"{'head':<5}{'batch':<34}{'n':>4}{'MMD²':>9}{'p':>9}")
    for head in folder.models:
        ood = folder.trust[head].ood
        batches = {"real, all": real_features[head]}
        for source in scans["source"].unique():
            batches[f"real, {source}"] = real_features[head][(scans["source"] == source).to_numpy()]
        batches["simulated test controls, all"] = sim_features[head]
        for label, features in batches.items():
            if np.isfinite(features).all(axis=1).sum() < 2:
                continue
            result = batch_shift(ood, features, permutations=permutations, seed=seed).features
            print(f"{head:<5}{label:<34}{result.n_batch:>4}{result.statistic:>9.4f}"
                  f"{result.p_value:>9.4f}")
    print(f"\nRandom batches of {BATCH}: share with p <= {ALPHA} (exact 95 % CI)")
    print(f"{'head':<5}{'batches drawn from':<34}{'draws':>6}{'rate':>7}{'95% CI':>16}")
    for head in folder.models:
        for label, features in (("simulated test controls", sim_features[head]),
                                ("real scans", real_features[head])):
            hits, n = rejection_rate(folder.trust[head].ood, features, draws, permutations,
                                     seed)
            low, high = binomial_ci(int(hits), n)
            print(f"{head:<5}{label:<34}{n:>6}{hits / n:>7.3f}{f'[{low:.3f}, {high:.3f}]':>16}")
    print("\nControls' mean gap against 0 (t-test; gap = predicted - age, training correction "
          "applied for 'corrected')")
    print(f"{'head':<5}{'batch':<26}{'n':>4}{'mean gap':>10}{'95% CI':>18}{'p':>10}")
    for head in folder.models:
        correction = folder.corrections[head]
        for label, age, predicted in (
                ("real", scans["age"].to_numpy(float), real_predicted[head]),
                ("simulated test", sim_rows["age"].to_numpy(float), sim_predicted[head])):
            ok = np.isfinite(age) & np.isfinite(predicted)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a few ages outside the correction's range
                corrected = correction.apply(age[ok], predicted[ok])
            for kind, estimate in ((", raw", predicted[ok]), (", corrected", corrected)):
                result = gap_test(estimate - age[ok])
                ci = f"[{result.ci_low:.1f}, {result.ci_high:.1f}]"
                print(f"{head:<5}{(label + kind):<26}{result.n:>4}{result.mean_gap:>10.1f}"
                      f"{ci:>18}{result.p_value:>10.2g}")
    print("\nPer-scan OOD score: ROC AUC real vs simulated test controls, share flagged (> 1)")
    print(f"{'head':<5}{'AUC':>6}{'real flagged':>14}{'sim flagged':>13}")
    for head in folder.models:
        ood = folder.trust[head].ood
        real, sim = (ood.score(f[np.isfinite(f).all(axis=1)])
                     for f in (real_features[head], sim_features[head]))
        auc = roc_auc_score(np.r_[np.ones(real.size), np.zeros(sim.size)], np.r_[real, sim])
        print(f"{head:<5}{auc:>6.2f}{f'{(real > 1).sum()}/{real.size}':>14}"
              f"{f'{(sim > 1).sum()}/{sim.size}':>13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "quick" / "models")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--real", type=Path, nargs="+", default=list(REAL),
                        help="real BIDS folders (default ../shared/data/ixi10 and ixi40)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from brainage._utils import default_cache_dir
    from brainage.imaging.preprocess import PreprocessCache
    from brainage.inference.model_folder import load_model_folder

    if not (args.models / MODEL_CARD_FILE).is_file():
        raise SystemExit(f"no model folder at {args.models} (build one: nox -s build)")
    folder = load_model_folder(args.models)
    cache = PreprocessCache(default_cache_dir())
    scans = real_scans(args.real)
    print(f"real scans: {len(scans)} ({scans.groupby('source').size().to_dict()}), ages "
          f"{scans['age'].min():.0f}-{scans['age'].max():.0f}; model {args.models}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the domain warning: simulated model, real scans
        real_predicted, real_features = predict_real(folder, scans, cache)
        sim_rows, sim_predicted, sim_features = simulated_test(args.models, folder)
    table = calibration_table(scans["age"].to_numpy(float), real_predicted, folder,
                              args.repeats, args.seed)
    print_calibration(table, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "bench_calibrate.csv", index=False)
    plot_curve(table, args.out / "bench_calibrate.png")
    print_shift(folder, scans, real_features, real_predicted, sim_features, sim_predicted,
                sim_rows, args.draws, args.permutations, args.seed)


if __name__ == "__main__":
    main()
