"""Variants of a real scan for robustness checks of the native preprocessing.

Each function returns a new image of the same head as its input, stored differently: its world
origin far from the brain, its voxel axes in another order or direction, or its field of view
extended by more neck. :func:`misregister` moves the brain of a registered volume on its grid
(shifted, rotated or mirrored): a registration gone wrong, for the registration QC.
:func:`erode_brain` works on a preprocessed volume instead: the same scan
under a tighter brain extraction (a model that reads the mask's edge moves its age with it).
Scans from other scanners differ from the IXI scans in exactly these
ways (whole-head 2 mm scans of elderly subjects, world origin far from the brain, neck in the
field of view, defeated the head-aware registration of preprocessing version 2); the tests
(``tests/imaging``) and ``benchmarks/bench_preprocess.py --robustness`` build them from the
scans of ``../shared/data/ixi10``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

__all__ = ["MISREGISTRATIONS", "ROBUSTNESS_CASES", "erode_brain", "misregister", "pad_neck",
           "reorder_axes", "robustness_case", "shift_origin"]


def shift_origin(img: nib.Nifti1Image, shift_mm: tuple[float, float, float]) -> nib.Nifti1Image:
    """The same voxels with the world origin moved: every world coordinate plus ``shift_mm``.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    shift_mm : tuple of float, length 3
        Added to the affine's translation (RAS mm).
    """
    affine = img.affine.copy()
    affine[:3, 3] += np.asarray(shift_mm, dtype=float)
    return nib.Nifti1Image(np.asanyarray(img.dataobj), affine)


def reorder_axes(img: nib.Nifti1Image, order: tuple[int, int, int],
                 flips: tuple[bool, bool, bool]) -> nib.Nifti1Image:
    """The same head in world space, its voxel axes permuted and reversed.

    Output axis ``k`` is input axis ``order[k]``, reversed where ``flips[k]``; the affine is
    changed to match, so every voxel keeps its world position (as a scanner storing slices in
    another order would write it).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    order : tuple of int
        A permutation of (0, 1, 2).
    flips : tuple of bool, length 3
        Reverse output axis k.
    """
    if sorted(order) != [0, 1, 2] or len(flips) != 3:
        raise ValueError(f"order must be a permutation of (0, 1, 2) and flips 3 bools; got "
                         f"{order} and {flips}")
    data = np.transpose(np.asanyarray(img.dataobj), order)
    index = np.eye(4)[:, [*order, 3]]  # output voxel -> input voxel, before the flips
    for k, flip in enumerate(flips):
        if flip:
            data = np.flip(data, axis=k)
            reverse = np.eye(4)
            reverse[k, k], reverse[k, 3] = -1.0, data.shape[k] - 1.0
            index = index @ reverse
    return nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ index)


def pad_neck(img: nib.Nifti1Image, neck_mm: float = 80.0,
             above_mm: float = 20.0) -> nib.Nifti1Image:
    """The field of view extended downward by more neck and upward by background.

    The lowest axial slice (in RAS, the most inferior) is repeated ``neck_mm`` further down, a
    column of neck below the head, and ``above_mm`` of zeros are added above the vertex; the
    affine keeps every original voxel at its world position.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    neck_mm, above_mm : float, default=80.0, 20.0
        Extensions below and above, in mm (rounded to whole voxels).
    """
    ras = nib.as_closest_canonical(img)
    data = np.asanyarray(ras.dataobj)
    z_mm = float(np.linalg.norm(ras.affine[:3, 2]))
    below, above = int(round(neck_mm / z_mm)), int(round(above_mm / z_mm))
    padded = np.pad(data, ((0, 0), (0, 0), (below, 0)), mode="edge")
    padded = np.pad(padded, ((0, 0), (0, 0), (0, above)), mode="constant")
    shift = np.eye(4)
    shift[2, 3] = -below
    return nib.Nifti1Image(padded, ras.affine @ shift)


#: Named robustness cases: an origin 300 mm off in every axis, axes permuted and reversed
#: (a PSR scan stored as RIA ...), 80 mm more neck, and all three at once.
ROBUSTNESS_CASES = ("origin_300mm", "axes_permuted_flipped", "neck_padded", "all_three")


def robustness_case(img: nib.Nifti1Image, case: str) -> nib.Nifti1Image:
    """One of :data:`ROBUSTNESS_CASES` built from ``img``."""
    if case == "origin_300mm":
        return shift_origin(img, (300.0, -300.0, 300.0))
    if case == "axes_permuted_flipped":
        return reorder_axes(img, (2, 0, 1), (True, False, True))
    if case == "neck_padded":
        return pad_neck(img)
    if case == "all_three":
        moved = shift_origin(pad_neck(img), (300.0, -300.0, 300.0))
        return reorder_axes(moved, (1, 2, 0), (False, True, True))
    raise ValueError(f"case must be one of {ROBUSTNESS_CASES}; got {case!r}")


def erode_brain(volume: np.ndarray, voxels: int = 1) -> np.ndarray:
    """A preprocessed volume under a tighter brain mask: its outer ``voxels`` shells removed.

    The brain is the volume's non-zero voxels (preprocessing sets the outside to 0); it is
    eroded by ``voxels`` steps of the 6-neighbourhood and the rest divided by its mean again:
    the division of :func:`brainage.imaging.preprocess.normalise_intensity` (its percentile
    clipping is not redone; the volume was clipped when it was preprocessed).

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        A preprocessed volume (mean 1 inside the brain, 0 outside).
    voxels : int, default=1
        Erosion steps (each one voxel of the grid).

    Raises
    ------
    ValueError
        ``voxels`` below 1, or nothing of the brain is left.
    """
    from scipy import ndimage as ndi

    if int(voxels) != voxels or voxels < 1:
        raise ValueError(f"voxels must be a whole number >= 1, got {voxels!r}")
    volume = np.asarray(volume, dtype=np.float32)
    mask = ndi.binary_erosion(volume != 0, iterations=int(voxels))
    if not mask.any():
        raise ValueError(f"eroding the brain by {voxels} voxel(s) leaves nothing of it "
                         f"(volume of shape {volume.shape})")
    out = np.zeros_like(volume)
    out[mask] = volume[mask] / volume[mask].mean()
    return out


#: Deliberate misregistrations of a registered volume (keyword arguments of
#: :func:`misregister`), by kind: shifts of 6 and 12 mm and rotations of 10 and 20 degrees
#: along / about each axis, and a flipped anterior-posterior or superior-inferior axis (a
#: flipped left-right axis is not listed: the symmetric MNI152 template cannot tell it).
MISREGISTRATIONS: dict[str, tuple[dict, ...]] = {
    "shift 6 mm": tuple({"shift_mm": tuple(6.0 * np.eye(3)[k])} for k in range(3)),
    "shift 12 mm": tuple({"shift_mm": tuple(12.0 * np.eye(3)[k])} for k in range(3)),
    "rotation 10 deg": tuple({"rotation": (k, 10.0)} for k in range(3)),
    "rotation 20 deg": tuple({"rotation": (k, 20.0)} for k in range(3)),
    "flipped axis": ({"flip_axis": 1}, {"flip_axis": 2}),
}


def misregister(img: nib.Nifti1Image, *, shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                rotation: tuple[int, float] | None = None,
                flip_axis: int | None = None) -> nib.Nifti1Image:
    """A registered volume with its content moved on the same grid: a registration gone wrong.

    The content is rotated about (or mirrored through) the MNI152 brain's centre of mass, then
    shifted; the result is resampled (linear) onto the input's grid, 0 outside.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D volume in MNI152 space.
    shift_mm : tuple of float, length 3, default=(0, 0, 0)
        Translation in RAS mm.
    rotation : tuple (axis, degrees), optional
        Rotation about the world axis 0 (x), 1 (y) or 2 (z).
    flip_axis : int, optional
        World axis mirrored through the brain's centre (0: left-right, 1: anterior-posterior,
        2: superior-inferior).
    """
    from scipy import ndimage as ndi

    from brainage.imaging.registration import template_images

    if len(img.shape) != 3:
        raise ValueError(f"misregister needs a 3D image; got shape {img.shape}")
    matrix = np.eye(3)
    if rotation is not None:
        axis, degrees = rotation
        if axis not in (0, 1, 2):
            raise ValueError(f"rotation axis must be 0, 1 or 2; got {axis!r}")
        i, j = [k for k in range(3) if k != axis]
        angle = np.deg2rad(float(degrees))
        matrix[[i, j, i, j], [i, j, j, i]] = (np.cos(angle), np.cos(angle), -np.sin(angle),
                                              np.sin(angle))
    if flip_axis is not None:
        if flip_axis not in (0, 1, 2):
            raise ValueError(f"flip_axis must be 0, 1 or 2; got {flip_axis!r}")
        matrix = np.diag([-1.0 if k == flip_axis else 1.0 for k in range(3)]) @ matrix
    _, mask = template_images()
    centre = nib.affines.apply_affine(mask.affine, np.argwhere(np.asarray(mask.dataobj) > 0)
                                      ).mean(axis=0)
    move = np.eye(4)  # world: x -> matrix (x - centre) + centre + shift
    move[:3, :3] = matrix
    move[:3, 3] = centre - matrix @ centre + np.asarray(shift_mm, dtype=float)
    # output voxel -> world -> where the content came from -> input voxel
    sample = np.linalg.inv(img.affine) @ np.linalg.inv(move) @ img.affine
    data = ndi.affine_transform(np.asarray(img.dataobj, dtype=np.float32), sample[:3, :3],
                                sample[:3, 3], order=1, mode="constant", cval=0.0)
    return nib.Nifti1Image(data, img.affine)
