"""The study's trust step: fitting each head's intervals and OOD reference on a run, and
measuring them (coverage, flag rates on broken scans).

The fitted files (``conformal.json``, ``ood.npz``) are written and read by
:mod:`brainage.inference.model_folder`; :mod:`brainage.inference.trust` applies them to new
scans. Nothing of the test split reaches these files: the OOD reference is the training split,
its threshold and the intervals are calibrated on the validation split
(:data:`brainage.inference.model_folder.CALIBRATION_SPLIT`), as the bias correction is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from brainage._utils import AGE_RANGE, check_int, check_number
from brainage.analysis.uncertainty import (
    ConformalInterval,
    FeatureOOD,
    coverage_table,
    cross_fitted_gaps,
    min_calibration_size,
)
from brainage.inference.model_folder import (
    CALIBRATION_SPLIT,
    CHECKPOINT_FILE,
    CONFORMAL_FILE,
    MODEL_CARD_FILE,
    OOD_FILE,
    HeadCalibration,
    HeadTrust,
    checkpoint_digest,
    load_ood,
    save_calibration,
    save_ood,
)
from brainage.inference.trust import add_trust_columns

if TYPE_CHECKING:
    from brainage.study.runs import RunFolder

logger = logging.getLogger(__name__)

__all__ = [
    "TRUST_FILE",
    "IntervalSettings",
    "broken_versions",
    "calibrate",
    "calibrate_run",
    "coverage_report",
    "coverage_text",
    "fit_ood_references",
    "glue_values",
    "score_volumes",
    "summary",
    "training_domain",
    "trust_step",
]





@dataclass(frozen=True)
class IntervalSettings:
    """How the prediction intervals are calibrated.

    Parameters
    ----------
    level : float, default=0.9
        Nominal coverage of every interval.
    n_bins : int, default=3
        Mondrian age bins wanted (fewer when the validation split is too small for them).
    folds : int, default=5
        Cross-fitting folds of the corrected gap's residuals.
    seed : int, default=0
        Seed of the folds.
    """

    level: float = 0.9
    n_bins: int = 3
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("interval_level", self.level, low=0.0, high=1.0, low_open=True,
                     high_open=True)
        check_int("interval_bins", self.n_bins, low=1)
        check_int("IntervalSettings.folds", self.folds, low=2)
        check_int("seed", self.seed, low=0)



#: What the model card says the per-scan OOD flag is, and is not (issue 29: measured in
#: ``benchmarks/bench_ood.py``, it separates real scans from simulated test scans only weakly).
OOD_SCOPE = ("the ood flag (ood_score > 1) is set so that a share ood_rate of the training "
             "domain's validation scans is flagged; it was fitted and checked on that domain "
             "only and is no guard against another scanner (benchmarks/bench_ood.py measures "
             "how weakly it separates real scans from the simulated test scans); for scans of "
             "a new scanner read the batch verdict of several scans (brainage predict, brainage "
             "bids ... group) and fit a site calibration (brainage calibrate)")


def training_domain(run: RunFolder) -> dict[str, Any]:
    """What the model card records of the training data: dataset, simulated or real, size,
    ages, sites, the scans' space (the grid is the card's ``grid``), and what the OOD flag
    covers (:data:`OOD_SCOPE`)."""
    info = run.dataset_info()
    train = run.rows("train")
    cohort = run.cohort()
    sites = train["site"].dropna().astype(str) if "site" in train.columns else pd.Series([])
    return {"dataset": str(info["name"]), "simulated": bool(info.get("simulated", False)),
            "space": str(info["space"]), "skull_stripped": bool(info["skull_stripped"]),
            "n_train": int(len(train)), "n_val": int((cohort["split"] == "val").sum()),
            "age_range": [float(train["age"].min()), float(train["age"].max())],
            "sites": sorted(sites.unique().tolist()), "ood_scope": OOD_SCOPE}



def fit_ood_references(run: RunFolder, models_dir: str | os.PathLike,
                       heads: Sequence[str] = ("rnc", "l1"), *, rate: float = 0.05, k: int = 5,
                       batch_size: int = 8, device: str = "auto") -> dict[str, FeatureOOD]:
    """Each head's OOD reference: training features, threshold from the validation scans.

    Computes the feature statistics (:func:`brainage.models.features.capture_features`) of the
    training and validation scans with each head's ``best.pt`` and writes ``<head>/ood.npz``.
    With too few
    validation scans for ``rate`` (``1 / rate - 1``) no reference is written (a stale one is
    removed), with a warning: those scans get no OOD score.

    Returns
    -------
    dict of str to FeatureOOD
        The heads that have a reference.
    """
    from brainage.models.features import capture_features
    from brainage.models.train import load_model, predict

    rate = check_number("ood_rate", rate, low=0.0, high=1.0, low_open=True, high_open=True)
    val = run.rows(CALIBRATION_SPLIT)
    needed = math.ceil(1 / rate - 1 - 1e-9)
    references: dict[str, FeatureOOD] = {}
    for head in heads:
        (Path(models_dir) / head / OOD_FILE).unlink(missing_ok=True)
    if len(val) < needed:
        warnings.warn(f"an OOD flag rate of {rate:g} needs at least {needed} {CALIBRATION_SPLIT} "
                      f"scans, the run has {len(val)}: no out-of-distribution reference is "
                      f"written (raise ood_rate or enlarge the split)", stacklevel=2)
        return references
    datasets = {"train": run.dataset("train"), CALIBRATION_SPLIT: run.dataset(val)}
    for head in heads:
        head_dir = Path(models_dir) / head
        model = load_model(head_dir / CHECKPOINT_FILE, device="cpu")
        features = {}
        for split, data in datasets.items():
            with capture_features(model) as captured:
                predict(model, data, batch_size=batch_size, device=device)
            features[split] = captured.array()
        references[head] = FeatureOOD.fit(features["train"], features[CALIBRATION_SPLIT],
                                          rate=rate, k=k)
        save_ood(head_dir, references[head], checkpoint_digest(head_dir))
    return references



def calibrate(predictions: pd.DataFrame, corrections: Mapping[str, Any], *,
              settings: IntervalSettings = IntervalSettings(),
              split: str = CALIBRATION_SPLIT) -> dict[str, HeadCalibration]:
    """Calibrate each head's intervals on the rows of ``split`` only.

    Parameters
    ----------
    predictions : DataFrame
        From :func:`brainage.analysis.evaluation.correct_predictions` (``model``, ``split``,
        ``age``, ``predicted``).
    corrections : mapping of str to AgeBiasCorrection
        Each head's correction (fitted on the same split); its method is used for cross-fitting.
    settings : IntervalSettings
    split : str, default="val"
        The calibration split; no other row is read.
    """
    result = {}
    for head, rows in predictions[predictions["split"] == split].groupby("model", sort=False):
        age = rows["age"].to_numpy(dtype=np.float64)
        predicted = rows["predicted"].to_numpy(dtype=np.float64)
        needed = min_calibration_size(settings.level)
        if age.size < needed:
            warnings.warn(f"head {head!r} gets no interval: interval_level {settings.level:g} "
                          f"needs at least {needed} {split} scans, the run has {age.size} (lower "
                          f"interval_level or enlarge the {split} split)", stacklevel=2)
            continue
        interval = ConformalInterval.fit(age - predicted, level=settings.level,
                                         bin_values=predicted, n_bins=settings.n_bins,
                                         y_range=AGE_RANGE)
        correction = corrections.get(str(head))
        gap = None
        if correction is not None:
            gaps = cross_fitted_gaps(age, predicted, method=correction.method,
                                     folds=settings.folds, seed=settings.seed)
            gap = ConformalInterval.fit(gaps, level=settings.level, bin_values=age,
                                        n_bins=settings.n_bins)
        result[str(head)] = HeadCalibration(
            interval, gap, None if correction is None else correction.to_dict(),
            min(settings.folds, age.size))
        logger.info("head %s: %g intervals on %d %s scans, age half-widths %s", head,
                    settings.level, age.size, split, np.round(interval.half_widths(), 2))
    return result



def trust_step(predictions: pd.DataFrame, corrections: Mapping[str, Any],
               references: Mapping[str, FeatureOOD | None],
               features: Mapping[str, np.ndarray] | None = None, *,
               age_range: Sequence[float],
               settings: IntervalSettings = IntervalSettings()
               ) -> tuple[pd.DataFrame, dict[str, HeadTrust]]:
    """Notebook 03's trust step without files: each head's intervals calibrated on the
    validation split (:func:`calibrate`), paired with its OOD reference and the training ages,
    and the trust columns added to every row (:func:`brainage.inference.trust.add_trust_columns`).

    :func:`calibrate_run` stores and reads the model folder's files around it;
    ``benchmarks/bench_uncertainty.py`` times it.

    Parameters
    ----------
    predictions : DataFrame
        :func:`brainage.analysis.evaluation.correct_predictions` output (every split).
    corrections : mapping of str to AgeBiasCorrection
    references : mapping of str to FeatureOOD or None
        Each head's OOD reference (a head missing here gets no OOD score).
    features : mapping of str to ndarray, shape (n_rows_of_head, D), optional
        Each head's feature statistics, in the table's row order of that head.
    age_range : (float, float)
        The training ages (``outside_age_range``).
    settings : IntervalSettings

    Returns
    -------
    table : DataFrame
        ``predictions`` with :data:`brainage._utils.TRUST_VALUES` appended.
    trusts : dict of str to HeadTrust
    """
    calibrations = calibrate(predictions, corrections, settings=settings)
    low, high = (float(v) for v in age_range)
    trusts = {head: HeadTrust(calibrations.get(head), references.get(head), (low, high))
              for head in dict.fromkeys(predictions["model"].astype(str))}
    return add_trust_columns(predictions, trusts, features), trusts


def calibrate_run(run: RunFolder, predictions: pd.DataFrame, corrections: Mapping[str, Any],
                  features: Mapping[str, np.ndarray] | None = None, *,
                  settings: IntervalSettings = IntervalSettings()
                  ) -> tuple[pd.DataFrame, dict[str, HeadTrust]]:
    """Notebook 03's step: :func:`trust_step` on the run, its calibrations stored.

    Reads ``ood.npz`` (written by notebook 02) and the card's training domain, writes
    ``models/<head>/conformal.json`` (bound to the head's checkpoint; a head without a
    calibration loses a stale file), and returns the predictions with the trust columns.
    """
    card_path = run.models / MODEL_CARD_FILE
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    if not card.get("domain"):
        train = run.rows("train")
        card = {**card, "domain": {"age_range": [float(train["age"].min()),
                                                 float(train["age"].max())]}}
    heads = list(dict.fromkeys(predictions["model"].astype(str)))
    digests = {head: checkpoint_digest(run.models / head) for head in heads}
    references = {head: load_ood(run.models / head, checkpoint_sha256=digests[head])
                  for head in heads}
    table, trusts = trust_step(predictions, corrections, references, features,
                               age_range=card["domain"]["age_range"], settings=settings)
    for head in heads:
        head_dir = run.models / head
        calibration = trusts[head].calibration
        if calibration is None:
            (head_dir / CONFORMAL_FILE).unlink(missing_ok=True)  # no stale calibration
            continue
        calibration = dataclasses.replace(calibration, checkpoint_sha256=digests[head])
        save_calibration(head_dir, calibration)
        trusts[head] = dataclasses.replace(trusts[head], calibration=calibration)
    return table, trusts


def coverage_report(test: pd.DataFrame, *, level: float, age_bins: Sequence[float],
                    truth: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Coverage of the test rows' intervals: overall, by age bin and by site, per head.

    Returns
    -------
    dict of str to DataFrame
        ``"age"`` (chronological age by ``[age_lower, age_upper]``), ``"gap"`` (0 by the
        corrected gap's interval: the healthy controls' true gap), ``"by_age_bin"``,
        ``"by_site"`` and, with ``truth`` (participant_id, biological_age), ``"biological"``.
    """
    test = test.copy()
    test["age_bin"] = pd.cut(test["age"], list(age_bins), right=False)
    test["zero"] = 0.0
    common = dict(level=level)
    report = {
        "age": coverage_table(test, truth="age", lower="age_lower", upper="age_upper", **common),
        "gap": coverage_table(test, truth="zero", lower="corrected_gap_lower",
                              upper="corrected_gap_upper", **common),
        "by_age_bin": coverage_table(test.dropna(subset=["age_bin"]), truth="age",
                                     lower="age_lower", upper="age_upper",
                                     by=("model", "age_bin"), **common),
        "by_site": coverage_table(test, truth="age", lower="age_lower", upper="age_upper",
                                  by=("model", "site"), **common),
    }
    if truth is not None:
        joined = test.merge(truth[["participant_id", "biological_age"]], on="participant_id")
        report["biological"] = coverage_table(joined, truth="biological_age", lower="age_lower",
                                              upper="age_upper", **common)
    return report



#: Run-folder file of notebook 03's trust summary (:func:`summary`).
TRUST_FILE = "trust.json"



def coverage_text(table: pd.DataFrame) -> pd.DataFrame:
    """A coverage table (:func:`brainage.analysis.uncertainty.coverage_table`) for reading:
    ``coverage [CI]``, covered of n, the mean width, and whether the CI holds the nominal level."""
    out = table.drop(columns=["ci_low", "ci_high", "coverage", "covered", "n", "confidence",
                              "mean_width", "nominal", "nominal_in_ci"], errors="ignore").copy()
    out = out.astype({c: str for c in out.columns})
    out["coverage [95% CI]"] = [f"{r.coverage:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                                if r.n else "n/a" for r in table.itertuples()]
    out["covered / n"] = [f"{r.covered} / {r.n}" for r in table.itertuples()]
    out["mean width (years)"] = table["mean_width"].round(1).to_numpy()
    if "nominal_in_ci" in table.columns:
        out["nominal in CI"] = table["nominal_in_ci"].to_numpy()
    return out



def broken_versions(volume: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Three preprocessed volumes a model should not trust, made from a good one.

    ``noise`` (gamma noise inside the brain), ``inverted contrast`` (the brain's intensities
    reversed, as a T2-weighted scan roughly is) and ``upside down`` (the superior-inferior axis
    reversed, as a wrong orientation in the header gives), each normalised as preprocessing
    normalises a scan (mean 1 inside the brain); ``original`` is the volume itself.

    Parameters
    ----------
    volume : ndarray, shape (D, H, W)
        A preprocessed scan (RAS, background 0).
    """
    from brainage.imaging.preprocess import normalise_intensity

    if volume.ndim != 3:
        raise ValueError(f"volume must have shape (D, H, W), got {volume.shape}")
    brain = volume > 0
    rng = np.random.default_rng(seed)
    inverted = np.where(brain, volume.max() - volume, 0.0)
    return {"original": volume.astype(np.float32),
            "noise": normalise_intensity(rng.gamma(2.0, 0.5, volume.shape), brain),
            "inverted contrast": normalise_intensity(inverted, brain),
            "upside down": np.ascontiguousarray(volume[:, :, ::-1]).astype(np.float32)}



def score_volumes(models: Mapping[str, str | os.PathLike], trusts: Mapping[str, HeadTrust],
                  volumes: Mapping[str, np.ndarray], *, device: str = "cpu") -> pd.DataFrame:
    """Predicted age, OOD score and flag of preprocessed volumes, for each head.

    Returns
    -------
    DataFrame
        ``volume``, ``model``, ``predicted``, ``ood_score``, ``ood``.
    """
    from brainage.models.datasets import VolumeDataset
    from brainage.models.features import capture_features
    from brainage.models.train import load_model, predict

    names = list(volumes)
    dataset = VolumeDataset(np.stack([volumes[n] for n in names]).astype(np.float32),
                            np.zeros(len(names)), names)
    rows = []
    for head, checkpoint in models.items():
        model = load_model(checkpoint, device=device)
        with capture_features(model) as captured:
            predicted = predict(model, dataset, device=device)
        ood = trusts[head].ood if head in trusts else None
        scores = ood.score(captured.array()) if ood is not None else np.full(len(names), np.nan)
        rows += [{"volume": n, "model": head, "predicted": p, "ood_score": s,
                  "ood": bool(s > 1) if np.isfinite(s) else None}
                 for n, p, s in zip(names, predicted, scores)]
    return pd.DataFrame(rows)



def summary(report: Mapping[str, pd.DataFrame], rates: pd.DataFrame,
            trusts: Mapping[str, HeadTrust], *, seconds: float) -> dict[str, Any]:
    """Plain-JSON summary of notebook 03's trust results (``trust.json``): per head the test
    coverage of each interval, the calibration, the OOD flag rates; the seconds spent."""

    def records(table: pd.DataFrame | None, head: str) -> dict[str, Any] | None:
        if table is None or table.empty:
            return None
        row = table[table["model"] == head]
        return None if row.empty else json.loads(row.iloc[0].to_json())

    heads: dict[str, Any] = {}
    for head, head_trust in trusts.items():
        calibration = head_trust.calibration
        head_rates = rates[rates["model"] == head]
        heads[head] = {
            "coverage_age": records(report.get("age"), head),
            "coverage_gap": records(report.get("gap"), head),
            "coverage_biological": records(report.get("biological"), head),
            "calibration": None if calibration is None else {
                "level": calibration.level, "n": calibration.age.n,
                "age_half_widths": calibration.age.half_widths().tolist(),
                "age_edges": list(calibration.age.edges),
                "gap_half_widths": None if calibration.corrected_gap is None
                else calibration.corrected_gap.half_widths().tolist()},
            "ood_rate": None if head_trust.ood is None else head_trust.ood.rate,
            "flag_rates": json.loads(head_rates.to_json(orient="records")),
        }
    return {"heads": heads, "seconds": float(seconds)}



def glue_values(report: Mapping[str, pd.DataFrame], rates: pd.DataFrame,
                trusts: Mapping[str, HeadTrust], broken: pd.DataFrame | None = None
                ) -> dict[str, str]:
    """The trust numbers the book's prose quotes, as text (``"n/a"`` where there are none).

    Keys per head ``h``: ``coverage_h``, ``coverage_h_ci``, ``width_h``, ``gap_coverage_h``,
    ``gap_coverage_h_ci``, ``bio_coverage_h``, ``ood_test_h``, ``ood_broken_h``; and
    ``interval_level``, ``n_calibration``, ``ood_rate_nominal``.
    """
    def row(name: str, head: str) -> Any:
        table = report.get(name)
        if table is None or table.empty or head not in set(table["model"]):
            return None
        found = table.set_index("model").loc[head]
        return found if found["n"] else None

    values: dict[str, str] = {}
    calibrated = [t.calibration for t in trusts.values() if t.calibration is not None]
    references = [t.ood for t in trusts.values() if t.ood is not None]
    values["interval_level"] = f"{calibrated[0].level:.0%}" if calibrated else "n/a"
    values["n_calibration"] = str(calibrated[0].age.n) if calibrated else "n/a"
    values["ood_rate_nominal"] = f"{references[0].rate:.0%}" if references else "n/a"
    for head in trusts:
        for key, name in (("coverage", "age"), ("gap_coverage", "gap"),
                          ("bio_coverage", "biological")):
            found = row(name, head)
            values[f"{key}_{head}"] = "n/a" if found is None else f"{found['coverage']:.2f}"
            values[f"{key}_{head}_ci"] = ("n/a" if found is None else
                                          f"{found['ci_low']:.2f} to {found['ci_high']:.2f}")
        found = row("age", head)
        values[f"width_{head}"] = "n/a" if found is None else f"{found['mean_width']:.1f}"
        test = rates[(rates["model"] == head) & (rates["split"] == "test")]
        values[f"ood_test_{head}"] = ("n/a" if test.empty or not test.iloc[0]["n"] else
                                      f"{test.iloc[0]['flagged']} of {test.iloc[0]['n']} "
                                      f"({test.iloc[0]['rate']:.0%})")
        shown = [] if broken is None else [
            f"{r.volume} {'flagged' if r.ood else 'not flagged'} (score {r.ood_score:.1f})"
            for r in broken[(broken["model"] == head) & (broken["volume"] != "original")]
            .itertuples() if r.ood is not None]
        values[f"ood_broken_{head}"] = ", ".join(shown) or "n/a"
    return values

