"""Tests of the saliency truth test's additions (issue 32): spread measures, Grad-RAM through
the truth test, bootstrap intervals, Holm, candidate integrated-gradients references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from statsmodels.stats.multitest import multipletests
from torch import nn

from brainage.models.saliency import (
    age_window_mean,
    attribution_spread,
    enrichment_auc,
    grad_ram,
    gradram_truth_table,
    holm,
    map_measures,
    median_interval,
    paired_differences,
    reference_prediction_table,
    truth_test_table,
    typical_scan,
)
from tests.models.test_saliency import SHAPE, model  # noqa: F401  (fixture)

SMALL = (7, 8, 9)  # unequal sides: axis mix-ups fail


def _brain() -> np.ndarray:
    brain = np.zeros(SMALL, bool)
    brain[1:6, 1:7, 1:8] = True  # 5 * 6 * 7 = 210 voxels
    return brain


def test_spread_of_a_uniform_map_is_maximal():
    brain = _brain()
    out = attribution_spread(np.where(brain, 2.0, 0.0), brain)
    assert out["entropy"] == pytest.approx(1.0)
    assert out["n_regions"] == 1  # all of the brain is one connected region
    assert out["half_mass_fraction"] == pytest.approx(105 / 210)


def test_spread_counts_distinct_regions_and_focal_mass(rng):
    brain = _brain()
    values = np.where(brain, 0.01, 0.0)
    values[1, 1, 1] = values[5, 6, 7] = values[3, 1, 7] = 1.0  # three separate peaks
    values[3, 3, 3] = -1.0  # magnitude counts: a fourth
    out = attribution_spread(values, brain)
    assert out["n_regions"] == 4
    # total 4 + 206 * 0.01 = 6.06: three peaks hold 49.5 %, four 66 %
    assert out["half_mass_fraction"] == pytest.approx(4 / 210)
    peak, rest = 1 / 6.06, 0.01 / 6.06
    entropy = -(4 * peak * np.log(peak) + 206 * rest * np.log(rest)) / np.log(210)
    assert out["entropy"] == pytest.approx(entropy) and out["entropy"] < 0.7
    noisy = attribution_spread(values + rng.normal(0, 1e-4, SMALL) * brain, brain)
    assert noisy["n_regions"] == 4  # noise far below the threshold does not split regions
    touching = values.copy()
    touching[2, 2, 2] = 1.0  # diagonal neighbour of (1, 1, 1) and (3, 3, 3): 26-connected,
    assert attribution_spread(touching, brain)["n_regions"] == 3  # the three make one region


@pytest.mark.parametrize("values, kwargs, message", [
    (np.zeros(SMALL), {}, "zero everywhere"),
    (np.ones(SMALL), {"threshold": 0.0}, r"threshold must lie in \(0, 1\]"),
    (np.ones((9, 8, 7)), {}, "shape"),
])
def test_spread_rejects_bad_input(values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attribution_spread(values, _brain(), **kwargs)


def test_map_measures_is_one_row_per_map(rng):
    brain = _brain()
    truth = np.zeros(SMALL, bool)
    truth[1:3, 1:4, 1:4] = True
    maps = np.stack([truth * 1.0 + rng.normal(0, 0.1, SMALL), rng.normal(size=SMALL)])
    table = map_measures(maps, truth, brain)
    assert list(table.columns) == ["auc", "entropy", "n_regions", "half_mass_fraction"]
    assert table["auc"].iloc[0] > 0.95 and abs(table["auc"].iloc[1] - 0.5) < 0.2
    assert table["auc"].iloc[0] == pytest.approx(enrichment_auc(maps[0], truth, brain)["auc"])


class _LocalAge(nn.Module):
    """Predicted age = a weighted sum of a (7, 8, 9) input: the gradient is the weight map."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x) * self.weight).flatten(1).sum(1)  # (B, 1, D, H, W) -> (B,)


def test_gradram_truth_table_finds_where_the_features_are_active():
    # one channel whose weight (the mean gradient) is positive: the map is the feature map,
    # here the image, bright in the truth region only
    brain = _brain()
    truth = np.zeros(SMALL, bool)
    truth[1:3, 1:4, 1:5] = True
    weight = torch.full((1, 1, *SMALL), 0.5)
    images = [torch.from_numpy(truth.astype(np.float32))[None]
              + 0.1 * torch.rand(1, *SMALL, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    dataset = [{"image": image, "participant_id": f"sub-{i}"} for i, image in enumerate(images)]
    table = gradram_truth_table(_LocalAge(weight), dataset, "features", truth, brain,
                                batch_size=2)
    assert table["participant_id"].tolist() == ["sub-0", "sub-1", "sub-2"]
    assert (table["auc"] > 0.99).all()
    assert (table["n_regions"] == 1).all()
    alone = grad_ram(_LocalAge(weight), images[1][None], "features", signed=False)[0, 0]
    assert table["entropy"].iloc[1] == pytest.approx(
        attribution_spread(alone.numpy(), brain)["entropy"], rel=1e-5)


def test_gradram_truth_table_refuses_a_truth_of_another_shape(model):  # noqa: F811
    dataset = [{"image": torch.zeros(1, *SHAPE), "participant_id": "sub-0"}]
    with pytest.raises(ValueError, match="shape"):
        gradram_truth_table(model, dataset, "layer1", np.ones((3, 3, 3), bool),
                            np.ones(SHAPE, bool))


def test_median_interval_covers_the_median(rng):
    values = rng.normal(0.6, 0.05, size=200)
    out = median_interval(values, n_boot=500, seed=1)
    assert out["median"] == pytest.approx(np.median(values))
    assert out["ci_low"] < out["median"] < out["ci_high"]
    assert out["ci_high"] - out["ci_low"] < 0.03 and out["n"] == 200
    assert median_interval(values, n_boot=500, seed=1) == out  # seeded
    constant = median_interval([0.5, 0.5, 0.5], n_boot=200)
    assert constant["ci_low"] == constant["ci_high"] == 0.5


@pytest.mark.parametrize("values", [[0.5], [0.5, np.nan, 0.6]])
def test_median_interval_rejects_bad_input(values):
    with pytest.raises(ValueError, match=">= 2 finite"):
        median_interval(values, n_boot=200)


def test_holm_matches_statsmodels_and_skips_nan():
    p = [0.01, 0.04, np.nan, 0.03, 0.2]
    expected = multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1]
    out = holm(p)
    np.testing.assert_allclose(out[[0, 1, 3, 4]], expected)
    assert np.isnan(out[2])
    np.testing.assert_allclose(out[[0, 1, 3, 4]], [0.04, 0.09, 0.09, 0.2])  # by hand
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def test_age_window_mean_and_reference_predictions(rng):
    volumes = rng.normal(size=(6, *SMALL))
    ages = np.array([20.0, 58.0, 60.0, 62.0, 90.0, 70.0])  # mean 60
    out = age_window_mean(volumes, ages, half_width=2.5)
    np.testing.assert_allclose(out, volumes[1:4].mean(axis=0))
    with pytest.raises(ValueError, match="no scan's age lies within"):
        age_window_mean(volumes, ages, centre=40.0, half_width=1.0)
    with pytest.raises(ValueError, match="shape"):
        age_window_mean(volumes[:, 0], ages)
    weight = torch.full((1, 1, *SMALL), 0.5)
    table = reference_prediction_table({"half": _LocalAge(weight)},
                                       {"mean": out, "zero": np.zeros(SMALL)})
    assert isinstance(table, pd.DataFrame) and table["reference"].tolist() == ["mean", "zero"]
    assert table["half"].tolist() == pytest.approx([0.5 * out.sum(), 0.0], abs=1e-3)


def test_typical_scan_is_the_one_nearest_the_median_of_its_age(rng):
    base = rng.normal(size=SMALL)
    ages = np.array([20.0, 58.0, 60.0, 61.0, 90.0, 71.0])  # mean 60
    volumes = np.stack([base + rng.normal(0, s, SMALL) for s in (0.01, 1.0, 0.2, 1.0, 0.01, 0.01)])
    # scans 0, 4 and 5 are nearest the base but far from the mean age: not candidates
    assert typical_scan(volumes, ages, half_width=2.5) == 2
    assert typical_scan(volumes, ages, half_width=40.0) in (0, 4, 5)
    with pytest.raises(ValueError, match="no scan's age lies within"):
        typical_scan(volumes, np.array([20.0, 30.0, 90.0, 100.0, 20.0, 100.0]), half_width=1.0)
    with pytest.raises(ValueError, match="shape"):
        typical_scan(volumes[:3], ages)


def test_truth_test_table_separates_a_real_effect_from_the_null(rng):
    n = 40
    null = rng.normal(0.57, 0.02, n)  # the permuted network prefers the region a little
    same = null + rng.normal(0, 0.01, n)  # a model no better than the null
    better = null + 0.05 + rng.normal(0, 0.01, n)
    table = truth_test_table({"same": same, "better": better, "permuted": null}, n_boot=500)
    rows = table.set_index("model")
    assert (rows["p_half"] < 1e-6).all()  # all lie above 0.5, the null too
    assert rows.loc["better", "diff_low"] > 0.04 and rows.loc["better", "p_null_holm"] < 1e-6
    assert rows.loc["same", "diff_low"] < 0 < rows.loc["same", "diff_high"]
    assert rows.loc["same", "p_null"] > 0.01
    assert np.isnan(rows.loc["permuted", "p_null"])  # the null is not compared with itself
    assert rows.loc["better", "p_null_holm"] == pytest.approx(
        min(1.0, 2 * min(rows.loc["better", "p_null"], rows.loc["same", "p_null"]))
        if rows.loc["better", "p_null"] <= rows.loc["same", "p_null"] else np.nan, rel=1e-9)
    with pytest.raises(ValueError, match="same subjects"):
        truth_test_table({"a": same[:10], "permuted": null}, n_boot=200)


def test_paired_differences_of_known_shifts(rng):
    ids = [f"sub-{i}" for i in range(30)]
    a = pd.DataFrame({"participant_id": ids, "auc": rng.normal(0.6, 0.02, 30),
                      "entropy": rng.normal(0.9, 0.01, 30)})
    b = a.assign(auc=a["auc"] - 0.1, entropy=a["entropy"])
    table = paired_differences(a, b, ["auc", "entropy"], n_boot=300).set_index("measure")
    assert table.loc["auc", "diff"] == pytest.approx(0.1)
    assert table.loc["auc", "ci_low"] == pytest.approx(0.1) and table.loc["entropy", "diff"] == 0
    with pytest.raises(ValueError, match="different subjects"):
        paired_differences(a, b.iloc[::-1].reset_index(drop=True), ["auc"], n_boot=200)
    with pytest.raises(ValueError, match="absent"):
        paired_differences(a, b, ["n_regions"], n_boot=200)


def test_map_measures_and_paired_differences_of_a_zero_map(rng):
    brain = _brain()
    truth = np.zeros(SMALL, bool)
    truth[1:3, 1:4, 1:4] = True
    maps = np.stack([np.zeros(SMALL), truth * 1.0 + rng.normal(0, 0.1, SMALL)])
    table = map_measures(maps, truth, brain)
    assert table["auc"].iloc[0] == 0.5 and table["n_regions"].iloc[0] == 0
    assert np.isnan(table["entropy"].iloc[0]) and np.isfinite(table["entropy"].iloc[1])
    other = map_measures(np.stack([rng.normal(size=SMALL)]), truth, brain)
    a = pd.concat([table, other], ignore_index=True)  # zero map, map 1, map 2
    b = pd.concat([table.iloc[[1]], other, table.iloc[[1]]], ignore_index=True)
    pairs = paired_differences(a, b, ["entropy"], n_boot=200)
    assert pairs["n"].iloc[0] == 2  # the zero map's pair is dropped
    assert pairs["diff"].iloc[0] == pytest.approx(0.0, abs=1e-12)  # +d and -d: median 0
