"""Tables as a reader of the book sees them: human labels with units, few digits, no index.

Every results table of the notebooks goes through :func:`report_table`, so that they all read
the same way: columns named for a reader (``MAE (years)``, not ``mae``), numbers to 3
significant digits, p-values as ``< 0.001`` or three decimals with the FDR-corrected value next
to the raw one, integers as integers (also in a float column of whole numbers), a missing value
as a dash "—" (never ``nan``; sentences say "not estimable"), booleans as yes/no, identifiers in
cells by their display names (:data:`VALUES`: ``hoehn_yahr`` as "Hoehn & Yahr", ``rnc`` as
"RNC"), and no pandas index. The result is a pandas ``Styler``, which myst-nb renders as an
HTML table with its caption; the book's stylesheet wraps it to the content column.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from brainage.study.profiles import display_path

__all__ = ["CURVE_METHOD_NAMES", "LABELS", "SCORE_NAMES", "VALUES", "display_value",
           "format_interval", "format_number", "format_p", "natural_order", "p_text",
           "report_table"]

#: The clinical scores as the book names them everywhere: tables, figures and sentences.
SCORE_NAMES: dict[str, str] = {"mmse": "MMSE", "cdr_sb": "CDR-SB", "updrs3": "MDS-UPDRS-III",
                               "hoehn_yahr": "Hoehn and Yahr stage"}

#: How the book names the methods of
#: :func:`brainage.analysis.site_calibration.calibration_curve` (tables and figures).
CURVE_METHOD_NAMES: dict[str, str] = {
    "none": "model as trained", "refit": "plain linear refit", "site": "site calibration",
    "site, own slope": "site calibration, own slope", "mean age": "the k scans' mean age"}

#: Reader-facing names of the columns the study's tables use (units in brackets).
LABELS: dict[str, str] = {
    "participant_id": "participant",
    "model": "model",
    "split": "split",
    "group": "group",
    "site": "site",
    "sex": "sex",
    "age": "age (years)",
    "n": "n",
    "mae": "MAE (years)",
    "rmse": "RMSE (years)",
    "r2": "R²",
    "pearson_r": "Pearson r",
    "bias": "mean gap (years)",
    "value": "value",
    "ci_low": "95% CI low",
    "ci_high": "95% CI high",
    "mean_gap": "mean gap (years)",
    "sd_gap": "SD of gap (years)",
    "gap": "gap (years)",
    "corrected_gap": "corrected gap (years)",
    "predicted": "predicted age (years)",
    "corrected_predicted": "corrected predicted age (years)",
    "hedges_g": "Hedges' g",
    "rho": "Spearman ρ",
    "F": "F",
    "df": "df",
    "p": "p",
    "p_unc": "p",
    "p_fdr": "p (FDR)",
    "estimable": "estimable",
    "registration_misfit_mm": "registration misfit (mm)",
    "age_bin": "age bin (years)",
    "age_band": "age (years)",
    "score": "score",
    "quantity": "quantity",
    "estimate": "estimate",
    "truth": "truth",
    "covered": "truth covered",
    **SCORE_NAMES,
    "icc2": "ICC(2,1)",
    "icc3": "ICC(3,1)",
    "rate": "rate",
    "flagged": "flagged",
    "ood_score": "OOD score",
    "ood": "flagged OOD",
    "width": "mean width (years)",
    "coverage": "coverage",
    "nominal_in_ci": "nominal level in CI",
    "severity": "severity",
    "check": "check",
    "message": "problem",
}

#: Display names of identifiers that appear as *values* in the study's tables (a model, a
#: score, a statistic's name): a reader sees "Hoehn & Yahr", not ``hoehn_yahr``.
VALUES: dict[str, str] = {
    "rnc": "RNC", "l1": "L1", "null": "permuted-age control", "permuted": "permuted-age control",
    **SCORE_NAMES,
    "mean_gap": "mean gap", "score_correlation": "score correlation", "sd_gap": "SD of gap",
    "corrected_gap": "corrected gap", "gap": "gap", "predicted": "predicted age",
    "corrected_predicted": "corrected predicted age", "raw": "raw", "corrected": "corrected",
    "train": "training", "val": "validation", "test": "test", "clinical": "patients",
    "external_test": "external test", "rnc_encoder": "RNC encoder", "rnc_head": "RNC head",
    "age": "age", "sex": "sex", "site": "site", "group": "group",
}


#: The order a reader expects of the values of some columns (others: natural sort).
ORDERS: dict[str, tuple[str, ...]] = {
    "model": ("rnc", "l1", "permuted", "null", "mean age"),
    "group": ("HC", "AD", "PD"),
    "split": ("train", "val", "test", "clinical", "external_test"),
}


def _natural_key(column: str, value: Any) -> tuple:
    """Sort key: a column's known order, else numbers inside the text ("[20, 30)" before
    "[100, 110)", "siteA" before "siteB"), "all" and missing values last."""
    if _is_missing(value):
        return (3,)
    text = str(value)
    known = [v.lower() for v in ORDERS.get(column, ())]
    if text.lower() in known:
        return (0, known.index(text.lower()))
    if text.lower() in {"all", "total", "overall"}:
        return (2,)
    parts = re.split(r"(-?\d+(?:\.\d+)?)", text)
    return (1, tuple((0, float(p), "") if re.fullmatch(r"-?\d+(?:\.\d+)?", p) else (1, 0.0, p)
                     for p in parts if p))


def natural_order(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``frame``'s rows sorted by ``columns`` in the order a reader expects.

    Models RNC before L1, groups HC, AD, PD, splits train, val, test, clinical; other text in
    natural order (age bins by their numbers, not as strings: "[20, 30)" before "[100, 110)";
    "siteA" before "siteB"); "all" rows and missing values last. Stable: rows equal in
    ``columns`` keep their order.

    Raises
    ------
    ValueError
        If a column is not in the frame.
    """
    columns = list(columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"natural_order: column(s) {missing} not in the table; columns: "
                         f"{list(frame.columns)}")
    keys = [frame[c].map(lambda v, c=c: _natural_key(c, v)) for c in columns]
    order = sorted(range(len(frame)), key=lambda i: tuple(k.iloc[i] for k in keys))
    return frame.iloc[order]


def display_value(value: Any) -> Any:
    """An identifier's display name (:data:`VALUES`), and ``C(site)[T.siteB]``-style model
    terms as words; anything else unchanged.

    Examples
    --------
    >>> display_value("hoehn_yahr"), display_value("rnc"), display_value("siteA")
    ('Hoehn & Yahr', 'RNC', 'siteA')
    """
    if not isinstance(value, str):
        return value
    if value in VALUES:
        return VALUES[value]
    if "_" in value and "/" not in value and " " not in value and "." not in value:
        # a compound identifier ("age,sex,site_siteB", "mean_gap_hc"): its parts as words
        parts = [VALUES.get(p, p) for p in value.replace(",", ", ").split("_")]
        return " ".join(parts)
    return value


#: Columns holding p-values (shown as ``< 0.001`` or three decimals).
P_COLUMNS = frozenset({"p", "p_unc", "p_fdr", "p_value", "pval", "p-unc", "p_corr"})

_NOT_ESTIMABLE = "not estimable"
#: What a table cell shows where a value does not apply or could not be estimated.
_DASH = "—"


def _longest_token(column: pd.Series) -> int:
    """Length of the longest whitespace-free run of characters in a column's values."""
    return max((len(token) for value in column if isinstance(value, str)
                for token in value.split()), default=0)


def format_number(value: Any, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits (integers as they are); NaN: not estimable.

    Examples
    --------
    >>> format_number(4.4213), format_number(0.000123), format_number(12345.6), format_number(7)
    ('4.42', '0.000123', '12346', '7')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return _NOT_ESTIMABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if not isinstance(value, numbers.Real):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return _NOT_ESTIMABLE
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{x:.{decimals}f}"
    return "0" if float(text) == 0 else text


def format_p(value: Any) -> str:
    """A p-value as a reader expects it: ``< 0.001`` below 0.001, else three decimals."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return _NOT_ESTIMABLE
    if isinstance(value, str):  # a reason in place of a p-value ("not in the FDR family")
        return value
    x = float(value)
    if math.isnan(x):
        return _NOT_ESTIMABLE
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def p_text(value: Any, label: str = "p") -> str:
    """A p-value after its label, as sentences and figure titles print it.

    ``p = 0.012``, ``p < 0.001``, ``p not estimable``; the value is formatted by
    :func:`format_p`, the one p-value formatter of the report layer.

    Parameters
    ----------
    value : float, str or None
        The p-value (a string is a reason given in its place).
    label : str, default="p"
        What precedes it (``"p_FDR"``, ``"p<sub>FDR</sub>"``).
    """
    text = format_p(value)
    try:
        float(text)
    except ValueError:  # "< 0.001", "not estimable" or a reason
        return f"{label} {text}"
    return f"{label} = {text}"


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any, digits: int, whole: bool = False) -> str:
    """One table cell: a dash where nothing applies, display names, counts as integers."""
    if _is_missing(value):
        return _DASH
    if isinstance(value, str):
        text = display_value(value)
        return _DASH if text == _NOT_ESTIMABLE else text
    if whole and isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return str(int(value))
    return format_number(value, digits)


def _whole_numbers(column: pd.Series) -> bool:
    """A float column of counts (floats only because one is missing): every value whole."""
    if not pd.api.types.is_float_dtype(column):
        return False
    values = column.dropna().to_numpy(dtype=float)
    return bool(len(values)) and bool((values == values.round()).all()) and bool(
        (abs(values) < 2**53).all())


def _formatter(column: str, digits: int, p_columns: frozenset[str], whole: bool = False) -> Any:
    if column in p_columns:
        return lambda value: _DASH if _is_missing(value) else format_p(value)
    return lambda value: _cell(value, digits, whole)


def format_interval(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    """``value [low, high]`` with :func:`format_number`; a missing value: not estimable.

    Examples
    --------
    >>> format_interval(4.4213, 3.912, 5.01)
    '4.42 [3.91, 5.01]'
    """
    text = format_number(value, digits)
    if text == _NOT_ESTIMABLE:
        return text
    bounds = [format_number(b, digits) for b in (low, high)]
    if _NOT_ESTIMABLE in bounds:
        return text
    return f"{text} [{bounds[0]}, {bounds[1]}]"


def _is_empty(series: pd.Series) -> bool:
    """A column with nothing to show: every value missing or an empty string."""
    return bool(series.map(lambda v: _is_missing(v) or (isinstance(v, str) and not v.strip()))
                .all())


def _merge_intervals(table: pd.DataFrame, intervals: Mapping[str, tuple[str, str]],
                     digits: int) -> pd.DataFrame:
    for column, (low, high) in intervals.items():
        missing = [c for c in (column, low, high) if c not in table.columns]
        if missing:
            raise ValueError(f"intervals: column(s) {missing} not in the table; columns: "
                             f"{list(table.columns)}")
        table[column] = [_DASH if _is_missing(v) else format_interval(v, lo, hi, digits)
                         for v, lo, hi in zip(table[column], table[low], table[high])]
        table = table.drop(columns=[low, high])
    return table


def _p_beside_fdr(columns: list[str], p_columns: frozenset[str]) -> list[str]:
    """Move an FDR-corrected ``p_fdr`` column right after the raw p-value it corrects."""
    if "p_fdr" not in columns:
        return columns
    raw = [c for c in columns if c in p_columns and c != "p_fdr"]
    if not raw:
        return columns
    ordered = [c for c in columns if c != "p_fdr"]
    ordered.insert(ordered.index(raw[0]) + 1, "p_fdr")
    return ordered


def report_table(frame: pd.DataFrame, *, labels: Mapping[str, str] | None = None,
                 drop: Iterable[str] = (), caption: str | None = None, digits: int = 3,
                 p_columns: Iterable[str] = P_COLUMNS,
                 intervals: Mapping[str, tuple[str, str]] | None = None,
                 paths: Iterable[str] = (), drop_empty: bool = True,
                 index: bool | str = False, order: Iterable[str] = ()) -> Any:
    """A results table for the book: labelled, rounded, without index, NaN as a dash.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table; its index is dropped unless ``index`` is set (move what matters into a
        column first). Hierarchical column labels are joined with a space.
    labels : mapping of str to str, optional
        Column labels that override or extend :data:`LABELS`; other columns keep their name,
        with underscores as spaces.
    drop : iterable of str, default=()
        Columns left out (e.g. a constant ``covariates``); absent names are ignored.
    caption : str, optional
        A caption inside the HTML table. The book's tables get theirs from the page instead
        (``{glue:figure}`` with ``:name: tab-...``), which numbers them; leave this out there.
    digits : int, default=3
        Significant digits of the numbers.
    p_columns : iterable of str, default=P_COLUMNS
        Columns holding p-values. An FDR-corrected ``p_fdr`` column is moved beside the first
        raw one.
    intervals : mapping of str to (str, str), optional
        ``{value_column: (low_column, high_column)}``: each value is shown as ``value [low,
        high]`` in one column (narrower than three), the bound columns are dropped.
    paths : iterable of str, default=()
        Columns holding file paths, shown relative to the project
        (:func:`brainage.study.profiles.display_path`).
    drop_empty : bool, default=True
        Leave out text columns in which every value is missing or an empty string (an unused
        ``note``). Numeric columns stay: there a missing value reads "—".
    index : bool or str, default=False
        Keep the index as the first column (its name, or this string, as the label).
    order : iterable of str, default=()
        Columns to sort the rows by, in the order a reader expects (:func:`natural_order`:
        age bins by number, RNC before L1, HC before patients); default: the frame's order.

    Returns
    -------
    pandas.io.formats.style.Styler
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    names = {**LABELS, **(labels or {})}
    table = frame.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [" ".join(str(p) for p in parts if str(p)) for parts in table.columns]
    if index is not False:
        label = index if isinstance(index, str) else (table.index.name or "")
        table = table.reset_index(names=[label] if table.index.nlevels == 1 else None)
    table.columns = [str(c) for c in table.columns]
    if order:
        table = natural_order(table, order)
    table = table.reset_index(drop=True)
    table = table[[c for c in table.columns if c not in set(drop)]]
    if drop_empty:  # empty text columns (a blank note); a numeric NaN says "not estimable"
        keep_numeric = {c for c in table.columns if pd.api.types.is_float_dtype(table[c])}
        keep_numeric |= {c for v, bounds in (intervals or {}).items() for c in (v, *bounds)}
        table = table[[c for c in table.columns if c in keep_numeric or not _is_empty(table[c])]]
    for column in paths:
        if column in table.columns:
            table[column] = table[column].map(lambda p: display_path(p) if isinstance(p, str) and p
                                              else p)
    table = _merge_intervals(table, intervals or {}, digits)
    intervals_done = set(intervals or {})
    pcols = frozenset(p_columns)
    table = table[_p_beside_fdr(list(table.columns), pcols)]
    numeric, boolean = pd.api.types.is_numeric_dtype, pd.api.types.is_bool_dtype
    is_text = {c: not numeric(table[c]) or boolean(table[c]) for c in table.columns}
    formats = {c: _formatter(c, digits, pcols, c not in intervals_done
                             and _whole_numbers(table[c])) for c in table.columns}
    renamed = {c: names.get(c, c.replace("_", " ")) for c in table.columns}
    if len(set(renamed.values())) != len(renamed):
        raise ValueError(f"two columns would get the same label: {renamed}")
    styler = table.rename(columns=renamed).style.format(
        {renamed[c]: f for c, f in formats.items()}).hide(axis="index")
    styler = styler.set_table_attributes('class="brainage-table"')
    # Text columns break anywhere, so that a long path or note cannot widen the table; but
    # "anywhere" also lets the browser's automatic layout squeeze a column to one character
    # ("site" above "B" in the cohort table), so each keeps a minimum width of its longest word
    # (at most 8 characters, plus one for proportional letters wider than the "0" of a ch).
    for c in table.columns:
        if is_text[c] and c not in intervals_done:
            width = min(_longest_token(table[c].map(formats[c])), 8) + 1
            styler = styler.set_properties(subset=[renamed[c]], **{
                "text-align": "left", "overflow-wrap": "anywhere", "min-width": f"{width}ch"})
    # a uuid from the labels, not a random one: the same table renders to the same HTML
    digest = hashlib.sha1("|".join(renamed.values()).encode()).hexdigest()[:8]
    styler = styler.set_uuid(f"t{digest}")
    return styler.set_caption(caption) if caption else styler
