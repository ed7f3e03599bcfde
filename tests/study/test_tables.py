"""Tests of brainage.study.tables: what a reader sees in the book's tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brainage.study.tables import format_number, format_p, report_table


@pytest.mark.parametrize(("value", "text"), [
    (4.4213, "4.42"), (0.000123456, "0.000123"), (12345.6, "12346"), (7, "7"),
    (np.int64(60), "60"), (-0.31649, "-0.316"), (0.0, "0"), (1e-12, "0.00000000000100"),
    (float("nan"), "not estimable"), (None, "not estimable"), (pd.NA, "not estimable"),
    (True, "yes"), (np.float32(2.5), "2.50"), (math.inf, "∞"), ("siteA", "siteA"),
])
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (0.0000001, "< 0.001"), (0.00099, "< 0.001"), (0.001, "0.001"), (0.0234, "0.023"),
    (0.5, "0.500"), (float("nan"), "not estimable"), (None, "not estimable"),
])
def test_format_p(value, text):
    assert format_p(value) == text


def test_report_table_labels_rounds_and_hides_the_index():
    frame = pd.DataFrame({"model": ["rnc", "l1"], "mae": [4.4213, 4.7391], "r2": [0.9312, 0.92],
                          "p": [2e-7, 0.0456], "p_fdr": [1e-6, float("nan")], "n": [60, 60],
                          "note": ["", ""]}, index=[5, 9])
    html = report_table(frame, drop=["note"], caption="Test-set error, n = 60").to_html()
    for text in ("MAE (years)", "R²", "p (FDR)", "4.42", "4.74", "0.931", "< 0.001", "0.046",
                 "not estimable", "60", "Test-set error, n = 60", 'class="brainage-table"'):
        assert text in html, text
    for text in ("nan", "NaN", "None", "note", ">5<", ">9<", "0.9312"):
        assert text not in html, text


def test_report_table_extra_labels_and_bad_input():
    frame = pd.DataFrame({"my_score": [1.23456], "mae": [2.0]})
    html = report_table(frame, labels={"my_score": "score (points)"}).to_html()
    assert "score (points)" in html and "1.23" in html
    with pytest.raises(TypeError, match="frame must be a pandas DataFrame"):
        report_table([1, 2])
    with pytest.raises(ValueError, match="same label"):
        report_table(pd.DataFrame({"p_unc": [0.1], "p": [0.2]}))
