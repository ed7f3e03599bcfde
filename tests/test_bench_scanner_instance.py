"""Tests of benchmarks/bench_scanner_instance.py's accuracy measures, by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from brainage.analysis.metrics import AgeBiasCorrection
from brainage.analysis.uncertainty import ConformalInterval


@pytest.fixture
def bench(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_scanner_instance

    return bench_scanner_instance


def test_accuracy_by_hand(bench) -> None:
    age = np.array([30.0, 40.0, 50.0, 60.0, np.nan])
    predicted = np.array([32.0, 38.0, 56.0, 60.0, 45.0])  # the scan without an age is left out
    # the training line predicted = age exactly: corrected = predicted
    correction = AgeBiasCorrection.fit([20.0, 40.0, 60.0], [20.0, 40.0, 60.0])
    interval = ConformalInterval.fit(np.linspace(-4.0, 4.0, 19), level=0.9)  # q = 4
    q = float(interval.half_widths()[0])
    folder = SimpleNamespace(corrections={"rnc": correction},
                             trust={"rnc": SimpleNamespace(calibration=SimpleNamespace(
                                 age=interval))})
    out = bench.accuracy(folder, "rnc", age, predicted)
    gaps = np.array([2.0, -2.0, 6.0, 0.0])
    assert out["n"] == 4
    assert out["raw_gap"] == pytest.approx(gaps.mean())
    assert out["gap"] == pytest.approx(gaps.mean())
    assert out["gap_low"] < out["gap"] < out["gap_high"]
    assert out["mae"] == pytest.approx(np.abs(gaps).mean())
    assert out["coverage"] == pytest.approx(np.mean(np.abs(gaps) <= q))
