"""Tests of brainage.analysis.transfer: real-scan accuracy of a model (issue 28, item 4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brainage.analysis.transfer import TRANSFER_COLUMNS, transfer_accuracy, transfer_table

AGE = [20.0, 30.0, 40.0, 50.0, 60.0]
PREDICTED = [30.0, 30.0, 40.0, 40.0, 50.0]


def test_transfer_accuracy_hand_checked():
    # deviations: age -20 -10 0 10 20, predicted (mean 38) -8 -8 2 2 12: cov 500, var 1000,
    # sum of squares 280; r = 500 / sqrt(1000 * 280); Fisher z +- 1.96 / sqrt(5 - 3)
    got = transfer_accuracy(AGE, PREDICTED, train_mean=45.0)
    r = 500 / math.sqrt(1000 * 280)
    z, half = math.atanh(r), 1.959964 / math.sqrt(2)
    assert got["r"] == pytest.approx(r, abs=1e-9)
    assert got["r_low"] == pytest.approx(math.tanh(z - half), abs=1e-4)
    assert got["r_high"] == pytest.approx(math.tanh(z + half), abs=1e-4)
    assert got["mae"] == pytest.approx(6.0) and got["mean_gap"] == pytest.approx(-2.0)
    assert got["slope"] == pytest.approx(0.5) and got["intercept"] == pytest.approx(18.0)
    assert got["mae_own_mean"] == pytest.approx(12.0)  # |age - 40|: 20 10 0 10 20
    assert got["mae_train_mean"] == pytest.approx(13.0)  # |age - 45|: 25 15 5 5 15
    assert got["n"] == 5


def test_a_level_offset_keeps_r_and_slope_but_not_the_gap():
    # the failure issue 28 measured: real brains ordered, every one about 26 years too young
    rng = np.random.default_rng(0)
    age = rng.uniform(50, 75, size=40)
    predicted = age + rng.normal(0, 3, size=40)
    base, shifted = transfer_accuracy(age, predicted), transfer_accuracy(age, predicted - 26)
    assert shifted["r"] == pytest.approx(base["r"]) and shifted["slope"] == pytest.approx(
        base["slope"])
    assert shifted["mean_gap"] == pytest.approx(base["mean_gap"] - 26)
    assert shifted["mae"] > shifted["mae_own_mean"] > base["mae"]


def test_constant_prediction_has_no_r():
    got = transfer_accuracy(AGE, [40.0] * 5)
    assert math.isnan(got["r"]) and math.isnan(got["r_low"]) and got["slope"] == pytest.approx(0)
    assert math.isnan(got["mae_train_mean"])
    three = transfer_accuracy(AGE[:3], PREDICTED[:3])
    assert not math.isnan(three["r"]) and math.isnan(three["r_low"])  # interval needs n >= 4


@pytest.mark.parametrize(("age", "predicted", "kwargs", "words"), [
    (AGE, PREDICTED[:4], {}, ["same length", "5 and 4"]),
    (AGE[:2], PREDICTED[:2], {}, ["at least 3", "got 2"]),
    ([20.0, np.nan, 40.0], [1.0, 2.0, 3.0], {}, ["finite"]),
    (AGE, PREDICTED, {"confidence": 1.5}, ["confidence", "(0, 1)", "1.5"]),
])
def test_bad_input_is_named(age, predicted, kwargs, words):
    with pytest.raises(ValueError) as err:
        transfer_accuracy(age, predicted, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_transfer_table_groups_and_skips_missing_ages():
    table = pd.DataFrame({"model": ["rnc"] * 6 + ["l1"] * 5,
                          "age": [*AGE, np.nan, *AGE],
                          "predicted": [*PREDICTED, 50.0, *(a + 1 for a in AGE)]})
    out = transfer_table(table, train_means={"rnc": 45.0, "l1": 40.0})
    assert list(out.columns) == ["model", *TRANSFER_COLUMNS]
    assert list(out["model"]) == ["rnc", "l1"] and list(out["n"]) == [5, 5]
    rnc, l1 = out.iloc[0], out.iloc[1]
    assert rnc["mae"] == pytest.approx(6.0) and rnc["mae_train_mean"] == pytest.approx(13.0)
    assert l1["mean_gap"] == pytest.approx(1.0) and l1["mae_train_mean"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="lacks the column.*'dataset'"):
        transfer_table(table, by=("model", "dataset"))
