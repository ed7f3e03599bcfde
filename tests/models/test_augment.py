"""Tests of brainage.models.augment: the contrast augmentation does not erase an ageing cue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainage.data.simulate import DEFAULT_SITES, AgeingConfig
from brainage.models.augment import AugmentConfig, RandomViews


def _gm_wm_ratio(site, factor: float) -> float:
    """GM/WM intensity ratio of a simulated site at contrast factor ``factor`` (simulate.py)."""
    mid, half = (site.wm + site.gm) / 2, (site.wm - site.gm) / 2 * factor
    return (mid - half) / (mid + half)


def _years_of_decline(site, gamma: float) -> float:
    """Years of simulated contrast decline (from age 20) that move the ratio as gamma does."""
    target = _gm_wm_ratio(site, 1.0) ** gamma
    years = np.linspace(0, 80, 8001)
    ratios = np.array([_gm_wm_ratio(site, 1 - AgeingConfig().contrast_decline * y)
                       for y in years])
    return float(years[np.argmin(np.abs(ratios - target))])


@pytest.mark.parametrize("site", DEFAULT_SITES, ids=lambda s: s.name)
def test_default_gamma_is_small_against_the_simulated_contrast_decline(site):
    # issue 15, item 10: gamma 0.8 moved the GM/WM ratio as far as about 60 years of decline
    low, high = AugmentConfig().contrast_gamma
    assert _years_of_decline(site, low) <= 8.0
    assert _years_of_decline(site, 0.8) >= 40.0  # the former default, for scale
    # gamma > 1 darkens GM further: the ratio of a younger brain than 20 (no decline to undo)
    assert _gm_wm_ratio(site, 1.0) ** high < _gm_wm_ratio(site, 1.0)


def test_gamma_acts_on_the_ratio_as_a_power():
    # MONAI's RandAdjustContrast: ((x - min) / range) ** g * range + min; min 0 here
    cfg = AugmentConfig(affine_prob=0, flip_prob=0, bias_field_prob=0, contrast_prob=1,
                        intensity_prob=0, noise_prob=0, contrast_gamma=(0.9, 0.9))
    image = torch.zeros(1, 4, 5, 6)
    image[0, :2], image[0, 2:] = 0.6, 1.0
    image[0, 0, 0, 0] = 0.0
    out = RandomViews(cfg, n_views=1)(image, seed=1)[0, 0]
    assert float(out[3, 0, 0]) == pytest.approx(1.0)
    assert float(out[1, 1, 1] / out[3, 1, 1]) == pytest.approx(0.6**0.9, rel=1e-4)
