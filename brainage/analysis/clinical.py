"""Brain-age-gap statistics for the clinical claim: a larger gap in AD and PD that tracks severity.

The study's clinical claim is that the bias-corrected brain-age gap (predicted minus chronological
age) is larger in Alzheimer's disease (AD) and Parkinson's disease (PD) than in healthy controls
(HC) and grows with disease severity. This module tests it on a predictions table, for each model:

- ``gap_group_stats``: mean gap per group with a t confidence interval;
- ``gap_ancova``: ANCOVA of the gap on group with age, sex and site (one-hot) as covariates
  (``pingouin.ancova``);
- ``gap_posthoc``: AD vs HC, PD vs HC, AD vs PD: the covariate-adjusted mean difference and
  adjusted Hedges' g with their CIs (a two-group ANCOVA, statsmodels OLS), beside the unadjusted
  Hedges' g (``pingouin.compute_effsize`` / ``compute_esci``); patients are older than controls
  and the corrected gap may still depend on age, so the adjusted size is the one to read;
- ``gap_score_correlations``: partial Spearman correlations of the gap with MMSE and CDR-SB within
  AD and with MDS-UPDRS-III and Hoehn & Yahr within PD, controlling age, sex and site
  (``pingouin.partial_corr``);
- ``fdr_correct``: Benjamini-Hochberg over the family of clinical tests (``pingouin.multicomp``);
- ``compare_models``: which model's gap tracks severity better, a seeded paired bootstrap of the
  difference of the two partial Spearman rhos on the same subjects;
- ``compare_with_truth``: on the simulated cohort, each estimate beside the generator's true value
  (``truth_from_simulation``: the same statistics computed on the true gap).

Site is a covariate because the simulated (and real) sites differ in intensity, contrast, bias
and resolution, and patients and controls need not come from the sites in the same shares:
categorical covariates (``CATEGORICAL_COVARIATES``) enter as one-hot columns, the first level of
the subjects analysed being the reference; a covariate absent from the table is left out with a
note.

``clinical_summary`` runs them all and returns a ``ClinicalResults`` whose ``to_json`` writes
``clinical.json`` (plain JSON: lists of records, NaN written as null).

Every test excludes missing values itself and reports its ``n``. A test that cannot be run (too
few subjects, a constant score, a column that is absent) gives a row with ``estimable=False`` and
the reason in ``note``, never a crash or an unexplained NaN.

References
----------
.. [1] Franke K, Gaser C. Longitudinal changes in individual BrainAGE in healthy aging, mild
   cognitive impairment, and Alzheimer's disease. GeroPsych 25(4):235-245, 2012.
.. [2] Vallat R. Pingouin: statistics in Python. Journal of Open Source Software 3(31):1026, 2018.
.. [3] Hedges LV, Olkin I. Statistical Methods for Meta-Analysis. Academic Press, 1985.
.. [4] Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful
   approach to multiple testing. J R Stat Soc B 57(1):289-300, 1995.
.. [5] Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from brainage._utils import GROUPS

logger = logging.getLogger(__name__)

__all__ = [
    "CLINICAL_FILE",
    "EXPECTED_SIGN",
    "SCORES_BY_GROUP",
    "ClinicalResults",
    "ClinicalSettings",
    "age_matched_comparison",
    "clinical_summary",
    "compare_models",
    "compare_with_truth",
    "configured_correlations",
    "correlation_power",
    "fdr_correct",
    "gap_ancova",
    "gap_group_stats",
    "gap_posthoc",
    "gap_power",
    "gap_score_correlations",
    "hedges_g",
    "partial_rank_residuals",
    "partial_spearman",
    "truth_from_simulation",
]

CLINICAL_FILE = "clinical.json"
#: Clinical scores tested within each patient group.
SCORES_BY_GROUP: dict[str, tuple[str, ...]] = {
    "AD": ("mmse", "cdr_sb"),
    "PD": ("updrs3", "hoehn_yahr"),
}
#: Sign of the correlation expected if the gap grows with severity (MMSE falls with severity).
EXPECTED_SIGN: dict[str, int] = {"mmse": -1, "cdr_sb": 1, "updrs3": 1, "hoehn_yahr": 1}
#: Post-hoc contrasts, (A, B): a positive g means A has the larger gap.
CONTRASTS = (("AD", "HC"), ("PD", "HC"), ("AD", "PD"))
#: Covariates coded one-hot (first level present in the analysed subjects is the reference).
CATEGORICAL_COVARIATES = ("site",)
#: Splits whose rows enter the analysis: held-out HC ("test") and patients ("clinical").
ANALYSIS_SPLITS = ("test", "clinical")
SEX_CODES = {"F": 0.0, "M": 1.0}
REQUIRED_COLUMNS = ("participant_id", "split", "group", "age", "sex", "model")

# pingouin renamed its output columns (0.7 with pandas 3: ``p_unc``, ``p_val``, ``CI95``; older
# releases: ``p-unc``, ``p-val``, ``CI95%``); look both spellings up.
_P_UNC = ("p_unc", "p-unc")
_P_VAL = ("p_val", "p-val")


@dataclasses.dataclass(frozen=True)
class ClinicalSettings:
    """Settings of the clinical analyses.

    Parameters
    ----------
    gap_column : str, default="corrected_gap"
        Column holding the brain-age gap to test (``"gap"`` for the raw gap).
    covariates : tuple of str, default=("age", "sex", "site")
        Covariates of the ANCOVA and the partial correlations; ``sex`` is coded F=0, M=1 and
        ``site`` one-hot (``CATEGORICAL_COVARIATES``). A covariate column absent from the
        predictions is left out, with a note on every row it would have entered.
    models : tuple of str, default=("rnc", "l1")
        The two models compared by ``compare_models`` (first minus second).
    n_boot : int, default=2000
        Bootstrap resamples of the model comparison.
    confidence : float, default=0.95
        Level of every confidence interval.
    min_group_n : int, default=3
        Fewest subjects a group needs to enter the ANCOVA or a post-hoc contrast.
    min_corr_n : int, default=8
        Fewest complete subjects for a partial correlation. With k covariate columns the Fisher-z
        interval has standard error 1 / sqrt(n - k - 3), finite only from n = k + 4: 8 for age,
        sex and three sites (two one-hot columns). A correlation whose subjects are fewer than
        k + 4 is not estimable, whatever ``min_corr_n``.
    """

    gap_column: str = "corrected_gap"
    covariates: tuple[str, ...] = ("age", "sex", "site")
    models: tuple[str, str] = ("rnc", "l1")
    n_boot: int = 2000
    confidence: float = 0.95
    min_group_n: int = 3
    min_corr_n: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if int(self.n_boot) < 1:
            raise ValueError(f"n_boot must be an integer >= 1, got {self.n_boot!r}")
        if len(self.models) != 2 or self.models[0] == self.models[1]:
            raise ValueError(f"models must name two different models, got {self.models!r}")
        if int(self.min_group_n) < 2:
            raise ValueError(f"min_group_n must be >= 2, got {self.min_group_n!r}")
        if int(self.min_corr_n) < len(self.covariates) + 4:
            raise ValueError(
                f"min_corr_n must be >= len(covariates) + 4 = {len(self.covariates) + 4} so that "
                f"the Fisher-z confidence interval is finite, got {self.min_corr_n!r}"
            )


@dataclasses.dataclass
class ClinicalResults:
    """Tables of the clinical analyses; ``to_json`` writes them as ``clinical.json``.

    Parameters
    ----------
    group_stats, ancova, posthoc, correlations, model_comparison, truth_comparison : DataFrame
        Outputs of the functions of the same concern (see the module docstring).
    meta : dict
        Settings, seed and the size of the multiple-comparison family.
    """

    group_stats: pd.DataFrame
    ancova: pd.DataFrame
    posthoc: pd.DataFrame
    correlations: pd.DataFrame
    model_comparison: pd.DataFrame
    truth_comparison: pd.DataFrame
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    TABLES = (
        "group_stats", "ancova", "posthoc", "correlations", "model_comparison", "truth_comparison"
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON content: each table as a list of records, NaN and inf as ``None``."""
        out: dict[str, Any] = {"meta": _plain(self.meta)}
        for name in self.TABLES:
            # pandas writes NaN/None as null and numpy scalars as plain numbers
            table = getattr(self, name)
            out[name] = json.loads(table.to_json(orient="records", double_precision=15))
        return out

    def to_json(self, path: str | Path) -> Path:
        """Write the results to ``path`` (a file, or a folder that receives ``clinical.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / CLINICAL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        logger.info("wrote %s", path)
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> ClinicalResults:
        """Read results written by ``to_json`` (null values come back as NaN/None)."""
        path = Path(path)
        if path.is_dir():
            path = path / CLINICAL_FILE
        content = json.loads(path.read_text())
        missing = [name for name in cls.TABLES if name not in content]
        if missing:
            raise ValueError(f"{path}: not a clinical results file, missing tables {missing}")
        tables = {name: _numeric_nulls(pd.DataFrame.from_records(content[name]))
                  for name in cls.TABLES}
        return cls(**tables, meta=content.get("meta", {}))


def _numeric_nulls(table: pd.DataFrame) -> pd.DataFrame:
    """Statistic columns that JSON holds as all-null come back as float NaN, not None."""
    numeric = {*_ANCOVA_COLUMNS, *_POSTHOC_COLUMNS, *_CORR_COLUMNS, *_COMPARISON_COLUMNS,
               "estimate", "truth", "truth_global", "configured", "error", "mean", "sd",
               "p_fdr"}
    for column in table.columns:
        if column in numeric and table[column].isna().all():
            table[column] = table[column].astype(float)
    return table


def _plain(value: Any) -> Any:
    """Recursively turn numpy scalars into Python ones and non-finite floats into ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _pg_column(table: pd.DataFrame, names: Sequence[str]) -> str:
    """The first of ``names`` that ``table`` has (pingouin's spelling depends on its version)."""
    for name in names:
        if name in table.columns:
            return name
    raise KeyError(
        f"pingouin output has none of the columns {list(names)}; got {list(table.columns)}"
    )


def _prepare(predictions: pd.DataFrame, settings: ClinicalSettings) -> pd.DataFrame:
    """Validate ``predictions`` and return the analysis rows with ``sex`` coded F=0, M=1."""
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    required = (*REQUIRED_COLUMNS, settings.gap_column)
    missing = [c for c in required if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"predictions lacks required columns {missing}; it has {list(predictions.columns)}"
        )
    bad_groups = sorted(set(predictions["group"].dropna().astype(str)) - set(GROUPS))
    if bad_groups:
        raise ValueError(f"predictions 'group' must be one of {list(GROUPS)}, got {bad_groups}")
    bad_sex = sorted(set(predictions["sex"].dropna().astype(str)) - set(SEX_CODES))
    if bad_sex:
        raise ValueError(
            f"predictions 'sex' must be one of {list(SEX_CODES)} (or missing), got {bad_sex}"
        )
    duplicated = predictions.duplicated(["participant_id", "model"])
    if duplicated.any():
        first = predictions.loc[duplicated, ["participant_id", "model"]].iloc[0].tolist()
        raise ValueError(f"predictions has several rows per (participant_id, model), e.g. {first}")
    data = predictions[predictions["split"].isin(ANALYSIS_SPLITS)].copy()
    logger.debug("clinical analysis: %d of %d rows in splits %s", len(data), len(predictions),
                ANALYSIS_SPLITS)
    data["sex"] = data["sex"].map(SEX_CODES).astype(float)
    numeric = ["age", settings.gap_column, *(s for g in SCORES_BY_GROUP.values() for s in g)]
    for column in (c for c in numeric if c in data.columns):
        try:
            data[column] = pd.to_numeric(data[column], errors="raise").astype(float)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"predictions '{column}' must be numeric (NaN where missing): {err}"
            ) from err
    return data


def _models(data: pd.DataFrame, settings: ClinicalSettings) -> list[str]:
    """Models in the data, the settings' models first."""
    present = list(dict.fromkeys(data["model"].astype(str)))
    first = [m for m in settings.models if m in present]
    return first + [m for m in present if m not in settings.models]


def _ancova(frame: pd.DataFrame, dv: str, covar: list[str]) -> pd.DataFrame:
    """``pingouin.ancova`` of ``dv`` on ``group``, without pingouin's pandas deprecation noise."""
    with warnings.catch_warnings():
        # pingouin 0.7 calls DataFrame.rename(inplace=True), deprecated in pandas 3.1
        warnings.filterwarnings("ignore", message="The inplace keyword", module="pingouin")
        return pg.ancova(data=frame, dv=dv, between="group", covar=covar or None)


def _usable_covariates(frame: pd.DataFrame, covariates: Sequence[str]) -> tuple[list[str], str]:
    """Covariates that vary in ``frame`` and a note naming any dropped as constant."""
    keep = [c for c in covariates if frame[c].nunique() > 1]
    dropped = [c for c in covariates if c not in keep]
    return keep, (f"covariate(s) {dropped} constant here, dropped" if dropped else "")


def _dummy_name(covariate: str, level: str) -> str:
    """A formula-safe column name for one level of a categorical covariate."""
    return f"{covariate}_" + re.sub(r"\W", "_", str(level))


def _complete_cases(sub: pd.DataFrame, columns: Sequence[str], settings: ClinicalSettings
                    ) -> tuple[pd.DataFrame, list[str], str]:
    """Rows of ``sub`` complete in ``columns`` and the covariates, with the covariate columns.

    Categorical covariates (``CATEGORICAL_COVARIATES``) become one-hot columns over the levels
    present in these rows, the first (sorted) level being the reference, so that no column is
    constant or collinear with the intercept by construction. Returns the frame, the names of
    the covariate columns that vary, and a note naming covariates absent or dropped.
    """
    present = [c for c in settings.covariates if c in sub.columns]
    absent = [c for c in settings.covariates if c not in sub.columns]
    frame = sub[list(dict.fromkeys([*columns, *present]))].dropna().copy()
    names: list[str] = []
    for covariate in present:
        if covariate not in CATEGORICAL_COVARIATES:
            names.append(covariate)
            continue
        levels = sorted(frame[covariate].astype(str).unique())
        for level in levels[1:]:
            name = _dummy_name(covariate, level)
            frame[name] = (frame[covariate].astype(str) == level).astype(float)
            names.append(name)
    keep, note = _usable_covariates(frame, names)
    if absent:
        note = _join(f"covariate(s) {absent} absent from predictions: not adjusted for", note)
    return frame, keep, note


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def gap_group_stats(
    predictions: pd.DataFrame, settings: ClinicalSettings | None = None
) -> pd.DataFrame:
    """Mean brain-age gap per model and group with a t confidence interval of the mean.

    Parameters
    ----------
    predictions : DataFrame
        The predictions table (see ``clinical_summary``).
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()``.

    Returns
    -------
    DataFrame
        One row per (model, group): ``n``, ``mean``, ``sd``, ``ci_low``, ``ci_high``, ``age_mean``,
        ``n_female``, ``estimable``, ``note``.
    """
    settings = settings or ClinicalSettings()
    data = _prepare(predictions, settings)
    rows = []
    for model in _models(data, settings):
        for group in GROUPS:
            sub = data[(data["model"] == model) & (data["group"] == group)]
            gap = sub[settings.gap_column].dropna().to_numpy()
            n = gap.size
            row = {"model": model, "group": group, "n": n, "mean": np.nan, "sd": np.nan,
                   "ci_low": np.nan, "ci_high": np.nan,
                   "age_mean": sub["age"].mean() if len(sub) else np.nan,
                   "n_female": int((sub["sex"] == 0).sum()), "estimable": n >= 2, "note": ""}
            if n >= 1:
                row["mean"] = float(gap.mean())
            if n >= 2:
                row["sd"] = float(gap.std(ddof=1))
                low, high = stats.t.interval(settings.confidence, n - 1, loc=gap.mean(),
                                             scale=stats.sem(gap))
                row.update(ci_low=float(low), ci_high=float(high))
            else:
                row["note"] = f"not estimable: n={n} < 2 subjects with a {settings.gap_column}"
            rows.append(row)
    return pd.DataFrame(rows)


def _not_estimable(base: dict[str, Any], note: str, columns: Sequence[str]) -> dict[str, Any]:
    """A row of NaN statistics with ``estimable=False`` and the reason."""
    stats_nan = {c: np.nan for c in columns}
    return {**stats_nan, **base, "estimable": False, "note": f"not estimable: {note}"}


def _ancova_frame(data: pd.DataFrame, model: str, settings: ClinicalSettings,
                  groups: Sequence[str]) -> tuple[pd.DataFrame, list[str], str]:
    """Complete cases of ``model`` in ``groups``, their covariate columns and a note (groups
    dropped for small n, covariates absent or constant)."""
    sub = data.loc[(data["model"] == model) & data["group"].isin(groups)]
    frame = sub[[settings.gap_column, "group", *(c for c in settings.covariates
                                                 if c in sub.columns)]].dropna()
    counts = frame["group"].value_counts()
    small = [f"{g} (n={int(counts.get(g, 0))})" for g in groups
             if counts.get(g, 0) < settings.min_group_n]
    sub = sub.loc[frame.index[frame["group"].map(counts).fillna(0) >= settings.min_group_n]]
    frame, covar, cov_note = _complete_cases(sub, [settings.gap_column, "group"], settings)
    note = f"excluded groups with n < {settings.min_group_n}: {', '.join(small)}" if small else ""
    return frame, covar, _join(note, cov_note)


_ANCOVA_COLUMNS = ("n", "groups", "SS", "DF", "df_resid", "F", "p", "np2")


def gap_ancova(predictions: pd.DataFrame, settings: ClinicalSettings | None = None) -> pd.DataFrame:
    """ANCOVA of the gap on group (HC, AD, PD) with the covariates, for each model.

    Wraps ``pingouin.ancova`` (statsmodels OLS ``gap ~ C(group) + age + sex + site dummies``,
    type II sums of squares). Groups with fewer than ``settings.min_group_n`` complete subjects
    are left out; fewer than two groups left gives a "not estimable" row.

    Parameters
    ----------
    predictions : DataFrame
        The predictions table (see ``clinical_summary``).
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()``.

    Returns
    -------
    DataFrame
        Rows per model and source (``group`` then each covariate): ``n``, ``groups``, ``SS``,
        ``DF``, ``df_resid``, ``F``, ``p``, ``np2`` (partial eta squared), ``estimable``, ``note``.
    """
    settings = settings or ClinicalSettings()
    data = _prepare(predictions, settings)
    rows = []
    for model in _models(data, settings):
        frame, covar, note = _ancova_frame(data, model, settings, GROUPS)
        base = {"model": model, "source": "group"}
        n_groups = frame["group"].nunique()
        if n_groups < 2:
            reason = f"fewer than 2 groups with >= {settings.min_group_n} complete subjects"
            rows.append(_not_estimable(base, _join(reason, note), _ANCOVA_COLUMNS))
            continue
        if len(frame) <= n_groups + len(covar):
            reason = f"n={len(frame)} leaves no residual degrees of freedom"
            rows.append(_not_estimable(base, _join(reason, note), _ANCOVA_COLUMNS))
            continue
        table = _ancova(frame, settings.gap_column, covar)
        p_col = _pg_column(table, _P_UNC)
        df_resid = int(table.loc[table["Source"] == "Residual", "DF"].iloc[0])
        for _, line in table[table["Source"] != "Residual"].iterrows():
            rows.append({**base, "source": line["Source"], "n": len(frame),
                         "groups": ",".join(sorted(frame["group"].unique())), "SS": line["SS"],
                         "DF": int(line["DF"]), "df_resid": df_resid, "F": line["F"],
                         "p": line[p_col], "np2": line["np2"], "estimable": True,
                         "note": note})
    return pd.DataFrame(rows)


def hedges_g(
    x: Sequence[float], y: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Hedges' g of ``x`` against ``y`` and its confidence interval.

    Parameters
    ----------
    x, y : array-like, shape (n_x,) and (n_y,)
        Two independent samples (NaN removed), each of size >= 2.
    confidence : float, default=0.95
        Level of the interval.

    Returns
    -------
    g, ci_low, ci_high : float
        g = J * (mean(x) - mean(y)) / pooled SD with J = 1 - 3 / (4 (n_x + n_y) - 9), and the
        normal-theory interval g ± t * sqrt((n_x + n_y) / (n_x n_y) + g^2 / (2 (n_x + n_y))),
        as ``pingouin.compute_effsize`` and ``pingouin.compute_esci`` compute them.

    References
    ----------
    .. [1] Hedges LV, Olkin I. Statistical Methods for Meta-Analysis. Academic Press, 1985.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size < 2 or y.size < 2:
        raise ValueError(
            f"hedges_g needs >= 2 values in x and in y, got n_x={x.size}, n_y={y.size}"
        )
    g = float(pg.compute_effsize(x, y, eftype="hedges"))
    low, high = pg.compute_esci(stat=g, nx=x.size, ny=y.size, eftype="hedges",
                                confidence=float(confidence), decimals=12)
    return g, float(low), float(high)


_POSTHOC_COLUMNS = ("n_a", "n_b", "mean_a", "mean_b", "mean_diff", "hedges_g", "g_ci_low",
                    "g_ci_high", "adj_diff", "adj_ci_low", "adj_ci_high", "adj_g", "adj_g_ci_low",
                    "adj_g_ci_high", "F", "p")


def adjusted_difference(frame: pd.DataFrame, dv: str, group_a: str, covar: Sequence[str],
                        confidence: float = 0.95) -> dict[str, float]:
    """Covariate-adjusted difference of ``dv`` between group ``group_a`` and the other group.

    OLS ``dv ~ 1 + [group == group_a] + covar`` (statsmodels); the coefficient of the group
    indicator is the difference of the adjusted means, with its t interval. The adjusted Hedges'
    g divides it (and its interval) by the pooled within-group SD of ``dv`` and applies the
    small-sample factor J = 1 - 3 / (4 (n_a + n_b) - 9), so that it is on the scale of the
    unadjusted g (Hedges & Olkin 1985); the interval ignores the uncertainty of the SD.

    Parameters
    ----------
    frame : DataFrame
        Complete cases of two groups: ``dv``, ``group`` and the numeric ``covar`` columns.
    dv : str
        The compared variable (the gap).
    group_a : str
        The group whose difference from the other is reported (a positive value: larger).
    covar : sequence of str
        Covariate columns (may be empty: then the difference is that of the raw means).
    confidence : float, default=0.95
        Level of the intervals.

    Returns
    -------
    dict
        ``adj_diff``, ``adj_ci_low``, ``adj_ci_high``, ``adj_g``, ``adj_g_ci_low``,
        ``adj_g_ci_high``.

    References
    ----------
    .. [1] Hedges LV, Olkin I. Statistical Methods for Meta-Analysis. Academic Press, 1985.
    """
    import statsmodels.api as sm

    is_a = (frame["group"] == group_a).to_numpy(dtype=float)
    design = np.column_stack([np.ones(len(frame)), is_a,
                              *(frame[c].to_numpy(dtype=float) for c in covar)])  # (n, 2 + k)
    fit = sm.OLS(frame[dv].to_numpy(dtype=float), design).fit()
    low, high = fit.conf_int(alpha=1 - confidence)[1]
    a, b = frame.loc[is_a == 1, dv], frame.loc[is_a == 0, dv]
    n_a, n_b = len(a), len(b)
    pooled = np.sqrt(((n_a - 1) * a.var(ddof=1) + (n_b - 1) * b.var(ddof=1)) / (n_a + n_b - 2))
    j = 1 - 3 / (4 * (n_a + n_b) - 9)
    scale = j / pooled if pooled > 0 else np.nan
    diff = float(fit.params[1])
    return {"adj_diff": diff, "adj_ci_low": float(low), "adj_ci_high": float(high),
            "adj_g": diff * scale, "adj_g_ci_low": float(low) * scale,
            "adj_g_ci_high": float(high) * scale}


def gap_posthoc(
    predictions: pd.DataFrame, settings: ClinicalSettings | None = None
) -> pd.DataFrame:
    """Post-hoc contrasts AD vs HC, PD vs HC, AD vs PD of the gap, for each model.

    The size is given twice: the covariate-adjusted mean difference and adjusted Hedges' g
    (:func:`adjusted_difference`, the same covariates as the omnibus test), and the unadjusted
    Hedges' g with its CI. Controls span the whole age range while patients are older, so the
    unadjusted g mixes the group effect with any age dependence left in the gap; read the
    adjusted one. The p value is that of the two-group ANCOVA (``pingouin.ancova``).

    Parameters
    ----------
    predictions : DataFrame
        The predictions table (see ``clinical_summary``).
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()``.

    Returns
    -------
    DataFrame
        One row per (model, contrast): ``group_a``, ``group_b``, ``n_a``, ``n_b``, ``mean_a``,
        ``mean_b``, ``mean_diff`` (a - b), ``hedges_g`` (unadjusted; > 0: a larger),
        ``g_ci_low``, ``g_ci_high``, ``adj_diff``, ``adj_ci_low``, ``adj_ci_high``, ``adj_g``,
        ``adj_g_ci_low``, ``adj_g_ci_high`` (covariate-adjusted), ``F``, ``p``, ``covariates``,
        ``estimable``, ``note``.
    """
    settings = settings or ClinicalSettings()
    data = _prepare(predictions, settings)
    rows = []
    for model in _models(data, settings):
        for a, b in CONTRASTS:
            frame, covar, note = _ancova_frame(data, model, settings, (a, b))
            base = {"model": model, "contrast": f"{a} vs {b}", "group_a": a, "group_b": b,
                    "covariates": ",".join(covar)}
            if frame["group"].nunique() < 2 or len(frame) <= 2 + len(covar):
                reason = note or f"n={len(frame)} leaves no residual degrees of freedom"
                rows.append(_not_estimable(base, reason, _POSTHOC_COLUMNS))
                continue
            ga = frame.loc[frame["group"] == a, settings.gap_column].to_numpy()
            gb = frame.loc[frame["group"] == b, settings.gap_column].to_numpy()
            g, low, high = hedges_g(ga, gb, settings.confidence)
            table = _ancova(frame, settings.gap_column, covar)
            effect = table.iloc[0]
            adjusted = adjusted_difference(frame, settings.gap_column, a, covar,
                                           settings.confidence)
            rows.append({**base, "n_a": ga.size, "n_b": gb.size, "mean_a": ga.mean(),
                         "mean_b": gb.mean(), "mean_diff": ga.mean() - gb.mean(), "hedges_g": g,
                         "g_ci_low": low, "g_ci_high": high, **adjusted, "F": effect["F"],
                         "p": effect[_pg_column(table, _P_UNC)], "estimable": True,
                         "note": note})
    return pd.DataFrame(rows)


def partial_spearman(frame: pd.DataFrame, x: str, y: str, covar: Sequence[str],
                     confidence: float = 0.95) -> dict[str, float]:
    """Partial Spearman correlation of ``x`` and ``y`` given ``covar`` (``pingouin.partial_corr``).

    pingouin ranks every variable (covariates included), then takes the partial correlation of
    the ranks; the p value uses n - 2 - k degrees of freedom and the CI the Fisher z with
    standard error 1 / sqrt(n - k - 3).

    Parameters
    ----------
    frame : DataFrame
        Complete cases of ``x``, ``y`` and ``covar`` (numeric).
    x, y : str
        The two columns correlated.
    covar : sequence of str
        Covariates partialled out (may be empty: a plain Spearman correlation).
    confidence : float, default=0.95
        Level of the interval.

    Returns
    -------
    dict
        ``n``, ``rho``, ``ci_low``, ``ci_high``, ``p``.
    """
    table = pg.partial_corr(data=frame, x=x, y=y, covar=list(covar) or None, method="spearman")
    n, rho = int(table["n"].iloc[0]), float(table["r"].iloc[0])
    # pingouin rounds its CI95 column to 2 decimals for display (pingouin.options) and fixes the
    # level at 95 %: recompute the same Fisher-z interval (n - k as in partial_corr) unrounded.
    low, high = pg.compute_esci(stat=rho, nx=n - len(covar), ny=n - len(covar), eftype="r",
                                confidence=float(confidence), decimals=12)
    return {"n": n, "rho": rho, "ci_low": float(low), "ci_high": float(high),
            "p": float(table[_pg_column(table, _P_VAL)].iloc[0])}


_CORR_COLUMNS = ("n", "n_missing", "rho", "ci_low", "ci_high", "p")


def _score_frame(data: pd.DataFrame, model: str, group: str, score: str,
                 settings: ClinicalSettings) -> tuple[pd.DataFrame, int, list[str], str, str]:
    """Complete cases of one correlation, the number of group rows dropped, the covariate
    columns, why it fails (or "") and a note on the covariates."""
    sub = data[(data["model"] == model) & (data["group"] == group)]
    if score not in sub.columns:
        return sub.iloc[:0], len(sub), [], f"column '{score}' absent from predictions", ""
    frame, covar, note = _complete_cases(sub, [settings.gap_column, score], settings)
    n_missing = len(sub) - len(frame)
    if len(frame) < settings.min_corr_n:
        return frame, n_missing, covar, (f"n={len(frame)} complete {group} subjects with "
                                         f"{score} < {settings.min_corr_n} required"), note
    if len(frame) < len(covar) + 4:
        return frame, n_missing, covar, (
            f"n={len(frame)} complete {group} subjects with {score} < {len(covar) + 4} needed "
            f"with {len(covar)} covariate columns"), note
    for column in (settings.gap_column, score):
        if frame[column].nunique() < 2:
            return frame, n_missing, covar, (f"{column} is constant in the {len(frame)} "
                                             f"{group} subjects"), note
    return frame, n_missing, covar, "", note


def gap_score_correlations(predictions: pd.DataFrame,
                           settings: ClinicalSettings | None = None) -> pd.DataFrame:
    """Partial Spearman correlations of the gap with each clinical score within its group.

    Within AD: MMSE and CDR-SB; within PD: MDS-UPDRS-III and Hoehn & Yahr (``SCORES_BY_GROUP``);
    the covariates (age, sex, site one-hot) partialled out. Subjects missing the score (or a
    covariate) are left out of that test only.

    Parameters
    ----------
    predictions : DataFrame
        The predictions table (see ``clinical_summary``).
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()``.

    Returns
    -------
    DataFrame
        One row per (model, group, score): ``n``, ``n_missing``, ``rho``, ``ci_low``, ``ci_high``,
        ``p``, ``expected_sign``, ``covariates``, ``estimable``, ``note``.
    """
    settings = settings or ClinicalSettings()
    data = _prepare(predictions, settings)
    rows = []
    for model in _models(data, settings):
        for group, scores in SCORES_BY_GROUP.items():
            for score in scores:
                base = {"model": model, "group": group, "score": score,
                        "expected_sign": EXPECTED_SIGN[score]}
                frame, n_missing, covar, reason, cov_note = _score_frame(data, model, group,
                                                                         score, settings)
                if reason:
                    row = _not_estimable(base, _join(reason, cov_note), _CORR_COLUMNS)
                    rows.append({**row, "n": len(frame), "n_missing": n_missing, "covariates": ""})
                    continue
                result = partial_spearman(frame, settings.gap_column, score, covar,
                                          settings.confidence)
                rows.append({**base, **result, "n_missing": n_missing,
                             "covariates": ",".join(covar), "estimable": True, "note": cov_note})
    return pd.DataFrame(rows)


def partial_rank_residuals(predictions: pd.DataFrame, model: str, group: str, score: str,
                           settings: ClinicalSettings | None = None) -> pd.DataFrame:
    """The two rank residuals whose Pearson correlation is the partial Spearman rho tested.

    The same subjects and covariate columns as :func:`gap_score_correlations`: the gap, the
    score and every covariate are ranked (average ranks for ties, as ``pingouin.partial_corr``
    does), and the gap's and the score's ranks are each regressed on the covariates' ranks
    (least squares with an intercept). A scatter of these residuals shows the association that
    was tested, with the covariates removed; their correlation is the partial rho.

    Parameters
    ----------
    predictions : DataFrame
        The predictions table (see ``clinical_summary``).
    model, group, score : str
        One test: a model's gap against a score within a patient group.
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()``.

    Returns
    -------
    DataFrame
        One row per subject of the test: ``participant_id``, ``gap_residual`` and
        ``score_residual`` (rank units); empty where the test is not estimable.
    """
    settings = settings or ClinicalSettings()
    data = _prepare(predictions, settings)
    columns = ["participant_id", "gap_residual", "score_residual"]
    if score not in SCORES_BY_GROUP.get(group, ()):
        raise ValueError(f"score {score!r} is not tested within group {group!r}; "
                         f"the tests are {SCORES_BY_GROUP}")
    frame, _, covar, reason, _ = _score_frame(data, model, group, score, settings)
    if reason:
        return pd.DataFrame(columns=columns)
    ranks = frame[[settings.gap_column, score, *covar]].rank()  # average ranks, as pingouin
    design = np.column_stack([np.ones(len(frame)), ranks[covar].to_numpy()])  # (n, 1 + k)
    targets = ranks[[settings.gap_column, score]].to_numpy()  # (n, 2)
    beta, *_ = np.linalg.lstsq(design, targets, rcond=None)  # (1 + k, 2)
    residuals = targets - design @ beta  # (n, 2)
    return pd.DataFrame({"participant_id": data.loc[frame.index, "participant_id"].to_numpy(),
                         "gap_residual": residuals[:, 0], "score_residual": residuals[:, 1]})


def fdr_correct(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p values (``pingouin.multicomp``); NaN entries stay NaN.

    Parameters
    ----------
    pvalues : array-like, shape (m,)
        Raw p values of one family of tests; NaN marks a test that was not run.

    Returns
    -------
    ndarray, shape (m,)
        Adjusted p values, NaN where the input was NaN (those do not count in the family).

    References
    ----------
    .. [1] Benjamini Y, Hochberg Y. J R Stat Soc B 57(1):289-300, 1995.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    if np.any((p[~np.isnan(p)] < 0) | (p[~np.isnan(p)] > 1)):
        raise ValueError(f"pvalues must lie in [0, 1] (or be NaN), got {p.tolist()}")
    adjusted = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        adjusted[finite] = pg.multicomp(p[finite], method="fdr_bh")[1]
    return adjusted


def _apply_fdr(ancova: pd.DataFrame, posthoc: pd.DataFrame,
               correlations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Add ``p_fdr`` over one family: the group effects, the contrasts and the correlations."""
    ancova, posthoc, correlations = ancova.copy(), posthoc.copy(), correlations.copy()
    in_family = [
        ancova["p"].where(ancova["source"] == "group") if len(ancova) else pd.Series(dtype=float),
        posthoc["p"] if len(posthoc) else pd.Series(dtype=float),
        correlations["p"] if len(correlations) else pd.Series(dtype=float),
    ]
    sizes = [len(s) for s in in_family]
    adjusted = fdr_correct(np.concatenate([s.to_numpy(dtype=float) for s in in_family]))
    edges = np.cumsum([0, *sizes])
    for table, start, stop in zip((ancova, posthoc, correlations), edges[:-1], edges[1:]):
        table["p_fdr"] = adjusted[start:stop]
    return ancova, posthoc, correlations, int(np.sum(~np.isnan(adjusted)))


def _batched_partial_spearman(values: np.ndarray) -> np.ndarray:
    """Partial Spearman correlation of columns 0 and 1 given the others, for many samples at once.

    Replicates ``pingouin.partial_corr(method="spearman")``: rank every column, invert the rank
    covariance (pseudo-inverse) and read -P01 / sqrt(P00 P11). Written here because calling
    pingouin once per bootstrap resample is about a thousand times slower.

    Parameters
    ----------
    values : ndarray, shape (B, n, p)
        B samples of n subjects and p >= 2 variables.

    Returns
    -------
    ndarray, shape (B,)
        NaN where column 0 or 1 is constant in a sample.
    """
    ranks = stats.rankdata(values, axis=1)  # (B, n, p), average ranks for ties
    centred = ranks - ranks.mean(axis=1, keepdims=True)  # (B, n, p)
    cov = np.einsum("bni,bnj->bij", centred, centred) / (values.shape[1] - 1)  # (B, p, p)
    precision = np.linalg.pinv(cov, hermitian=True)  # (B, p, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = -precision[:, 0, 1] / np.sqrt(precision[:, 0, 0] * precision[:, 1, 1])  # (B,)
    degenerate = (cov[:, 0, 0] <= 0) | (cov[:, 1, 1] <= 0)
    return np.where(degenerate, np.nan, np.clip(rho, -1.0, 1.0))


def _paired_frame(data: pd.DataFrame, group: str, score: str, settings: ClinicalSettings
                  ) -> tuple[pd.DataFrame, list[str], str, str]:
    """Subjects of ``group`` with both models' gaps, the score and the covariates; their
    covariate columns, why the comparison fails (or "") and a note on the covariates."""
    first, second = settings.models
    if score not in data.columns:
        return pd.DataFrame(), [], f"column '{score}' absent from predictions", ""
    covariates = [c for c in settings.covariates if c in data.columns]
    keep = ["participant_id", settings.gap_column, score, *covariates]
    sub = data[data["group"] == group]
    a = sub.loc[sub["model"] == first, keep]
    b = sub.loc[sub["model"] == second, ["participant_id", settings.gap_column]]
    merged = a.merge(b, on="participant_id", suffixes=("_a", "_b"))
    gaps = [f"{settings.gap_column}_a", f"{settings.gap_column}_b"]
    paired, covar, note = _complete_cases(merged, [*gaps, score], settings)
    if len(paired) < max(settings.min_corr_n, len(covar) + 4):
        return paired, covar, (f"n={len(paired)} {group} subjects with {score} and both models' "
                               f"gaps < {max(settings.min_corr_n, len(covar) + 4)} required"), note
    for column in (*gaps, score):
        if paired[column].nunique() < 2:
            reason = f"{column} is constant in the {len(paired)} {group} subjects"
            return paired, covar, reason, note
    return paired, covar, "", note


_COMPARISON_COLUMNS = ("n", "rho_a", "rho_b", "diff", "ci_low", "ci_high", "p", "n_boot_valid")


def _bootstrap_difference(paired: pd.DataFrame, score: str, covar: Sequence[str],
                          settings: ClinicalSettings, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap draws of rho_a - rho_b, resampling subjects (rows) with replacement."""
    gap = settings.gap_column
    columns_a = [f"{gap}_a", score, *covar]
    columns_b = [f"{gap}_b", score, *covar]
    index = rng.integers(0, len(paired), size=(int(settings.n_boot), len(paired)))  # (B, n)
    values_a = paired[columns_a].to_numpy(dtype=float)[index]  # (n, p) -> (B, n, p)
    values_b = paired[columns_b].to_numpy(dtype=float)[index]  # (n, p) -> (B, n, p)
    return _batched_partial_spearman(values_a) - _batched_partial_spearman(values_b)


def _comparison_row(paired: pd.DataFrame, score: str, covar: Sequence[str], note: str,
                    settings: ClinicalSettings, rng: np.random.Generator) -> dict[str, Any]:
    """Point estimates, bootstrap CI and p of the signed difference of the two models' rhos."""
    gap, sign = settings.gap_column, EXPECTED_SIGN[score]
    rho_a = partial_spearman(paired, f"{gap}_a", score, covar)["rho"]
    rho_b = partial_spearman(paired, f"{gap}_b", score, covar)["rho"]
    draws = sign * _bootstrap_difference(paired, score, covar, settings, rng)
    draws = draws[~np.isnan(draws)]
    alpha = 1 - settings.confidence
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # two-sided bootstrap p: twice the smaller tail mass at zero, with the +1 correction
    tail = min(np.sum(draws <= 0), np.sum(draws >= 0))
    p = min(1.0, 2 * (tail + 1) / (draws.size + 1))
    first, second = settings.models
    better = first if low > 0 else second if high < 0 else "neither (CI covers 0)"
    if draws.size < settings.n_boot:
        note = _join(note, f"{settings.n_boot - draws.size} degenerate resamples dropped")
    return {"n": len(paired), "rho_a": rho_a, "rho_b": rho_b, "diff": sign * (rho_a - rho_b),
            "ci_low": low, "ci_high": high, "p": p, "n_boot_valid": draws.size, "better": better,
            "estimable": True, "note": note}


def compare_models(predictions: pd.DataFrame, settings: ClinicalSettings | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """Which model's gap tracks severity better: a paired bootstrap of the difference of rhos.

    For each clinical score, on the subjects that have the score and both models' gaps, the
    partial Spearman rho of each model's gap with the score is computed (``partial_spearman``);
    subjects are resampled with replacement ``settings.n_boot`` times (seeded) and both rhos
    recomputed on each resample, so the dependence of the two correlations (same subjects, same
    score) is kept. ``diff = expected_sign * (rho_a - rho_b)``: positive when model a's gap
    correlates more strongly in the direction expected of severity.

    Parameters
    ----------
    predictions : DataFrame
        The predictions table (see ``clinical_summary``).
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()``; ``settings.models`` names models a and b.
    seed : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    DataFrame
        One row per (group, score): ``model_a``, ``model_b``, ``n``, ``rho_a``, ``rho_b``,
        ``expected_sign``, ``diff``, ``ci_low``, ``ci_high`` (percentile interval), ``p``
        (two-sided bootstrap), ``n_boot_valid``, ``better``, ``estimable``, ``note``.

    References
    ----------
    .. [1] Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993.
    """
    settings = settings or ClinicalSettings()
    data = _prepare(predictions, settings)
    rng = np.random.default_rng(seed)
    first, second = settings.models
    present = set(data["model"].astype(str))
    rows = []
    for group, scores in SCORES_BY_GROUP.items():
        for score in scores:
            base = {"model_a": first, "model_b": second, "group": group, "score": score,
                    "expected_sign": EXPECTED_SIGN[score], "better": ""}
            absent = [m for m in settings.models if m not in present]
            if absent:
                paired, covar, reason, note = (pd.DataFrame(), [],
                                               f"model(s) {absent} absent from predictions", "")
            else:
                paired, covar, reason, note = _paired_frame(data, group, score, settings)
            if reason:
                rows.append({**_not_estimable(base, reason, _COMPARISON_COLUMNS), "n": len(paired)})
                continue
            rows.append({**base, **_comparison_row(paired, score, covar, note, settings, rng)})
    return pd.DataFrame(rows)


def _truth_sections(truth: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Split ``truth`` into true mean gaps per group and true severity-score correlations."""
    if not isinstance(truth, Mapping):
        raise TypeError(f"truth must be a dict, got {type(truth).__name__}")
    flat_gap = {k: v for k, v in truth.items() if k in GROUPS}
    flat_corr = {k: v for k, v in truth.items() if k in EXPECTED_SIGN}
    mean_gap = truth.get("mean_gap", flat_gap)
    score_corr = truth.get("score_correlation", flat_corr)
    for name, section, allowed in (("mean_gap", mean_gap, GROUPS),
                                   ("score_correlation", score_corr, tuple(EXPECTED_SIGN))):
        if not isinstance(section, Mapping):
            raise TypeError(f"truth['{name}'] must be a dict, got {type(section).__name__}")
        unknown = sorted(set(section) - set(allowed))
        if unknown:
            raise ValueError(f"truth['{name}'] keys must be among {list(allowed)}, got {unknown}")
    if not mean_gap and not score_corr:
        raise ValueError(
            "truth holds no true value: expected 'mean_gap' ({group: years}) and/or "
            f"'score_correlation' ({{score: r}}), or flat group/score keys; "
            f"got keys {sorted(truth)}"
        )
    # a score may be given as the simulator's score settings (``ScoreConfig`` as a dict)
    score_corr = {k: v["corr"] if isinstance(v, Mapping) else v for k, v in score_corr.items()}
    return {k: float(v) for k, v in mean_gap.items()}, {k: float(v) for k, v in score_corr.items()}


TRUTH_COLUMNS = ("quantity", "model", "group", "score", "configured", "estimate", "ci_low",
                 "ci_high", "truth", "truth_global", "error", "covered", "note")
_ATTENUATION_NOTE = ("truth is the same partial correlation computed on the true gap; the "
                     "estimated gap adds prediction error, so |rho| is expected somewhat "
                     "attenuated below |truth|")


def compare_with_truth(group_stats: pd.DataFrame, correlations: pd.DataFrame,
                       truth: Mapping[str, Any]) -> pd.DataFrame:
    """Each estimate beside the value the simulator used, and whether its CI covers it.

    Parameters
    ----------
    group_stats : DataFrame
        Output of ``gap_group_stats``.
    correlations : DataFrame
        Output of ``gap_score_correlations``.
    truth : dict
        ``{"mean_gap": {"HC": 0.0, "AD": 8.7, "PD": 3.0}, "score_correlation": {"mmse": -0.6,
        "cdr_sb": 0.4, "updrs3": 0.3, "hoehn_yahr": 0.3}}``: the true mean brain-age gap per
        group (years) and the true value of each score correlation, best from
        :func:`truth_from_simulation` (the same statistics computed on the simulated subjects'
        true gap, so each estimate has the target a perfect predictor would reach). An optional
        ``"global_mean_gap"`` section fills ``truth_global`` (the part of the gap that the
        simulator's biological age carries, without the regional disease losses); an optional
        ``"configured_correlation"`` section ({score: r}, :func:`configured_correlations`)
        fills ``configured``: the correlation of the score with the latent severity that the
        simulator was set to (NaN for mean gaps). A flat dict
        with group and score names as keys is accepted as well; either section may be left
        out. A score's value may also be a dict with the score's ``corr``.

    Returns
    -------
    DataFrame
        Rows ``quantity`` ("mean_gap" or "score_correlation"), ``model``, ``group``, ``score``,
        ``configured``, ``estimate``, ``ci_low``, ``ci_high``, ``truth``, ``truth_global``,
        ``error`` (estimate - truth), ``covered`` (``None`` when not estimable), ``note``.
    """
    mean_gap, score_corr = _truth_sections(truth)
    global_gap = truth.get("global_mean_gap", {}) if isinstance(truth, Mapping) else {}
    configured = truth.get("configured_correlation", {}) if isinstance(truth, Mapping) else {}
    rows = []
    for _, line in group_stats[group_stats["group"].isin(list(mean_gap))].iterrows():
        rows.append({"quantity": "mean_gap", "model": line["model"], "group": line["group"],
                     "score": None, "configured": np.nan, "estimate": line["mean"],
                     "ci_low": line["ci_low"],
                     "ci_high": line["ci_high"], "truth": mean_gap[line["group"]],
                     "truth_global": global_gap.get(line["group"], np.nan),
                     "note": line["note"]})
    for _, line in correlations[correlations["score"].isin(list(score_corr))].iterrows():
        reason = "" if line["estimable"] else line["note"]
        rows.append({"quantity": "score_correlation", "model": line["model"],
                     "group": line["group"], "score": line["score"],
                     "configured": float(configured.get(line["score"], np.nan)),
                     "estimate": line["rho"],
                     "ci_low": line["ci_low"], "ci_high": line["ci_high"],
                     "truth": score_corr[line["score"]], "note": _join(reason, _ATTENUATION_NOTE)})
    table = pd.DataFrame(rows, columns=[c for c in TRUTH_COLUMNS if c not in ("error", "covered")])
    table["truth_global"] = table["truth_global"].astype(float)
    table["configured"] = table["configured"].astype(float)
    table["error"] = table["estimate"] - table["truth"]
    has_ci = table["ci_low"].notna() & table["ci_high"].notna()
    covered = (table["ci_low"] <= table["truth"]) & (table["truth"] <= table["ci_high"])
    table["covered"] = [bool(c) if ok else None for c, ok in zip(covered, has_ci)]
    return table[list(TRUTH_COLUMNS)]


def clinical_summary(predictions: pd.DataFrame, *, truth: Mapping[str, Any] | None = None,
                     seed: int = 0, settings: ClinicalSettings | None = None) -> ClinicalResults:
    """All clinical analyses of the brain-age gap, for each model in ``predictions``.

    Parameters
    ----------
    predictions : DataFrame
        One row per (participant, model): ``participant_id``, ``split`` ("test" for held-out
        healthy controls, "clinical" for patients; other splits are left out), ``group``
        (HC/AD/PD), ``age``, ``sex`` (F/M), ``model``, the gap column(s) (``gap``,
        ``corrected_gap``) and the scores ``mmse``, ``cdr_sb``, ``updrs3``, ``hoehn_yahr``
        (NaN where missing or not applicable).
    truth : dict, optional
        True values of a simulated cohort (see ``compare_with_truth``); ``None`` leaves
        ``truth_comparison`` empty.
    seed : int, default=0
        Seed of the model-comparison bootstrap.
    settings : ClinicalSettings, optional
        Defaults to ``ClinicalSettings()`` (the bias-corrected gap; covariates age, sex, site).

    Returns
    -------
    ClinicalResults
        ``group_stats``, ``ancova``, ``posthoc``, ``correlations``, ``model_comparison``,
        ``truth_comparison``. ``p_fdr`` (Benjamini-Hochberg) is computed over one family: the
        ANCOVA group effects, the post-hoc contrasts and the score correlations of every model.

    References
    ----------
    .. [1] Vallat R. Pingouin: statistics in Python. JOSS 3(31):1026, 2018.
    .. [2] Benjamini Y, Hochberg Y. J R Stat Soc B 57(1):289-300, 1995.
    """
    settings = settings or ClinicalSettings()
    if truth is not None:
        _truth_sections(truth)  # fail before the analyses on a malformed truth
    group_stats = gap_group_stats(predictions, settings)
    ancova, posthoc, correlations, family = _apply_fdr(
        gap_ancova(predictions, settings), gap_posthoc(predictions, settings),
        gap_score_correlations(predictions, settings))
    comparison = compare_models(predictions, settings, seed=seed)
    if truth is not None:
        truth_table = compare_with_truth(group_stats, correlations, truth)
    else:
        truth_table = pd.DataFrame(columns=list(TRUTH_COLUMNS))
    meta = {"settings": dataclasses.asdict(settings), "seed": int(seed),
            "fdr_family": "ANCOVA group effects, post-hoc contrasts, score correlations",
            "fdr_family_size": family, "pingouin_version": pg.__version__}
    logger.info("clinical summary: %d tests in the FDR family", family)
    return ClinicalResults(group_stats, ancova, posthoc, correlations, comparison, truth_table,
                           meta)


def truth_from_simulation(truth_table: pd.DataFrame, predictions: pd.DataFrame,
                          settings: ClinicalSettings | None = None) -> dict[str, dict[str, float]]:
    """The ``truth`` argument of :func:`compare_with_truth` from a simulated cohort.

    The true brain-age gap of each analysed subject (``realised_biological_age - age``: the
    regional disease losses included, see ``brainage.data.simulate.realised_brain_age``) goes
    through the very statistics the estimate goes through: its group means
    (:func:`gap_group_stats`) and its partial Spearman correlation with each score, within the
    same group and subjects and with the same covariates (:func:`gap_score_correlations`). A
    perfect brain-age predictor would reach exactly these values, so an estimate's confidence
    interval is expected to cover them (a correlation a little less often: the estimate's
    prediction error attenuates it).

    Parameters
    ----------
    truth_table : DataFrame
        ``derivatives/ground_truth/participants_truth.tsv``: participant_id, group, age,
        biological_age and (cohorts simulated since issue 15) realised_biological_age; without
        the latter, biological_age is used.
    predictions : DataFrame
        The predictions table analysed (see :func:`clinical_summary`), with the scores; its
        subjects in the analysed splits are the subjects of the truth.
    settings : ClinicalSettings, optional
        Those of the analysis (covariates, minimum sizes).

    Returns
    -------
    dict
        ``{"mean_gap": {group: years}, "score_correlation": {score: rho},
        "global_mean_gap": {group: years}}``; the last is the mean of
        ``biological_age - age``, the gap without the regional disease losses.
    """
    settings = settings or ClinicalSettings()
    missing = {"participant_id", "group", "age", "biological_age"} - set(truth_table.columns)
    if missing:
        raise ValueError(f"truth_table lacks the column(s) {sorted(missing)}")
    realised = ("realised_biological_age" if "realised_biological_age" in truth_table.columns
                else "biological_age")
    subjects = predictions[predictions["split"].isin(ANALYSIS_SPLITS)].drop_duplicates(
        "participant_id").drop(columns=["gap", "corrected_gap", settings.gap_column],
                               errors="ignore")
    true = truth_table[["participant_id", "biological_age", realised]].loc[
        :, lambda t: ~t.columns.duplicated()]
    joined = subjects.drop(columns=["biological_age", "realised_biological_age"],
                           errors="ignore").merge(true, on="participant_id", how="inner")
    if len(joined) < len(subjects):
        raise ValueError(f"{len(subjects) - len(joined)} analysed subjects are missing from "
                         "truth_table (not the simulated cohort of these predictions?)")
    joined["model"] = "truth"
    joined[settings.gap_column] = joined[realised] - joined["age"]
    stats_table = gap_group_stats(joined, settings)
    correlations = gap_score_correlations(joined, settings)
    global_gap = (joined["biological_age"] - joined["age"]).groupby(joined["group"]).mean()
    return {"mean_gap": {str(r.group): float(r.mean) for r in stats_table.itertuples()
                         if r.n > 0},
            "score_correlation": {str(r.score): float(r.rho) for r in correlations.itertuples()
                                  if r.estimable},
            "global_mean_gap": {str(g): float(v) for g, v in global_gap.items()}}


# --- recovery: configured truths, power, age-matched controls, coverage ----------------------


def configured_correlations(simulation: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The score correlations the simulator was configured with, and their sample values.

    Parameters
    ----------
    simulation : dict
        The simulated cohort's ``simulation.json``; its ``true_correlations`` section holds per
        score the ``configured`` correlation of the score with the patient's latent severity
        (which also drives the accelerated ageing) and its ``realised_sample`` value.

    Returns
    -------
    dict
        ``{score: {"configured": r, "realised_sample": r}}``; empty when the section is absent
        (a cohort simulated before it existed, or real data).
    """
    if not isinstance(simulation, Mapping):
        raise TypeError(f"simulation must be a dict (simulation.json), got "
                        f"{type(simulation).__name__}")
    section = simulation.get("true_correlations") or {}
    out = {}
    for score, entry in section.items():
        if not isinstance(entry, Mapping) or "configured" not in entry:
            raise ValueError(f"simulation.json true_correlations[{score!r}] lacks 'configured'; "
                             f"got {entry!r}")
        out[str(score)] = {"configured": float(entry["configured"]),
                           "realised_sample": float(entry.get("realised_sample", np.nan))}
    return out


def gap_power(effect: float, sd: float, n_patients: int, n_controls: int, *,
              alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """Power of a two-sided two-sample t-test of a gap difference, and the patients it needs.

    ``statsmodels.stats.power.TTestIndPower`` with Cohen's d = ``effect / sd``.

    Parameters
    ----------
    effect : float
        The true difference of the mean gaps (years), e.g. the simulated PD gap.
    sd : float
        The SD of the estimated gap (years), e.g. that of the test controls.
    n_patients, n_controls : int
        The group sizes of the analysis.
    alpha : float, default=0.05
    power : float, default=0.8
        The power aimed at.

    Returns
    -------
    dict
        ``d``, ``power_now`` (at ``n_patients`` against ``n_controls``), ``n_per_group`` (equal
        groups reaching ``power``, rounded up) and ``n_patients_needed`` (patients against the
        present ``n_controls``; ``inf`` when even infinitely many patients would not do).
    """
    from statsmodels.stats.power import TTestIndPower

    if not (np.isfinite(effect) and np.isfinite(sd) and sd > 0):
        raise ValueError(f"effect must be finite and sd > 0, got effect={effect!r}, sd={sd!r}")
    if int(n_patients) < 2 or int(n_controls) < 2:
        raise ValueError(f"n_patients and n_controls must be >= 2, got {n_patients}, "
                         f"{n_controls}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r}, {power!r}")
    d = abs(float(effect)) / float(sd)
    analysis = TTestIndPower()
    now = float(analysis.power(effect_size=d, nobs1=n_patients, alpha=alpha,
                               ratio=n_controls / n_patients))
    per_group = float(analysis.solve_power(effect_size=d, alpha=alpha, power=power, ratio=1.0))
    # patients against the present controls: the smallest n whose power reaches the aim
    needed = np.inf
    for n in range(2, 100_001):
        if analysis.power(effect_size=d, nobs1=n, alpha=alpha, ratio=n_controls / n) >= power:
            needed = float(n)
            break
        if n > 50 and analysis.power(effect_size=d, nobs1=100_000, alpha=alpha,
                                     ratio=n_controls / 100_000) < power:
            break  # the present controls cap the power below the aim
    return {"d": d, "power_now": now, "n_per_group": float(np.ceil(per_group)),
            "n_patients_needed": needed}


def correlation_power(rho: float, n: int, *, alpha: float = 0.05, power: float = 0.8,
                      n_covariates: int = 0) -> dict[str, float]:
    """Power of a two-sided test of a (partial) correlation, by Fisher's z.

    Written here because statsmodels has no power function for a correlation; the normal
    approximation with standard error ``1 / sqrt(n - n_covariates - 3)`` is the one the
    correlations' intervals use.

    Returns
    -------
    dict
        ``power_now`` at ``n`` and ``n_needed`` (rounded up) for ``power``.
    """
    if not (np.isfinite(rho) and -1 < rho < 1):
        raise ValueError(f"rho must lie in (-1, 1), got {rho!r}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r}, {power!r}")
    extra = 3 + int(n_covariates)
    if int(n) <= extra:
        raise ValueError(f"n must exceed n_covariates + 3 = {extra}, got {n}")
    z, crit = abs(float(np.arctanh(rho))), stats.norm.ppf(1 - alpha / 2)
    shift = z * np.sqrt(int(n) - extra)
    now = float(stats.norm.sf(crit - shift) + stats.norm.cdf(-crit - shift))
    needed = np.inf if z == 0 else float(np.ceil(((crit + stats.norm.ppf(power)) / z) ** 2
                                                 + extra))
    return {"power_now": now, "n_needed": needed}


def age_matched_comparison(predictions: pd.DataFrame, model: str, group: str, *,
                           caliper: float = 3.0, settings: ClinicalSettings | None = None
                           ) -> dict[str, Any]:
    """Patients against age-matched test controls: the check of the ANCOVA's age adjustment.

    Each patient, oldest first, takes the test control nearest in age that is still free
    (1:1 nearest-neighbour matching without replacement); pairs further apart than
    ``caliper`` years are dropped. The gap difference of the pairs is tested by a paired
    t-test (``pingouin.ttest``). Patients are older than most controls, so an ANCOVA extrapolates
    the controls' age trend; matched pairs need no such model.

    Parameters
    ----------
    predictions : DataFrame
        As in :func:`clinical_summary`.
    model : str
    group : str
        The patient group ("AD" or "PD").
    caliper : float, default=3.0
        Largest age difference (years) of a pair.
    settings : ClinicalSettings, optional

    Returns
    -------
    dict
        ``model``, ``group``, ``n_pairs``, ``n_patients``, ``age_patients``,
        ``age_controls`` (mean ages of the pairs), ``diff`` (mean patient minus control gap,
        years), ``ci_low``, ``ci_high``, ``p``, ``estimable``, ``note``.
    """
    settings = settings or ClinicalSettings()
    if not caliper > 0:
        raise ValueError(f"caliper must be > 0 years, got {caliper!r}")
    gap = settings.gap_column
    rows = predictions[(predictions["model"] == model)
                       & predictions["split"].isin(ANALYSIS_SPLITS)].dropna(subset=[gap, "age"])
    patients = rows[rows["group"] == group].sort_values("age", ascending=False)
    controls = rows[rows["group"] == "HC"]
    free = dict(zip(controls.index, controls["age"].astype(float)))
    pairs = []
    for index, age in zip(patients.index, patients["age"].astype(float)):
        if not free:
            break
        nearest = min(free, key=lambda k: abs(free[k] - age))
        if abs(free[nearest] - age) <= caliper:
            pairs.append((index, nearest))
            del free[nearest]
    base = {"model": model, "group": group, "n_pairs": len(pairs), "n_patients": len(patients),
            "caliper": float(caliper)}
    if len(pairs) < settings.min_group_n:
        return {**base, "age_patients": np.nan, "age_controls": np.nan, "diff": np.nan,
                "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "estimable": False,
                "note": f"{len(pairs)} pairs within {caliper:g} years (need "
                        f"{settings.min_group_n})"}
    a = rows.loc[[p for p, _ in pairs], gap].to_numpy(dtype=float)
    b = rows.loc[[c for _, c in pairs], gap].to_numpy(dtype=float)
    test = pg.ttest(a, b, paired=True, confidence=settings.confidence)
    low, high = test[_pg_column(test, ("CI95", "CI95%"))].iloc[0]
    return {**base, "age_patients": float(rows.loc[[p for p, _ in pairs], "age"].mean()),
            "age_controls": float(rows.loc[[c for _, c in pairs], "age"].mean()),
            "diff": float(np.mean(a - b)), "ci_low": float(low), "ci_high": float(high),
            "p": float(test[_pg_column(test, _P_VAL)].iloc[0]), "estimable": True, "note": ""}
