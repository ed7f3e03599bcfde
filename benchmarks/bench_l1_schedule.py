"""Is the L1 baseline of a profile under-trained? Its validation curve and test MAE by epochs.

Run from the repository root, on a run folder that a build wrote (read only)::

    nice python benchmarks/bench_l1_schedule.py --run runs/quick --profile quick \
        --epochs 30 60 --out /tmp/bench_l1_schedule

It trains the L1 baseline with the profile's settings (as notebook 02 does: same seed, optimiser,
cosine schedule, augmentations) once per number of epochs into ``OUT/epochs-<N>/`` on the run's
training and validation scans, and prints one row per length: the epoch the validation split
picked, its validation MAE, the last epoch's validation MAE and training loss, how many epochs'
validation MAE was more than twice the best (spikes), the test MAE of the picked checkpoint
(uncorrected) and the wall time. A length whose folder holds ``best.pt`` is evaluated, not
trained again. The test MAE is reported, never used to pick anything.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from brainage.inference.model_folder import CHECKPOINT_FILE
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, train_l1
from brainage.study.profiles import find_project_root, load_profile
from brainage.study.runs import RunFolder, predict_run


def _l1_config(params: dict) -> tuple[ModelConfig, TrainConfig]:
    """The model and the L1 training settings of a profile, as notebook 02 builds them."""
    model_cfg = ModelConfig(depth=params["model_depth"], widths=tuple(params["model_widths"]),
                            conv1_stride=params["conv1_stride"])
    cfg = TrainConfig(epochs=params["l1_epochs"], head_epochs=0, batch_size=params["batch_size"],
                      optimizer=params["optimizer"], lr=params["lr"], head_lr=params["head_lr"],
                      weight_decay=params["weight_decay"], temperature=params["temperature"],
                      seed=params["seed"], device=params["device"],
                      augment=params.get("augment") or {}, progress=False)
    return model_cfg, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (read only)")
    parser.add_argument("--profile", default="quick", help="the run's profile (name or YAML)")
    parser.add_argument("--epochs", type=int, nargs="+", required=True,
                        help="numbers of L1 epochs to train and compare")
    parser.add_argument("--out", type=Path, required=True, help="where the models are written")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_profile(args.profile, find_project_root() / "notebooks" / "params").params
    run = RunFolder(args.run)
    model_cfg, cfg = _l1_config(params)
    train_ds, val_ds = run.dataset("train"), run.dataset("val")
    rows = []
    for epochs in args.epochs:
        folder = args.out / f"epochs-{epochs}"
        start = time.perf_counter()
        if not (folder / CHECKPOINT_FILE).is_file():
            train_l1(train_ds, val_ds, model_cfg, replace(cfg, epochs=epochs), folder)
        seconds = time.perf_counter() - start
        log = pd.read_csv(folder / "log.csv")
        best = log.loc[log["val_mae"].idxmin()]
        test = predict_run(run, {"l1": folder / CHECKPOINT_FILE}, device=params["device"])
        test = test[test["split"] == "test"]
        rows.append({"epochs": epochs, "picked epoch": int(best["epoch"]),
                     "val MAE picked": float(best["val_mae"]),
                     "val MAE last": float(log["val_mae"].iloc[-1]),
                     "train loss last": float(log["train_loss"].iloc[-1]),
                     "spikes (> 2x best)": int((log["val_mae"] > 2 * best["val_mae"]).sum()),
                     "test MAE": float((test["predicted"] - test["age"]).abs().mean()),
                     "n test": len(test), "seconds": seconds})
        print(f"{epochs} epochs: done in {seconds:.0f} s", flush=True)
    print(f"\nL1 baseline of profile {args.profile!r} by training length (years; torch threads "
          f"{torch.get_num_threads()})")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
