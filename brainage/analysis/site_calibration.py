"""Site calibration: a site's age-bias correction and conformal interval from its healthy controls.

A model meets a scanner it was not trained on: its predictions keep their order but move (the
quick model predicts real IXI scans about 26 years too young) and its split-conformal
intervals, calibrated on the training site, cover almost nothing. The field's remedy is an
age-bias correction fitted on healthy controls of the new site [1]_; split-conformal intervals
become valid again when their calibration scans are exchangeable with the new scans [2]_,
which a sample of the same site provides.

**Correction.** Predicted age is modelled as linear in age at the site,
``predicted = slope * age + intercept``, and a new scan's site-corrected age is
``(predicted - intercept) / slope`` (the ``"linear"`` correction of
:class:`brainage.analysis.metrics.AgeBiasCorrection`, which needs no age of the new scan). The
level (the predictions' mean at the controls' mean age) is fitted freely: it is what moves
between scanners. The slope is shrunk towards the training correction's: with ``n`` controls
and a prior worth ``prior_scans`` of them, the slope is ``w * ols + (1 - w) * training`` with
``w = n / (n + prior_scans)``, the posterior mean under a normal prior on the slope whose
precision equals that of ``prior_scans`` scans of the same age spread (conjugate normal
regression with known noise). When the controls' ages span less than ``min_span`` years, no
slope is fitted (the training slope is kept) and only the level is fitted.

**Interval.** The interval is ``corrected ± q`` with ``q`` the conformal quantile of the
controls' *cross-fitted* residuals (age minus corrected age, each from a correction fitted
without that scan; leave-one-out by default), computed with ``crepes`` through
:class:`brainage.analysis.uncertainty.ConformalInterval`: the jackknife interval of Barber et
al. [3]_ (the full-data correction, out-of-fold residuals), whose coverage is close to
``level`` when the correction is stable (their jackknife+ guarantees ``1 - 2 (1 - level)``).
The same interval around the corrected gap (corrected minus chronological age) holds 0.

References
----------
.. [1] de Lange, A.-M. G., Cole, J. H. (2020). Commentary: Correction procedures in
   brain-age prediction. NeuroImage: Clinical 26, 102229.
.. [2] Lei, J., G'Sell, M., Rinaldo, A., Tibshirani, R. J., Wasserman, L. (2018).
   Distribution-free predictive inference for regression. JASA 113(523), 1094-1111.
.. [3] Barber, R. F., Candès, E. J., Ramdas, A., Tibshirani, R. J. (2021). Predictive
   inference with the jackknife+. Annals of Statistics 49(1), 486-507.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from brainage._utils import AGE_RANGE, check_int, check_number, check_vector
from brainage._utils.io import check_format_tag
from brainage.analysis.metrics import AgeBiasCorrection
from brainage.analysis.uncertainty import ConformalInterval, min_calibration_size

logger = logging.getLogger(__name__)

__all__ = [
    "CURVE_METHODS",
    "MIN_SITE_SCANS",
    "SITE_CALIBRATION_FORMAT",
    "SiteCalibration",
    "SiteCorrection",
    "calibration_curve",
    "fit_site_calibration",
    "fit_site_correction",
    "training_line",
]

#: Format tag of :meth:`SiteCalibration.to_dict`.
SITE_CALIBRATION_FORMAT = "brainage-site-calibration/1"

#: Fewest healthy controls a site correction is fitted on (a level and a slope from fewer are
#: noise); an interval needs more (:func:`brainage.analysis.uncertainty.min_calibration_size`).
MIN_SITE_SCANS = 5

#: Smallest slope accepted: the correction divides by it.
_MIN_SLOPE = 0.05


def training_line(correction: AgeBiasCorrection) -> tuple[float, float]:
    """``(slope, intercept)`` of ``predicted = slope * age + intercept`` of a training correction.

    ``"linear"`` stores that line; ``"beheshti"`` the gap's line ``gap = s * age + i``, that is
    ``predicted = (1 + s) * age + i``. ``"quadratic"`` has no single slope and is refused.
    """
    if not isinstance(correction, AgeBiasCorrection):
        raise TypeError(f"the training correction must be an AgeBiasCorrection, got "
                        f"{type(correction).__name__}")
    c = correction.coefficients
    if correction.method == "linear":
        return float(c["slope"]), float(c["intercept"])
    if correction.method == "beheshti":
        return 1.0 + float(c["slope"]), float(c["intercept"])
    raise ValueError(f"a site correction shrinks towards a linear training correction; the "
                     f"model's is {correction.method!r} (use 'linear' or 'beheshti')")


def _ages(age: ArrayLike, predicted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``age`` and ``predicted`` as finite float vectors of one length, or raise naming them."""
    y = check_vector("age", age, hint=": every calibration scan needs a known age")
    p = check_vector("predicted", predicted,
                     hint=": every calibration scan needs a known prediction")
    if y.size != p.size:
        raise ValueError(f"age and predicted must have one value per scan, got {y.size} "
                         f"and {p.size}")
    return y, p


def _check_controls(group: Sequence[Any] | None, n: int, controls: Sequence[str]) -> None:
    """Refuse a calibration set with scans outside the healthy-control labels ``controls``."""
    if group is None:
        return
    labels = [str(g) for g in group]
    if len(labels) != n:
        raise ValueError(f"group must have one label per scan ({n}), got {len(labels)}")
    others = sorted({g for g in labels if g not in controls})
    if others:
        count = sum(g not in controls for g in labels)
        raise ValueError(f"a site calibration is fitted on healthy controls only (group in "
                         f"{list(controls)}); {count} of {n} scans are in group(s) {others}: "
                         f"their brain-age gap is what the calibration must not remove")


@dataclass(frozen=True)
class SiteCorrection:
    """A site's line ``predicted = slope * age + intercept`` and how it was fitted.

    Attributes
    ----------
    slope, intercept : float
        The site's line (after shrinkage).
    fitted : {"slope", "intercept"}
        ``"slope"``: slope and level fitted; ``"intercept"``: the training slope kept.
    weight : float
        Weight of the site's own slope, ``n / (n + prior_scans)`` (1: no prior; 0: intercept
        only).
    n : int
        Controls it was fitted on.
    age_range : tuple of float
        Their youngest and oldest age.
    """

    slope: float
    intercept: float
    fitted: str
    weight: float
    n: int
    age_range: tuple[float, float]

    def apply(self, predicted: ArrayLike) -> np.ndarray:
        """Site-corrected ages ``(predicted - intercept) / slope`` (NaN stays NaN), shape (m,)."""
        p = np.asarray(predicted, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"predicted must be 1-D, got shape {p.shape}")
        return (p - self.intercept) / self.slope


def fit_site_correction(age: ArrayLike, predicted: ArrayLike, *,
                        prior: tuple[float, float] | None = None, prior_scans: float = 10.0,
                        min_span: float = 10.0, group: Sequence[Any] | None = None,
                        controls: Sequence[str] = ("HC",),
                        min_scans: int = MIN_SITE_SCANS) -> SiteCorrection:
    """Fit a site's age-bias line on its healthy controls, shrinking the slope towards ``prior``.

    Parameters
    ----------
    age, predicted : array-like, shape (n,)
        Chronological and predicted ages of the site's controls (finite).
    prior : tuple of float, optional
        ``(slope, intercept)`` of the training correction (:func:`training_line`); None: no
        shrinkage (and a narrow age span is refused, having no slope to keep).
    prior_scans : float, default=10.0
        Worth of the prior slope in scans (0: none).
    min_span : float, default=10.0
        Fewest years between the youngest and oldest control for a slope to be fitted
        (``inf``: the training slope is always kept).
    group : sequence, optional
        Each scan's group; any label outside ``controls`` is refused.
    controls : sequence of str, default=("HC",)
        Labels of healthy controls.
    min_scans : int, default=5
        Fewest controls accepted.

    Returns
    -------
    SiteCorrection
    """
    y, p = _ages(age, predicted)
    min_scans = check_int("min_scans", min_scans, low=2)
    if y.size < min_scans:
        raise ValueError(f"a site calibration needs at least {min_scans} healthy controls with "
                         f"known ages; got {y.size}: a level and a slope from fewer scans are "
                         f"noise")
    _check_controls(group, y.size, controls)
    prior_scans = check_number("prior_scans", prior_scans, low=0.0)
    if math.isinf(min_span) and min_span > 0:  # inf: never fit a slope (the folds of a narrow set)
        min_span = math.inf
    else:
        min_span = check_number("min_span", min_span, low=0.0)
    span = float(y.max() - y.min())
    level = float(p.mean())  # the predictions' mean at the controls' mean age
    if span < min_span or np.ptp(y) == 0:
        if prior is None:
            raise ValueError(f"the controls' ages span {span:.1f} years (< min_span {min_span:g}): "
                             f"too little to fit a slope, and no training correction is given "
                             f"to keep its slope")
        warnings.warn(f"the controls' ages span {span:.1f} years (< min_span {min_span:g}): too "
                      f"little to fit a slope; only the level is fitted (training slope "
                      f"{prior[0]:.3g} kept)", stacklevel=2)
        slope, fitted, weight = float(prior[0]), "intercept", 0.0
    else:
        x = y - y.mean()
        ols = float(x @ (p - level) / (x @ x))
        weight = 1.0 if prior is None else y.size / (y.size + prior_scans)
        slope = ols if prior is None else weight * ols + (1 - weight) * float(prior[0])
        fitted = "slope"
    if not slope > _MIN_SLOPE:
        raise ValueError(f"the site's predictions do not increase with age (slope {slope:.3g} "
                         f"<= {_MIN_SLOPE}): a linear correction would divide by it; check the "
                         f"scans and their ages")
    return SiteCorrection(slope, level - slope * float(y.mean()), fitted, weight, int(y.size),
                          (float(y.min()), float(y.max())))


def _out_of_fold(y: np.ndarray, p: np.ndarray, folds: int, seed: int, fit: Any) -> np.ndarray:
    """Residuals ``age - corrected`` of each scan from a correction fitted on the other folds."""
    from sklearn.model_selection import KFold

    residuals = np.empty(y.size)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(y):
        correction = fit(y[fit_rows], p[fit_rows])
        residuals[held_rows] = y[held_rows] - correction.apply(p[held_rows])
    return residuals


@dataclass(frozen=True, eq=False)
class SiteCalibration:
    """A site's correction and conformal interval; :meth:`to_dict` / :meth:`from_dict` as JSON.

    Attributes
    ----------
    site : str
        The site's name.
    created : str
        Date of the fit (ISO 8601, ``YYYY-MM-DD``).
    correction : SiteCorrection
        Fitted on all the site's controls.
    interval : ConformalInterval
        Split-conformal interval of the cross-fitted residuals (age minus corrected age).
    prior : tuple of float or None
        The training line ``(slope, intercept)`` the slope was shrunk towards.
    prior_scans, min_span : float
        Settings of :func:`fit_site_correction`.
    folds, seed : int
        Cross-fitting folds (n: leave-one-out) and their seed.
    """

    site: str
    created: str
    correction: SiteCorrection
    interval: ConformalInterval
    prior: tuple[float, float] | None
    prior_scans: float
    min_span: float
    folds: int
    seed: int

    @property
    def n(self) -> int:
        return self.correction.n

    @property
    def level(self) -> float:
        return self.interval.level

    @property
    def half_width(self) -> float:
        """``q``: the interval is ``corrected ± q`` (before clipping to the age range)."""
        return float(self.interval.half_widths()[0])

    def predict(self, predicted: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(corrected, lower, upper)`` of each prediction (NaN where it is NaN), shape (m,)."""
        corrected = self.correction.apply(predicted)
        lower, upper = self.interval.predict(corrected)
        return corrected, lower, upper

    def to_dict(self) -> dict[str, Any]:
        c = self.correction
        return {"format": SITE_CALIBRATION_FORMAT, "site": self.site, "created": self.created,
                "n_scans": c.n, "age_range": list(c.age_range), "level": self.level,
                "correction": {"slope": c.slope, "intercept": c.intercept, "fitted": c.fitted,
                               "weight": c.weight},
                "prior": None if self.prior is None else {"slope": self.prior[0],
                                                          "intercept": self.prior[1]},
                "prior_scans": self.prior_scans, "min_span": self.min_span,
                "folds": self.folds, "seed": self.seed, "half_width": self.half_width,
                "interval": self.interval.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "site calibration"
                  ) -> SiteCalibration:
        """Rebuild from :meth:`to_dict` output; errors name ``source`` and the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must be a JSON object, got {type(data).__name__}")
        check_format_tag(data, SITE_CALIBRATION_FORMAT, source)
        try:
            c, prior = data["correction"], data["prior"]
            interval = ConformalInterval.from_dict(data["interval"], f"{source}.interval")
            age_range = tuple(float(v) for v in data["age_range"])
            correction = SiteCorrection(
                check_number("correction.slope", c["slope"], low=_MIN_SLOPE, low_open=True),
                check_number("correction.intercept", c["intercept"]), str(c["fitted"]),
                check_number("correction.weight", c["weight"], low=0.0, high=1.0),
                check_int("n_scans", data["n_scans"], low=1), (age_range[0], age_range[1]))
            if correction.fitted not in ("slope", "intercept"):
                raise ValueError(f"correction.fitted must be 'slope' or 'intercept', got "
                                 f"{correction.fitted!r}")
            if not math.isclose(float(data["level"]), interval.level):
                raise ValueError(f"level {data['level']} differs from the interval's "
                                 f"{interval.level}")
            datetime.date.fromisoformat(str(data["created"]))
            return cls(str(data["site"]), str(data["created"]), correction, interval,
                       None if prior is None else (float(prior["slope"]),
                                                   float(prior["intercept"])),
                       float(data["prior_scans"]), float(data["min_span"]),
                       check_int("folds", data["folds"], low=2), check_int("seed", data["seed"]))
        except KeyError as err:
            raise ValueError(f"{source} lacks the field {err}") from err
        except (TypeError, ValueError, IndexError) as err:
            raise ValueError(f"{source}: {err}") from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (refuses to overwrite an existing file)."""
        path = Path(path)
        with path.open("x", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SiteCalibration:
        """Read :meth:`save` output; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} cannot be read as a JSON site calibration: {err}") from err
        return cls.from_dict(data, source=str(path))


def fit_site_calibration(age: ArrayLike, predicted: ArrayLike, *, site: str,
                         prior: tuple[float, float] | None = None, prior_scans: float = 10.0,
                         min_span: float = 10.0, level: float = 0.9,
                         group: Sequence[Any] | None = None, controls: Sequence[str] = ("HC",),
                         folds: int | None = None, seed: int = 0,
                         created: str | None = None) -> SiteCalibration:
    """Fit a site's correction on its healthy controls and recalibrate the conformal interval.

    Parameters
    ----------
    age, predicted : array-like, shape (n,)
        Chronological and predicted (by the model, uncorrected) ages of the site's controls.
    site : str
        The site's name (non-empty).
    prior, prior_scans, min_span, group, controls
        See :func:`fit_site_correction`.
    level : float, default=0.9
        Nominal coverage; needs at least :func:`min_calibration_size` controls (10 at 0.9).
    folds : int, optional
        Cross-fitting folds (2 ... n); None: leave-one-out.
    seed : int, default=0
        Seed of the fold assignment.
    created : str, optional
        ISO date to record; default today (UTC).

    Returns
    -------
    SiteCalibration
    """
    if not isinstance(site, str) or not site.strip():
        raise ValueError(f"site must be a non-empty name, got {site!r}")
    y, p = _ages(age, predicted)
    needed = max(MIN_SITE_SCANS, min_calibration_size(check_number(
        "level", level, low=0.0, high=1.0, low_open=True, high_open=True)))
    if y.size < needed:
        raise ValueError(f"a site calibration at level {level:g} needs at least {needed} healthy "
                         f"controls with known ages (a split-conformal interval at {level:g} "
                         f"is the int((1 - level) (n + 1))-th largest of n cross-fitted "
                         f"residuals, which needs n >= {needed}); got {y.size}")
    settings = {"prior": prior, "prior_scans": prior_scans, "min_span": min_span,
                "controls": controls}
    correction = fit_site_correction(y, p, group=group, **settings)
    folds = y.size if folds is None else check_int("folds", folds, low=2, high=y.size)
    seed = check_int("seed", seed, low=0)
    if correction.fitted == "intercept":  # the folds keep the slope the whole set could not fit
        settings["min_span"] = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the folds repeat the whole set's warnings
        residuals = _out_of_fold(y, p, folds, seed, lambda a, b: fit_site_correction(
            a, b, min_scans=2, **settings))
    interval = ConformalInterval.fit(residuals, level=level, y_range=AGE_RANGE)
    created = created or datetime.datetime.now(datetime.UTC).date().isoformat()
    result = SiteCalibration(site, created, correction, interval,
                             None if prior is None else (float(prior[0]), float(prior[1])),
                             float(prior_scans), float(min_span), folds, seed)
    logger.info("site %s: %d controls aged %.1f-%.1f, slope %.3f (%s), intercept %.2f, %g "
                "interval ± %.2f y", site, y.size, *correction.age_range, correction.slope,
                correction.fitted, correction.intercept, level, result.half_width)
    return result


# --- the k-curve: calibrating on k scans of a site, measured on the others -------------------

#: The readings of :func:`calibration_curve`, in its table's order: the model as trained
#: (``"none"``), a plain linear age-bias refit on the k scans with the model's interval
#: (``"refit"``), the site calibration (``"site"``), the same without shrinking its slope
#: (``"site, own slope"``), and no model at all: the k scans' mean age (``"mean age"``).
CURVE_METHODS = ("none", "refit", "site", "site, own slope", "mean age")


def _measures(y: np.ndarray, estimate: np.ndarray, lower: np.ndarray, upper: np.ndarray
              ) -> dict[str, float]:
    """MAE, mean gap, Pearson r, coverage and width of one held-apart set (NaN bounds: none)."""
    bounded = bool(np.isfinite(lower).all() and np.isfinite(upper).all())
    return {"mae": float(np.mean(np.abs(estimate - y))), "gap": float(np.mean(estimate - y)),
            "r": float(np.corrcoef(y, estimate)[0, 1]) if np.ptp(estimate) > 0 else np.nan,
            "coverage": float(np.mean((lower <= y) & (y <= upper))) if bounded else np.nan,
            "width": float(np.mean(upper - lower)) if bounded else np.nan}


def _site_reading(y: np.ndarray, p: np.ndarray, cal: np.ndarray, ev: np.ndarray,
                  prior: tuple[float, float] | None, prior_scans: float, level: float
                  ) -> tuple[np.ndarray, ...] | None:
    """``(corrected, lower, upper)`` of the ``ev`` scans from a site calibration on ``cal``
    (bounds NaN below the interval's minimum: the correction alone); None when none fits."""
    none = np.full(ev.size, np.nan)
    try:
        if cal.size >= min_calibration_size(level):
            return fit_site_calibration(y[cal], p[cal], site="curve", prior=prior,
                                        prior_scans=prior_scans, level=level).predict(p[ev])
        correction = fit_site_correction(y[cal], p[cal], prior=prior, prior_scans=prior_scans)
    except ValueError:  # a slope too flat to divide by, or too narrow a span without a prior
        return None
    return correction.apply(p[ev]), none, none


def _readings(y: np.ndarray, p: np.ndarray, cal: np.ndarray, ev: np.ndarray,
              interval: ConformalInterval | None, prior: tuple[float, float] | None,
              prior_scans: float, level: float) -> dict[str, tuple[np.ndarray, ...]]:
    """Each method's ``(estimate, lower, upper)`` of the ``ev`` scans, calibrated on ``cal``."""
    none = np.full(ev.size, np.nan)

    def around(estimate: np.ndarray) -> tuple[np.ndarray, ...]:
        bounds = (none, none) if interval is None else interval.predict(
            estimate, estimate if interval.edges else None)
        return (estimate, *bounds)

    out = {"none": around(p[ev])}
    try:  # de Lange & Cole's linear correction; refused when its slope is not positive
        refit = AgeBiasCorrection.fit(y[cal], p[cal], method="linear")
        out["refit"] = around(refit.apply(y[ev], p[ev]))  # "linear" does not read the age
    except ValueError:
        pass
    for method, scans in (("site", prior_scans), ("site, own slope", 0.0)):
        found = _site_reading(y, p, cal, ev, prior, scans, level)
        if found is not None:
            out[method] = found
    mean = np.full(ev.size, y[cal].mean())
    if cal.size >= min_calibration_size(level):  # leave-one-out residuals of the mean age
        loo = y[cal] - (y[cal].sum() - y[cal]) / (cal.size - 1)
        out["mean age"] = (mean, *ConformalInterval.fit(loo, level=level).predict(mean))
    else:
        out["mean age"] = (mean, none, none)
    return out


def _summarise(runs: list[dict[str, float]], method: str, k: int, n_eval: int) -> dict[str, Any]:
    """Means and spread over the splits of one method at one k (NaN where none could be fitted)."""
    frame = pd.DataFrame(runs, columns=["mae", "gap", "r", "coverage", "width"], dtype=float)
    row: dict[str, Any] = {"k": k, "method": method, "splits": len(frame), "n_eval": n_eval}
    for column in ("mae", "gap", "r", "coverage", "width"):
        row[column] = frame[column].mean() if len(frame) else np.nan
        row[f"{column}_sd"] = frame[column].std() if len(frame) > 1 else np.nan
    row["abs_gap"] = frame["gap"].abs().mean() if len(frame) else np.nan
    row["gap_within_3"] = float((frame["gap"].abs() <= 3.0).mean()) if len(frame) else np.nan
    usable = frame["coverage"].dropna()
    row["coverage_p10"] = usable.quantile(0.1) if len(usable) else np.nan
    row["coverage_p90"] = usable.quantile(0.9) if len(usable) else np.nan
    return row


def calibration_curve(age: ArrayLike, predicted: ArrayLike, *,
                      interval: ConformalInterval | None = None,
                      prior: tuple[float, float] | None = None, ks: Sequence[int] = (5, 10, 20),
                      repeats: int = 200, seed: int = 0, level: float = 0.9,
                      prior_scans: float = 10.0, min_eval: int = 5) -> pd.DataFrame:
    """How well ``k`` calibration scans of a site read the site's other scans (repeated splits).

    For each ``k``, the scans are split ``repeats`` times at random into ``k`` calibration scans
    and the rest (the same permutations for every ``k``: a split at ``k = 5`` holds the first
    five scans of the split at ``k = 10``), and every method of :data:`CURVE_METHODS` is fitted
    on the ``k`` scans and measured on the rest. Below :func:`min_calibration_size` of ``level``
    the site calibration is the correction alone (coverage and width NaN).

    Parameters
    ----------
    age, predicted : array-like, shape (n,)
        Chronological and predicted (uncorrected) ages of one site's healthy controls (finite).
    interval : ConformalInterval, optional
        The model's own interval around its predictions (``"none"`` and ``"refit"``; NaN
        coverage without it). Its level must be ``level``.
    prior : tuple of float, optional
        The training correction's line (:func:`training_line`) the ``"site"`` slope is shrunk
        towards; None: no shrinkage.
    ks : sequence of int, default=(5, 10, 20)
        Calibration set sizes, each at least :data:`MIN_SITE_SCANS`.
    repeats : int, default=200
        Random splits per ``k``.
    seed : int, default=0
        Seed of the splits.
    level : float, default=0.9
        Nominal coverage of the intervals.
    prior_scans : float, default=10.0
        Worth of the prior slope in scans (:func:`fit_site_correction`).
    min_eval : int, default=5
        Fewest held-apart scans a split must leave: ``n >= max(ks) + min_eval``.

    Returns
    -------
    pandas.DataFrame
        One row per ``k`` and method: ``splits`` (splits where the method could be fitted; a
        linear refit whose slope is not positive, or a site slope too flat to divide by, is
        refused), ``n_eval``, the means over splits of ``mae``, ``gap`` (estimate minus age),
        ``r``, ``coverage`` and ``width`` of the interval, each with its SD over splits
        (``*_sd``), ``abs_gap`` (mean over splits of ``|gap|``), ``gap_within_3`` (share of
        splits with ``|gap| <= 3`` years), and the 10th and 90th percentiles of the coverage
        over splits.
    """
    y, p = _ages(age, predicted)
    level = check_number("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    if interval is not None:
        if not isinstance(interval, ConformalInterval):
            raise TypeError(f"interval must be a ConformalInterval or None, got "
                            f"{type(interval).__name__}")
        if not math.isclose(interval.level, level):
            raise ValueError(f"the model's interval is at level {interval.level:g}, the curve "
                             f"at {level:g}: coverage would compare different intervals")
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise TypeError(f"ks must be a non-empty sequence of integers, got {ks!r}")
    ks = sorted({check_int("ks", k) for k in ks})
    if ks[0] < MIN_SITE_SCANS:
        raise ValueError(f"ks: each calibration set needs at least {MIN_SITE_SCANS} scans (a "
                         f"site correction from fewer is noise); got k = {ks[0]}")
    min_eval = check_int("min_eval", min_eval, low=2)
    if y.size < ks[-1] + min_eval:
        raise ValueError(f"{y.size} scans are too few for k = {ks[-1]}: each split must leave "
                         f"at least {min_eval} scans to measure on (n >= k + {min_eval} = "
                         f"{ks[-1] + min_eval})")
    repeats = check_int("repeats", repeats, low=1)
    seed = check_int("seed", seed, low=0)
    prior_scans = check_number("prior_scans", prior_scans, low=0.0)
    rows = []
    for k in ks:
        rng = np.random.default_rng(seed)
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in CURVE_METHODS}
        for _ in range(repeats):
            order = rng.permutation(y.size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # narrow spans of small k: intercept only
                found = _readings(y, p, order[:k], order[k:], interval, prior, prior_scans,
                                  level)
            for method, (estimate, lower, upper) in found.items():
                runs[method].append(_measures(y[order[k:]], estimate, lower, upper))
        rows += [_summarise(runs[m], m, k, y.size - k) for m in CURVE_METHODS]
    return pd.DataFrame(rows)
