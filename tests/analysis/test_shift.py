"""Tests of brainage.analysis.shift: the MMD permutation test (hand-checked statistic, level on
same-distribution batches, power on shifted ones) and the controls' mean-gap test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from brainage.analysis import shift

# --- MMD ----------------------------------------------------------------------------------------


def test_mmd_statistic_by_hand() -> None:
    # k(a, b) = exp(-(a - b)^2 / 2): batch {0, 1}, reference {0, 2}
    # within batch e^-0.5, within reference e^-2, across (1 + e^-2 + 2 e^-0.5) / 4
    # MMD^2 = e^-0.5 + e^-2 - (1 + e^-2 + 2 e^-0.5) / 2 = (e^-2 - 1) / 2
    value = shift.mmd_statistic([[0.0], [1.0]], [[0.0], [2.0]], bandwidth=1.0)
    assert value == pytest.approx((math.exp(-2) - 1) / 2)


def test_mmd_statistic_matches_the_kernel_means(rng) -> None:
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.5

    def k(a, b):
        return np.exp(-np.sum((a[:, None] - b[None]) ** 2, axis=2) / (2 * 1.5**2))

    kxx, kyy = k(x, x), k(y, y)
    expected = ((kxx.sum() - np.trace(kxx)) / 42 + (kyy.sum() - np.trace(kyy)) / 72
                - 2 * k(x, y).mean())
    assert shift.mmd_statistic(x, y, 1.5) == pytest.approx(expected)


def test_mmd_test_keeps_its_level_on_same_distribution_batches(rng) -> None:
    reference = rng.normal(size=(60, 9))
    p_values = [shift.mmd_test(rng.normal(size=(8, 9)), reference, permutations=199,
                               seed=s).p_value for s in range(200)]
    # nominal 0.05: 10 of 200 expected; 17 or more has probability < 0.05 under the level
    assert np.mean(np.array(p_values) <= 0.05) <= 0.085
    assert min(p_values) >= 1 / 200


def test_mmd_test_detects_a_shifted_batch(rng) -> None:
    reference = rng.normal(size=(60, 9))
    shifted = [shift.mmd_test(rng.normal(size=(8, 9)) + 0.8,
                              reference, permutations=199, seed=s) for s in range(40)]
    assert np.mean([t.p_value <= 0.05 for t in shifted]) >= 0.9
    result = shifted[0]
    assert (result.n_batch, result.n_reference, result.permutations) == (8, 60, 199)
    assert result.statistic > 0 and result.bandwidth > 0


def test_mmd_test_is_reproducible_from_its_seed(rng) -> None:
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(30, 4))
    assert shift.mmd_test(x, y, seed=3) == shift.mmd_test(x, y, seed=3)


@pytest.mark.parametrize(("batch", "reference", "kwargs", "error", "match"), [
    (np.ones((1, 3)), np.zeros((5, 3)), {}, ValueError, "at least 2 scans in the batch"),
    (np.ones((4, 3)), np.zeros((5, 4)), {}, ValueError, "batch has 3, reference 4"),
    (np.r_[np.ones((3, 3)), [[np.nan, 0, 0]]], np.zeros((5, 3)), {}, ValueError,
     "1 row.*NaN.*row 3"),
    (np.ones(3), np.zeros((5, 3)), {}, ValueError, r"shape \(N, D\)"),
    ("abc", np.zeros((5, 3)), {}, TypeError, "2-D array of numbers"),
    (np.ones((4, 3)), np.zeros((5, 3)), {"permutations": 10}, ValueError, "permutations"),
    (np.ones((4, 3)), np.zeros((5, 3)), {"bandwidth": 0.0}, ValueError, "bandwidth"),
])
def test_mmd_test_refuses_bad_input(batch, reference, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        shift.mmd_test(batch, reference, **kwargs)


# --- mean gap -----------------------------------------------------------------------------------


def test_gap_test_by_hand() -> None:
    # gaps -1, 1, 3: mean 1, SD 2, SE 2 / sqrt(3), t = sqrt(3) / 2, df 2
    result = shift.gap_test([-1.0, 1.0, 3.0])
    t = math.sqrt(3) / 2
    half = stats.t.ppf(0.975, 2) * 2 / math.sqrt(3)
    assert (result.n, result.mean_gap, result.t) == (3, pytest.approx(1.0), pytest.approx(t))
    assert result.p_value == pytest.approx(2 * stats.t.sf(t, 2))
    assert (result.ci_low, result.ci_high) == pytest.approx((1 - half, 1 + half))
    assert result.to_dict()["confidence"] == 0.95


def test_gap_test_finds_a_site_offset_and_not_its_absence(rng) -> None:
    assert shift.gap_test(rng.normal(-26.0, 5.0, 40)).p_value < 1e-10
    p_values = [shift.gap_test(rng.normal(0.0, 5.0, 10)).p_value for _ in range(400)]
    assert np.mean(np.array(p_values) <= 0.05) <= 0.075


def test_gap_test_without_spread() -> None:
    result = shift.gap_test([2.0, 2.0])
    assert (result.mean_gap, result.t, result.p_value) == (2.0, math.inf, 0.0)


@pytest.mark.parametrize(("gap", "match"), [
    ([1.0], "at least 2 controls"),
    ([1.0, np.nan, 2.0], "1 NaN.*scan 1"),
    ([[1.0, 2.0]], "1-D"),
])
def test_gap_test_refuses_bad_input(gap, match) -> None:
    with pytest.raises(ValueError, match=match):
        shift.gap_test(gap)


# --- a batch against a head's reference ---------------------------------------------------------


def _reference(rng):
    from brainage.analysis.uncertainty import FeatureOOD

    train = rng.normal(5.0, 2.0, size=(80, 6))
    return FeatureOOD.fit(train, rng.normal(5.0, 2.0, size=(40, 6)), rate=0.05)


def test_batch_shift_standardises_like_the_reference_and_leaves_failed_scans_out(rng) -> None:
    ood = _reference(rng)
    same = rng.normal(5.0, 2.0, size=(12, 6))
    same[3] = np.nan  # a failed scan
    result = shift.batch_shift(ood, same, gap=[1.0, -2.0, np.nan, 0.5], permutations=199)
    expected = shift.mmd_test((np.delete(same, 3, axis=0) - ood.mean) / ood.scale,
                              ood.reference, permutations=199)
    assert result.features == expected
    assert (result.n_failed, result.features.n_batch) == (1, 11)
    assert result.gap == shift.gap_test([1.0, -2.0, 0.5])
    assert result.to_dict()["gap"]["n"] == 3
    moved = shift.batch_shift(ood, rng.normal(7.0, 2.0, size=(12, 6)), permutations=199)
    assert moved.features.p_value <= 0.01 and moved.gap is None


def test_batch_shift_refuses_features_of_another_model(rng) -> None:
    with pytest.raises(ValueError, match=r"shape \(m, 6\).*got shape \(4, 5\)"):
        shift.batch_shift(_reference(rng), np.zeros((4, 5)))
