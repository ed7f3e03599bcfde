"""Tests of benchmarks/bench_ood.py's measures: the ROC AUC by hand, and the batch rejection
rate on a pool like the reference (rare) and on a shifted one (always)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainage.analysis.uncertainty import FeatureOOD


@pytest.fixture
def bench(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_ood

    return bench_ood


def test_roc_auc_by_hand(bench) -> None:
    # pairs (positive, negative): 3>1, 3>2, 4>1, 4>2 -> 1; 2 vs 2 is a tie (1/2) -> 3.5 / 4
    assert bench.roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == pytest.approx(1.0)
    assert bench.roc_auc(np.array([2.0, 4.0]), np.array([1.0, 2.0])) == pytest.approx(3.5 / 4)
    assert bench.roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == pytest.approx(0.0)
    assert np.isnan(bench.roc_auc(np.array([np.nan]), np.array([1.0])))


def test_exact_ci_holds_the_rate(bench) -> None:
    low, high = bench.exact_ci(10, 200)
    assert low < 0.05 < high and 0.0 < low and high < 0.1
    assert bench.exact_ci(0, 20)[0] == 0.0


def test_rejections_rare_on_the_reference_and_certain_on_a_shift(bench) -> None:
    rng = np.random.default_rng(0)
    ood = FeatureOOD.fit(rng.normal(size=(60, 4)), rng.normal(size=(40, 4)), rate=0.1, k=3)
    same = rng.normal(size=(100, 4))
    shifted = rng.normal(size=(100, 4)) + 3.0
    hits, n = bench.rejections(ood, same, 10, 40, 99, 0)
    assert n == 40 and hits <= 8  # level 0.05: 2 expected, 8 is beyond chance (p < 0.001)
    assert bench.rejections(ood, shifted, 10, 40, 99, 0) == (40, 40)
    assert bench.rejections(ood, same[:5], 10, 40, 99, 0) == (0, 0)  # too few scans
