"""Tests of brainage.study.tables: what a reader sees in the book's tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brainage.study.tables import format_number, format_p, p_text, report_table


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
                 ">—<", "60", "Test-set error, n = 60", 'class="brainage-table"', ">RNC<", ">L1<"):
        assert text in html, text
    for text in ("nan", "NaN", "None", "note", ">5<", ">9<", "0.9312", "not estimable", ">rnc<"):
        assert text not in html, text


def test_report_table_extra_labels_and_bad_input():
    frame = pd.DataFrame({"my_score": [1.23456], "mae": [2.0]})
    html = report_table(frame, labels={"my_score": "score (points)"}).to_html()
    assert "score (points)" in html and "1.23" in html
    with pytest.raises(TypeError, match="frame must be a pandas DataFrame"):
        report_table([1, 2])
    with pytest.raises(ValueError, match="same label"):
        report_table(pd.DataFrame({"p_unc": [0.1], "p": [0.2]}))


def test_report_table_merges_intervals_and_puts_fdr_beside_p():
    frame = pd.DataFrame({"p_fdr": [0.04], "model": ["rnc"], "mae": [4.4213], "ci_low": [3.912],
                          "ci_high": [5.01], "p": [0.0123], "note": [""], "extra": [None]})
    styler = report_table(frame, intervals={"mae": ("ci_low", "ci_high")})
    html = styler.to_html()
    assert "4.42 [3.91, 5.01]" in html
    assert list(styler.data.columns) == ["model", "MAE (years)", "p", "p (FDR)"]  # empty ones gone
    assert "95% CI low" not in html and "note" not in html and "None" not in html
    with pytest.raises(ValueError, match=r"intervals: column\(s\) \['r2'\] not in the table"):
        report_table(frame, intervals={"r2": ("ci_low", "ci_high")})


def test_report_table_paths_index_multiindex_and_stable_html(tmp_path, monkeypatch):
    (tmp_path / "data_manifest.yaml").write_text("version: 1\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame({"path": [str(tmp_path / "runs" / "a.nii.gz")], "n": [3]})
    html = report_table(frame, paths=["path"]).to_html()
    assert "runs/a.nii.gz" in html and str(tmp_path) not in html
    wide = pd.DataFrame([[1.23456, 2.0]], index=pd.Index(["siteA"], name="site"),
                        columns=pd.MultiIndex.from_tuples([("mae", "rnc"), ("mae", "l1")]))
    styler = report_table(wide, index=True)
    assert list(styler.data.columns) == ["site", "mae rnc", "mae l1"]
    assert "siteA" in styler.to_html() and "1.23" in styler.to_html()
    assert report_table(wide, index=True).to_html() == styler.to_html()  # no random ids


def test_format_interval():
    from brainage.study.tables import format_interval

    assert format_interval(0.5, 0.25, 0.75) == "0.500 [0.250, 0.750]"
    assert format_interval(float("nan"), 0.1, 0.2) == "not estimable"
    assert format_interval(0.5, float("nan"), 0.2) == "0.500"


def test_missing_label_and_missing_number_are_a_dash():
    frame = pd.DataFrame({"quantity": ["mean_gap", "score_correlation"], "score": [None, "mmse"],
                          "estimate": [1.5, float("nan")]})
    html = report_table(frame).to_html()
    assert html.count(">—<") == 2 and ">MMSE<" in html and "not estimable" not in html
    assert ">mean gap<" in html and ">score correlation<" in html
    for text in ("None", "mean_gap", "score_correlation", ">mmse<"):
        assert text not in html, text


def test_all_missing_numbers_stay_as_a_dash():
    frame = pd.DataFrame({"rho": [float("nan")], "ci_low": [float("nan")],
                          "ci_high": [float("nan")], "note": ["n = 3 is too few"]})
    styler = report_table(frame, intervals={"rho": ("ci_low", "ci_high")})
    assert list(styler.data.columns) == ["Spearman ρ", "note"]
    assert ">—<" in styler.to_html() and "not estimable" not in styler.to_html()


@pytest.mark.parametrize(("value", "shown"), [
    ("hoehn_yahr", "Hoehn and Yahr stage"), ("updrs3", "MDS-UPDRS-III"), ("cdr_sb", "CDR-SB"),
    ("rnc", "RNC"), ("l1", "L1"),
    ("mean_gap", "mean gap"), ("age,sex,site_siteB", "age, sex, site siteB"), ("siteA", "siteA"),
    ("sub-0001", "sub-0001"), ("data/sub_1.nii.gz", "data/sub_1.nii.gz"), ("two words", "two words"),
    (3.5, 3.5), (None, None),
])
def test_display_value_names_identifiers(value, shown):
    from brainage.study.tables import display_value

    assert display_value(value) == shown


def test_counts_in_a_float_column_print_as_integers_and_measures_keep_their_digits():
    # a count column is float when one row has none (pandas), and must still read "12", not
    # "12.0"; a measure that happens to be whole in one row keeps the column's format
    frame = pd.DataFrame({"n": [12.0, float("nan"), 3.0], "mae": [5.0, 4.4213, 6.1],
                          "model": ["rnc", "l1", "rnc"]})
    styler = report_table(frame)
    html = styler.to_html()
    assert ">12<" in html and ">3<" in html and "12.0" not in html
    assert ">5.00<" in html and ">4.42<" in html and ">—<" in html


def test_format_p_passes_a_reason_through():
    assert format_p("covariate, not corrected") == "covariate, not corrected"


def test_text_columns_break_anywhere_but_keep_their_longest_word():
    """A path may break anywhere, so it cannot widen the table; a short label ("siteB") keeps
    a minimum width of its longest word (at most 8 characters, plus one), so it never breaks."""
    import re

    frame = pd.DataFrame({"site": ["siteB", "siteC"], "note": ["a short note", "two words"],
                          "scan": ["data/simulated/quick/sub-0001/anat/sub-0001_T1w.nii.gz",
                                   "data/simulated/quick/sub-0002/anat/sub-0002_T1w.nii.gz"],
                          "age": [26.2, 85.4]})
    html = report_table(frame).to_html()

    def style(column: int) -> str:
        rules = re.findall(r"#T_\w+_row0_col" + str(column) + r"[^{]*\{([^}]*)\}", html)
        return " ".join(rules)

    for column, width in ((0, 6), (1, 6), (2, 9)):
        assert "overflow-wrap: anywhere" in style(column) and "text-align: left" in style(column)
        assert f"min-width: {width}ch" in style(column)
    assert "overflow-wrap" not in style(3) and "min-width" not in style(3)  # numbers: the CSS


@pytest.mark.parametrize(("value", "label", "text"), [
    (0.0234, "p", "p = 0.023"), (0.00099, "p_FDR", "p_FDR < 0.001"), (0.001, "p", "p = 0.001"),
    (float("nan"), "p", "p not estimable"), (None, "p<sub>FDR</sub>", "p<sub>FDR</sub> not estimable"),
    ("not in the FDR family", "p", "p not in the FDR family"),
])
def test_p_text_labels_the_one_formatter(value, label, text):
    # issue 27, item 4: sentences and figure titles print p-values through format_p
    assert p_text(value, label) == text


def test_natural_order_sorts_bins_by_number_and_known_values_first():
    from brainage.study.tables import natural_order

    frame = pd.DataFrame({"model": ["l1", "rnc", "rnc", "rnc", "rnc", "l1"],
                          "age_bin": ["[20, 30)", "[90, 101)", "all", "[20, 30)", "[100, 110)",
                                      "[9, 20)"],
                          "site": ["siteB", "siteC", "siteA", "siteB", "siteA", "siteA"]})
    out = natural_order(frame, ["model", "age_bin"])
    assert list(out["model"]) == ["rnc"] * 4 + ["l1"] * 2
    assert list(out["age_bin"]) == ["[20, 30)", "[90, 101)", "[100, 110)", "all", "[9, 20)",
                                    "[20, 30)"]
    assert list(natural_order(frame, ["site"])["site"]) == ["siteA"] * 3 + ["siteB"] * 2 + ["siteC"]
    splits = pd.DataFrame({"split": ["clinical", "test", "train", "val"]})
    assert list(natural_order(splits, ["split"])["split"]) == ["train", "val", "test", "clinical"]
    html = report_table(frame, order=["model", "site"]).to_html()
    assert html.index(">RNC<") < html.index(">L1<")
    with pytest.raises(ValueError, match=r"natural_order: column\(s\) \['age'\] not in the table"):
        natural_order(frame, ["age"])
