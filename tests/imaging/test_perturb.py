"""Tests of brainage.imaging.perturb: variants of a scan that keep the head where it is."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainage.imaging import perturb
from brainage.imaging import preprocess as pp


@pytest.fixture
def scan(rng: np.random.Generator) -> nib.Nifti1Image:
    """A (7, 8, 9) scan stored like IXI's (voxel axes P, S, R), 2 x 2.5 x 3 mm voxels."""
    affine = np.array([[0.0, 0.0, 3.0, -10.0],     # voxel axis 2 runs left -> right
                       [-2.0, 0.0, 0.0, 40.0],     # voxel axis 0 runs anterior -> posterior
                       [0.0, 2.5, 0.0, -30.0],     # voxel axis 1 runs inferior -> superior
                       [0.0, 0.0, 0.0, 1.0]])
    return nib.Nifti1Image(rng.normal(size=(7, 8, 9)).astype(np.float32), affine)


def _world(img: nib.Nifti1Image) -> dict[tuple, float]:
    """Voxel value by world position (mm, rounded), for every voxel."""
    data = np.asanyarray(img.dataobj)
    ijk = np.indices(data.shape).reshape(3, -1).T
    xyz = np.round(nib.affines.apply_affine(img.affine, ijk), 3)
    return {tuple(p): float(v) for p, v in zip(xyz, data.reshape(-1))}


def test_shift_origin_moves_world_coordinates(scan: nib.Nifti1Image) -> None:
    moved = perturb.shift_origin(scan, (300.0, -300.0, 300.0))
    np.testing.assert_array_equal(np.asanyarray(moved.dataobj), np.asanyarray(scan.dataobj))
    np.testing.assert_allclose(moved.affine[:3, 3] - scan.affine[:3, 3], [300, -300, 300])
    np.testing.assert_allclose(moved.affine[:3, :3], scan.affine[:3, :3])


@pytest.mark.parametrize(("order", "flips"), [
    ((2, 0, 1), (True, False, True)),
    ((1, 2, 0), (False, True, True)),
    ((0, 1, 2), (True, True, True)),
])
def test_reorder_axes_keeps_every_voxel_in_place(scan: nib.Nifti1Image, order, flips) -> None:
    reordered = perturb.reorder_axes(scan, order, flips)
    assert reordered.shape == tuple(scan.shape[k] for k in order)
    assert _world(reordered) == _world(scan)


def test_reordered_scan_loads_as_the_same_ras_image(scan, tmp_path) -> None:
    """load_scan reorients to RAS: the stored order does not change what preprocessing sees."""
    nib.save(scan, tmp_path / "a.nii.gz")
    nib.save(perturb.reorder_axes(scan, (2, 0, 1), (True, False, True)), tmp_path / "b.nii.gz")
    a, b = pp.load_scan(tmp_path / "a.nii.gz"), pp.load_scan(tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)


def test_pad_neck_extends_below_and_above(scan: nib.Nifti1Image) -> None:
    padded = perturb.pad_neck(scan, neck_mm=10.0, above_mm=5.0)  # 2.5 mm slices: 4 and 2
    ras = nib.as_closest_canonical(scan)
    assert padded.shape == (ras.shape[0], ras.shape[1], ras.shape[2] + 6)
    world = _world(padded)
    assert all(world[p] == v for p, v in _world(scan).items())  # the head has not moved
    data = np.asanyarray(padded.dataobj)
    low = np.asanyarray(ras.dataobj)[:, :, 0]
    for k in range(4):  # the lowest slice, repeated downward
        np.testing.assert_array_equal(data[:, :, k], low)
    assert not data[:, :, -2:].any()  # background above
    assert padded.affine[2, 3] == pytest.approx(ras.affine[2, 3] - 10.0)


@pytest.mark.parametrize("case", perturb.ROBUSTNESS_CASES)
def test_robustness_cases_keep_the_head(scan: nib.Nifti1Image, case: str) -> None:
    """Every case holds the original voxels (the origin case: all moved by the same shift)."""
    variant = perturb.robustness_case(scan, case)
    world = _world(variant)
    shift = np.array([300.0, -300.0, 300.0]) if case in ("origin_300mm", "all_three") else 0.0
    for p, v in _world(scan).items():
        assert world[tuple(np.round(np.array(p) + shift, 3))] == v


def test_bad_arguments() -> None:
    img = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"order must be a permutation of \(0, 1, 2\)"):
        perturb.reorder_axes(img, (0, 0, 1), (False, False, False))
    with pytest.raises(ValueError, match="case must be one of .*got 'tilted'"):
        perturb.robustness_case(img, "tilted")


def test_erode_brain_removes_the_outer_shell_and_renormalises() -> None:
    volume = np.zeros((9, 9, 9), np.float32)
    volume[2:7, 2:7, 2:7] = 0.5
    volume[3:6, 3:6, 3:6] = 2.0  # the core is brighter than the rim
    out = perturb.erode_brain(volume)
    assert np.array_equal(out != 0, volume == 2.0)  # exactly the 3x3x3 core is left
    assert out[out != 0].mean() == pytest.approx(1.0)
    assert volume[2, 2, 2] == 0.5  # the input is not changed
    two = perturb.erode_brain(volume, voxels=2)
    assert np.count_nonzero(two) == 1


def test_erode_brain_rejects_bad_arguments() -> None:
    volume = np.zeros((5, 5, 5), np.float32)
    volume[2, 2, 2] = 1.0
    with pytest.raises(ValueError, match="leaves nothing"):
        perturb.erode_brain(volume)
    with pytest.raises(ValueError, match="whole number"):
        perturb.erode_brain(volume, voxels=0)
