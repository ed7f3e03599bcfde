"""Shortcut benchmark (issue 28, item 2): how well predictors that need no anatomy read age.

Run from the repository root after a build (``runs/<profile>`` with ``splits.csv`` and, for the
CNN rows, ``predictions.csv`` of notebook 03)::

    python benchmarks/bench_shortcut.py --run runs/quick --simulated data/simulated/quick

The run's simulated scans are preprocessed as the models saw them (the model card's
preprocessing, through ``--cache``). Each scan is summarised by features that do not locate
anything in the brain: the mean and SD of the normalised intensity inside the brain, the GM/WM
contrast and the two tissue peaks (:func:`brainage.data.audit.realism_statistics`, which uses
tissue priors only to read the two intensity levels), the noise level, and the intensity
histogram inside the brain (32 bins over 0-2, as fractions). A ridge regression
(scikit-learn ``RidgeCV`` over a log grid of penalties, standardised features) is fitted on
the training split's controls and scored on the test split's controls; the table prints its
test MAE beside the mean-age predictor's and, when the run has ``predictions.csv``, the CNNs'.
A global-intensity predictor that beats the mean age by far reads a shortcut that real scans
will not honour; the histogram also holds the CSF fraction, which atrophy does change, so its
row is an upper bound on the shortcut.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BINS = np.linspace(0.0, 2.0, 33)


def features(img, wm_prior: np.ndarray, gm_prior: np.ndarray) -> dict[str, float]:
    """Global intensity features of one preprocessed volume (module docstring)."""
    from brainage.data.audit import realism_statistics

    data = np.asarray(img.dataobj, dtype=np.float64)
    brain = data[data > 0]
    stats = realism_statistics(img, wm_prior, gm_prior)
    hist, _ = np.histogram(brain, bins=BINS)
    out = {"mean": float(brain.mean()), "sd": float(brain.std()),
           "contrast": stats["contrast"], "gm_level": stats["gm_level"],
           "wm_level": stats["wm_level"], "noise": stats["noise"]}
    out.update({f"h{i:02d}": float(v) for i, v in enumerate(hist / brain.size)})
    return out


FEATURE_SETS = {
    "mean intensity": ["mean"],
    "GM/WM contrast": ["contrast"],
    "intensity levels (mean, SD, peaks, contrast, noise)": ["mean", "sd", "contrast",
                                                             "gm_level", "wm_level", "noise"],
    "intensity histogram (32 bins) + levels": None,  # every column
}


def ridge_mae(train, test, columns: list[str]) -> float:
    """Test MAE of a ridge regression of age on ``columns`` fitted on ``train``."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 30)))
    model.fit(train[columns].to_numpy(), train["age"].to_numpy())
    return float(np.abs(model.predict(test[columns].to_numpy()) - test["age"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "quick"))
    parser.add_argument("--simulated", default=str(ROOT / "data" / "simulated" / "quick"))
    parser.add_argument("--cache", default=None,
                        help="preprocessing cache (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import tempfile

    import pandas as pd

    from brainage.data.audit import tissue_priors
    from brainage.imaging.preprocess import PreprocessCache, PreprocessParams, preprocess_cohort
    from brainage.imaging.registration import template_grid
    from brainage.inference.model_folder import MODEL_CARD_FILE

    run, sim = Path(args.run), Path(args.simulated)
    card = json.loads((run / "models" / MODEL_CARD_FILE).read_text(encoding="utf-8"))
    prep = card["preprocess"]
    params = PreprocessParams(space=prep["space"], grid_mm=prep["grid_mm"], skull_stripped=True,
                              crop_to_brain=prep["crop_to_brain"])
    cohort = pd.read_csv(sim / "participants.tsv", sep="\t", na_values="n/a").merge(
        pd.read_csv(run / "splits.csv"), on="participant_id")
    cohort = cohort[(cohort["group"] == "HC") & cohort["split"].isin(["train", "test"])]
    paths = [sim / p / "anat" / f"{p}_T1w.nii.gz" for p in cohort["participant_id"]]
    priors = tissue_priors(*template_grid(prep["grid_mm"], crop_to_brain=prep["crop_to_brain"]))
    with tempfile.TemporaryDirectory(prefix="bench_shortcut_") as tmp:
        cache = PreprocessCache(args.cache or Path(tmp) / "cache")
        items = preprocess_cohort([str(p) for p in paths], params, cache, n_jobs=2)
        rows = [features(item.image, *priors) if item.ok else None for item in items]
    keep = [i for i, r in enumerate(rows) if r is not None]
    table = pd.concat([cohort.iloc[keep].reset_index(drop=True),
                       pd.DataFrame([rows[i] for i in keep])], axis=1)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    every = [*FEATURE_SETS["intensity levels (mean, SD, peaks, contrast, noise)"],
             *(c for c in table.columns if c.startswith("h") and c[1:].isdigit())]
    print(f"Shortcut benchmark: {run} ({card.get('profile')}), controls: {len(train)} train, "
          f"{len(test)} test (ages {test['age'].min():.0f}-{test['age'].max():.0f})")
    print(f"{'predictor':<62}{'test MAE (y)':>14}")
    print(f"{'mean age of the training controls':<62}"
          f"{np.abs(test['age'] - train['age'].mean()).mean():>14.2f}")
    for label, columns in FEATURE_SETS.items():
        print(f"{'ridge on ' + label:<62}{ridge_mae(train, test, columns or every):>14.2f}")
    predictions = run / "predictions.csv"
    if predictions.is_file():
        pred = pd.read_csv(predictions)
        pred = pred[pred["participant_id"].isin(test["participant_id"])]
        for head, rows_of in pred.groupby("model"):
            mae = float(np.abs(rows_of["predicted"] - rows_of["age"]).mean())
            print(f"{'CNN ' + head.upper() + ' (raw, same test controls)':<62}{mae:>14.2f}")
    else:
        print(f"CNN rows: skipped ({predictions} absent: run notebook 03 first)")


if __name__ == "__main__":
    main()
