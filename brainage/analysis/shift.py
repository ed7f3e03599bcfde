"""Batch shift tests: do several scans of one site differ from the training scans?

The per-scan OOD score (:class:`brainage.analysis.uncertainty.FeatureOOD`) asks whether *one*
scan lies far from the training scans; a scanner shift moves a whole batch by less than one
scan's spread and passes it. A two-sample test on the batch sees the shift in the batch's mean
and shape:

* :func:`mmd_test`: maximum mean discrepancy [1]_ between the batch's encoder features and the
  training (reference) features, Gaussian kernel with the median-distance bandwidth of the
  pooled sample, and a permutation p-value [2]_ (exact in level: a batch exchangeable with
  the reference gives ``p <= alpha`` with probability at most ``alpha``);
* :func:`gap_test`: when the batch's healthy controls have known ages, a one-sample t-test of
  their mean brain-age gap against zero.

Numbers only (dataclasses); the words are the report layer's.

References
----------
.. [1] Gretton, A., Borgwardt, K. M., Rasch, M. J., Schölkopf, B., Smola, A. (2012). A kernel
   two-sample test. JMLR 13, 723-773.
.. [2] Rabanser, S., Günnemann, S., Lipton, Z. C. (2019). Failing loudly: an empirical study of
   methods for detecting dataset shift. NeurIPS 2019.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from brainage._utils import check_int, check_number

if TYPE_CHECKING:
    from brainage.analysis.uncertainty import FeatureOOD

logger = logging.getLogger(__name__)

__all__ = ["BatchShift", "GapTest", "MMDTest", "batch_shift", "gap_test", "mmd_statistic",
           "mmd_test"]


def _pair(batch: ArrayLike, reference: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both feature matrices, checked, with one feature count."""
    x, y = _features(batch, "batch"), _features(reference, "reference")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"batch and reference must have the same features per row: batch has "
                         f"{x.shape[1]}, reference {y.shape[1]} (features of another model?)")
    return x, y


def _features(values: ArrayLike, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 2-D array of numbers, got "
                        f"{type(values).__name__}") from err
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {array.shape}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} row(s) with NaN or infinite features "
                         f"(first: row {int(np.argmax(bad))}); leave failed scans out")
    return array


def _kernel(pooled: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian kernel matrix of the rows, zero diagonal (the unbiased statistic skips it)."""
    norms = np.einsum("ij,ij->i", pooled, pooled)
    squared = np.maximum(norms[:, None] - 2.0 * pooled @ pooled.T + norms[None, :], 0.0)
    kernel = np.exp(-squared / (2.0 * bandwidth**2))
    np.fill_diagonal(kernel, 0.0)
    return kernel


def _median_bandwidth(pooled: np.ndarray) -> float:
    """Median pairwise distance of the pooled rows (the median heuristic, Gretton et al.)."""
    norms = np.einsum("ij,ij->i", pooled, pooled)
    squared = np.maximum(norms[:, None] - 2.0 * pooled @ pooled.T + norms[None, :], 0.0)
    upper = np.sqrt(squared[np.triu_indices(pooled.shape[0], k=1)])
    median = float(np.median(upper))
    return median if median > 0 else 1.0


def _unbiased_mmd2(kernel: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Unbiased MMD² of each assignment: ``members`` (B, N + m) holds 1 for the batch's rows.

    With ``s`` a row of ``members`` and the zero-diagonal kernel ``K``: the batch's sum is
    ``s'Ks``, the reference's ``(1-s)'K(1-s)``, the cross sum ``s'K(1-s)``.
    """
    m = members.sum(axis=1)
    n = members.shape[1] - m
    ks = members @ kernel  # (B, N + m)
    total = kernel.sum()
    within = np.einsum("bi,bi->b", ks, members)  # s'Ks
    cross = ks.sum(axis=1) - within  # s'K1 - s'Ks = s'K(1-s)
    rest = total - 2.0 * cross - within  # (1-s)'K(1-s) = 1'K1 - 2 s'K(1-s) - s'Ks
    return within / (m * (m - 1)) + rest / (n * (n - 1)) - 2.0 * cross / (m * n)


def mmd_statistic(batch: ArrayLike, reference: ArrayLike, bandwidth: float) -> float:
    """Unbiased squared MMD of ``batch`` (m, D) and ``reference`` (N, D), Gaussian kernel."""
    x, y = _pair(batch, reference)
    bandwidth = check_number("bandwidth", bandwidth, low=0.0, low_open=True)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 rows on each side, got "
                         f"{x.shape[0]} and {y.shape[0]}")
    members = np.zeros((1, x.shape[0] + y.shape[0]))
    members[0, :x.shape[0]] = 1.0
    return float(_unbiased_mmd2(_kernel(np.vstack([x, y]), bandwidth), members)[0])


@dataclass(frozen=True)
class MMDTest:
    """Outcome of :func:`mmd_test`.

    Attributes
    ----------
    n_batch, n_reference : int
        Rows on each side.
    statistic : float
        Unbiased squared MMD.
    p_value : float
        Permutation p-value ``(1 + #{permuted >= observed}) / (1 + permutations)``.
    permutations : int
    bandwidth : float
        Gaussian kernel's sigma (median pooled distance).
    """

    n_batch: int
    n_reference: int
    statistic: float
    p_value: float
    permutations: int
    bandwidth: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mmd_test(batch: ArrayLike, reference: ArrayLike, *, permutations: int = 1000,
             bandwidth: float | None = None, seed: int = 0) -> MMDTest:
    """Permutation two-sample test of ``batch`` against ``reference`` by maximum mean discrepancy.

    Parameters
    ----------
    batch : array-like, shape (m, D)
        Features of the new scans (m >= 2; finite: leave failed scans out).
    reference : array-like, shape (N, D)
        Features of the training (or validation) scans, in the same units (e.g. standardised
        by the training mean and SD, as :class:`~brainage.analysis.uncertainty.FeatureOOD`
        stores them).
    permutations : int, default=1000
        Random relabellings of the pooled rows (>= 19, so that p can reach 0.05).
    bandwidth : float, optional
        Kernel sigma; default the median pairwise distance of the pooled rows (label-free, so
        the permutation test keeps its level).
    seed : int, default=0
        Seed of the permutations.

    Returns
    -------
    MMDTest
    """
    x, y = _pair(batch, reference)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"a two-sample test needs at least 2 scans in the batch and in the "
                         f"reference, got {x.shape[0]} and {y.shape[0]}")
    permutations = check_int("permutations", permutations, low=19)
    pooled = np.vstack([x, y])
    sigma = (_median_bandwidth(pooled) if bandwidth is None
             else check_number("bandwidth", bandwidth, low=0.0, low_open=True))
    kernel = _kernel(pooled, sigma)
    rng = np.random.default_rng(seed)
    members = np.zeros((permutations + 1, pooled.shape[0]))
    members[0, :x.shape[0]] = 1.0  # the observed assignment
    for b in range(1, permutations + 1):
        members[b, rng.permutation(pooled.shape[0])[:x.shape[0]]] = 1.0
    values = _unbiased_mmd2(kernel, members)
    p_value = (1 + int(np.sum(values[1:] >= values[0] - 1e-12))) / (1 + permutations)
    logger.info("MMD test: %d vs %d scans, MMD² %.4g, p = %.4g (%d permutations)", x.shape[0],
                y.shape[0], values[0], p_value, permutations)
    return MMDTest(int(x.shape[0]), int(y.shape[0]), float(values[0]), float(p_value),
                   permutations, float(sigma))


@dataclass(frozen=True)
class GapTest:
    """Outcome of :func:`gap_test`: the controls' mean gap against zero.

    Attributes
    ----------
    n : int
    mean_gap : float
        Mean of predicted minus chronological age (years).
    ci_low, ci_high : float
        Its confidence interval (t distribution).
    confidence : float
    t : float
    p_value : float
        Two-sided.
    """

    n: int
    mean_gap: float
    ci_low: float
    ci_high: float
    confidence: float
    t: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gap_test(gap: ArrayLike, *, confidence: float = 0.95) -> GapTest:
    """One-sample t-test of healthy controls' brain-age gaps against 0 (``scipy.stats``).

    Parameters
    ----------
    gap : array-like, shape (n,)
        Predicted minus chronological age of the batch's controls (n >= 2, finite).
    confidence : float, default=0.95
        Of the mean's interval.
    """
    try:
        g = np.asarray(gap, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"gap must be a 1-D array of numbers, got {type(gap).__name__}") from err
    if g.ndim != 1:
        raise ValueError(f"gap must be 1-D, got shape {g.shape}")
    bad = ~np.isfinite(g)
    if bad.any():
        raise ValueError(f"gap holds {int(bad.sum())} NaN or infinite value(s) (first at scan "
                         f"{int(np.argmax(bad))}): leave scans without an age out")
    if g.size < 2:
        raise ValueError(f"a test of the mean gap needs at least 2 controls, got {g.size}")
    confidence = check_number("confidence", confidence, low=0.0, high=1.0, low_open=True,
                              high_open=True)
    if np.ptp(g) == 0:  # no spread: the t statistic is undefined
        return GapTest(int(g.size), float(g[0]), float(g[0]), float(g[0]), confidence,
                       math.copysign(math.inf, g[0]) if g[0] else math.nan,
                       0.0 if g[0] else 1.0)
    result = stats.ttest_1samp(g, 0.0)
    ci = result.confidence_interval(confidence_level=confidence)
    return GapTest(int(g.size), float(g.mean()), float(ci.low), float(ci.high), confidence,
                   float(result.statistic), float(result.pvalue))


@dataclass(frozen=True)
class BatchShift:
    """A batch's verdict numbers: the feature test and, when ages are known, the gap test.

    Attributes
    ----------
    features : MMDTest
        Batch against the model's training reference.
    gap : GapTest or None
        The controls' mean gap against 0 (None: fewer than 2 controls with an age).
    n_failed : int
        Scans left out for lack of features (failed preprocessing).
    """

    features: MMDTest
    gap: GapTest | None
    n_failed: int

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features.to_dict(),
                "gap": None if self.gap is None else self.gap.to_dict(),
                "n_failed": self.n_failed}


def batch_shift(ood: FeatureOOD, features: ArrayLike, *, gap: ArrayLike | None = None,
                permutations: int = 1000, seed: int = 0) -> BatchShift:
    """Test a batch of scans of one site against a head's training reference.

    Parameters
    ----------
    ood : FeatureOOD
        The head's OOD reference (``ood.npz``): standardised training features, their mean
        and scale; the batch is standardised the same way.
    features : array-like, shape (m, D)
        The batch's feature statistics (:mod:`brainage.models.features`); rows with NaN
        (failed scans) are left out and counted.
    gap : array-like, shape (c,), optional
        Brain-age gaps of the batch's healthy controls with known ages (NaN left out).
    permutations, seed
        Of :func:`mmd_test`.
    """
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"features must be a 2-D array of numbers, got "
                        f"{type(features).__name__}") from err
    if x.ndim != 2 or x.shape[1] != ood.feature_dim:
        raise ValueError(f"features must have shape (m, {ood.feature_dim}) (the reference's "
                         f"feature count), got shape {x.shape}")
    usable = np.isfinite(x).all(axis=1)
    result = mmd_test((x[usable] - ood.mean) / ood.scale, ood.reference,
                      permutations=permutations, seed=seed)
    gaps = None
    if gap is not None:
        g = np.asarray(gap, dtype=np.float64).ravel()
        g = g[np.isfinite(g)]
        gaps = gap_test(g) if g.size >= 2 else None
    return BatchShift(result, gaps, int((~usable).sum()))
