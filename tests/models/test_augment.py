"""Tests of brainage.models.augment: the batched views against MONAI's formulas, seeds, and a
contrast augmentation that does not erase an ageing cue."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast, RandBiasField
from torch.nn import functional as F

from brainage.data.simulate import DEFAULT_SITES, AgeingConfig
from brainage.models.augment import AugmentConfig, RandomViews, _legendre_basis, affine_theta


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


# --- the batched views --------------------------------------------------------------------------

OFF = dict(affine_prob=0, flip_prob=0, bias_field_prob=0, contrast_prob=0, intensity_prob=0,
           noise_prob=0)


def _warp(volume: torch.Tensor, matrix, translation) -> torch.Tensor:
    theta = torch.as_tensor(affine_theta(np.asarray(matrix), np.asarray(translation),
                                         volume.shape), dtype=torch.float32)[None]
    x = volume[None, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]


def test_affine_theta_is_voxel_space_about_the_centre(rng):
    volume = torch.as_tensor(rng.normal(size=(7, 8, 9)), dtype=torch.float32)  # unequal sides
    torch.testing.assert_close(_warp(volume, np.eye(3), [0, 0, 0]), volume)
    # output voxel c samples the input at c + t: a shift by one voxel along each axis
    for axis in range(3):
        shift = np.zeros(3)
        shift[axis] = 1
        moved = _warp(volume, np.eye(3), shift)
        inner = [slice(None)] * 3
        inner[axis] = slice(0, -1)
        source = [slice(None)] * 3
        source[axis] = slice(1, None)
        torch.testing.assert_close(moved[tuple(inner)], volume[tuple(source)])
    # a quarter turn in the (H, W) plane of a cube is rot90, every voxel kept
    cube = torch.as_tensor(rng.normal(size=(6, 6, 6)), dtype=torch.float32)
    quarter = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)
    turned = _warp(cube, quarter, [0, 0, 0])
    candidates = [torch.rot90(cube, k, dims=(1, 2)) for k in (1, 3)]
    assert min(float((turned - c).abs().max()) for c in candidates) < 1e-5


def test_bias_field_is_monais_legendre_field(rng):
    shape = (6, 7, 8)
    coeffs = rng.uniform(0, 0.1, 20)
    ours = np.tensordot(coeffs, _legendre_basis(shape, 3), axes=1)
    reference = RandBiasField(degree=3)._generate_random_field(shape, 3, coeffs.tolist())
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_contrast_is_monais_adjust_contrast(rng):
    image = torch.as_tensor(rng.uniform(0.2, 1.5, size=(1, 5, 6, 7)), dtype=torch.float32)
    cfg = AugmentConfig(**{**OFF, "contrast_prob": 1.0, "contrast_gamma": (1.02, 1.02)})
    out = RandomViews(cfg, n_views=1)(image, seed=0)[0]
    torch.testing.assert_close(out, AdjustContrast(gamma=1.02)(image).as_tensor())


def test_views_depend_on_their_own_seed_only(rng):
    images = torch.as_tensor(rng.normal(1.0, 0.2, size=(6, 1, 9, 10, 11)), dtype=torch.float32)
    views = RandomViews(AugmentConfig(), n_views=2)
    seeds = [11, 12, 13, 14, 15, 16]
    full = views.batch(images, seeds)
    assert full.shape == (6, 2, 1, 9, 10, 11)
    for subset in ([3, 1], [5], [0, 2, 4]):  # another batch, another order: the same views
        part = views.batch(images[subset], [seeds[i] for i in subset])
        for k, i in enumerate(subset):
            assert torch.equal(part[k], full[i])
        assert torch.equal(views(images[subset[0]], seeds[subset[0]]), full[subset[0]])
    assert not torch.equal(full[0, 0], full[0, 1])  # two views of one scan differ
    again = views.batch(images, [s + 100 for s in seeds])
    assert not torch.equal(again, full)
    plain = RandomViews(None, n_views=2).batch(images, seeds)
    assert torch.equal(plain[:, 0], images) and torch.equal(plain[:, 1], images)
    with pytest.raises(ValueError, match="2 seeds for a batch of 6"):
        views.batch(images, [1, 2])


def test_every_transform_is_drawn_at_its_probability(rng):
    image = torch.ones(1, 8, 9, 10)
    views = RandomViews(AugmentConfig(**{**OFF, "intensity_prob": 0.3}), n_views=1)
    changed = [not torch.equal(views(image, seed=s)[0], image) for s in range(400)]
    assert 0.24 < np.mean(changed) < 0.36
