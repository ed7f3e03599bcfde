"""Tests of benchmarks/bench_calibrate.py's measures: the mean-age baseline and one split's
methods on a simulated site with a known line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainage.analysis.uncertainty import ConformalInterval


@pytest.fixture
def bench(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_calibrate

    return bench_calibrate


def test_mean_age_baseline_by_hand(bench) -> None:
    ages = np.arange(20.0, 70.0, 5.0)  # 10 ages, mean 42.5
    estimate, lower, upper = bench.mean_age(ages, 3)
    assert estimate == pytest.approx([42.5] * 3)
    # leave-one-out residuals a_i - (sum - a_i) / 9 = (10 / 9) (a_i - 42.5); the largest,
    # (10 / 9) * 22.5 = 25, is the 90 % quantile of 10 residuals (crepes: int(0.1 * 11) = 1st)
    assert upper - estimate == pytest.approx([25.0] * 3)
    assert estimate - lower == pytest.approx([25.0] * 3)
    _, short_lower, _ = bench.mean_age(ages[:9], 2)  # 9 < 10: no interval
    assert np.isnan(short_lower).all()


@pytest.mark.filterwarnings("ignore:.*outside the fitting range")
def test_one_split_site_calibration_recovers_a_shifted_site(bench) -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(23.0, 74.0, 50)
    predicted = 0.7 * age - 20.0 + rng.normal(0.0, 2.0, 50)  # about 35 years too young
    interval = ConformalInterval.fit(rng.normal(0.0, 3.0, 40), level=0.9)
    order = rng.permutation(50)
    out = bench.one_split(age, predicted, order[:20], order[20:], (0.9, 5.0), interval)
    assert set(out) == {"none", "refit", "site", "site, own slope", "mean age"}
    assert out["none"]["gap"] < -25 and out["none"]["coverage"] < 0.1
    assert abs(out["site"]["gap"]) < 2 and out["site"]["mae"] < 5
    assert out["site"]["mae"] < out["mean age"]["mae"]  # the model carries information here
    assert 0.8 <= out["site"]["coverage"] <= 1.0
    assert out["none"]["r"] == pytest.approx(np.corrcoef(age[order[20:]],
                                                         predicted[order[20:]])[0, 1])
    few = bench.one_split(age, predicted, order[:5], order[5:], (0.9, 5.0), interval)
    assert np.isnan(few["site"]["coverage"]) and np.isfinite(few["site"]["mae"])
