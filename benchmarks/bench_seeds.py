"""Spread of a profile's test MAE over training seeds, on this machine.

Run from the repository root, on a run folder that a build wrote (read only)::

    python benchmarks/bench_seeds.py --run runs/quick --profile quick --seeds 1 2 \
        --out /tmp/bench_seeds

It trains RNC and L1 with the profile's settings (as notebook 02 does) once per seed into
``OUT/seed-<N>/`` on the run's own training and validation scans, predicts the run's test
scans, and prints one row per seed: each head's test MAE (uncorrected predictions) and their
difference, with the run's own models (``predictions.csv``, the profile's seed) as the first
row, then mean, SD (ddof 1) and range over the seeds. A seed whose folder holds a finished
training (``seeds.json``) is evaluated, not trained again. The same numbers as the build's
``tab-03-seeds`` with ``n_seeds`` > 1, without rebuilding the run. Costs one training per seed
(the quick profile: about 2 min on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig
from brainage.study.profiles import find_project_root, load_profile
from brainage.study.runs import RunFolder, predict_run
from brainage.study.training import seed_summary, train_study_models


def _configs(params: dict) -> tuple[ModelConfig, TrainConfig, TrainConfig]:
    """The model and the two training settings of a profile, as notebook 02 builds them."""
    model_cfg = ModelConfig(depth=params["model_depth"], widths=tuple(params["model_widths"]),
                            conv1_stride=params["conv1_stride"])
    common = dict(batch_size=params["batch_size"], optimizer=params["optimizer"],
                  lr=params["lr"], head_lr=params["head_lr"],
                  weight_decay=params["weight_decay"], temperature=params["temperature"],
                  seed=params["seed"], device=params["device"],
                  augment=params.get("augment") or {}, progress=False)
    rnc = TrainConfig(epochs=params["epochs"], head_epochs=params["head_epochs"],
                      probe_every=params["probe_every"], **common)
    l1 = TrainConfig(epochs=params["l1_epochs"], head_epochs=0, **common)
    return model_cfg, rnc, l1


def _trained(folder: Path) -> dict[str, Path] | None:
    """The checkpoints of a seed that an earlier call finished (its ``seeds.json``), or None."""
    record = folder / "seeds.json"
    if not record.is_file():
        return None
    checkpoints = json.loads(record.read_text(encoding="utf-8"))["checkpoints"]
    return {head: folder / path for head, path in next(iter(checkpoints.values())).items()}


def _test_mae(frame: pd.DataFrame, seed: int) -> list[dict]:
    test = frame[frame["split"] == "test"]
    return [{"seed": seed, "model": str(model), "n": len(rows),
             "mae": float((rows["predicted"] - rows["age"]).abs().mean())}
            for model, rows in test.groupby("model", sort=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (read only)")
    parser.add_argument("--profile", default="quick", help="the run's profile (name or YAML)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True,
                        help="further training seeds (the run's own seed is the first row)")
    parser.add_argument("--out", type=Path, required=True, help="where the models are written")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_profile(args.profile, find_project_root() / "notebooks" / "params").params
    run = RunFolder(args.run)
    model_cfg, rnc_cfg, l1_cfg = _configs(params)
    rows = _test_mae(pd.read_csv(run.predictions_csv), int(params["seed"]))
    train_ds, val_ds = run.dataset("train"), run.dataset("val")
    for seed in args.seeds:
        start = time.perf_counter()
        folder = args.out / f"seed-{seed}"
        heads = _trained(folder)  # a seed trained by an earlier call is reused
        done = "evaluated (trained by an earlier call)" if heads else "trained and evaluated"
        if heads is None:
            trained = train_study_models(
                train_ds, val_ds, model_cfg, models_dir=folder,
                rnc_cfg=replace(rnc_cfg, seed=seed), l1_cfg=replace(l1_cfg, seed=seed))
            heads = {"rnc": trained.rnc.best_checkpoint, "l1": trained.l1.best_checkpoint}
        rows += _test_mae(predict_run(run, heads, device=params["device"]), seed)
        print(f"seed {seed}: {done} in {time.perf_counter() - start:.0f} s",
              flush=True)
    repeats = pd.DataFrame(rows)
    table = repeats.pivot(index="seed", columns="model", values="mae")[["rnc", "l1"]]
    table["rnc - l1"] = table["rnc"] - table["l1"]
    print(f"\ntest MAE (years, uncorrected, n = {repeats['n'].iloc[0]}) by training seed; "
          f"torch threads {torch.get_num_threads()}")
    print(table.round(4).to_string())
    summary = seed_summary(repeats)
    stats = {**summary["models"], "rnc - l1": summary["difference"]}
    print(pd.DataFrame(stats).T[["mean", "sd", "min", "max"]].astype(float).round(4)
          .to_string())


if __name__ == "__main__":
    main()
