"""Trust in each prediction: split-conformal intervals and an out-of-distribution score.

Works on arrays and tables; :mod:`brainage.study.trust` fits it on the heads of a run and
:mod:`brainage.inference.trust` applies it to the predictions of a model folder.

**Intervals.** :class:`ConformalInterval` wraps ``crepes.ConformalRegressor`` [1]_ (split
conformal regression, Mondrian when given categories): calibrated on the residuals of scans
that trained nothing, the interval ``y_hat ± q`` holds the true value with probability at least
``level`` for a new scan exchangeable with the calibration scans [2]_. With Mondrian
categories, ``q`` is computed within each category, so the guarantee holds within each
category too [3]_. The categories here are bins of a value known at prediction time (the
predicted age for the age interval, the chronological age for the gap's interval), with cut
points at quantiles of the calibration values, merged until each bin holds enough scans for a
finite interval (:func:`quantile_edges`).

The bias-corrected gap's interval needs residuals of a correction that did not see them: the
validation split fits the age-bias correction *and* calibrates, so its residuals are
cross-fitted (:func:`cross_fitted_gaps`): each fold's corrected gaps come from a correction
fitted on the other folds.

**Out-of-distribution score.** :class:`FeatureOOD` is the distance of a scan's features
to its ``k``-th nearest training scan [4]_, after standardising each feature by the training
mean and standard deviation, divided by a threshold: the conformal quantile of the same score
on calibration (validation) scans [5]_. A new in-distribution scan scores above 1 (is flagged)
with probability at most ``rate``, and at least ``rate - 1 / (n + 1)`` (``n`` calibration
scans).

References
----------
.. [1] Boström, H. (2022). crepes: a Python package for generating conformal regressors and
   predictive systems. Proceedings of Machine Learning Research 179, 24-41.
.. [2] Lei, J., G'Sell, M., Rinaldo, A., Tibshirani, R. J., Wasserman, L. (2018).
   Distribution-free predictive inference for regression. JASA 113(523), 1094-1111.
.. [3] Vovk, V., Gammerman, A., Shafer, G. (2005). Algorithmic Learning in a Random World,
   ch. 4.5 (Mondrian conformal predictors). Springer.
.. [4] Sun, Y., Ming, Y., Zhu, X., Li, Y. (2022). Out-of-distribution detection with deep
   nearest neighbors. ICML 2022, PMLR 162, 20827-20840.
.. [5] Bates, S., Candès, E., Lei, L., Romano, Y., Sesia, M. (2023). Testing for outliers with
   conformal p-values. Annals of Statistics 51(1), 149-178.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from brainage._utils import check_int, check_number, check_vector
from brainage.analysis.metrics import AgeBiasCorrection

logger = logging.getLogger(__name__)

__all__ = [
    "ConformalInterval",
    "FeatureOOD",
    "assign_bins",
    "binomial_ci",
    "coverage_table",
    "cross_fitted_gaps",
    "evidence_table",
    "flag_rates",
    "interval_coverage",
    "min_calibration_size",
    "quantile_edges",
]


# --- checks -------------------------------------------------------------------------------------


def _vector(values: ArrayLike, name: str, *, finite: bool = True) -> np.ndarray:
    """``values`` as a 1-D float64 array, finite unless ``finite=False`` (:func:`check_vector`)."""
    return check_vector(name, values, finite=finite)


def _matrix(values: ArrayLike, name: str, dim: int | None = None) -> np.ndarray:
    """``values`` as a finite 2-D float64 array ``(N, D)`` (``D == dim`` if given)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 2-D array of numbers, got "
                        f"{type(values).__name__}") from err
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} features per row (the reference's), got "
                         f"{array.shape[1]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN or infinite "
                         f"value(s)")
    return array


def _level(name: str, value: object) -> float:
    return check_number(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


# --- Mondrian categories ------------------------------------------------------------------------


def min_calibration_size(level: float) -> int:
    """Fewest calibration values that give a finite split-conformal interval at ``level``.

    As ``crepes`` computes it: the interval uses the ``int((1 - level) * (n + 1))``-th largest
    absolute residual, which needs that index to be at least 1 (9 values at 0.9, 19 at 0.95).
    """
    level = _level("level", level)
    n = 1
    while int((1 - level) * (n + 1)) < 1:
        n += 1
    return n


def assign_bins(values: ArrayLike, edges: Sequence[float]) -> np.ndarray:
    """The bin of each value for interior cut points ``edges``: 0 below the first, ``len(edges)``
    at or above the last (the outer bins are open, so no value is outside every bin)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), _vector(values, "values"),
                           side="right").astype(np.int64)


def quantile_edges(values: ArrayLike, n_bins: int, *, min_per_bin: int) -> tuple[float, ...]:
    """Cut points at quantiles of ``values`` for at most ``n_bins`` bins of ``min_per_bin`` each.

    Starts with ``n_bins`` equal-count bins and merges (fewer bins) until every bin holds at
    least ``min_per_bin`` values; one bin (no cut point) at worst.

    Parameters
    ----------
    values : array-like, shape (n,)
        The calibration values the categories are computed from.
    n_bins : int
        Bins wanted (>= 1).
    min_per_bin : int
        Values each bin needs (>= 1), e.g. :func:`min_calibration_size`.

    Returns
    -------
    tuple of float
        Increasing interior cut points (empty: one bin).
    """
    x = _vector(values, "values")
    n_bins = check_int("n_bins", n_bins, low=1)
    min_per_bin = check_int("min_per_bin", min_per_bin, low=1)
    for bins in range(min(n_bins, max(1, x.size // min_per_bin)), 1, -1):
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(assign_bins(x, edges), minlength=edges.size + 1)
        if counts.min() >= min_per_bin:
            return tuple(float(e) for e in edges)
    return ()


# --- conformal intervals ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConformalInterval:
    """A split-conformal (optionally Mondrian) interval ``y_hat ± q``, computed with crepes.

    Build it with :meth:`fit`; :meth:`to_dict` / :meth:`from_dict` store it as plain JSON (the
    calibration residuals themselves, so that it is refitted exactly when read back).

    Parameters
    ----------
    level : float
        Nominal coverage, in (0, 1).
    residuals : ndarray, shape (n,)
        Calibration residuals, true minus predicted value (their absolute values matter).
    bins : ndarray of int, shape (n,)
        Mondrian category (0 ... ``len(edges)``) of each residual.
    edges : tuple of float
        Interior cut points of the categories on the value they are computed from (empty: no
        categories).
    y_range : tuple of float
        Intervals are clipped to this range (``(-inf, inf)``: not clipped).
    """

    level: float
    residuals: np.ndarray
    bins: np.ndarray
    edges: tuple[float, ...] = ()
    y_range: tuple[float, float] = (-math.inf, math.inf)
    _regressor: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from crepes import ConformalRegressor

        _level("level", self.level)
        residuals = _vector(self.residuals, "residuals")
        bins = np.asarray(self.bins)
        if bins.shape != residuals.shape or not np.issubdtype(bins.dtype, np.integer):
            raise ValueError(f"bins must be integers, one per residual ({residuals.size}); got "
                             f"dtype {bins.dtype}, shape {bins.shape}")
        edges = _vector(list(self.edges), "edges")
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"edges must increase strictly, got {edges.tolist()}")
        counts = np.bincount(bins[(bins >= 0) & (bins <= edges.size)], minlength=edges.size + 1)
        if bins.min(initial=0) < 0 or bins.max(initial=0) > edges.size or counts.min() < 1:
            raise ValueError(f"bins must cover every category 0..{edges.size} (one per cut point "
                             f"plus one) with at least one residual each; counts {counts.tolist()}")
        needed = min_calibration_size(self.level)
        if counts.min() < needed:
            raise ValueError(f"a split-conformal interval at level {self.level:g} needs at least "
                             f"{needed} calibration residuals per category; the categories hold "
                             f"{counts.tolist()}")
        low, high = (float(v) for v in self.y_range)
        if not low < high:
            raise ValueError(f"y_range must be (low, high) with low < high, got {self.y_range}")
        object.__setattr__(self, "residuals", residuals)
        object.__setattr__(self, "bins", bins.astype(np.int64))
        object.__setattr__(self, "edges", tuple(edges.tolist()))
        object.__setattr__(self, "y_range", (low, high))
        mondrian = self.bins if edges.size else None
        object.__setattr__(self, "_regressor", ConformalRegressor().fit(residuals, bins=mondrian))

    @classmethod
    def fit(cls, residuals: ArrayLike, *, level: float = 0.9,
            bin_values: ArrayLike | None = None, n_bins: int = 1,
            y_range: tuple[float, float] = (-math.inf, math.inf)) -> ConformalInterval:
        """Calibrate on ``residuals`` (true minus predicted) of held-apart scans.

        Parameters
        ----------
        residuals : array-like, shape (n,)
            Finite; at least :func:`min_calibration_size` of ``level``.
        level : float, default=0.9
            Nominal coverage.
        bin_values : array-like, shape (n,), optional
            The value the Mondrian categories are computed from (known at prediction time);
            None: one category.
        n_bins : int, default=1
            Categories wanted; fewer when they would hold too few residuals
            (:func:`quantile_edges`).
        y_range : tuple of float, default=(-inf, inf)
            Clip intervals to this range.
        """
        level = _level("level", level)
        r = _vector(residuals, "residuals")
        needed = min_calibration_size(level)
        if r.size < needed:
            raise ValueError(f"a split-conformal interval at level {level:g} needs at least "
                             f"{needed} calibration residuals, got {r.size}")
        edges: tuple[float, ...] = ()
        if bin_values is not None and n_bins > 1:
            values = _vector(bin_values, "bin_values")
            if values.size != r.size:
                raise ValueError(f"bin_values must have one value per residual ({r.size}), got "
                                 f"{values.size}")
            edges = quantile_edges(values, n_bins, min_per_bin=needed)
            if len(edges) + 1 < n_bins:
                logger.info("%d Mondrian categories instead of %d: %d calibration residuals, "
                            "at least %d per category at level %g", len(edges) + 1, n_bins,
                            r.size, needed, level)
            bins = assign_bins(values, edges)
        else:
            bins = np.zeros(r.size, dtype=np.int64)
        return cls(level, r, bins, edges, y_range)

    @property
    def n(self) -> int:
        """Number of calibration residuals."""
        return int(self.residuals.size)

    def half_widths(self) -> np.ndarray:
        """``q`` of each category (before clipping to ``y_range``), shape ``(len(edges) + 1,)``."""
        categories = np.arange(len(self.edges) + 1)
        intervals = self._regressor.predict_int(np.zeros(categories.size),
                                                bins=categories if self.edges else None,
                                                confidence=self.level)
        return intervals[:, 1]

    def predict(self, y_hat: ArrayLike, bin_values: ArrayLike | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around ``y_hat`` (NaN where ``y_hat`` or its bin value is NaN).

        Parameters
        ----------
        y_hat : array-like, shape (m,)
            Point predictions.
        bin_values : array-like, shape (m,), optional
            The values the categories are computed from; needed when there are categories.
        """
        y = _vector(y_hat, "y_hat", finite=False)
        known = np.isfinite(y)
        bins = None
        if self.edges:
            if bin_values is None:
                raise ValueError(f"this interval has {len(self.edges) + 1} Mondrian categories: "
                                 f"bin_values are needed")
            values = _vector(bin_values, "bin_values", finite=False)
            if values.size != y.size:
                raise ValueError(f"bin_values must have one value per prediction ({y.size}), "
                                 f"got {values.size}")
            known &= np.isfinite(values)
            bins = assign_bins(values[known], self.edges)
        lower, upper = np.full(y.size, np.nan), np.full(y.size, np.nan)
        if known.any():
            intervals = self._regressor.predict_int(
                y[known], bins=bins, confidence=self.level, y_min=self.y_range[0],
                y_max=self.y_range[1])
            lower[known], upper[known] = intervals[:, 0], intervals[:, 1]
        return lower, upper

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``level``, ``residuals``, ``bins``, ``edges``, ``y_range`` (None: inf)."""
        return {"level": self.level, "n": self.n, "edges": list(self.edges),
                "y_range": [None if math.isinf(v) else v for v in self.y_range],
                "residuals": self.residuals.tolist(), "bins": self.bins.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "interval") -> ConformalInterval:
        """Rebuild from :meth:`to_dict` output; errors name ``source`` and the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("level", "residuals", "bins") if k not in data]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {missing}")
        values = dict(data)
        if not (isinstance(values["bins"], list)
                and all(isinstance(b, int) and not isinstance(b, bool) for b in values["bins"])):
            raise ValueError(f"{source}.bins must be a list of integers")
        y_range = values.get("y_range") or [None, None]
        if not (isinstance(y_range, list) and len(y_range) == 2):
            raise ValueError(f"{source}.y_range must be [low, high], got {y_range!r}")
        low, high = (-math.inf if y_range[0] is None else y_range[0],
                     math.inf if y_range[1] is None else y_range[1])
        try:
            bins = np.asarray(values["bins"], dtype=np.int64)
            return cls(values["level"], values["residuals"], bins,
                       tuple(values.get("edges", ())), (low, high))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err


def cross_fitted_gaps(age: ArrayLike, predicted: ArrayLike, *, method: str = "linear",
                      folds: int = 5, seed: int = 0) -> np.ndarray:
    """Bias-corrected gaps of each scan from a correction fitted on the *other* folds.

    The residuals of the gap's interval come from the scans that fit the correction; fitted
    in-sample they would be too small. K-fold cross-fitting gives each scan a gap from a
    correction that did not see it (the correction that is applied to new scans is fitted on all
    of them, as :func:`brainage.analysis.evaluation.correct_predictions` does).

    Parameters
    ----------
    age, predicted : array-like, shape (n,)
        Chronological and predicted ages of the calibration (validation) scans.
    method : str, default="linear"
        See :class:`brainage.analysis.metrics.AgeBiasCorrection`.
    folds : int, default=5
        Folds (at most n; at least 2).
    seed : int, default=0
        Seed of the fold assignment.

    Returns
    -------
    ndarray, shape (n,)
        Out-of-fold corrected gaps (corrected predicted minus chronological age).
    """
    from sklearn.model_selection import KFold

    y = _vector(age, "age")
    p = _vector(predicted, "predicted")
    if y.size != p.size:
        raise ValueError(f"age and predicted must have the same length, got {y.size} and {p.size}")
    folds = min(check_int("folds", folds, low=2), y.size)
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 scans, got {y.size}")
    gaps = np.empty(y.size)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(y)):
        with warnings.catch_warnings():
            # a held-out fold's ages may lie just outside the fitting folds' range: expected
            warnings.filterwarnings("ignore", message=".*outside the fitting range")
            warnings.filterwarnings("ignore", message=".*slope .* is small")
            try:
                correction = AgeBiasCorrection.fit(y[fit_rows], p[fit_rows], method=method)
            except ValueError as err:  # e.g. a fold's slope <= 0 on a tiny split
                warnings.warn(f"cross-fitting fold {fold + 1} of {folds}: {err}; its gaps use "
                              f"the correction fitted on all {y.size} scans (in-sample, so the "
                              f"gap's interval may be too narrow)", stacklevel=2)
                correction = AgeBiasCorrection.fit(y, p, method=method)
            gaps[held_rows] = correction.apply(y[held_rows], p[held_rows]) - y[held_rows]
    return gaps


# --- coverage -----------------------------------------------------------------------------------


def binomial_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) confidence interval of a proportion (``scipy.stats.binomtest``)."""
    successes = check_int("successes", successes, low=0)
    n = check_int("n", n, low=1)
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed n ({n})")
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def interval_coverage(y_true: ArrayLike, lower: ArrayLike, upper: ArrayLike, *,
                      confidence: float = 0.95) -> dict[str, Any]:
    """Empirical coverage of intervals, its exact binomial CI and the mean width.

    Rows with a NaN bound or value are left out.

    Returns
    -------
    dict
        ``n``, ``covered``, ``coverage``, ``ci_low``, ``ci_high``, ``confidence``,
        ``mean_width`` (NaN coverage and width when no row is usable).
    """
    y = _vector(y_true, "y_true", finite=False)
    lo = _vector(lower, "lower", finite=False)
    hi = _vector(upper, "upper", finite=False)
    if not y.size == lo.size == hi.size:
        raise ValueError(f"y_true, lower and upper must have the same length, got {y.size}, "
                         f"{lo.size}, {hi.size}")
    usable = np.isfinite(y) & ~np.isnan(lo) & ~np.isnan(hi)
    n = int(usable.sum())
    if n == 0:
        return {"n": 0, "covered": 0, "coverage": math.nan, "ci_low": math.nan,
                "ci_high": math.nan, "confidence": confidence, "mean_width": math.nan}
    inside = (lo[usable] <= y[usable]) & (y[usable] <= hi[usable])
    covered = int(inside.sum())
    low, high = binomial_ci(covered, n, confidence)
    return {"n": n, "covered": covered, "coverage": covered / n, "ci_low": low, "ci_high": high,
            "confidence": confidence, "mean_width": float(np.mean(hi[usable] - lo[usable]))}


def coverage_table(frame: pd.DataFrame, *, truth: str, lower: str, upper: str,
                   by: Sequence[str] = ("model",), level: float | None = None,
                   confidence: float = 0.95) -> pd.DataFrame:
    """:func:`interval_coverage` of each group of ``frame``'s rows.

    Parameters
    ----------
    frame : DataFrame
        One row per scan (and head).
    truth, lower, upper : str
        Columns of the true value and the bounds.
    by : sequence of str, default=("model",)
        Grouping columns.
    level : float, optional
        Nominal level; adds ``nominal`` and ``nominal_in_ci`` (whether the exact CI of the
        coverage holds the nominal level).
    confidence : float, default=0.95
        Of the CI.
    """
    missing = [c for c in (truth, lower, upper, *by) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    rows = []
    for key, rows_of in frame.groupby(list(by), sort=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        result = interval_coverage(rows_of[truth], rows_of[lower], rows_of[upper],
                                   confidence=confidence)
        rows.append({**dict(zip(by, key)), **result})
    table = pd.DataFrame(rows)
    if level is not None and not table.empty:
        table["nominal"] = level
        table["nominal_in_ci"] = (table["ci_low"] <= level) & (level <= table["ci_high"])
    return table


def evidence_table(frame: pd.DataFrame, *, lower: str = "corrected_gap_lower",
                   by: Sequence[str] = ("model", "group"), confidence: float = 0.95
                   ) -> pd.DataFrame:
    """Share of scans whose gap interval lies above 0: individual evidence of older-looking brains.

    For controls it is a false-positive rate, near ``(1 - level) / 2`` for a symmetric residual
    distribution.

    Returns
    -------
    DataFrame
        ``by`` columns, ``n`` (scans with an interval), ``above`` (lower bound > 0),
        ``share``, ``ci_low``, ``ci_high`` (exact binomial CI).
    """
    missing = [c for c in (lower, *by) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    return _binomial_shares(
        frame, by, lambda rows: pd.to_numeric(rows[lower], errors="coerce").dropna().to_numpy() > 0,
        count="above", share="share", confidence=confidence)


def flag_rates(frame: pd.DataFrame, *, column: str = "ood", by: Sequence[str] = ("model", "split"),
               confidence: float = 0.95) -> pd.DataFrame:
    """Share of rows flagged in ``column`` (True/False; missing values left out) per group.

    Returns
    -------
    DataFrame
        ``by`` columns, ``n``, ``flagged``, ``rate``, ``ci_low``, ``ci_high`` (exact binomial CI).
    """
    missing = [c for c in (column, *by) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    return _binomial_shares(frame, by, lambda rows: rows[column].dropna().astype(bool).to_numpy(),
                            count="flagged", share="rate", confidence=confidence)


def _binomial_shares(frame: pd.DataFrame, by: Sequence[str],
                     hits: Callable[[pd.DataFrame], np.ndarray], *, count: str, share: str,
                     confidence: float) -> pd.DataFrame:
    """Per group of ``by``: ``n`` (scans with a value), ``count`` (True among ``hits(rows)``),
    ``share`` and its exact binomial CI (NaN for a group without values)."""
    rows = []
    for key, rows_of in frame.groupby(list(by), sort=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        values = hits(rows_of)
        k = int(values.sum())
        low, high = binomial_ci(k, values.size, confidence) if values.size else (math.nan,) * 2
        rows.append({**dict(zip(by, key)), "n": int(values.size), count: k,
                     share: k / values.size if values.size else math.nan,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


# --- out-of-distribution score ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureOOD:
    """``k``-nearest-neighbour distance to the training features, in units of a threshold.

    Build it with :meth:`fit`; :meth:`to_arrays` / :meth:`from_arrays` store it as plain arrays
    (an ``.npz`` file).

    Parameters
    ----------
    mean, scale : ndarray, shape (D,)
        Standardisation of the features (training mean and standard deviation, floored).
    reference : ndarray, shape (N, D)
        Standardised training features.
    k : int
        Neighbour whose distance is the raw score (1: the nearest).
    threshold : float
        Raw score above which a scan is flagged: the conformal quantile of the calibration
        scores at ``1 - rate``.
    rate : float
        Nominal flag rate of in-distribution scans.
    calibration_scores : ndarray, shape (n,)
        Raw scores of the calibration scans (their count sets the guarantee).
    """

    mean: np.ndarray
    scale: np.ndarray
    reference: np.ndarray
    k: int
    threshold: float
    rate: float
    calibration_scores: np.ndarray
    _squared_norms: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        reference = _matrix(self.reference, "reference")
        dim = reference.shape[1]
        mean = _vector(self.mean, "mean")
        scale = _vector(self.scale, "scale")
        if mean.size != dim or scale.size != dim or not (scale > 0).all():
            raise ValueError(f"mean and scale must hold {dim} values (scale > 0), got "
                             f"{mean.size} and {scale.size}")
        k = check_int("k", self.k, low=1, high=reference.shape[0])
        check_number("threshold", self.threshold, low=0.0, low_open=True)
        _level("rate", self.rate)
        scores = _vector(self.calibration_scores, "calibration_scores")
        if scores.size < 1:
            raise ValueError("calibration_scores must hold at least one score")
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "calibration_scores", scores)
        object.__setattr__(self, "_squared_norms", np.einsum("ij,ij->i", reference, reference))

    @classmethod
    def fit(cls, train_features: ArrayLike, calibration_features: ArrayLike, *,
            rate: float = 0.05, k: int = 5) -> FeatureOOD:
        """Reference from the training scans' features, threshold from the calibration scans'.

        Parameters
        ----------
        train_features : array-like, shape (N, D)
            Features of the training scans (the reference set).
        calibration_features : array-like, shape (n, D)
            Features of held-apart in-distribution scans (validation); none may be in the
            reference set. Needs ``n >= 1 / rate - 1``.
        rate : float, default=0.05
            Nominal flag rate of in-distribution scans.
        k : int, default=5
            Neighbour rank (capped at N).
        """
        train = _matrix(train_features, "train_features")
        calibration = _matrix(calibration_features, "calibration_features", train.shape[1])
        rate = _level("rate", rate)
        k = min(check_int("k", k, low=1), train.shape[0])
        n = calibration.shape[0]
        rank = math.ceil((1 - rate) * (n + 1) - 1e-9)  # conformal quantile: rank-th smallest
        if rank > n:
            raise ValueError(f"a flag rate of {rate:g} needs at least "
                             f"{math.ceil(1 / rate - 1 - 1e-9)} calibration scans, got {n}")
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        floor = 0.01 * float(np.median(std)) if np.median(std) > 0 else 1.0
        scale = np.maximum(std, floor)  # a (nearly) constant feature must not dominate
        provisional = cls(mean, scale, (train - mean) / scale, k, 1.0, rate,
                          np.ones(1))
        scores = provisional.raw_scores(calibration)
        threshold = float(np.sort(scores)[rank - 1])
        if not threshold > 0:
            raise ValueError("the calibration scans' features coincide with training features "
                             "(threshold 0): are they the same scans?")
        logger.info("OOD reference: %d training scans, %d features, k=%d; threshold %.4g "
                    "(rate %g from %d calibration scans)", train.shape[0], train.shape[1], k,
                    threshold, rate, n)
        return cls(mean, scale, provisional.reference, k, threshold, rate, scores)

    @property
    def feature_dim(self) -> int:
        return int(self.reference.shape[1])

    def raw_scores(self, features: ArrayLike) -> np.ndarray:
        """Distance to the ``k``-th nearest reference scan (standardised features), shape (m,).

        Brute force with one matrix product (a few hundred reference scans): a tree or
        scikit-learn's ``NearestNeighbors`` costs more per call in checks than the distances
        themselves, and ``brainage predict`` scores one scan at a time.
        """
        x = (_matrix(features, "features", self.feature_dim) - self.mean) / self.scale
        squared = (np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ self.reference.T
                   + self._squared_norms[None, :])  # (m, N): |x|^2 - 2 x.r + |r|^2
        kth = np.partition(squared, self.k - 1, axis=1)[:, self.k - 1]
        return np.sqrt(np.maximum(kth, 0.0))

    def score(self, features: ArrayLike) -> np.ndarray:
        """Raw score divided by the threshold: above 1 is flagged, shape (m,)."""
        return self.raw_scores(features) / self.threshold

    def flag(self, features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(score, flagged)`` of each row of ``features``."""
        score = self.score(features)
        return score, score > 1.0

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``numpy.savez`` (no pickles)."""
        return {"mean": self.mean, "scale": self.scale,
                "reference": self.reference.astype(np.float32),
                "k": np.asarray(self.k), "threshold": np.asarray(self.threshold),
                "rate": np.asarray(self.rate), "calibration_scores": self.calibration_scores}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str = "ood") -> FeatureOOD:
        """Rebuild from :meth:`to_arrays` output; errors name ``source`` and the array."""
        needed = ("mean", "scale", "reference", "k", "threshold", "rate", "calibration_scores")
        missing = [name for name in needed if name not in arrays]
        if missing:
            raise ValueError(f"{source} lacks the array(s) {missing}")
        try:
            scalars = {}
            for name in ("k", "threshold", "rate"):
                value = np.asarray(arrays[name])
                if value.shape != ():
                    raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
                scalars[name] = value.item()
            if not isinstance(scalars["k"], int):
                raise ValueError(f"k must be an integer, got {scalars['k']!r}")
            return cls(np.asarray(arrays["mean"]), np.asarray(arrays["scale"]),
                       np.asarray(arrays["reference"]), scalars["k"], scalars["threshold"],
                       scalars["rate"], np.asarray(arrays["calibration_scores"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err
