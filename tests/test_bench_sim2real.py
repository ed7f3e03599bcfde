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
    slope = float(np.polyfit(AGES, predicted, 1)[0])  # issue 28: slope of predicted on age
    assert cells(row) == [f"{r:.2f}", f"[{low:.2f},", f"{high:.2f}]",
                          f"{np.abs(predicted - AGES).mean():.1f}",
                          f"{(predicted - AGES).mean():.1f}", f"{slope:.2f}", "10"]
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
    assert constant[0] == "nan" and len(constant) == 5 and constant[3] == "0.00"  # slope 0
    three = cells(bench._accuracy_row("n3", AGES[:3], AGES[:3] + [1.0, -1.0, 2.0]))
    assert len(three) == 5 and three[-1] == "3"
    row = bench._constant_row("  training mean age", AGES, 59.8)
    assert cells(row)[-3:] == [f"{np.abs(59.8 - AGES).mean():.1f}",
                               f"{(59.8 - AGES).mean():.1f}", "10"]


def test_real_folders_skip_each_absent_or_unusable_folder_with_the_reason(bench, tmp_path,
                                                                           capsys) -> None:
    # issue 28: the benchmark runs on ixi10 + ixi40 and skips each one that is not there
    good = tmp_path / "good"
    (good / "sub-01" / "anat").mkdir(parents=True)
    (good / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"")
    (good / "participants.tsv").write_text("participant_id\tage\nsub-01\t40\n")
    no_table = tmp_path / "no_table"
    (no_table / "sub-01" / "anat").mkdir(parents=True)
    no_scans = tmp_path / "no_scans"
    no_scans.mkdir()
    (no_scans / "participants.tsv").write_text("participant_id\tage\n")
    kept = bench.real_folders([tmp_path / "absent", no_table, no_scans, good])
    out = capsys.readouterr().out
    assert kept == [good]
    assert f"{tmp_path / 'absent'} skipped (the folder does not exist)" in out
    assert f"{no_table} skipped (no participants.tsv" in out
    assert f"{no_scans} skipped (no sub-*/anat/*_T1w.nii[.gz])" in out
    ages = bench.real_age_table(kept)
    assert list(ages.columns) == ["scan", "folder", "age"] and ages["age"].tolist() == [40.0]


def test_quantile_map_keeps_the_anatomy_and_takes_the_histogram(bench) -> None:
    # the intensity swap: the brain's voxels keep their order (the anatomy) and take the
    # reference's values (its histogram); the background stays 0
    rng = np.random.default_rng(1)
    volume = np.zeros((7, 8, 9), np.float32)
    volume[1:6, 2:7, 2:8] = rng.uniform(0.2, 1.8, (5, 5, 6))
    reference = np.sort(rng.normal(3.0, 0.5, 4000))
    out = bench._quantile_map(volume, reference)
    brain = volume > 0
    assert (out[~brain] == 0).all()
    assert (np.argsort(out[brain], kind="stable") == np.argsort(volume[brain], kind="stable")).all()
    assert out[brain].mean() == pytest.approx(reference.mean(), abs=0.05)
    assert out[brain].std() == pytest.approx(reference.std(), rel=0.05)


def test_random_warp_moves_a_structure_and_keeps_the_brain_mean(bench) -> None:
    volume = np.zeros((20, 22, 24), np.float32)
    volume[4:16, 4:18, 4:20] = 1.0
    volume[9:11, 10:12, 11:13] = 3.0  # a small bright structure
    out = bench._random_warp(volume, 6.0, 12.0, 4.0, np.random.default_rng(0))
    assert out[out > 0].mean() == pytest.approx(1.0)
    assert not np.allclose(out, volume / volume[volume > 0].mean(), atol=0.05)
    still = bench._random_warp(volume, 0.0, 12.0, 4.0, np.random.default_rng(0))
    np.testing.assert_allclose(still, volume / volume[volume > 0].mean(), atol=1e-6)
