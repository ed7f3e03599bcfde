"""Tests of the acquisition changes of brainage.imaging.perturb (test-retest of real scans):
each changes what it claims and nothing else, on tiny volumes with unequal sides."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from brainage.imaging import perturb


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def blob() -> nib.Nifti1Image:
    """A smooth bright ellipsoid in a (21, 24, 27) volume of 2 mm voxels, off-centre."""
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (21, 24, 27)),
                          indexing="ij")
    inside = ((x - 9) / 6) ** 2 + ((y - 13) / 7) ** 2 + ((z - 12) / 8) ** 2 < 1
    data = ndi.gaussian_filter(inside.astype(np.float32) * 1000, 1.0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-20.0, -24.0, -26.0)
    return nib.Nifti1Image(data, affine)


def _centroid_mm(img: nib.Nifti1Image) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float64)
    voxel = np.asarray(ndi.center_of_mass(data))
    return img.affine[:3, :3] @ voxel + img.affine[:3, 3]


def test_rigid_move_shifts_the_head_not_the_header(blob):
    moved = perturb.rigid_move(blob, (0.0, 0.0, 0.0), (4.0, -2.0, 6.0))
    np.testing.assert_array_equal(moved.affine, blob.affine)
    np.testing.assert_allclose(_centroid_mm(moved) - _centroid_mm(blob), (4.0, -2.0, 6.0),
                               atol=0.3)
    turned = perturb.rigid_move(blob, (0.0, 0.0, 10.0), (0.0, 0.0, 0.0))
    assert not np.allclose(np.asarray(turned.dataobj), np.asarray(blob.dataobj))
    same = perturb.rigid_move(blob, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(np.asarray(same.dataobj), np.asarray(blob.dataobj), atol=1e-3)


def test_resample_voxels_changes_the_grid_keeps_the_head(blob):
    coarse = perturb.resample_voxels(blob, 3.0)
    np.testing.assert_allclose(np.linalg.norm(coarse.affine[:3, :3], axis=0), 3.0)
    assert coarse.shape == (14, 16, 18)
    np.testing.assert_allclose(_centroid_mm(coarse), _centroid_mm(blob), atol=1.0)
    total = np.asarray(blob.dataobj).sum() * 8
    assert np.asarray(coarse.dataobj).sum() * 27 == pytest.approx(total, rel=0.05)


def test_rician_noise_has_the_requested_sd(blob):
    noisy = perturb.add_rician_noise(blob, 0.05, seed=1)
    data, before = np.asarray(noisy.dataobj), np.asarray(blob.dataobj)
    bright = before > 0.9 * before.max()  # high SNR: Rician noise is about Gaussian there
    scale = np.percentile(before[before > 0], 99)
    assert np.std(data[bright] - before[bright]) == pytest.approx(0.05 * scale, rel=0.15)
    assert (data >= 0).all()
    again = perturb.add_rician_noise(blob, 0.05, seed=1)
    np.testing.assert_array_equal(np.asarray(again.dataobj), data)


def test_bias_field_is_smooth_multiplicative_and_of_the_requested_size(blob):
    biased = perturb.add_bias_field(blob, 0.15, seed=2)
    before = np.asarray(blob.dataobj)
    inside = before > 1
    log_ratio = np.log(np.asarray(biased.dataobj)[inside] / before[inside])
    assert 0.03 < log_ratio.std() < 0.3
    assert np.abs(log_ratio).max() < 1.0
    assert not np.allclose(np.asarray(perturb.add_bias_field(blob, 0.15, seed=3).dataobj),
                           np.asarray(biased.dataobj))


def test_motion_ghosting_copies_the_head_along_the_phase_axis(blob):
    ghost = perturb.motion_ghosting(blob, 0.5, 4, axis=1)
    data, before = np.asarray(ghost.dataobj), np.asarray(blob.dataobj)
    outside = ndi.gaussian_filter(before, 1) < 1  # background
    assert data[outside].mean() > 10 * max(before[outside].mean(), 1e-3)
    assert data.sum() == pytest.approx(before.sum(), rel=0.02)  # the k-space centre is kept
    assert np.allclose(np.asarray(perturb.motion_ghosting(blob, 0.0).dataobj), before,
                       atol=1e-2)


def test_every_acquisition_case_keeps_the_head_in_world_space(blob):
    for case in perturb.ACQUISITION_CASES:
        out = perturb.acquisition_case(blob, case)
        assert out.ndim == 3
        shift = 7.0 if case == "moved_3deg_4mm" else 1.0  # the move is 5.4 mm
        assert np.linalg.norm(_centroid_mm(out) - _centroid_mm(blob)) < shift, case


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda b: perturb.rigid_move(b, (0, 0), (0, 0, 0)), "rotation_deg"),
        (lambda b: perturb.rigid_move(b, (0, 0, 0), (0, 0, 500)), "shift_mm"),
        (lambda b: perturb.resample_voxels(b, 0.1), "voxel_mm"),
        (lambda b: perturb.add_rician_noise(b, -0.1), "fraction"),
        (lambda b: perturb.add_bias_field(b, 2.0), "strength"),
        (lambda b: perturb.motion_ghosting(b, 1.5), "intensity"),
        (lambda b: perturb.motion_ghosting(b, 0.5, 1), "n_ghosts"),
        (lambda b: perturb.motion_ghosting(b, 0.5, 4, axis=3), "axis"),
        (lambda b: perturb.acquisition_case(b, "ghostin"), "'ghosting'"),
    ],
)
def test_bad_arguments_name_the_parameter(blob, call, words):
    with pytest.raises(ValueError, match=words):
        call(blob)


def test_a_4d_image_is_refused(rng):
    img = nib.Nifti1Image(rng.random((7, 8, 9, 2)).astype(np.float32), np.eye(4))
    with pytest.raises(ValueError, match="3D scan"):
        perturb.add_rician_noise(img, 0.02)
