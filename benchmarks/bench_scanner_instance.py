"""Does the batch shift test fire on a new scanner *instance*, and does that instance move ages?

Run from the repository root (the quick model of a build; nothing is trained or tuned here)::

    python benchmarks/bench_scanner_instance.py --models runs/quick/models
    python benchmarks/bench_scanner_instance.py --models runs/quick/models --seeds 1000 1001 1002

A simulated cohort's seed also draws each site's scanner realisation (the bias-field
coefficients ``site_betas`` of :func:`brainage.data.simulate.simulate_cohort`), so a fresh
simulation with the training sites' settings is the training scanners' *models* on new
*instances*. Pools of healthy scans, each compared with the model's training scans:

* ``test split, build``: the run's simulated test-split controls as the build preprocessed
  them (the training scanner instances, new subjects): the batch test's false-alarm control;
* ``test split, predict``: the same scans' raw files through ``brainage predict``'s
  preprocessing (rules out that the predict path alone is what the test sees);
* ``fresh seed <s>``: ``--n`` healthy subjects simulated with the default configuration (the
  training sites' settings) and seed ``s`` at the run's grid: new scanner instances.

Per pool and head: the batch test's rejection rate on ``--draws`` random batches of
``--batch`` scans at level 0.05 (exact 95 % CI; :func:`brainage.analysis.shift.batch_shift`),
and what a user would read off the scans: the mean raw and corrected gap (training correction)
with its 95 % CI, the MAE of the corrected age, and the coverage of the model's 90 % interval.
If the fresh instances' ages and coverage match the test split's, the batch test's alarm is
a false alarm for a user; if they move, a new scanner instance is a shift worth calibrating.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_calibrate, bench_ood


def accuracy(folder, head: str, age: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Mean gap (raw, corrected) with the corrected gap's t-interval, MAE and coverage."""
    from brainage.analysis.shift import gap_test

    ok = np.isfinite(age) & np.isfinite(predicted)
    age, predicted = age[ok], predicted[ok]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few ages outside the correction's fitting range
        corrected = folder.corrections[head].apply(age, predicted)
    gap = gap_test(corrected - age)
    lower, upper = folder.trust[head].calibration.age.predict(predicted, predicted)
    return {"n": int(age.size), "raw_gap": float(np.mean(predicted - age)),
            "gap": gap.mean_gap, "gap_low": gap.ci_low, "gap_high": gap.ci_high,
            "mae": float(np.mean(np.abs(corrected - age))),
            "coverage": float(np.mean((lower <= age) & (age <= upper)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "quick" / "models")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--n", type=int, default=40, help="subjects per fresh simulation")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--permutations", type=int, default=499)
    parser.add_argument("--skull-stripped", action="store_true",
                        help="preprocess the raw files as skull-stripped (brainage predict "
                             "--skull-stripped; the simulated scans are brain-only and the "
                             "build preprocesses them so); default: as brainage predict does")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import bench_calibrate as bench
    import bench_ood

    from brainage.imaging.preprocess import PreprocessCache
    from brainage.inference.model_folder import load_model_folder
    from brainage.inference.predict import collect_scans

    def predict(scans: pd.DataFrame, cache) -> tuple[dict, dict]:
        return bench.predict_real(folder, scans, cache, skull_stripped=args.skull_stripped)

    folder = load_model_folder(args.models)
    pools: dict[str, tuple[np.ndarray, dict, dict]] = {}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as work:
        warnings.simplefilter("ignore")
        cache = PreprocessCache(Path(work) / "cache")  # the files vanish with work
        rows, predicted, features = bench.simulated_test(args.models, folder)
        pools["test split, build"] = (rows["age"].to_numpy(float), predicted, features)
        scans = collect_scans(list(rows["path"]), ages=list(rows["age"]))
        predicted, features = predict(scans, cache)
        pools["test split, predict"] = (scans["age"].to_numpy(float), predicted, features)
        for seed in args.seeds:
            scans = bench_ood.simulate_site({"name": "training"}, args.n, seed,
                                            Path(work) / f"seed{seed}")
            predicted, features = predict(scans, cache)
            pools[f"fresh seed {seed}"] = (scans["age"].to_numpy(float), predicted, features)
    results = []
    for head in folder.models:
        ood = folder.trust[head].ood
        for name, (age, predicted, features) in pools.items():
            hits, n = bench_ood.rejections(ood, features[head], args.batch, args.draws,
                                           args.permutations, 0)
            low, high = bench_ood.exact_ci(hits, n)
            results.append({"head": head, "pool": name, "batch_rate": hits / n,
                            "rate_low": low, "rate_high": high,
                            **accuracy(folder, head, age, predicted[head])})
    table = pd.DataFrame(results)
    print(f"\npredict path: skull_stripped={args.skull_stripped}")
    print(f"Batch test on {args.draws} random batches of {args.batch} ({args.permutations} "
          f"permutations, share with p <= 0.05, exact 95 % CI); gaps: predicted (raw) and "
          f"corrected (training correction) minus age, corrected 95 % CI; MAE of the corrected "
          f"age; coverage of the model's 90 % interval")
    print("| head | pool | n | batches flagged [95 % CI] | raw gap | corrected gap [95 % CI] "
          "| MAE | coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.head} | {r.pool} | {r.n} | {r.batch_rate:.2f} [{r.rate_low:.2f}, "
              f"{r.rate_high:.2f}] | {r.raw_gap:+.1f} | {r.gap:+.1f} [{r.gap_low:+.1f}, "
              f"{r.gap_high:+.1f}] | {r.mae:.1f} | {r.coverage:.2f} |")


if __name__ == "__main__":
    main()
