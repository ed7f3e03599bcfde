"""The OpenBHB challenge's metrics: site balanced accuracy of learned features, combined score.

The challenge [1]_ [2]_ scores a model by its MAE on the internal test set, its MAE on the
external test set (sites unseen in training), and the balanced accuracy with which a logistic
regression recovers the site from the model's features (:func:`site_balanced_accuracy`: lower
means less site information), combined by :func:`challenge_score`; :func:`benchmark_metrics`
gathers them. The features come from :func:`brainage.study.runs.run_site_balanced_accuracy`.

References
----------
.. [1] Dufumier B, Grigis A, Victor J, Ambroise C, Frouin V, Duchesnay E. OpenBHB: a large-scale
   multi-site brain MRI data-set for age prediction and debiasing. NeuroImage 263, 119637 (2022).
   doi:10.1016/j.neuroimage.2022.119637
.. [2] The OpenBHB challenge, RAMP kit ``brain_age_with_site_removal`` (scoring described in [1]).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from brainage._utils import check_int
from brainage.analysis.metrics import regression_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "C_GRID",
    "N_SITES",
    "benchmark_metrics",
    "challenge_score",
    "site_balanced_accuracy",
]

#: Number of sites in the challenge's combined score.
N_SITES = 64
#: Inverse regularisation strengths tried by the site classifier.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def site_balanced_accuracy(train_features: ArrayLike, train_sites: ArrayLike,
                           test_features: ArrayLike, test_sites: ArrayLike, *, seed: int = 0,
                           c_grid: Sequence[float] = C_GRID, standardize: bool = False) -> float:
    """Balanced accuracy of recovering the site from features: the challenge's debiasing score.

    A multinomial logistic regression is fitted on the training features and sites, its ``C``
    chosen from ``c_grid`` by stratified K-fold cross-validation scored by balanced accuracy, then
    refitted on all training features and scored on the test set. Lower is better (less site
    information); chance is 1 / number of sites. The folds are ``min(5, smallest site count)``
    (5 in the challenge), so that every fold holds every site.

    Parameters
    ----------
    train_features : array-like, shape (N, D)
        Features (e.g. the encoder's representation) of the training scans.
    train_sites : array-like, shape (N,)
        Their site labels (compared as text); at least 2 sites, each with at least 2 scans.
    test_features : array-like, shape (M, D)
        Features of the test scans (the internal test set: the same sites).
    test_sites : array-like, shape (M,)
        Their site labels; a site absent from training counts as misclassified (with a warning).
    seed : int, default=0
        Seed of the fold shuffling.
    c_grid : sequence of float, default=C_GRID
        Inverse regularisation strengths tried (the challenge's 10^-2 ... 10^2).
    standardize : bool, default=False
        Scale each feature to zero mean and unit variance on the training set first (inside the
        cross-validation), so that the ``C`` grid means the same for features of any scale. The
        challenge fits the raw features (off by default, so that scores compare with its
        leaderboard); its solver (saga, 150 iterations) is replaced by lbfgs run to convergence,
        which estimates the same model.

    Returns
    -------
    float
        Balanced accuracy on the test set, in [0, 1].

    Raises
    ------
    ValueError
        Bad shapes, non-finite features, fewer than 2 sites, or a site with 1 training scan.

    References
    ----------
    .. [1] Dufumier B et al. OpenBHB: a large-scale multi-site brain MRI data-set for age
       prediction and debiasing. NeuroImage 263, 119637 (2022).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _features(train_features, train_sites, "train")
    x_test, y_test = _features(test_features, test_sites, "test")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train_features and test_features must have the same number of "
                         f"features; got {x_train.shape[1]} and {x_test.shape[1]}")
    n_splits = _n_folds(y_train)
    unseen = sorted(str(site) for site in set(y_test) - set(y_train))
    if unseen:
        warnings.warn(f"test_sites: site(s) {unseen[:10]} have no training scan; their scans "
                      f"count as misclassified", stacklevel=2)
    if not c_grid or not all(math.isfinite(c) and c > 0 for c in c_grid):
        raise ValueError(f"c_grid: expected positive finite numbers, got {c_grid!r}")
    steps = [StandardScaler()] if standardize else []
    model = make_pipeline(*steps, LogisticRegression(max_iter=2000))
    search = GridSearchCV(model, {"logisticregression__C": list(c_grid)},
                          scoring="balanced_accuracy", refit=True,
                          cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed))
    search.fit(x_train, y_train)
    bacc = float(balanced_accuracy_score(y_test, search.predict(x_test)))
    logger.info("site balanced accuracy %.3f (%d sites, %d-fold CV, C=%g)", bacc,
                len(set(y_train)), n_splits, search.best_params_["logisticregression__C"])
    return bacc


def _features(features: ArrayLike, sites: ArrayLike, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) finite float features and their (N,) site labels as text, checked."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(sites).astype(str)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{which}_features and {which}_sites: expected shapes (N, D) and (N,) "
                         f"with N > 0; got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{which}_features: {int((~np.isfinite(x)).sum())} NaN or infinite "
                         f"value(s)")
    return x, y


def _n_folds(sites: np.ndarray) -> int:
    """``min(5, smallest site count)`` stratified folds; an error below 2."""
    labels, counts = np.unique(sites, return_counts=True)
    if len(labels) < 2:
        raise ValueError(f"train_sites: need at least 2 sites to classify; got {list(labels)}")
    if counts.min() < 2:
        rare = labels[counts < 2].tolist()
        raise ValueError(f"train_sites: site(s) {rare[:10]} have a single training scan; "
                         f"stratified cross-validation needs at least 2 per site (drop or merge "
                         f"them)")
    return int(min(5, counts.min()))


def challenge_score(mae_internal: float, mae_external: float, bacc: float,
                    n_sites: int = N_SITES) -> float:
    """The challenge's combined score: ``mae_external * bacc + mae_internal / n_sites``.

    Lower is better: the external error is weighted by how much site information the features
    hold, and the internal error counts a little.

    Parameters
    ----------
    mae_internal : float
        MAE (years) on the internal test set; non-negative.
    mae_external : float
        MAE (years) on the external test set; non-negative.
    bacc : float
        Site balanced accuracy (:func:`site_balanced_accuracy`), in [0, 1].
    n_sites : int, default=64
        Number of sites (64 in the challenge).

    Returns
    -------
    float

    References
    ----------
    .. [1] Dufumier B et al. OpenBHB: a large-scale multi-site brain MRI data-set for age
       prediction and debiasing. NeuroImage 263, 119637 (2022).
    """
    for name, value in (("mae_internal", mae_internal), ("mae_external", mae_external)):
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")
    if not _is_number(bacc) or not 0 <= bacc <= 1:
        raise ValueError(f"bacc: expected a balanced accuracy in [0, 1], got {bacc!r}")
    check_int("n_sites", n_sites, low=1)
    return float(mae_external * bacc + mae_internal / n_sites)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def benchmark_metrics(predictions: pd.DataFrame, *,
                      site_bacc: float | Mapping[str, float] | None = None,
                      column: str = "predicted", n_sites: int = N_SITES, n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """The benchmark's metrics of each model, as a tidy table.

    Parameters
    ----------
    predictions : pandas.DataFrame
        One row per scan (and model): ``split`` (``test`` for the internal test set,
        ``external_test``, as :func:`brainage.data.splits.benchmark_splits` names them; other
        rows are ignored), ``age``, ``column`` and optionally ``model`` (else one model,
        ``"model"``).
    site_bacc : float or mapping of str to float, optional
        Site balanced accuracy (:func:`site_balanced_accuracy`) of each model (a float for a
        single model); without it the table holds the two MAEs only.
    column : str, default="predicted"
        The predicted age column (e.g. ``corrected_predicted``).
    n_sites : int, default=64
        Number of sites in :func:`challenge_score`.
    n_boot : int, default=2000
        Bootstrap resamples of the MAE confidence intervals
        (:func:`brainage.analysis.metrics.regression_metrics`).
    seed : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, metric, value, ci_low, ci_high, ci_method, n``; metrics
        ``mae_internal``, ``mae_external`` (95 % CIs), and with ``site_bacc`` also ``site_bacc``
        and ``challenge_score`` (no CI: NaN), in that order per model.
    """
    data = _benchmark_rows(predictions, column)
    baccs = _baccs(site_bacc, list(data["model"].unique()))
    rows = []
    for model, frame in data.groupby("model", sort=False):
        maes = {}
        for metric, split in (("mae_internal", "test"), ("mae_external", "external_test")):
            part = frame[frame["split"] == split]
            stats = regression_metrics(part["age"], part[column], n_boot=n_boot, seed=seed)
            maes[metric] = stats["mae"]["value"]
            rows.append({"model": model, "metric": metric, **stats["mae"], "n": stats["n"]})
        if baccs is not None:
            bacc = baccs[str(model)]
            score = challenge_score(maes["mae_internal"], maes["mae_external"], bacc, n_sites)
            for metric, value in (("site_bacc", bacc), ("challenge_score", score)):
                rows.append({"model": model, "metric": metric, "value": value,
                             "ci_low": np.nan, "ci_high": np.nan, "ci_method": "", "n": np.nan})
    return pd.DataFrame(rows)[["model", "metric", "value", "ci_low", "ci_high", "ci_method", "n"]]


def _benchmark_rows(predictions: pd.DataFrame, column: str) -> pd.DataFrame:
    """The internal and external test rows, with a model column; checked."""
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions: expected a pandas DataFrame, "
                        f"got {type(predictions).__name__}")
    missing = [c for c in ("split", "age", column) if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions: missing column(s) {', '.join(missing)}; given: "
                         f"{', '.join(map(str, predictions.columns))}")
    data = predictions[predictions["split"].isin(["test", "external_test"])]
    if data.empty:
        raise ValueError(f"predictions: no row of split 'test' or 'external_test'; splits "
                         f"found: {sorted(set(predictions['split'].astype(str)))}")
    if "model" not in data.columns:
        data = data.assign(model="model")
    for model, frame in data.groupby("model", sort=False):
        counts = frame["split"].value_counts()
        for split in ("test", "external_test"):
            if counts.get(split, 0) < 2:
                raise ValueError(f"predictions: model {model!r} has {counts.get(split, 0)} "
                                 f"row(s) of split {split!r}; the benchmark needs at least 2")
    return data


def _baccs(site_bacc: float | Mapping[str, float] | None,
           models: list) -> dict[str, float] | None:
    """Each model's site balanced accuracy, or None."""
    if site_bacc is None:
        return None
    if isinstance(site_bacc, Mapping):
        missing = [m for m in map(str, models) if m not in site_bacc]
        if missing:
            raise ValueError(f"site_bacc: no value for model(s) {missing}; given for "
                             f"{sorted(site_bacc)}")
        return {str(m): float(site_bacc[str(m)]) for m in models}
    if len(models) != 1:
        raise ValueError(f"site_bacc: a single number is ambiguous for {len(models)} models "
                         f"{models}; pass a mapping model -> balanced accuracy")
    return {str(models[0]): float(site_bacc)}
