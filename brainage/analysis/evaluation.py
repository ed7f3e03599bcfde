"""Evaluation of trained models: predictions for every held-out scan, bias correction, metrics.

The statistics are in :mod:`brainage.analysis.metrics`; this module applies them to the
predictions of a run in the
order that keeps the test set clean: predictions of the validation, test and clinical scans;
age-bias correction fitted on the validation split only and applied to every row; test-set
metrics and the paired RNC-vs-L1 comparison.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from brainage._utils.columns import EVALUATION_COLUMNS
from brainage.analysis.metrics import (
    AgeBiasCorrection,
    fit_bias_correction_on_split,
    irreducible_error,
    mean_age_baseline,
    paired_comparison,
    regression_metrics,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATION_COLUMNS",
    "correct_predictions",
    "evaluate_predictions",
]

#: Columns of ``predictions.csv``: the scan, then the shared prediction values.


def correct_predictions(predictions: pd.DataFrame, *, method: str = "linear",
                        fit_split: str = "val"
                        ) -> tuple[pd.DataFrame, dict[str, AgeBiasCorrection]]:
    """Fit the age-bias correction of each model on ``fit_split`` and apply it to every row.

    Parameters
    ----------
    predictions : DataFrame
        From :func:`brainage.study.runs.predict_run`.
    method : str, default="linear"
        See :class:`brainage.analysis.metrics.AgeBiasCorrection`.
    fit_split : str, default="val"
        The only split the correction is fitted on (never the test set).

    Returns
    -------
    (DataFrame, dict)
        Predictions with ``corrected_predicted`` and ``corrected_gap``, and each model's fitted
        correction.
    """
    out = predictions.copy()
    corrections: dict[str, AgeBiasCorrection] = {}
    out["corrected_predicted"] = np.nan
    for name, rows in out.groupby("model", sort=False):
        correction = fit_bias_correction_on_split(rows, split=fit_split, method=method)
        corrections[str(name)] = correction
        out.loc[rows.index, "corrected_predicted"] = correction.apply(
            rows["age"].to_numpy(), rows["predicted"].to_numpy())
    out["corrected_gap"] = out["corrected_predicted"] - out["age"]
    return out[list(EVALUATION_COLUMNS)], corrections


def evaluate_predictions(predictions: pd.DataFrame, *, train_ages: Sequence[float],
                         truth: pd.DataFrame | None = None, n_boot: int = 2000,
                         seed: int = 0, compare: tuple[str, str] = ("rnc", "l1"),
                         corrections: Mapping[str, AgeBiasCorrection] | None = None
                         ) -> dict[str, Any]:
    """Test-set metrics of each model (raw and bias-corrected), the paired comparison, floors.

    Parameters
    ----------
    predictions : DataFrame
        From :func:`correct_predictions`.
    train_ages : sequence of float
        Ages of the training scans (for the mean-age predictor).
    truth : DataFrame, optional
        Simulated ground truth with participant_id and biological_age: adds the irreducible
        error (MAE of the true biological age as a prediction) on the same test subjects.
    n_boot : int, default=2000
        Bootstrap resamples of the confidence intervals.
    seed : int, default=0
        Seed of the bootstrap.
    compare : tuple of str, default=("rnc", "l1")
        The two models of the paired comparison (a, b): the difference is MAE(a) - MAE(b).
    corrections : dict of str to AgeBiasCorrection, optional
        Each model's fitted correction (from :func:`correct_predictions`). A correction that
        uses the subject's own age (``beheshti``, ``quadratic``: ``uses_age``) builds the
        corrected prediction from the age it is scored against, so its corrected metrics are
        circular and are omitted: ``"corrected"`` is then ``{"omitted": reason}``.

    Returns
    -------
    dict
        ``{"n_test", "models": {name: {"raw": metrics, "corrected": metrics}},
        "comparison": paired comparison, "baselines": {...}}`` (plain JSON types).
    """
    test = predictions[predictions["split"] == "test"]
    if test.empty:
        raise ValueError("predictions hold no test rows")
    result: dict[str, Any] = {"n_test": int(test["participant_id"].nunique()), "models": {}}
    for name, rows in test.groupby("model", sort=False):
        age = rows["age"].to_numpy()
        entry = {"raw": regression_metrics(age, rows["predicted"].to_numpy(), n_boot=n_boot,
                                           seed=seed)}
        correction = (corrections or {}).get(str(name))
        if correction is not None and correction.uses_age:
            entry["corrected"] = {"omitted": (
                f"the {correction.method} correction subtracts an offset computed from each "
                "test subject's own age, so corrected accuracy against that age is circular")}
        else:
            entry["corrected"] = regression_metrics(age, rows["corrected_predicted"].to_numpy(),
                                                    n_boot=n_boot, seed=seed)
        result["models"][str(name)] = entry
    if all(m in result["models"] for m in compare):
        wide = test.pivot(index="participant_id", columns="model", values="predicted")
        ages = test.drop_duplicates("participant_id").set_index("participant_id")["age"]
        result["comparison"] = paired_comparison(ages.loc[wide.index].to_numpy(),
                                                 wide[compare[0]].to_numpy(),
                                                 wide[compare[1]].to_numpy(),
                                                 n_boot=n_boot, seed=seed, names=compare)
    ages = test.drop_duplicates("participant_id")
    baselines = {"mean_age_mae": mean_age_baseline(train_ages, ages["age"].to_numpy())}
    if truth is not None:
        joined = ages.merge(truth[["participant_id", "biological_age"]], on="participant_id")
        baselines["irreducible_mae"] = irreducible_error(joined["age"].to_numpy(),
                                                         joined["biological_age"].to_numpy())
    result["baselines"] = baselines
    return json.loads(json.dumps(result, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
