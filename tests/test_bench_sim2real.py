"""Tests of benchmarks/bench_sim2real.py's accuracy rows: r with its 95 % interval."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

#: ixi10's ages (participants.tsv), the set the benchmark's real rows are about.
AGES = np.array([38.78, 46.71, 34.24, 24.28, 24.76, 24.34, 23.35, 50.65, 31.85, 25.74])


@pytest.fixture
def bench(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_sim2real

    return bench_sim2real


def cells(row: str) -> list[str]:
    return row[34:].split()


def test_row_gives_r_with_its_fisher_interval(bench) -> None:
    predicted = AGES + np.random.default_rng(0).normal(0, 8, AGES.size)
    r = float(np.corrcoef(AGES, predicted)[0, 1])
    half = 1.959964 / math.sqrt(AGES.size - 3)  # Fisher z: atanh(r) +- z_0.975 / sqrt(n - 3)
    low, high = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    row = bench._accuracy_row("rnc", AGES, predicted)
    assert cells(row) == [f"{r:.2f}", f"[{low:.2f},", f"{high:.2f}]",
                          f"{np.abs(predicted - AGES).mean():.1f}",
                          f"{(predicted - AGES).mean():.1f}", "10"]
    assert len(row) == len(bench.ACCURACY_HEADER)


def test_ten_scans_cannot_tell_r_06_from_none(bench) -> None:
    """The docstring's example: r = 0.2 on ten scans spans [-0.49, 0.74], and r = 0.6 spans 0."""
    rng = np.random.default_rng(1)
    for target, interval in ((0.2, ("-0.49", "0.74")), (0.6, ("-0.05", "0.89"))):
        # predictions with exactly the target correlation: age's part plus an orthogonal part
        z = (AGES - AGES.mean()) / AGES.std()
        e = rng.normal(size=AGES.size)
        e -= e.mean() + (e @ z) / (z @ z) * z
        e /= e.std()
        predicted = 30 + 8 * (target * z + math.sqrt(1 - target**2) * e)
        got = cells(bench._accuracy_row("h", AGES, predicted))
        assert got[0] == f"{target:.2f}"
        assert (got[1].strip("[,"), got[2].strip("]")) == interval


def test_constant_and_tiny_sets_have_no_interval(bench) -> None:
    constant = cells(bench._accuracy_row("const", AGES, np.full(AGES.size, 30.0)))
    assert constant[0] == "nan" and len(constant) == 4
    three = cells(bench._accuracy_row("n3", AGES[:3], AGES[:3] + [1.0, -1.0, 2.0]))
    assert len(three) == 4 and three[-1] == "3"
    row = bench._constant_row("  training mean age", AGES, 59.8)
    assert cells(row)[-3:] == [f"{np.abs(59.8 - AGES).mean():.1f}",
                               f"{(59.8 - AGES).mean():.1f}", "10"]
