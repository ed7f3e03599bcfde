"""Trust in each prediction of ``brainage predict`` and of a run: domain, intervals, OOD flags.

The statistics are in :mod:`brainage.analysis.uncertainty`; the files that hold a head's fitted
intervals (``conformal.json``) and OOD reference (``ood.npz``) are read and written by
:mod:`brainage.inference.model_folder` (their only owner); the study fits them
(:mod:`brainage.study.trust`). This module applies them: it adds their columns
(:data:`brainage._utils.TRUST_VALUES`) to the prediction tables and checks new scans against
the training domain the model card records.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainage._utils import TRUST_VALUES
from brainage._utils.io import read_json
from brainage.analysis.shift import batch_shift
from brainage.inference.model_folder import (
    INTERVAL_CONDITIONS,
    MODEL_CARD_FILE,
    NOTE_FIELD,
    RETEST_FIELD,
    TEST_ERROR_FIELD,
    HeadTrust,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BATCH_ALPHA",
    "MIN_BATCH",
    "DomainCheck",
    "DomainWarning",
    "add_trust_columns",
    "batch_verdict",
    "describe_model",
    "domain_summary",
    "interval_conditions",
    "model_identity",
    "is_simulated_scan",
    "site_columns",
    "trust_columns",
    "verdict_line",
]

#: ``GeneratedBy`` name in the ``dataset_description.json`` of a simulated cohort.
_SIMULATOR = "brainage.data.simulate"



def interval_conditions(table: pd.DataFrame) -> str:
    """One line for a user: which calibrations a prediction table's intervals came from and
    when they hold ("" when no row has an interval).

    Reads the ``calibration`` and ``interval_level`` columns of :func:`predict_scans`'s table,
    ``brainage predict``'s CSV or the BIDS App's tables. A split-conformal interval holds at its
    level only for scans exchangeable with its calibration scans (:data:`INTERVAL_CONDITIONS`).
    """
    if "interval_level" not in table.columns or not table["interval_level"].notna().any():
        return ""
    rows = table[table["interval_level"].notna()]
    used = sorted({str(c) for c in rows.get("calibration", pd.Series(dtype=object)).dropna()
                   if str(c) not in ("", "n/a")} or {"training"})
    names = ", ".join("training (the model folder's validation scans)" if u == "training"
                      else u for u in used)
    advice = ("; on a new scanner, run brainage calibrate on its healthy controls first"
              if used == ["training"] else "")
    return f"calibration: {names}: {INTERVAL_CONDITIONS}{advice}"


class DomainWarning(UserWarning):
    """A model is applied to scans unlike its training data (real scans, simulated training)."""


def model_identity(card: Mapping[str, Any]) -> str:
    """What the card says the model is and how well it did: its note (``a starter model
    ...``) and each head's recorded test error (``"test MAE on 32 held-out simulated scans:
    9.1 y (rnc), 9.8 y (l1)"``); empty when the card records neither."""
    parts = []
    note = card.get(NOTE_FIELD)
    if isinstance(note, str) and note.strip():
        parts.append(note.strip())
    errors = card.get(TEST_ERROR_FIELD) or {}
    if errors:
        first = next(iter(errors.values()))
        kind = {True: "simulated ", False: "real "}.get(first.get("simulated"), "")
        heads = ", ".join(f"{v['mae_years']:.1f} y ({head})" for head, v in errors.items())
        parts.append(f"test MAE on {first['n']} held-out {kind}scans: {heads}")
    return "; ".join(parts)


def domain_summary(card: Mapping[str, Any]) -> str:
    """One line on the training domain of a model card (``"unknown"`` parts when absent),
    after :func:`model_identity` when the card records a note or a test error."""
    identity = model_identity(card)
    text = _domain_text(card)
    return f"{identity}; {text}" if identity else text


def _domain_text(card: Mapping[str, Any]) -> str:
    domain = card.get("domain")
    preprocess = card.get("preprocess", {})
    grid = card.get("grid", {})
    where = (f"{preprocess.get('space', '?')} scans on a {preprocess.get('grid_mm', '?')} mm grid "
             f"({' x '.join(map(str, grid.get('shape', [])))})")
    retest = "; ".join(
        f"{head}: test-retest SD of the corrected gap {v['sd_years']:.1f} y (two scans of one "
        f"person differ really beyond {v['sdc_years']:.1f} y)"
        for head, measures in (card.get(RETEST_FIELD) or {}).items()
        for key, v in measures.items() if key == "corrected_gap")  # predict.record_retest
    where += f"; {retest}" if retest else ""
    if not domain:
        return f"training domain not recorded (older model card); {where}"
    low, high = domain["age_range"]
    sites = domain.get("sites") or []
    site_text = (", ".join(sites) if len(sites) <= 6 else f"{len(sites)} sites") or "no site"
    kind = "simulated" if domain["simulated"] else "real"
    scope = f"; {domain['ood_scope']}" if isinstance(domain.get("ood_scope"), str) else ""
    return (f"trained on {domain['dataset']!r} ({kind}), {domain['n_train']} scans aged "
            f"{low:.0f}-{high:.0f} years from {site_text}; {where}{scope}")




def describe_model(path: str | os.PathLike) -> str | None:
    """:func:`domain_summary` of the card of a model folder (or of a head folder's parent);
    None when it cannot be read (loading the folder then reports why)."""
    folder = Path(path)
    for candidate in (folder / MODEL_CARD_FILE, folder.parent / MODEL_CARD_FILE):
        if candidate.is_file():
            try:
                card = read_json(candidate)
                return domain_summary(card) if isinstance(card, dict) else None
            except (ValueError, TypeError, KeyError, AttributeError):
                return None
    return None



@lru_cache(maxsize=256)
def _simulated_folder(folder: str) -> bool:
    """Whether ``folder`` or a parent holds a ``dataset_description.json`` of the simulator."""
    for parent in (Path(folder), *Path(folder).parents):
        description = parent / "dataset_description.json"
        if description.is_file():
            try:
                generated = json.loads(description.read_text(encoding="utf-8")).get(
                    "GeneratedBy", [])
            except (OSError, ValueError, AttributeError):
                return False
            return any(isinstance(g, Mapping) and g.get("Name") == _SIMULATOR
                       for g in generated or [])
    return False


def is_simulated_scan(path: str | os.PathLike) -> bool:
    """Whether a scan belongs to a cohort written by :mod:`brainage.data.simulate` (its BIDS
    folder's ``dataset_description.json`` says so)."""
    return _simulated_folder(str(Path(path).resolve().parent))


class DomainCheck:
    """Warn once (:class:`DomainWarning`) when a model trained on simulated data meets real
    scans: native-space scans, or scans outside a brainage-simulated cohort."""

    def __init__(self, card: Mapping[str, Any]) -> None:
        domain = card.get("domain") or {}
        self.simulated = bool(domain.get("simulated", False))
        self.dataset = domain.get("dataset", "?")
        self.identity = model_identity(card)
        self.warned = False

    def mismatched(self, path: str | os.PathLike, space: str) -> bool:
        """Whether the scan is one this warning is about: the model was trained on simulated
        data and the scan is real (not from a brainage-simulated cohort) or in native space
        (the ``domain`` column's ``sim2real``)."""
        return self.simulated and (space == "native" or not is_simulated_scan(path))

    def check(self, scans: Mapping[str, str]) -> None:
        """``scans``: path -> space of the scans just predicted."""
        if self.warned or not self.simulated:
            return
        for path, space in scans.items():
            if self.mismatched(path, space):
                why = "in native space" if space == "native" else "not from a simulated cohort"
                what = f" ({self.identity})" if self.identity else ""
                warnings.warn(
                    f"the model{what} was trained on simulated data ({self.dataset!r}) and is "
                    f"applied "
                    f"to real scans (first: {path}, {why}): simulated and real scans differ "
                    f"after the same preprocessing, so expect large errors. The intervals were "
                    f"calibrated on simulated scans and do not hold here, and the ood column "
                    f"does not protect you: fitted on simulated scans, it tells real scans "
                    f"from simulated ones only weakly (benchmarks/bench_ood.py) and leaves "
                    f"most real scans unflagged. Fit a site calibration on this site's "
                    f"healthy controls (brainage calibrate) and read the batch verdict",
                    DomainWarning, stacklevel=2)
                self.warned = True
                return


# --- conformal calibration ----------------------------------------------------------------------














# --- applying them ------------------------------------------------------------------------------






def trust_columns(trust: HeadTrust | None, *, predicted: np.ndarray, age: np.ndarray,
                  corrected_gap: np.ndarray, features: np.ndarray | None) -> dict[str, Any]:
    """The :data:`brainage._utils.TRUST_VALUES` columns of one head's rows.

    Parameters
    ----------
    trust : HeadTrust or None
        None (or missing parts): NaN / NA columns.
    predicted, age, corrected_gap : ndarray, shape (n,)
        NaN where unknown (a failed scan, no age, no correction).
    features : ndarray, shape (n, D), optional
        Feature statistics (:mod:`brainage.models.features`; rows of NaN for failed scans).
    """
    n = predicted.size
    nan, unknown = np.full(n, np.nan), np.zeros(n, bool)
    columns: dict[str, Any] = {"interval_level": nan, "age_lower": nan, "age_upper": nan,
                               "corrected_gap_lower": nan, "corrected_gap_upper": nan,
                               "ood_score": nan, "ood": _flags(unknown, unknown),
                               "outside_age_range": _flags(unknown, unknown)}
    if trust is None:
        return columns
    calibration = trust.calibration
    if calibration is not None:
        columns["interval_level"] = np.where(np.isfinite(predicted), calibration.level, np.nan)
        columns["age_lower"], columns["age_upper"] = calibration.age.predict(predicted, predicted)
        if calibration.corrected_gap is not None:
            columns["corrected_gap_lower"], columns["corrected_gap_upper"] = (
                calibration.corrected_gap.predict(corrected_gap, age))
    if trust.ood is not None and features is not None and len(features):
        usable = np.isfinite(features).all(axis=1) & np.isfinite(predicted)
        scores = np.full(n, np.nan)
        if usable.any():
            scores[usable] = trust.ood.score(features[usable])
        columns["ood_score"] = scores
        columns["ood"] = _flags(scores > 1.0, usable)
    if trust.age_range is not None:
        low, high = trust.age_range
        value = np.where(np.isfinite(age), age, predicted)
        columns["outside_age_range"] = _flags((value < low) | (value > high), np.isfinite(value))
    return columns


def _flags(values: np.ndarray, known: np.ndarray) -> pd.arrays.BooleanArray:
    """True/False where ``known``, missing elsewhere (pandas' nullable booleans)."""
    return pd.arrays.BooleanArray(np.asarray(values, bool) & known, ~np.asarray(known, bool))


def add_trust_columns(predictions: pd.DataFrame, trusts: Mapping[str, HeadTrust],
                      features: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """``predictions`` (one row per scan and head) with the trust columns appended.

    ``features[head]`` holds the head's rows' features in the table's order of that head.
    """
    out = predictions.copy()
    for column in TRUST_VALUES:
        out[column] = pd.array([pd.NA] * len(out), dtype="boolean") if column in (
            "ood", "outside_age_range") else np.nan
    for head, rows in out.groupby("model", sort=False):
        head_features = None if features is None else features.get(str(head))
        if head_features is not None and len(head_features) != len(rows):
            raise ValueError(f"features of head {head!r} hold {len(head_features)} rows for "
                             f"{len(rows)} predictions")
        columns = trust_columns(trusts.get(str(head)), predicted=rows["predicted"].to_numpy(float),
                                age=rows["age"].to_numpy(float),
                                corrected_gap=rows["corrected_gap"].to_numpy(float),
                                features=head_features)
        for column, values in columns.items():
            out.loc[rows.index, column] = values
    return out


def site_columns(calibration: Any, predicted: np.ndarray,
                 age: np.ndarray) -> dict[str, np.ndarray]:
    """The corrected and interval columns of one head's rows from a site calibration.

    ``corrected_predicted`` needs no age (the site's line); the age interval is
    ``corrected ± q``, the corrected gap's ``gap ± q`` (it holds 0 at the level).
    """
    corrected, lower, upper = calibration.predict(predicted)
    q = calibration.half_width
    gap = corrected - age
    known = np.isfinite(predicted)
    return {"corrected_predicted": corrected, "corrected_gap": gap,
            "interval_level": np.where(known, calibration.level, math.nan),
            "age_lower": lower, "age_upper": upper,
            "corrected_gap_lower": gap - q, "corrected_gap_upper": gap + q}


#: Fewest predicted scans of one run for which ``brainage predict`` tests the batch against
#: the training scans (:func:`batch_verdict`).
MIN_BATCH = 5
#: Level of the batch test.
BATCH_ALPHA = 0.05


def batch_verdict(trusts: Mapping[str, Any], features: Mapping[str, Mapping[int, np.ndarray]],
                  table: pd.DataFrame, *, permutations: int = 999,
                  seed: int = 0) -> dict[str, Any] | None:
    """Each head's batch shift test of a run's scans against its training reference.

    Parameters
    ----------
    trusts : mapping of str to HeadTrust
        The model folder's (a head without ``ood.npz`` is left out).
    features : mapping of str to mapping of int to ndarray
        Each head's feature statistics by scan index (the table's index before ordering).
    table : pandas.DataFrame
        The run's rows (:data:`brainage._utils.columns.PREDICTION_COLUMNS`); the gap tested is
        ``corrected_gap`` where known (the site's or the training correction), else ``gap``.
    permutations, seed
        Of :func:`brainage.analysis.shift.batch_shift`.

    Returns
    -------
    dict or None
        ``{"alpha", "min_batch", "heads": {head: {..., "line": str}}}``; None with fewer than
        :data:`MIN_BATCH` predicted scans or no head with an OOD reference.
    """
    heads: dict[str, Any] = {}
    for head, trust in trusts.items():
        found = features.get(head, {})
        if trust is None or trust.ood is None or len(found) < MIN_BATCH:
            continue
        rows = table[(table["model"] == head) & (table["error"] == "")]
        corrected = rows["corrected_gap"].to_numpy(float)
        gap = corrected if np.isfinite(corrected).any() else rows["gap"].to_numpy(float)
        result = batch_shift(trust.ood, np.array([found[i] for i in sorted(found)]), gap=gap,
                             permutations=permutations, seed=seed)
        column = "corrected_gap" if np.isfinite(corrected).any() else "gap"
        heads[head] = {**result.to_dict(), "gap_column": column,
                       "line": verdict_line(head, result, column.replace("_", " "),
                                            _site_in_use(rows))}
    if not heads:
        return None
    return {"alpha": BATCH_ALPHA, "min_batch": MIN_BATCH, "heads": heads}


def _site_in_use(rows: pd.DataFrame) -> str | None:
    used = {str(c) for c in rows.get("calibration", pd.Series(dtype=str))}
    sites = sorted(c.removeprefix("site:") for c in used if c.startswith("site:"))
    return sites[0] if sites else None


def verdict_line(head: str, result: Any, gap_name: str = "gap",
                 site: str | None = None) -> str:
    """One line of a :class:`brainage.analysis.shift.BatchShift` (``gap_name``: which gap its
    gap test read; ``site``: the site calibration in use, if any), for the user."""
    test = result.features
    smallest = 1.0 / (test.permutations + 1)  # the smallest permutation p-value
    p = f"p <= {smallest:.2g}" if test.p_value <= smallest else f"p = {test.p_value:.2g}"
    gap = result.gap
    mean = "" if gap is None else (f"; their mean {gap_name} is {gap.mean_gap:+.1f} y "
                                   f"[{gap.ci_low:+.1f}, {gap.ci_high:+.1f}]")
    if test.p_value <= BATCH_ALPHA and site is not None:
        return (f"{head}: these {test.n_batch} scans differ from the training scans ({p}, "
                f"MMD test of the encoder features){mean} with the site calibration {site}: "
                f"read their gaps only if they come from that site")
    if test.p_value <= BATCH_ALPHA:
        return (f"{head}: these {test.n_batch} scans differ from the training scans ({p}, "
                f"MMD test of the encoder features){mean}: calibrate with `brainage calibrate` "
                f"before reading individual gaps")
    return (f"{head}: these {test.n_batch} scans do not differ detectably from the training "
            f"scans ({p}, MMD test of the encoder features){mean}")
