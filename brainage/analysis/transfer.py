"""Accuracy of a model's ages on scans from outside its training world (real scans for a model
trained on the simulated cohort): Pearson r with its Fisher interval, MAE, mean gap and the
slope of predicted on true age, beside the two constant predictors a model must beat.

Numbers only; :mod:`brainage.study.real_scans` turns them into the book's figure and words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

__all__ = ["TRANSFER_COLUMNS", "transfer_accuracy", "transfer_table"]

#: Columns of :func:`transfer_table`.
TRANSFER_COLUMNS = ("n", "r", "r_low", "r_high", "mae", "mean_gap", "slope", "intercept",
                    "mae_own_mean", "mae_train_mean")


def transfer_accuracy(age: ArrayLike, predicted: ArrayLike, train_mean: float | None = None,
                      confidence: float = 0.95) -> dict[str, float]:
    """Accuracy of predicted ages against true ones, with the constant predictors' MAE.

    Parameters
    ----------
    age, predicted : array-like, shape (n,)
        True and predicted ages (years), finite, n >= 3.
    train_mean : float, optional
        The training cohort's mean age: ``mae_train_mean`` is the MAE of predicting it for
        every scan (NaN without it).
    confidence : float, default=0.95
        Level of the interval of r (Fisher z, :meth:`scipy.stats.PearsonRResult.
        confidence_interval`; needs n >= 4, NaN otherwise).

    Returns
    -------
    dict
        ``n``, ``r`` (NaN for a constant prediction or age), ``r_low``, ``r_high``, ``mae``,
        ``mean_gap`` (mean of predicted - age), ``slope`` and ``intercept`` of the least-squares
        line of predicted on true age (NaN for constant ages), ``mae_own_mean`` (the MAE of
        predicting the scans' own mean age: an oracle no model is given) and
        ``mae_train_mean``.

    Raises
    ------
    ValueError
        If the arrays differ in length, hold fewer than 3 values or a non-finite one, or
        ``confidence`` is not in (0, 1).
    """
    from scipy import stats

    age = np.asarray(age, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if age.shape != predicted.shape:
        raise ValueError(f"age and predicted must have the same length, got {age.size} and "
                         f"{predicted.size}")
    if age.size < 3:
        raise ValueError(f"transfer_accuracy needs at least 3 scans, got {age.size}")
    if not (np.isfinite(age).all() and np.isfinite(predicted).all()):
        raise ValueError("age and predicted must be finite (a scan without an age or a failed "
                         "prediction must be left out first)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    nan = float("nan")
    r = low = high = nan
    if np.ptp(age) > 0 and np.ptp(predicted) > 0:
        result = stats.pearsonr(age, predicted)
        r = float(result.statistic)
        if age.size >= 4:
            ci = result.confidence_interval(confidence_level=confidence)
            low, high = float(ci.low), float(ci.high)
    slope, intercept = (np.polyfit(age, predicted, 1) if np.ptp(age) > 0 else (nan, nan))
    return {"n": float(age.size), "r": r, "r_low": low, "r_high": high,
            "mae": float(np.abs(predicted - age).mean()),
            "mean_gap": float((predicted - age).mean()),
            "slope": float(slope), "intercept": float(intercept),
            "mae_own_mean": float(np.abs(age - age.mean()).mean()),
            "mae_train_mean": (nan if train_mean is None
                               else float(np.abs(age - float(train_mean)).mean()))}


def transfer_table(predictions: pd.DataFrame, by: Sequence[str] = ("model",),
                   train_means: dict[str, float] | None = None,
                   confidence: float = 0.95) -> pd.DataFrame:
    """:func:`transfer_accuracy` of every group of a prediction table.

    Parameters
    ----------
    predictions : DataFrame
        Columns ``age``, ``predicted`` and those of ``by`` (``brainage predict``'s table);
        rows without an age or a prediction are left out.
    by : sequence of str, default=("model",)
        Grouping columns (e.g. ``("model", "dataset")``).
    train_means : dict, optional
        Training mean age per value of ``by[0]`` (the head).
    confidence : float, default=0.95

    Returns
    -------
    DataFrame
        One row per group: the ``by`` columns, then :data:`TRANSFER_COLUMNS`.
    """
    missing = [c for c in ("age", "predicted", *by) if c not in predictions]
    if missing:
        raise ValueError(f"predictions lacks the column(s) {missing}; it has "
                         f"{list(predictions.columns)}")
    usable = predictions.dropna(subset=["age", "predicted"])
    rows = []
    for key, rows_of in usable.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mean = (train_means or {}).get(key[0])
        rows.append({**dict(zip(by, key)), **transfer_accuracy(
            rows_of["age"], rows_of["predicted"], mean, confidence)})
    return pd.DataFrame(rows, columns=[*by, *TRANSFER_COLUMNS])
