"""What the integrated-gradients reference does to the maps: the typical training scan against
the mean training scan, on a finished run's test subjects.

Run from the repository root, after a build (or ``brainage train``) wrote the run folder::

    python benchmarks/bench_ig_reference.py --run runs/quick

Notebook 04 maps every test subject from the model folder's reference (the training scan of
the mean age nearest to the voxelwise median of the training scans; notebook 02 writes it) and
reports what each candidate reference is predicted at. This benchmark computes the second set
of maps the comparison needs, from the mean training scan, which the build no longer pays for
(120 integrated-gradients maps at the quick profile): for each model (RNC, L1) and reference,
the reference's predicted age, the median positive share of the test subjects' attribution
and, on a simulated cohort, their median ageing AUC (|attribution| in the simulator's ageing
mask against same-tissue voxels outside it; notebook 04's truth test). Maps are written to a
temporary folder; the run folder is only read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.inference.model_folder import CHECKPOINT_FILE, load_ig_reference
from brainage.models import saliency
from brainage.models.train import load_model
from brainage.study import runs
from brainage.study.runs import RunFolder


def reference_effect(run: RunFolder, *, ig_steps: int = 8, truth_threshold: float = 0.2,
                     limit: int | None = None) -> tuple[pd.DataFrame, float]:
    """Rows (model, reference): the reference's predicted age, the test maps' median positive
    share and (simulated cohort) median ageing AUC; and the seconds the maps took."""
    reference = run.reference_image()
    train_rows = run.rows("train")
    mean_scan = run.volumes(train_rows).mean(axis=0)  # (D, H, W): the mean training scan
    test = run.dataset(run.rows("test").head(limit) if limit else "test")
    typical = load_ig_reference(run.models, tuple(test[0]["image"].shape[1:]))
    if typical is None:
        raise SystemExit(f"{run.models} holds no integrated-gradients reference: run 02 first")
    models = {name: load_model(run.models / name / CHECKPOINT_FILE) for name in ("rnc", "l1")}
    candidates = {"typical scan": typical, "mean scan": mean_scan}
    ages = saliency.reference_prediction_table(models, candidates).set_index("reference")
    brain_mask = mean_scan > 0
    truth = None
    if run.truth_dir() is not None:
        ageing, brain = runs.effect_mask(run, reference, "ageing", truth_threshold)
        truth = (ageing, brain, runs.tissue_labels(reference))
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            for label, volume in candidates.items():
                maps = saliency.save_attribution_maps(
                    model, test, volume, reference, Path(tmp) / name / label.replace(" ", "_"),
                    n_steps=ig_steps, brain_mask=brain_mask)
                row = {"model": name.upper(), "reference": label,
                       "reference predicted (y)": float(ages.loc[label, name]),
                       "median positive share (%)": 100 * float(maps["positive_share"].median()),
                       "n test": len(maps)}
                if truth is not None:
                    row["median ageing AUC"] = float(np.median(saliency.subject_enrichment(
                        list(maps["path"]), truth[0], truth[1], tissue=truth[2])))
                rows.append(row)
    return pd.DataFrame(rows), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quick", help="a run folder (default: %(default)s)")
    parser.add_argument("--ig-steps", type=int, default=8,
                        help="Gauss-Legendre nodes (the quick profile's ig_steps: %(default)s)")
    parser.add_argument("--truth-threshold", type=float, default=0.2,
                        help="the ageing mask's threshold (quick: %(default)s)")
    parser.add_argument("--limit", type=int, default=None,
                        help="map only the first N test subjects (default: all)")
    args = parser.parse_args()
    run = RunFolder(Path(args.run))
    table, seconds = reference_effect(run, ig_steps=args.ig_steps,
                                      truth_threshold=args.truth_threshold, limit=args.limit)
    print(f"run {args.run}: training mean age {run.rows('train')['age'].mean():.1f} y; "
          f"{int(table['n test'].iloc[0])} test subjects, {args.ig_steps} steps")
    print(table.to_markdown(index=False, floatfmt=".3g"))
    print(f"maps: {seconds:.0f} s for {len(table)} sets")


if __name__ == "__main__":
    main()
