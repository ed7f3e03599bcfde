"""Test-retest reliability of predictions: ICC, Bland-Altman agreement, smallest detectable change.

Numbers and tables only (the words are :mod:`brainage.study.sentences`'). A *pair table* holds
one row per subject, model, comparison and measure with the value of the first scan
(``first``) and of the rescan (``second``); :func:`pair_sessions` builds it from a prediction
table with a ``session`` column. For each group of pairs, :func:`reliability_table` reports

- ICC(2,1) (two-way random effects, absolute agreement, single measurement) and ICC(3,1)
  (two-way mixed, consistency) with their 95% CIs, from pingouin's ``intraclass_corr``
  (McGraw & Wong 1996; pingouin rounds the CI bounds to two decimals);
- the Bland-Altman mean difference (second minus first) and 95% limits of agreement
  (mean ± 1.96 SD of the differences; Bland & Altman 1986), and the mean absolute difference;
- the standard error of measurement, here the within-subject SD
  ``SEM = sqrt(mean(d^2) / 2)`` (a systematic offset between the sessions counts as error,
  as it does for a user comparing two scans), and the smallest detectable change
  ``SDC = 1.96 * sqrt(2) * SEM`` (Weir 2005), with percentile-bootstrap 95% CIs over subjects.

:func:`paired_sem_difference` compares two models' SEM on the same subjects (bootstrap over
subjects, both models resampled together), the paired test of which model is more repeatable.

The field's reference: Dörfel et al. (2023) measured test-retest ICCs of six public brain-age
packages on scan-rescan data of 372 healthy adults; the best three reach 0.94-0.98.

References
----------
.. [1] McGraw K.O., Wong S.P. (1996). Forming inferences about some intraclass correlation
   coefficients. Psychol Methods 1(1), 30-46.
.. [2] Bland J.M., Altman D.G. (1986). Statistical methods for assessing agreement between two
   methods of clinical measurement. Lancet 327(8476), 307-310.
.. [3] Weir J.P. (2005). Quantifying test-retest reliability using the intraclass correlation
   coefficient and the SEM. J Strength Cond Res 19(1), 231-240.
.. [4] Dörfel R.P. et al. (2023). Prediction of brain age using structural magnetic resonance
   imaging: a comparison of accuracy and test-retest reliability of publicly available
   software packages. Hum Brain Mapp 44(17), 6139-6148.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["RELIABILITY_COLUMNS", "agreement", "icc", "pair_sessions", "paired_sem_difference",
           "reliability_table", "sdc_from_sem"]

#: Columns of :func:`reliability_table` after its group keys.
RELIABILITY_COLUMNS = ("n", "icc2", "icc2_low", "icc2_high", "icc3", "icc3_low", "icc3_high",
                       "mean_diff", "loa_low", "loa_high", "mad", "mad_low", "mad_high", "sem",
                       "sdc", "sdc_low", "sdc_high")
_Z = 1.959963984540054  # the 97.5th normal percentile


def _pairs(first: Sequence[float], second: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"first and second must be 1-D of equal length, got shapes {a.shape} "
                         f"and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("first and second must be finite (drop failed scans before)")
    if len(a) < 3:
        raise ValueError(f"at least 3 subjects with two scans are needed, got {len(a)}")
    return a, b


def sdc_from_sem(sem: float) -> float:
    """Smallest detectable change at 95% of a difference of two scans: 1.96 * sqrt(2) * SEM."""
    return float(_Z * np.sqrt(2.0) * sem)


def icc(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) of two scans per subject, with 95% CIs (pingouin).

    Parameters
    ----------
    first, second : sequence of float, shape (n,)
        One value per subject from each scan (the same subject at the same position).

    Returns
    -------
    dict
        ``icc2``, ``icc2_low``, ``icc2_high``, ``icc3``, ``icc3_low``, ``icc3_high``.
    """
    import pingouin as pg

    a, b = _pairs(first, second)
    n = len(a)
    long = pd.DataFrame({"subject": np.r_[np.arange(n), np.arange(n)],
                         "scan": ["first"] * n + ["second"] * n, "value": np.r_[a, b]})
    table = pg.intraclass_corr(long, targets="subject", raters="scan", ratings="value")
    ci = next(c for c in table.columns if str(c).startswith("CI95"))  # 'CI95' or 'CI95%'
    table = table.set_index("Type")
    out = {}
    # pingouin >= 0.6 names them ICC(A,1) (= ICC2) and ICC(C,1) (= ICC3); older ones ICC2, ICC3
    for key, names in (("icc2", ("ICC(A,1)", "ICC2")), ("icc3", ("ICC(C,1)", "ICC3"))):
        row = table.loc[next(x for x in names if x in table.index)]
        out[key] = float(row["ICC"])
        out[f"{key}_low"], out[f"{key}_high"] = (float(v) for v in row[ci])
    return out


def _sem(d: np.ndarray) -> np.ndarray:
    """Within-subject SD from differences ``d`` (last axis over subjects)."""
    return np.sqrt(np.mean(d**2, axis=-1) / 2.0)


def agreement(first: Sequence[float], second: Sequence[float], *, n_boot: int = 2000,
              seed: int = 0) -> dict[str, float]:
    """Bland-Altman agreement, SEM and smallest detectable change of two scans per subject.

    Parameters
    ----------
    first, second : sequence of float, shape (n,)
        One value per subject from each scan.
    n_boot : int, default=2000
        Bootstrap resamples of subjects for the CIs of ``mad`` and ``sdc``.
    seed : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``n``; ``mean_diff`` (second minus first), ``loa_low``/``loa_high`` (mean ± 1.96 SD of
        the differences); ``mad`` (mean absolute difference) with ``mad_low``/``mad_high``;
        ``sem`` (within-subject SD, offset included) and ``sdc`` (1.96 sqrt(2) SEM) with
        ``sdc_low``/``sdc_high`` (percentile bootstrap, 95%).
    """
    a, b = _pairs(first, second)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    d = b - a
    sd = float(d.std(ddof=1))
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    boot = d[idx]  # (n_boot, n)
    mad_boot = np.abs(boot).mean(axis=1)
    sdc_boot = _Z * np.sqrt(2.0) * _sem(boot)
    sem = float(_sem(d))
    return {"n": len(d), "mean_diff": float(d.mean()), "loa_low": float(d.mean() - _Z * sd),
            "loa_high": float(d.mean() + _Z * sd), "mad": float(np.abs(d).mean()),
            "mad_low": float(np.percentile(mad_boot, 2.5)),
            "mad_high": float(np.percentile(mad_boot, 97.5)), "sem": sem,
            "sdc": sdc_from_sem(sem), "sdc_low": float(np.percentile(sdc_boot, 2.5)),
            "sdc_high": float(np.percentile(sdc_boot, 97.5))}


def pair_sessions(predictions: pd.DataFrame, *, reference: str = "",
                  comparisons: Mapping[str, str],
                  measures: Sequence[str] = ("predicted", "corrected_gap"),
                  keys: Sequence[str] = ("participant_id", "model")) -> pd.DataFrame:
    """Pair each subject's reference scan with its rescans.

    Parameters
    ----------
    predictions : DataFrame
        One row per scan and model with ``session``, the ``keys`` and the ``measures``
        (e.g. :func:`brainage.inference.predict.predict_scans`' table of the cohort's scans and
        their rescans). Rows with a non-empty ``error`` column or a missing value are left out.
    reference : str, default=""
        Session of the first scan (the cohort's own scans have none).
    comparisons : mapping of str to str
        Comparison name to the rescan's session, e.g. ``{"within site": "ses-repeat"}``.
    measures : sequence of str, default=("predicted", "corrected_gap")
    keys : sequence of str, default=("participant_id", "model")

    Returns
    -------
    DataFrame
        Columns ``keys``, ``comparison``, ``measure``, ``first``, ``second``.
    """
    keys = list(keys)
    missing = {"session", *keys, *measures} - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack the columns {sorted(missing)}")
    table = predictions.fillna({"session": ""})
    if "error" in table.columns:
        table = table[table["error"].fillna("") == ""]
    first = table[table["session"] == reference]
    if first.duplicated(keys).any():
        raise ValueError(f"predictions hold more than one {reference!r} scan per {keys}")
    frames = []
    for name, session in comparisons.items():
        second = table[table["session"] == session]
        merged = first.merge(second, on=keys, suffixes=("_a", "_b"))
        for measure in measures:
            part = merged[keys].assign(comparison=name, measure=measure,
                                       first=merged[f"{measure}_a"].to_numpy(),
                                       second=merged[f"{measure}_b"].to_numpy())
            frames.append(part.dropna(subset=["first", "second"]))
    columns = [*keys, "comparison", "measure", "first", "second"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(
        columns=columns)


def reliability_table(pairs: pd.DataFrame, *, by: Sequence[str] = ("model", "comparison",
                                                                    "measure"),
                      n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """ICC, agreement and smallest detectable change of each group of pairs.

    Parameters
    ----------
    pairs : DataFrame
        From :func:`pair_sessions` (columns ``by``, ``first``, ``second``).
    by : sequence of str, default=("model", "comparison", "measure")
    n_boot, seed : int, default=2000, 0
        As for :func:`agreement`.

    Returns
    -------
    DataFrame
        Columns ``by`` then :data:`RELIABILITY_COLUMNS`.
    """
    by = list(by)
    rows = []
    for key, group in pairs.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **icc(group["first"], group["second"]),
                     **agreement(group["first"], group["second"], n_boot=n_boot, seed=seed)})
    return pd.DataFrame(rows, columns=[*by, *RELIABILITY_COLUMNS])


def paired_sem_difference(first_a: Sequence[float], second_a: Sequence[float],
                          first_b: Sequence[float], second_b: Sequence[float], *,
                          n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """SEM of model A minus SEM of model B on the same subjects, with a paired bootstrap CI.

    The subjects are resampled together for both models (a paired comparison): an interval
    that excludes 0 says which model's repeated scans agree better.

    Returns
    -------
    dict
        ``n``, ``sem_a``, ``sem_b``, ``difference`` (A - B), ``ci_low``, ``ci_high``.
    """
    a1, a2 = _pairs(first_a, second_a)
    b1, b2 = _pairs(first_b, second_b)
    if len(a1) != len(b1):
        raise ValueError(f"both models need the same subjects, got {len(a1)} and {len(b1)}")
    da, db = a2 - a1, b2 - b1
    idx = np.random.default_rng(seed).integers(0, len(da), size=(n_boot, len(da)))
    diff = _sem(da[idx]) - _sem(db[idx])
    return {"n": len(da), "sem_a": float(_sem(da)), "sem_b": float(_sem(db)),
            "difference": float(_sem(da) - _sem(db)),
            "ci_low": float(np.percentile(diff, 2.5)),
            "ci_high": float(np.percentile(diff, 97.5))}
