"""Tables as a reader of the book sees them: human labels with units, few digits, no index.

Every results table of the notebooks goes through :func:`report_table`, so that they all read
the same way: columns named for a reader (``MAE (years)``, not ``mae``), numbers to 3
significant digits, p-values as ``< 0.001`` or three decimals with the FDR-corrected value next
to the raw one, integers as integers, missing values as "not estimable" (never ``nan``), booleans
as yes/no, and no pandas index. The result is a pandas ``Styler``, which myst-nb renders as an
HTML table with its caption; the book's stylesheet wraps it to the content column.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

__all__ = ["LABELS", "format_number", "format_p", "report_table"]

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
    "alignment": "alignment score",
}

#: Columns holding p-values (shown as ``< 0.001`` or three decimals).
P_COLUMNS = frozenset({"p", "p_unc", "p_fdr", "p_value", "pval", "p-unc", "p_corr"})

_NOT_ESTIMABLE = "not estimable"


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
    x = float(value)
    if math.isnan(x):
        return _NOT_ESTIMABLE
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _formatter(column: str, digits: int, p_columns: frozenset[str]) -> Any:
    if column in p_columns:
        return format_p
    return lambda value: format_number(value, digits)


def report_table(frame: pd.DataFrame, *, labels: Mapping[str, str] | None = None,
                 drop: Iterable[str] = (), caption: str | None = None, digits: int = 3,
                 p_columns: Iterable[str] = P_COLUMNS) -> Any:
    """A results table for the book: labelled, rounded, without index, NaN as not estimable.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table; its index is dropped (move what matters into a column first).
    labels : mapping of str to str, optional
        Column labels that override or extend :data:`LABELS`; other columns keep their name,
        with underscores as spaces.
    drop : iterable of str, default=()
        Columns left out (e.g. an all-empty ``note``); absent names are ignored.
    caption : str, optional
        The table's caption (what is shown, n, units).
    digits : int, default=3
        Significant digits of the numbers.
    p_columns : iterable of str, default=P_COLUMNS
        Columns holding p-values.

    Returns
    -------
    pandas.io.formats.style.Styler
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    names = {**LABELS, **(labels or {})}
    keep = [c for c in frame.columns if c not in set(drop)]
    table = frame[keep].reset_index(drop=True)
    pcols = frozenset(p_columns)
    formats = {column: _formatter(str(column), digits, pcols) for column in table.columns}
    renamed = {c: names.get(str(c), str(c).replace("_", " ")) for c in table.columns}
    if len(set(renamed.values())) != len(renamed):
        raise ValueError(f"two columns would get the same label: {renamed}")
    styler = table.rename(columns=renamed).style.format(
        {renamed[c]: f for c, f in formats.items()}).hide(axis="index")
    styler = styler.set_table_attributes('class="brainage-table"')
    return styler.set_caption(caption) if caption else styler
