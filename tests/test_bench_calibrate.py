"""Tests of benchmarks/bench_calibrate.py: its calibration table is the library's
(:func:`brainage.analysis.site_calibration.calibration_curve`, one implementation) per head."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from brainage.analysis.metrics import AgeBiasCorrection
from brainage.analysis.site_calibration import calibration_curve, training_line
from brainage.analysis.uncertainty import ConformalInterval


@pytest.fixture
def bench(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_calibrate

    return bench_calibrate


@pytest.mark.filterwarnings("ignore:.*outside the fitting range")
def test_calibration_table_is_the_library_curve_of_each_head(bench, rng, tmp_path) -> None:
    age = rng.uniform(23.0, 74.0, 40)
    predicted = {"rnc": 0.7 * age - 20.0 + rng.normal(0.0, 2.0, 40),
                 "l1": 0.5 * age + rng.normal(0.0, 4.0, 40)}
    predicted["l1"][3] = np.nan  # a scan the head could not predict: left out for that head
    interval = ConformalInterval.fit(rng.normal(0.0, 3.0, 40), level=0.9)
    correction = AgeBiasCorrection.fit(age, 0.9 * age + 5.0 + rng.normal(0.0, 1.0, 40))
    folder = SimpleNamespace(
        trust={h: SimpleNamespace(calibration=SimpleNamespace(age=interval)) for h in predicted},
        corrections={h: correction for h in predicted})
    table = bench.calibration_table(age, predicted, folder, repeats=5, seed=3)
    assert list(dict.fromkeys(table["model"])) == ["rnc", "l1"]
    usable = np.isfinite(predicted["l1"])
    expected = calibration_curve(age[usable], predicted["l1"][usable], interval=interval,
                                 prior=training_line(correction), ks=bench.KS, repeats=5,
                                 seed=3)
    got = table[table["model"] == "l1"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert (got["n_eval"] == 39 - got["k"]).all()
    bench.print_calibration(table, 5)
    bench.plot_curve(table, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
