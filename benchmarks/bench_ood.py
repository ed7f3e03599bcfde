"""What the per-scan OOD score and the batch shift test see: real scans, and a held-out site.

Run from the repository root (the quick model of a build; nothing is trained or tuned here)::

    python benchmarks/bench_ood.py --models runs/quick/models
    python benchmarks/bench_ood.py --models runs/quick/models --n-site 40 --draws 200

Four pools of healthy scans are compared with the model's training scans, each through the
features the OOD score uses (:mod:`brainage.models.features`, standardised as each head's
``ood.npz`` stores its training reference):

* ``simulated test``: the run's own simulated test-split controls (the training sites, never
  trained on): what neither check may flag beyond its level;
* ``fresh simulation, training sites``: a cohort simulated here with the training sites'
  settings (the default configuration, another seed): the control for the two held-out
  sites, whose cohorts are simulated the same way. The seed also redraws each site's bias
  field (``site_betas`` of :func:`brainage.data.simulate.simulate_cohort`), so these are the
  training sites' settings on new scanner realisations, not the training scanners. Every
  simulated pool is preprocessed as skull-stripped, as the build preprocessed the training
  scans (``brainage predict --skull-stripped``): without it the batch test fires on the run's
  own test scans too (``bench_scanner_instance.py``);
* ``held-out site D``: a cohort simulated here from a scanner outside the training sites''
  range (darker CSF, brighter grey matter, more noise and bias, 1.5 mm slices; ``SITE_D``);
* ``held-out site E``: a scanner inside their range (``SITE_E``): a small shift;
* ``real``: the shared real IXI scans (``../shared/data/ixi10`` and ``ixi40``; skipped with
  the reason when absent), preprocessed as ``brainage predict`` does.

**Per-scan OOD score.** ROC AUC of each head's ``ood_score`` for a pool against the simulated
test controls (1: every scan of the pool scores above every simulated one; 0.5: no better than
chance), and the share flagged (score > 1, the ``ood`` column of ``brainage predict``).

**Batch test.** :func:`brainage.analysis.shift.batch_shift` (MMD, permutation p-value) on
``--draws`` random batches of ``--batch`` scans of each pool: the share with ``p <= 0.05``
(exact 95 % CI). On the simulated test controls this is the false-alarm rate, which must not
exceed 0.05 beyond chance; on the other pools it is the detection rate.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.inference.model_folder import MODEL_CARD_FILE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_calibrate beside this file
ALPHA = 0.05

#: A scanner outside the training sites' range (siteA-C: gm 0.72-0.76, csf 0.32-0.38, noise
#: 0.03-0.035, bias 0.035-0.05; :data:`brainage.data._simulate_config.DEFAULT_SITES`).
SITE_D = {"name": "siteD", "gm": 0.82, "csf": 0.25, "scale": 1500.0, "noise": 0.05,
          "bias": 0.08, "voxel_mm": (1.0, 1.0, 1.5), "orientation": "RAS"}
#: A scanner inside their range.
SITE_E = {"name": "siteE", "gm": 0.75, "csf": 0.36, "scale": 1000.0, "noise": 0.032,
          "bias": 0.045, "voxel_mm": (1.1, 1.1, 1.1), "orientation": "RAS"}


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of scores ``positive`` (should be higher) against ``negative`` (sklearn)."""
    from sklearn.metrics import roc_auc_score

    positive, negative = positive[np.isfinite(positive)], negative[np.isfinite(negative)]
    if not positive.size or not negative.size:
        return float("nan")
    labels = np.r_[np.ones(positive.size), np.zeros(negative.size)]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def exact_ci(hits: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of a rate (scipy)."""
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def rejections(ood, features: np.ndarray, batch: int, draws: int, permutations: int,
               seed: int) -> tuple[int, int]:
    """Batches of ``batch`` scans drawn ``draws`` times (without replacement within a batch)
    whose batch test gives ``p <= ALPHA``; (hits, draws)."""
    from brainage.analysis.shift import batch_shift

    pool = features[np.isfinite(features).all(axis=1)]
    if pool.shape[0] < batch:
        return 0, 0
    rng = np.random.default_rng(seed)
    hits = 0
    for d in range(draws):
        rows = pool[rng.choice(pool.shape[0], batch, replace=False)]
        result = batch_shift(ood, rows, permutations=permutations, seed=seed + d)
        hits += result.features.p_value <= ALPHA
    return hits, draws


def simulate_site(site: dict, n: int, seed: int, work: Path) -> pd.DataFrame:
    """``n`` healthy subjects of one simulated scanner at the quick grid (4 mm), as BIDS."""
    from brainage.data.simulate import SimulationConfig, SiteConfig, simulate_cohort
    from brainage.inference.predict import collect_scans

    root = work / site["name"]
    config = (SimulationConfig() if site["name"] == "training" else
              SimulationConfig(sites=(SiteConfig(**site),)))
    simulate_cohort(root, n_healthy=n, seed=seed, resolution_mm=4.0, config=config, n_jobs=1)
    return collect_scans([str(root)])


def table(folder, pools: dict[str, np.ndarray], reference: str, batch: int, draws: int,
          permutations: int, seed: int) -> pd.DataFrame:
    """One row per head and pool: AUC against ``reference``, share flagged, batch rates."""
    rows = []
    for head in folder.models:
        ood = folder.trust[head].ood
        if ood is None:
            print(f"{head}: no ood.npz, left out")
            continue
        scores = {}
        for name, features in pools.items():
            usable = features[head][np.isfinite(features[head]).all(axis=1)]
            scores[name] = ood.score(usable)
        for name, features in pools.items():
            hits, n = rejections(ood, features[head], batch, draws, permutations, seed)
            low, high = exact_ci(hits, n) if n else (np.nan, np.nan)
            rows.append({"head": head, "pool": name, "n": int(scores[name].size),
                         "auc_vs_simulated": (np.nan if name == reference else
                                              roc_auc(scores[name], scores[reference])),
                         "flagged": float(np.mean(scores[name] > 1.0)),
                         "batch_rate": hits / n if n else np.nan, "rate_low": low,
                         "rate_high": high, "draws": n})
    return pd.DataFrame(rows)


def print_table(result: pd.DataFrame, batch: int, permutations: int) -> None:
    print(f"\nPer-scan OOD score (AUC against the simulated test controls; flagged: score > 1) "
          f"and the batch test on random batches of {batch} ({permutations} permutations, "
          f"share with p <= {ALPHA}, exact 95 % CI)")
    print("| head | scans | n | OOD AUC vs simulated test | flagged | batches flagged "
          "[95 % CI] |")
    print("|---|---|---|---|---|---|")
    for row in result.itertuples():
        auc = "(reference)" if np.isnan(row.auc_vs_simulated) else f"{row.auc_vs_simulated:.2f}"
        rate = (f"{row.batch_rate:.3f} [{row.rate_low:.3f}, {row.rate_high:.3f}] of "
                f"{row.draws}" if row.draws else "too few scans")
        print(f"| {row.head} | {row.pool} | {row.n} | {auc} | {row.flagged:.2f} | {rate} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "quick" / "models")
    parser.add_argument("--n-site", type=int, default=40,
                        help="subjects simulated per pool (training sites, site D, site E)")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-real", action="store_true", help="leave the real scans out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import bench_calibrate as bench

    from brainage._utils import default_cache_dir
    from brainage.imaging.preprocess import PreprocessCache
    from brainage.inference.model_folder import load_model_folder

    if not (args.models / MODEL_CARD_FILE).is_file():
        raise SystemExit(f"no model folder at {args.models} (build one: nox -s build)")
    folder = load_model_folder(args.models)
    cache = PreprocessCache(default_cache_dir())
    pools: dict[str, dict[str, np.ndarray]] = {}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as work:
        warnings.simplefilter("ignore")  # the domain warning: simulated model, real scans
        _, _, pools["simulated test"] = bench.simulated_test(args.models, folder)
        names = ("fresh simulation, training sites", "held-out site D", "held-out site E")
        for k, (name, site) in enumerate(zip(names, ({"name": "training"}, SITE_D, SITE_E))):
            scans = simulate_site(site, args.n_site, 1000 + k, Path(work))
            site_cache = PreprocessCache(Path(work) / "cache")  # the files vanish with work
            # brain-only scans, preprocessed as the build preprocessed the training scans:
            # without it the template mask strips them again and every batch differs
            # (bench_scanner_instance.py measured it: the run's own test scans then fire too)
            _, pools[name] = bench.predict_real(folder, scans, site_cache, skull_stripped=True)
        if not args.no_real:
            real = bench.real_scans(list(bench.REAL))
            _, pools["real (IXI)"] = bench.predict_real(folder, real, cache)
    result = table(folder, pools, "simulated test", args.batch, args.draws, args.permutations,
                   args.seed)
    print_table(result, args.batch, args.permutations)
    args.out.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out / "bench_ood.csv", index=False)


if __name__ == "__main__":
    main()
