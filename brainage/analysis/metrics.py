"""Evaluation statistics for brain-age models.

Point metrics (MAE, RMSE, R², Pearson's r) with paired bootstrap confidence intervals
(``scipy.stats.bootstrap``), a paired comparison of two models (Wilcoxon signed-rank test on
absolute errors plus a bootstrap CI of the MAE difference), age-bias correction fitted on a
validation split, reference errors (irreducible error on a simulated cohort, mean-age
baseline) and errors by age bin.

The metric formulas are written here with numpy, not taken from scikit-learn, because
``scipy.stats.bootstrap`` needs statistics vectorised over an ``axis``; the tests check them
against scikit-learn and scipy.
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

from brainage._utils import check_choice, check_int, check_number, check_vector

logger = logging.getLogger(__name__)

__all__ = [
    "AGE_DEPENDENT_METHODS",
    "AgeBiasCorrection",
    "BIAS_CORRECTION_METHODS",
    "error_by_age_bin",
    "fit_bias_correction_on_split",
    "irreducible_error",
    "mae",
    "mean_age_baseline",
    "paired_comparison",
    "pearson_r",
    "posterior_median_age",
    "r2",
    "regression_metrics",
    "rmse",
]

#: Age-bias correction methods accepted by :meth:`AgeBiasCorrection.fit`.
BIAS_CORRECTION_METHODS = ("linear", "beheshti", "quadratic")
#: Methods whose corrected prediction uses the subject's own chronological age: their corrected
#: accuracy against that age is circular (:attr:`AgeBiasCorrection.uses_age`).
AGE_DEPENDENT_METHODS = ("beheshti", "quadratic")

_COEFFICIENT_NAMES = {
    "linear": ("slope", "intercept"),
    "beheshti": ("slope", "intercept"),
    "quadratic": ("intercept", "age", "age2"),
}


# --- input checks -------------------------------------------------------------------------------


def _as_vector(values: ArrayLike, name: str, min_n: int = 1) -> np.ndarray:
    """``values`` as a finite 1-D float64 array of length >= ``min_n`` (:func:`check_vector`)."""
    return check_vector(name, values, min_n=min_n, hint="; remove or impute them first")


def _check_pair(
    a: ArrayLike, b: ArrayLike, names: tuple[str, str] = ("y_true", "y_pred"), min_n: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two paired vectors: 1-D, finite, same length, at least ``min_n`` values."""
    x = _as_vector(a, names[0], min_n)
    y = _as_vector(b, names[1], min_n)
    if x.size != y.size:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same length, got {x.size} and {y.size}"
        )
    return x, y


# --- vectorised statistics (last axis = subjects) -------------------------------------------------


def _mae(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(np.abs(y_pred - y_true), axis=axis)


def _rmse(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sqrt(np.mean((y_pred - y_true) ** 2, axis=axis))


def _r2(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    ss_res = np.sum((y_true - y_pred) ** 2, axis=axis)
    ss_tot = np.sum((y_true - np.mean(y_true, axis=axis, keepdims=True)) ** 2, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)  # NaN: constant y_true


def _pearson(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    xc = y_true - np.mean(y_true, axis=axis, keepdims=True)
    yc = y_pred - np.mean(y_pred, axis=axis, keepdims=True)
    denominator = np.sqrt(np.sum(xc**2, axis=axis) * np.sum(yc**2, axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denominator > 0, np.sum(xc * yc, axis=axis) / denominator, np.nan)
    return np.clip(r, -1.0, 1.0)


_STATISTICS: dict[str, Callable[..., np.ndarray]] = {
    "mae": _mae,
    "rmse": _rmse,
    "r2": _r2,
    "pearson_r": _pearson,
}


# --- point metrics -------------------------------------------------------------------------------


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error, ``mean(|y_pred - y_true|)``.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        Chronological and predicted ages; finite, same length, n >= 2.

    Returns
    -------
    float
    """
    return float(_mae(*_check_pair(y_true, y_pred)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error, ``sqrt(mean((y_pred - y_true) ** 2))``.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        Chronological and predicted ages; finite, same length, n >= 2.

    Returns
    -------
    float
    """
    return float(_rmse(*_check_pair(y_true, y_pred)))


def r2(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of determination, ``1 - SS_res / SS_tot`` (as ``sklearn.metrics.r2_score``).

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        Chronological and predicted ages; finite, same length, n >= 2, ``y_true`` not constant.

    Returns
    -------
    float
    """
    y, p = _check_pair(y_true, y_pred)
    if np.ptp(y) == 0:
        raise ValueError(f"r2 is undefined when y_true is constant (all values {y[0]!r})")
    return float(_r2(y, p))


def pearson_r(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson's correlation between chronological and predicted age.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        Finite, same length, n >= 2, neither constant.

    Returns
    -------
    float
    """
    y, p = _check_pair(y_true, y_pred)
    for name, values in (("y_true", y), ("y_pred", p)):
        if np.ptp(values) == 0:
            raise ValueError(f"pearson_r is undefined when {name} is constant (all {values[0]!r})")
    return float(_pearson(y, p))


# --- bootstrap -----------------------------------------------------------------------------------


def _check_bootstrap_settings(n_boot: int, confidence: float) -> None:
    check_int("n_boot", n_boot, low=100)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _bootstrap_ci(
    data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], *, n_boot: int,
    seed: int, confidence: float,
) -> tuple[float, float, str]:
    """Paired bootstrap CI: BCa, or percentile where BCa is undefined.

    BCa (Efron 1987) corrects the percentile interval for bias and skew and is the default.
    It is undefined when the bootstrap distribution is degenerate (for instance perfect
    predictions) or some resamples give an undefined statistic (a constant resample for R²);
    the percentile interval of the finite resampled values is then returned instead. The
    resamples are the same for every statistic given the same ``seed``.
    """
    # batch bounds memory (resamples x subjects floats) for large cohorts.
    batch = max(1, int(4_000_000 // max(1, data[0].size)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = stats.bootstrap(
                data, statistic, n_resamples=n_boot, paired=True, vectorized=True,
                confidence_level=confidence, method="BCa", batch=batch,
                rng=np.random.default_rng(seed),
            )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isfinite(low) and math.isfinite(high):
        return low, high, "BCa"
    # Fallback written here because scipy's percentile interval propagates NaN resamples.
    values = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
    if values.size == 0:
        raise ValueError("every bootstrap resample gave an undefined statistic; no CI possible")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    logger.info("BCa interval undefined; used the percentile interval of %d resamples", values.size)
    return float(low), float(high), "percentile"


def regression_metrics(
    y_true: ArrayLike, y_pred: ArrayLike, *, n_boot: int = 2000, seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """MAE, RMSE, R² and Pearson's r, each with a paired bootstrap confidence interval.

    Subjects are resampled with replacement (pairs kept together); the same resamples serve
    every metric. Intervals are bias-corrected and accelerated (BCa); where BCa is undefined
    (degenerate bootstrap distribution) the percentile interval is used and ``ci_method``
    says so.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        Chronological and predicted ages; finite, same length, n >= 2.
    n_boot : int, default=2000
        Number of bootstrap resamples (>= 100).
    seed : int, default=0
        Seed of the resampling; equal seeds give equal intervals.
    confidence : float, default=0.95
        Confidence level of the intervals.

    Returns
    -------
    dict
        ``{"n", "n_boot", "seed", "confidence"}`` and, for each of ``"mae"``, ``"rmse"``,
        ``"r2"``, ``"pearson_r"``, a dict ``{"value", "ci_low", "ci_high", "ci_method"}``.
        JSON-serialisable.

    References
    ----------
    .. [1] Efron, B. (1987). Better bootstrap confidence intervals. Journal of the American
       Statistical Association 82(397), 171-185.
    """
    y, p = _check_pair(y_true, y_pred)
    _check_bootstrap_settings(n_boot, confidence)
    result: dict[str, Any] = {"n": int(y.size), "n_boot": int(n_boot), "seed": int(seed),
                              "confidence": float(confidence)}
    for name, statistic in _STATISTICS.items():
        value = float(statistic(y, p))
        low, high, method = _bootstrap_ci((y, p), statistic, n_boot=n_boot, seed=seed,
                                          confidence=confidence)
        result[name] = {"value": value, "ci_low": low, "ci_high": high, "ci_method": method}
    return result


def _wilcoxon(diff: np.ndarray) -> tuple[float | None, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences; (None, 1.0) if all are 0."""
    if np.all(diff == 0):
        warnings.warn("paired_comparison: the two models have identical absolute errors; "
                      "the Wilcoxon test is undefined and p is set to 1", stacklevel=3)
        return None, 1.0
    test = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return float(test.statistic), float(test.pvalue)


def paired_comparison(
    y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, n_boot: int = 2000, seed: int = 0,
    confidence: float = 0.95, alpha: float = 0.05, names: tuple[str, str] = ("a", "b"),
) -> dict[str, Any]:
    """Compare two models' absolute errors on the same subjects.

    A two-sided Wilcoxon signed-rank test of ``|pred_a - y| - |pred_b - y|``
    (``scipy.stats.wilcoxon``, zero differences dropped) and a paired bootstrap CI of the MAE
    difference ``MAE_a - MAE_b`` (negative: model a is better). The difference counts as
    significant only when ``p < alpha`` and the CI excludes 0.

    Parameters
    ----------
    y_true, pred_a, pred_b : array-like, shape (n,)
        Chronological age and the two models' predictions; finite, same length, n >= 2.
    n_boot : int, default=2000
        Bootstrap resamples for the CI.
    seed : int, default=0
        Seed of the resampling.
    confidence : float, default=0.95
        Confidence level of the CI.
    alpha : float, default=0.05
        Significance level.
    names : tuple of str, default=("a", "b")
        Model names used in ``better``.

    Returns
    -------
    dict
        ``n``, ``mae_a``, ``mae_b``, ``mae_diff``, ``ci_low``, ``ci_high``, ``ci_method``,
        ``confidence``, ``wilcoxon_statistic`` (None when all differences are 0),
        ``p_value``, ``alpha``, ``significant`` and ``better`` (a name or ``"tie"``, by MAE).

    References
    ----------
    .. [1] Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin
       1(6), 80-83.
    """
    y, a = _check_pair(y_true, pred_a, ("y_true", "pred_a"))
    _, b = _check_pair(y_true, pred_b, ("y_true", "pred_b"))
    _check_bootstrap_settings(n_boot, confidence)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    diff = np.abs(a - y) - np.abs(b - y)  # per-subject difference of absolute errors
    mae_diff = float(diff.mean())
    statistic, p_value = _wilcoxon(diff)
    low, high, method = _bootstrap_ci((diff,), np.mean, n_boot=n_boot, seed=seed,
                                      confidence=confidence)
    excludes_zero = low > 0 or high < 0
    better = names[0] if mae_diff < 0 else names[1] if mae_diff > 0 else "tie"
    return {
        "n": int(y.size), "mae_a": float(_mae(y, a)), "mae_b": float(_mae(y, b)),
        "mae_diff": mae_diff, "ci_low": low, "ci_high": high, "ci_method": method,
        "confidence": float(confidence), "wilcoxon_statistic": statistic, "p_value": p_value,
        "alpha": float(alpha), "significant": bool(p_value < alpha and excludes_zero),
        "better": better,
    }


# --- age-bias correction ------------------------------------------------------------------------


def _fit_coefficients(age: np.ndarray, predicted: np.ndarray, method: str) -> dict[str, float]:
    """Least-squares coefficients of the chosen bias model (numpy polyfit, lowest power first)."""
    poly = np.polynomial.polynomial
    if method == "linear":  # predicted = slope * age + intercept
        intercept, slope = poly.polyfit(age, predicted, 1)
        if slope <= 0:
            raise ValueError(
                f"method 'linear' needs predictions that increase with age; the fitted slope is "
                f"{slope:.4g}. Check the predictions or use method='beheshti'"
            )
        if slope < 0.2:
            warnings.warn(f"age-bias slope {slope:.3g} is small: the 'linear' correction divides "
                          f"by it and will amplify prediction noise", stacklevel=3)
        return {"slope": float(slope), "intercept": float(intercept)}
    gap = predicted - age
    if method == "beheshti":  # gap = slope * age + intercept
        intercept, slope = poly.polyfit(age, gap, 1)
        return {"slope": float(slope), "intercept": float(intercept)}
    c0, c1, c2 = poly.polyfit(age, gap, 2)  # gap = c0 + c1 * age + c2 * age^2
    return {"intercept": float(c0), "age": float(c1), "age2": float(c2)}


@dataclass(frozen=True)
class AgeBiasCorrection:
    r"""Correction of the regression-to-the-mean bias of predicted brain age.

    Brain-age models overestimate the young and underestimate the old, so the brain-age gap
    correlates with age. The correction is fitted on a validation split (never the test
    split) and applied to new predictions with their chronological age. Methods:

    ``"linear"`` (de Lange & Cole, 2020)
        Fit :math:`\hat y = a\,y + b` by least squares; corrected
        :math:`\hat y' = (\hat y - b) / a`.
    ``"beheshti"`` (Beheshti et al., 2019)
        Fit the gap :math:`\hat y - y = \alpha\,y + \beta`; corrected
        :math:`\hat y' = \hat y - (\alpha\,y + \beta)`.
    ``"quadratic"`` (after Smith et al., 2019)
        Fit :math:`\hat y - y = c_0 + c_1 y + c_2 y^2`; corrected
        :math:`\hat y' = \hat y - (c_0 + c_1 y + c_2 y^2)`.

    On the fitting data, ``"beheshti"`` and ``"quadratic"`` leave a corrected gap with zero
    mean and zero correlation with age; ``"linear"`` leaves the gap
    :math:`(\hat y - a y - b)/a`, also uncorrelated with age and of zero mean.

    Parameters
    ----------
    method : str
        One of ``"linear"``, ``"beheshti"``, ``"quadratic"``.
    coefficients : dict of str to float
        ``{"slope", "intercept"}`` (linear, beheshti) or ``{"intercept", "age", "age2"}``.
    n_fit : int
        Number of subjects the correction was fitted on.
    age_range : tuple of float
        Minimum and maximum age of the fitting data; applying outside it warns.

    References
    ----------
    .. [1] de Lange, A.-M. G., Cole, J. H. (2020). Commentary: Correction procedures in
       brain-age prediction. NeuroImage: Clinical 26, 102229.
    .. [2] Beheshti, I., Nugent, S., Potvin, O., Duchesne, S. (2019). Bias-adjustment in
       neuroimaging-based brain age frameworks: a robust scheme. NeuroImage: Clinical 24, 102063.
    .. [3] Smith, S. M., Vidaurre, D., Alfaro-Almagro, F., Nichols, T. E., Miller, K. L. (2019).
       Estimation of brain age delta from brain imaging. NeuroImage 200, 528-539.
    """

    method: str
    coefficients: dict[str, float] = field(default_factory=dict)
    n_fit: int = 0
    age_range: tuple[float, float] = (math.nan, math.nan)

    def __post_init__(self) -> None:
        check_choice("method", self.method, BIAS_CORRECTION_METHODS)
        expected = set(_COEFFICIENT_NAMES[self.method])
        if set(self.coefficients) != expected:
            raise ValueError(
                f"coefficients of method {self.method!r} must have keys {sorted(expected)}, "
                f"got {sorted(self.coefficients)}"
            )

    @classmethod
    def fit(cls, age: ArrayLike, predicted: ArrayLike, method: str = "linear") -> AgeBiasCorrection:
        """Fit the correction on chronological ``age`` and ``predicted`` age (validation data).

        Parameters
        ----------
        age, predicted : array-like, shape (n,)
            Finite, same length; at least 2 distinct ages (3 for ``"quadratic"``).
        method : str, default="linear"
            ``"linear"``, ``"beheshti"`` or ``"quadratic"``.

        Returns
        -------
        AgeBiasCorrection
        """
        method = check_choice("method", method, BIAS_CORRECTION_METHODS)
        y, p = _check_pair(age, predicted, ("age", "predicted"))
        needed = 3 if method == "quadratic" else 2
        if np.unique(y).size < needed:
            raise ValueError(f"method {method!r} needs at least {needed} distinct ages in age, "
                             f"got {np.unique(y).size}")
        coefficients = _fit_coefficients(y, p, method)
        logger.info("fitted %s age-bias correction on %d subjects: %s", method, y.size,
                    coefficients)
        return cls(method, coefficients, int(y.size), (float(y.min()), float(y.max())))

    def apply(self, age: ArrayLike, predicted: ArrayLike) -> np.ndarray:
        """Return bias-corrected predicted ages.

        Parameters
        ----------
        age, predicted : array-like, shape (n,)
            Chronological and predicted ages of the subjects to correct (n >= 1).

        Returns
        -------
        ndarray, shape (n,)
        """
        y, p = _check_pair(age, predicted, ("age", "predicted"), min_n=1)
        low, high = self.age_range
        outside = int(np.sum((y < low) | (y > high)))
        if outside:
            warnings.warn(f"{outside} of {y.size} ages lie outside the fitting range "
                          f"[{low:g}, {high:g}] of the {self.method} correction", stacklevel=2)
        c = self.coefficients
        if self.method == "linear":
            return (p - c["intercept"]) / c["slope"]
        if self.method == "beheshti":
            return p - (c["slope"] * y + c["intercept"])
        return p - (c["intercept"] + c["age"] * y + c["age2"] * y**2)

    @property
    def uses_age(self) -> bool:
        """Whether :meth:`apply` uses the subject's chronological age (``"beheshti"``,
        ``"quadratic"``). For these, the corrected prediction is built from the very age it is
        then compared with, so corrected MAE and $R^2$ against it are circular; ``"linear"``
        rescales the prediction alone."""
        return self.method in AGE_DEPENDENT_METHODS

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: ``method``, ``coefficients``, ``n_fit``, ``age_range``."""
        return {"method": self.method, "coefficients": dict(self.coefficients),
                "n_fit": self.n_fit, "age_range": list(self.age_range)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgeBiasCorrection:
        """Rebuild a correction from :meth:`to_dict` output (for example read from JSON)."""
        missing = {"method", "coefficients"} - set(data)
        if missing:
            raise ValueError(f"bias-correction dict lacks key(s) {sorted(missing)}; "
                             f"got keys {sorted(data)}")
        low, high = data.get("age_range", (math.nan, math.nan))
        coefficients = {str(k): float(v) for k, v in data["coefficients"].items()}
        return cls(str(data["method"]), coefficients, int(data.get("n_fit", 0)),
                   (float(low), float(high)))


def fit_bias_correction_on_split(
    predictions: pd.DataFrame, split: str = "val", *, method: str = "linear",
    split_column: str = "split", age_column: str = "age", predicted_column: str = "predicted",
) -> AgeBiasCorrection:
    """Fit :class:`AgeBiasCorrection` on the rows of one split of a predictions table.

    Only rows whose ``split_column`` equals ``split`` are used, so the test rows cannot
    influence the correction.

    Parameters
    ----------
    predictions : DataFrame
        One row per subject with at least the split, age and predicted columns.
    split : str, default="val"
        The split to fit on.
    method : str, default="linear"
        See :class:`AgeBiasCorrection`.
    split_column, age_column, predicted_column : str
        Column names, default ``"split"``, ``"age"``, ``"predicted"``.

    Returns
    -------
    AgeBiasCorrection
    """
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    columns = (split_column, age_column, predicted_column)
    missing = [c for c in columns if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"predictions lacks column(s) {missing}; it has {list(predictions.columns)}"
        )
    rows = predictions[predictions[split_column] == split]
    if rows.empty:
        available = sorted(map(str, predictions[split_column].unique()))
        raise ValueError(f"predictions has no rows with {split_column} == {split!r}; "
                         f"available splits: {available}")
    return AgeBiasCorrection.fit(rows[age_column].to_numpy(), rows[predicted_column].to_numpy(),
                                 method=method)


# --- reference errors and breakdowns -------------------------------------------------------------


def irreducible_error(chronological_age: ArrayLike, biological_age: ArrayLike) -> float:
    """MAE of an ideal model that predicts each subject's true biological age.

    On a simulated cohort the brain ages at its own (biological) rate, so even a perfect
    model is off from chronological age by ``mean(|biological - chronological|)``: the floor
    of the MAE any model can reach.

    Parameters
    ----------
    chronological_age, biological_age : array-like, shape (n,)
        Finite, same length, n >= 2.

    Returns
    -------
    float
    """
    y, b = _check_pair(chronological_age, biological_age, ("chronological_age", "biological_age"))
    return float(_mae(y, b))


def posterior_median_age(biological_age: ArrayLike, sigma: float,
                         age_range: tuple[float, float]) -> np.ndarray:
    """The best prediction of chronological age from the true biological age, for the MAE.

    A simulated control's biological age is ``b = a + delta`` with ``a ~ Uniform(low, high)``
    and ``delta ~ N(0, sigma**2)``. Given ``b``, ``a`` is a normal ``N(b, sigma**2)`` truncated to
    ``[low, high]``; its median minimises the expected absolute error, so the MAE of this
    predictor is the floor for any model that sees only the brain. It equals ``b`` in the middle
    of the range and pulls towards it near the ends, where predicting ``b`` itself
    (:func:`irreducible_error`) is beaten: no brain of chronological age below ``low`` exists.
    scipy has the truncated normal but no posterior of this prior; the median is its quantile.

    Parameters
    ----------
    biological_age : array-like, shape (n,)
        Finite true biological ages (years).
    sigma : float
        Standard deviation of ``delta`` (years), > 0.
    age_range : (float, float)
        The uniform prior's ``(low, high)`` of chronological age (years), ``low < high``.

    Returns
    -------
    numpy.ndarray, shape (n,)
        The posterior median of chronological age of each subject (years).
    """
    b = _as_vector(biological_age, "biological_age")
    sigma = check_number("sigma", sigma, low=0, low_open=True)
    if not isinstance(age_range, (tuple, list)) or len(age_range) != 2:
        raise ValueError(f"age_range must be (low, high), got {age_range!r}")
    low = check_number("age_range[0]", age_range[0])
    high = check_number("age_range[1]", age_range[1])
    if not low < high:
        raise ValueError(f"age_range must have low < high, got {age_range!r}")
    alpha, beta = (low - b) / sigma, (high - b) / sigma  # (n,) standardised bounds
    # the median of the truncated normal: its CDF at the median is 1/2 (scipy's truncnorm.ppf
    # works in the log domain, stable also far in a tail)
    return b + sigma * stats.truncnorm.ppf(0.5, alpha, beta)


def mean_age_baseline(train_age: ArrayLike, test_age: ArrayLike) -> float:
    """MAE on the test set of predicting every subject as the training mean age.

    Parameters
    ----------
    train_age, test_age : array-like
        Finite 1-D arrays with at least one value each.

    Returns
    -------
    float
    """
    train = _as_vector(train_age, "train_age")
    test = _as_vector(test_age, "test_age")
    return float(np.mean(np.abs(test - train.mean())))


def _bin_edges(age: np.ndarray, bins: int | Sequence[float]) -> np.ndarray:
    """Equal-width edges over the age range for an int, else the given increasing edges."""
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be >= 1 when an integer, got {bins}")
        edges = np.linspace(age.min(), age.max(), int(bins) + 1)
        edges[-1] = np.nextafter(edges[-1], np.inf)  # bins are [low, high): keep the oldest
        return edges
    edges = _as_vector(bins, "bins", min_n=2)
    if np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be strictly increasing edges, got {edges.tolist()}")
    return edges


def error_by_age_bin(
    age: ArrayLike, predicted: ArrayLike, bins: int | Sequence[float], *, n_boot: int = 0,
    seed: int = 0, confidence: float = 0.95,
) -> pd.DataFrame:
    """Errors of predicted age within age bins ``[low, high)``.

    Parameters
    ----------
    age, predicted : array-like, shape (n,)
        Chronological and predicted ages; finite, same length, n >= 1.
    bins : int or sequence of float
        Number of equal-width bins over the age range, or strictly increasing bin edges.
        Ages outside explicit edges are left out with a warning.
    n_boot : int, default=0
        Bootstrap resamples of each bin's MAE confidence interval (BCa, as
        :func:`regression_metrics`; at least 100); 0 computes no interval.
    seed : int, default=0
        Seed of the bootstrap resamples.
    confidence : float, default=0.95
        Level of the interval.

    Returns
    -------
    DataFrame
        One row per bin: ``age_bin`` (label such as ``"[20, 30)"``), ``age_low``,
        ``age_high``, ``n``, ``mae``, ``rmse``, ``mean_error`` (mean of predicted - age,
        the bias) and ``mean_age``; with ``n_boot``, also ``mae_ci_low`` and ``mae_ci_high``
        (NaN in bins of fewer than 3 scans, where a bootstrap interval means nothing). Empty
        bins have n = 0 and NaN errors.
    """
    y, p = _check_pair(age, predicted, ("age", "predicted"), min_n=1)
    if n_boot:
        _check_bootstrap_settings(n_boot, confidence)
    edges = _bin_edges(y, bins)
    index = np.searchsorted(edges, y, side="right") - 1  # bin of each age, -1 / len-1 outside
    inside = (index >= 0) & (index < edges.size - 1)
    if not inside.all():
        warnings.warn(f"{int((~inside).sum())} age(s) lie outside the bin edges "
                      f"[{edges[0]:g}, {edges[-1]:g}) and are left out", stacklevel=2)
    rows = []
    for k in range(edges.size - 1):
        chosen = inside & (index == k)
        err = p[chosen] - y[chosen]
        empty = not chosen.any()
        row = {
            "age_bin": f"[{edges[k]:.4g}, {edges[k + 1]:.4g})", "age_low": edges[k],
            "age_high": edges[k + 1], "n": int(chosen.sum()),
            "mae": np.nan if empty else float(np.mean(np.abs(err))),
            "rmse": np.nan if empty else float(np.sqrt(np.mean(err**2))),
            "mean_error": np.nan if empty else float(np.mean(err)),
            "mean_age": np.nan if empty else float(np.mean(y[chosen])),
        }
        if n_boot:
            low = high = np.nan
            if chosen.sum() >= 3:
                low, high, _ = _bootstrap_ci((y[chosen], p[chosen]), _mae, n_boot=n_boot,
                                             seed=seed, confidence=confidence)
            row.update(mae_ci_low=low, mae_ci_high=high)
        rows.append(row)
    return pd.DataFrame(rows)
