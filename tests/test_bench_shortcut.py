"""Tests of benchmarks/bench_shortcut.py (issue 28, item 2): global-intensity features and the
ridge predictor's test MAE."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def bench(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_shortcut

    return bench_shortcut


def test_features_are_global_intensity_only(bench):
    rng = np.random.default_rng(0)
    data = np.zeros((7, 8, 9), dtype=np.float32)
    data[1:6, 1:7, 1:8] = rng.uniform(0.5, 1.5, size=(5, 6, 7))
    wm = np.zeros(data.shape, dtype=bool)
    wm[1:6, 1:4, 1:8] = True
    gm = np.zeros(data.shape, dtype=bool)
    gm[1:6, 4:7, 1:8] = True
    got = bench.features(nib.Nifti1Image(data, np.eye(4)), wm, gm)
    brain = data[data > 0]
    assert got["mean"] == pytest.approx(brain.mean(), rel=1e-6)
    hist = [got[f"h{i:02d}"] for i in range(32)]
    assert sum(hist) == pytest.approx(1.0)  # every brain voxel in 0-2
    # 0.5-1.5 fills bins 8-23 (width 1/16), none below or above
    assert all(h > 0 for h in hist[8:24]) and not any(hist[:8]) and not any(hist[24:])
    # the same voxels shuffled in space: identical features (no anatomy)
    shuffled = data.copy()
    inside = shuffled > 0
    shuffled[inside] = rng.permutation(shuffled[inside])
    again = bench.features(nib.Nifti1Image(shuffled, np.eye(4)), wm, gm)
    for key in ("mean", "sd", *(f"h{i:02d}" for i in range(32))):
        assert again[key] == pytest.approx(got[key], rel=1e-6), key


def test_ridge_reads_an_age_cue_and_not_noise(bench):
    rng = np.random.default_rng(1)
    age = rng.uniform(20, 90, 200)
    table = pd.DataFrame({"age": age, "cue": age / 10 + rng.normal(0, 0.1, 200),
                          "noise": rng.normal(size=200)})
    train, test = table.iloc[:150], table.iloc[150:]
    assert bench.ridge_mae(train, test, ["cue"]) < 1.5
    mean_mae = float(np.abs(test["age"] - train["age"].mean()).mean())
    assert bench.ridge_mae(train, test, ["noise"]) > 0.9 * mean_mae
