"""Tests of brainage.analysis.reliability: ICC, agreement, SDC, pairing, paired comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainage.analysis import reliability as rel


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _anova_iccs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """ICC(2,1) and ICC(3,1) from the two-way ANOVA mean squares (McGraw & Wong 1996)."""
    y = np.c_[a, b]
    n, k = y.shape
    grand = y.mean()
    msr = k * ((y.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((y.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    sse = ((y - y.mean(axis=1, keepdims=True) - y.mean(axis=0) + grand) ** 2).sum()
    mse = sse / ((n - 1) * (k - 1))
    icc3 = (msr - mse) / (msr + (k - 1) * mse)
    icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    return icc2, icc3


def test_agreement_hand_checked():
    out = rel.agreement([1, 2, 3, 4], [2, 2, 5, 4], n_boot=200)
    # d = (1, 0, 2, 0): mean 0.75, SD sqrt(2.75 / 3); SEM sqrt(mean(d^2) / 2) = sqrt(0.625)
    sd = np.sqrt(2.75 / 3)
    assert out["n"] == 4
    assert out["mean_diff"] == pytest.approx(0.75)
    assert out["loa_low"] == pytest.approx(0.75 - 1.959964 * sd, abs=1e-5)
    assert out["loa_high"] == pytest.approx(0.75 + 1.959964 * sd, abs=1e-5)
    assert out["mad"] == pytest.approx(0.75)
    assert out["sem"] == pytest.approx(np.sqrt(0.625))
    assert out["sdc"] == pytest.approx(1.959964 * np.sqrt(2) * np.sqrt(0.625), abs=1e-5)
    assert out["sdc_low"] <= out["sdc"] <= out["sdc_high"]
    assert out["mad_low"] <= out["mad"] <= out["mad_high"]


def test_icc_matches_the_anova_formulas(rng):
    true = rng.normal(60, 15, size=40)
    a = true + rng.normal(0, 3, size=40)
    b = true + 2.0 + rng.normal(0, 3, size=40)  # an offset: ICC(2,1) < ICC(3,1)
    out = rel.icc(a, b)
    icc2, icc3 = _anova_iccs(a, b)
    assert out["icc2"] == pytest.approx(icc2, abs=1e-9)
    assert out["icc3"] == pytest.approx(icc3, abs=1e-9)
    assert out["icc2"] < out["icc3"]
    for key in ("icc2", "icc3"):  # pingouin's CI bounds are rounded to 2 decimals
        assert out[f"{key}_low"] - 0.005 <= out[key] <= out[f"{key}_high"] + 0.005


def test_sem_recovers_the_measurement_noise_and_ignores_the_spread(rng):
    """The SEM must measure the noise between scans, not the spread of true values."""
    for spread in (5.0, 20.0):
        true = rng.normal(60, spread, size=4000)
        a = true + rng.normal(0, 1.5, size=4000)
        b = true + rng.normal(0, 1.5, size=4000)
        out = rel.agreement(a, b, n_boot=100)
        assert out["sem"] == pytest.approx(1.5, rel=0.05)
        assert out["sdc"] == pytest.approx(1.96 * np.sqrt(2) * 1.5, rel=0.05)
    assert rel.icc(a, b)["icc3"] == pytest.approx(20**2 / (20**2 + 1.5**2), abs=0.01)


def test_offset_counts_in_sem_and_icc2_not_icc3(rng):
    true = rng.normal(60, 10, size=500)
    a = true + rng.normal(0, 1, size=500)
    b = a + 3.0
    out = rel.agreement(a, b, n_boot=100)
    assert out["mean_diff"] == pytest.approx(3.0)
    assert out["loa_high"] - out["loa_low"] == pytest.approx(0, abs=1e-9)
    assert out["sem"] == pytest.approx(3 / np.sqrt(2))
    iccs = rel.icc(a, b)
    assert iccs["icc3"] == pytest.approx(1.0)
    assert iccs["icc2"] < 0.97


@pytest.mark.parametrize(
    ("first", "second", "words"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "equal length"),
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "finite"),
        ([1.0, 2.0], [1.0, 2.0], "at least 3"),
    ],
)
def test_bad_pairs_are_refused(first, second, words):
    with pytest.raises(ValueError, match=words):
        rel.agreement(first, second)
    with pytest.raises(ValueError, match=words):
        rel.icc(first, second)


def test_bad_n_boot_is_refused():
    with pytest.raises(ValueError, match="n_boot"):
        rel.agreement([1, 2, 3], [1, 2, 4], n_boot=True)


def _predictions(rng: np.random.Generator, n: int = 12) -> pd.DataFrame:
    rows = []
    true = rng.uniform(30, 80, size=n)
    for model, noise in (("rnc", 1.0), ("l1", 3.0)):
        for session, shift in (("", 0.0), ("ses-repeat", 0.0), ("ses-travel", 2.0)):
            pred = true + shift + rng.normal(0, noise, size=n)
            rows.append(pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(n)],
                                      "session": session, "model": model, "predicted": pred,
                                      "corrected_gap": pred - true, "error": ""}))
    return pd.concat(rows, ignore_index=True)


def test_pair_sessions_and_table(rng):
    table = _predictions(rng)
    table.loc[(table["participant_id"] == "sub-03") & (table["session"] == "ses-repeat"),
              "error"] = "sub-03: broken file"
    pairs = rel.pair_sessions(table, comparisons={"within site": "ses-repeat",
                                                  "across sites": "ses-travel"})
    counts = pairs.groupby(["model", "comparison", "measure"]).size()
    assert counts[("rnc", "within site", "predicted")] == 11  # the failed scan is left out
    assert counts[("rnc", "across sites", "predicted")] == 12
    first = table[(table["session"] == "") & (table["model"] == "l1")].set_index(
        "participant_id")["predicted"]
    part = pairs[(pairs["model"] == "l1") & (pairs["measure"] == "predicted")]
    np.testing.assert_allclose(part["first"], first.loc[part["participant_id"]].to_numpy())
    out = rel.reliability_table(pairs, n_boot=200)
    assert list(out.columns) == ["model", "comparison", "measure", *rel.RELIABILITY_COLUMNS]
    assert len(out) == 8
    across = out.set_index(["model", "comparison", "measure"]).loc[
        ("rnc", "across sites", "predicted")]
    assert across["mean_diff"] == pytest.approx(2.0, abs=1.0)
    within = out.set_index(["model", "comparison", "measure"])["sem"]
    assert within[("rnc", "within site", "predicted")] < within[("l1", "within site",
                                                                "predicted")]


def test_pair_sessions_refuses_bad_tables(rng):
    table = _predictions(rng)
    with pytest.raises(ValueError, match="lack the columns"):
        rel.pair_sessions(table.drop(columns="session"), comparisons={"x": "ses-repeat"})
    with pytest.raises(ValueError, match="more than one"):
        rel.pair_sessions(pd.concat([table, table.head(1)]), comparisons={"x": "ses-repeat"})


def test_paired_sem_difference_finds_the_more_repeatable_model(rng):
    true = rng.uniform(30, 80, size=60)
    a1, a2 = (true + rng.normal(0, 1, size=60) for _ in range(2))
    b1, b2 = (true + rng.normal(0, 3, size=60) for _ in range(2))
    out = rel.paired_sem_difference(a1, a2, b1, b2, n_boot=500)
    assert out["difference"] == pytest.approx(out["sem_a"] - out["sem_b"])
    assert out["ci_high"] < 0  # A is more repeatable
    same = rel.paired_sem_difference(a1, a2, a1, a2, n_boot=200)
    assert same["difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    with pytest.raises(ValueError, match="same subjects"):
        rel.paired_sem_difference(a1, a2, b1[:-1], b2[:-1])
