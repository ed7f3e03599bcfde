"""The study's two models trained over seeds, and what the seeds say about their comparison.

One training run of each model is one draw of initialisation, data order and augmentation: a
test MAE difference between RNC and L1 from a single seed mixes the methods' difference with
that draw. ``n_seeds`` repeats both trainings with seeds ``seed, seed + 1, ...``; the first
seed's models are the study's (``models/rnc``, ``models/l1``: evaluated, explained and shipped
to ``brainage predict``), the others lie in ``models/seeds/seed-<s>/`` and are only scored on
the test split by :func:`seed_repeats` (notebook 03), so the spread over seeds is reported
beside the single comparison.

``init_from`` starts every head's encoder from the same head of an earlier model folder
(:func:`brainage.inference.model_folder.pretrained_checkpoints`): fine-tuning instead of
training from scratch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from brainage._utils import atomic_write, check_int
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, TrainResult, train_l1, train_rnc
from brainage.study.runs import RunFolder, predict_run

logger = logging.getLogger(__name__)

__all__ = ["SEEDS_FILE", "StudyModels", "seed_repeats", "seed_summary", "train_study_models"]

#: Written into the models folder: the seeds and each seed's checkpoints (relative paths).
SEEDS_FILE = "seeds.json"
_HEADS = ("rnc", "l1")


@dataclass(frozen=True)
class StudyModels:
    """What :func:`train_study_models` trained.

    Attributes
    ----------
    rnc, l1 : TrainResult
        The first seed's models: the study's.
    seeds : tuple of int
        Every seed trained, the study's first.
    checkpoints : dict of int to dict of str to Path
        Seed -> head -> ``best.pt``.
    """

    rnc: TrainResult
    l1: TrainResult
    seeds: tuple[int, ...]
    checkpoints: dict[int, dict[str, Path]]


def _seed_dir(models_dir: Path, index: int, seed: int) -> Path:
    return models_dir if index == 0 else models_dir / "seeds" / f"seed-{seed}"


def train_study_models(train_ds: Dataset, val_ds: Dataset, model_cfg: ModelConfig, *,
                       rnc_cfg: TrainConfig, l1_cfg: TrainConfig, models_dir: str | Path,
                       n_seeds: int = 1, init_from: Mapping[str, str | Path] | None = None
                       ) -> StudyModels:
    """Train RNC and L1 once per seed; write ``models_dir/seeds.json``.

    Parameters
    ----------
    train_ds, val_ds : Dataset
        Training and validation scans.
    model_cfg : ModelConfig
        The shared backbone.
    rnc_cfg, l1_cfg : TrainConfig
        Each model's settings; their ``seed`` is the first seed, and ``init_from`` is set per
        head from ``init_from``.
    models_dir : str or Path
        ``runs/<profile>/models``.
    n_seeds : int, default=1
        Seeds ``rnc_cfg.seed + k`` for ``k < n_seeds``.
    init_from : mapping of str to path, optional
        Head name to a pretrained checkpoint (both ``rnc`` and ``l1`` required), from
        :func:`brainage.inference.model_folder.pretrained_checkpoints`.

    Returns
    -------
    StudyModels
    """
    check_int("n_seeds", n_seeds, low=1)
    models_dir = Path(models_dir)
    if init_from is not None:
        missing = [h for h in _HEADS if h not in init_from]
        if missing:
            raise ValueError(f"init_from names no checkpoint for head(s) {missing}; it has "
                             f"{sorted(init_from)}")
        inside = [str(p) for p in init_from.values()
                  if Path(p).resolve().is_relative_to(models_dir.resolve())]
        if inside:
            raise ValueError(f"init_from {inside[0]} lies inside this run's models folder "
                             f"{models_dir}, which training writes; fine-tune from another run")
    first = int(rnc_cfg.seed)
    seeds = tuple(first + k for k in range(n_seeds))
    results: dict[int, dict[str, TrainResult]] = {}
    for index, seed in enumerate(seeds):
        folder = _seed_dir(models_dir, index, seed)
        init = {h: (None if init_from is None else str(init_from[h])) for h in _HEADS}
        logger.info("seed %d (%d of %d): training RNC and L1 in %s", seed, index + 1, n_seeds,
                    folder)
        results[seed] = {
            "rnc": train_rnc(train_ds, val_ds, model_cfg,
                             replace(rnc_cfg, seed=seed, init_from=init["rnc"]), folder / "rnc"),
            "l1": train_l1(train_ds, val_ds, model_cfg,
                           replace(l1_cfg, seed=seed, init_from=init["l1"]), folder / "l1"),
        }
    checkpoints = {s: {h: r.best_checkpoint for h, r in heads.items()}
                   for s, heads in results.items()}
    record = {"seeds": list(seeds),
              "init_from": None if init_from is None else {h: str(init_from[h]) for h in _HEADS},
              "checkpoints": {str(s): {h: p.relative_to(models_dir).as_posix()
                                       for h, p in heads.items()}
                              for s, heads in checkpoints.items()}}
    text = json.dumps(record, indent=2)
    atomic_write(models_dir / SEEDS_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return StudyModels(rnc=results[first]["rnc"], l1=results[first]["l1"], seeds=seeds,
                       checkpoints=checkpoints)


def _read_seeds(models_dir: Path) -> dict[int, dict[str, Path]]:
    path = models_dir / SEEDS_FILE
    if not path.is_file():  # a run trained before seeds were recorded: its one seed
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return {int(s): {h: models_dir / p for h, p in heads.items()}
                for s, heads in record["checkpoints"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a seeds record: {err}") from err


def seed_repeats(run: RunFolder, predictions: pd.DataFrame, *, device: str = "auto"
                 ) -> pd.DataFrame:
    """Raw test MAE of each head for every seed of a run.

    Parameters
    ----------
    run : RunFolder
        A trained run.
    predictions : DataFrame
        The first seed's predictions (:func:`brainage.study.runs.predict_run`), reused so its
        models are not run twice.
    device : str, default="auto"
        Where the other seeds' models run.

    Returns
    -------
    DataFrame
        Columns ``seed, model, n, mae`` (test split, uncorrected predictions), one row per seed
        and head, the study's seed first.
    """
    seeds = _read_seeds(run.models)
    first = next(iter(seeds), None)
    frames = []
    order = [(first, None)] + [(s, h) for s, h in seeds.items() if s != first]
    for seed, heads in order:
        frame = predictions if heads is None else predict_run(run, heads, device=device)
        test = frame[frame["split"] == "test"]
        if test.empty:
            raise ValueError("the predictions hold no test rows")
        for model, rows in test.groupby("model", sort=False):
            frames.append({"seed": seed, "model": str(model), "n": len(rows),
                           "mae": float((rows["predicted"] - rows["age"]).abs().mean())})
    return pd.DataFrame(frames, columns=["seed", "model", "n", "mae"])


def seed_summary(repeats: pd.DataFrame, compare: tuple[str, str] = ("rnc", "l1")
                 ) -> dict[str, Any]:
    """Mean and spread over seeds of each model's test MAE and of their difference.

    Parameters
    ----------
    repeats : DataFrame
        From :func:`seed_repeats`.
    compare : tuple of str, default=("rnc", "l1")
        The difference is MAE(a) - MAE(b), computed within each seed.

    Returns
    -------
    dict
        ``{"n_seeds", "models": {name: {"mean", "sd", "min", "max"}}, "difference": {...}}``;
        ``sd`` (ddof 1) is None for a single seed, where no spread is estimable.
    """
    def stats(values: np.ndarray) -> dict[str, float | None]:
        return {"mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                "min": float(values.min()), "max": float(values.max())}

    wide = repeats.fillna({"seed": -1}).pivot(index="seed", columns="model", values="mae")
    out: dict[str, Any] = {"n_seeds": len(wide),
                           "models": {str(m): stats(wide[m].to_numpy()) for m in wide.columns}}
    if all(m in wide.columns for m in compare):
        out["difference"] = stats((wide[compare[0]] - wide[compare[1]]).to_numpy())
    return out
