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
scans of ``../shared/data/ixi10``. The acquisition changes (:data:`ACQUISITION_CASES`: a head
moved in the scanner, another voxel size, Rician noise, a bias field, motion ghosting, another
axis order) are the test-retest variations of a real scan (``benchmarks/bench_retest.py
--real``): predictions only, never training data.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from brainage._utils import closest_hint

__all__ = ["ACQUISITION_CASES", "MISREGISTRATIONS", "ROBUSTNESS_CASES", "acquisition_case",
           "add_bias_field", "add_rician_noise", "erode_brain", "misregister", "motion_ghosting",
           "pad_neck", "reorder_axes", "resample_voxels", "rigid_move", "robustness_case",
           "shift_origin"]


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

    # imported here, not at the top: registration imports ANTsPy, which took 4.1-5.3 s more than
    # `import brainage.imaging.perturb` alone (0.5-0.7 s) on the 2-core CPU (3 runs each)
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


# --- acquisition changes (test-retest of real scans) ----------------------------------------
def _check_img(img: nib.Nifti1Image, name: str = "img") -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{name} must be a 3D scan, got data of shape {data.shape}")
    return np.asarray(data, dtype=np.float32)


def _check_triple(value: tuple[float, float, float], name: str, high: float) -> np.ndarray:
    out = np.asarray(value, dtype=float)
    if out.shape != (3,) or not np.isfinite(out).all() or np.abs(out).max() > high:
        raise ValueError(f"{name} must be three finite numbers of at most {high:g} in size, "
                         f"got {value!r}")
    return out


def rigid_move(img: nib.Nifti1Image, rotation_deg: tuple[float, float, float],
               shift_mm: tuple[float, float, float]) -> nib.Nifti1Image:
    """The head moved in the scanner: the data resampled (trilinear) after a rigid move about
    the field of view's centre, the header unchanged (unlike :func:`shift_origin`).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    rotation_deg : tuple of float, length 3
        Rotations about the world x, y and z axes (degrees, at most 45).
    shift_mm : tuple of float, length 3
        Translation in world mm (at most 100).
    """
    from scipy import ndimage as ndi
    from scipy.spatial.transform import Rotation

    data = _check_img(img)
    rot = Rotation.from_euler("xyz", _check_triple(rotation_deg, "rotation_deg", 45.0),
                              degrees=True).as_matrix()
    shift = _check_triple(shift_mm, "shift_mm", 100.0)
    centre = img.affine[:3, :3] @ ((np.asarray(data.shape) - 1) / 2) + img.affine[:3, 3]
    move = np.eye(4)  # world -> world: x' = R (x - c) + c + t
    move[:3, :3], move[:3, 3] = rot, centre + shift - rot @ centre
    pull = np.linalg.inv(img.affine) @ np.linalg.inv(move) @ img.affine  # output -> input voxel
    out = ndi.affine_transform(data, pull[:3, :3], pull[:3, 3], order=1, mode="constant")
    return nib.Nifti1Image(out, img.affine)


def resample_voxels(img: nib.Nifti1Image, voxel_mm: float) -> nib.Nifti1Image:
    """The scan acquired at another isotropic voxel size: smoothed by the Gaussian that takes
    its own voxel to ``voxel_mm`` (FWHM sqrt(new^2 - old^2) per axis) and resampled (nilearn),
    its axes' directions kept.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    voxel_mm : float
        The new voxel size in mm, in [0.5, 8].
    """
    from nilearn.image import resample_img, smooth_img

    data = _check_img(img)
    if not 0.5 <= float(voxel_mm) <= 8:
        raise ValueError(f"voxel_mm must be in [0.5, 8] mm, got {voxel_mm!r}")
    sizes = np.linalg.norm(img.affine[:3, :3], axis=0)
    fwhm = np.sqrt(np.clip(float(voxel_mm) ** 2 - sizes**2, 0, None))
    source = nib.Nifti1Image(data, img.affine)
    if fwhm.max() > 0:
        source = smooth_img(source, fwhm=np.where(fwhm > 0, fwhm, 1e-3))
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / sizes * float(voxel_mm)
    shape = np.maximum(np.round(np.asarray(data.shape) * sizes / float(voxel_mm)), 1)
    out = resample_img(source, target_affine=affine, target_shape=tuple(int(v) for v in shape),
                       interpolation="continuous", force_resample=True, copy_header=True)
    return nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), out.affine)


def _scale(data: np.ndarray) -> float:
    """The bright tissue's intensity: the 99th percentile of the non-zero voxels."""
    inside = data[data > 0]
    return float(np.percentile(inside, 99)) if inside.size else 0.0


def add_rician_noise(img: nib.Nifti1Image, fraction: float, seed: int = 0) -> nib.Nifti1Image:
    """Rician noise of SD ``fraction`` times the bright tissue's intensity (the 99th
    percentile of the non-zero voxels): the magnitude of the signal plus complex Gaussian
    noise, as a magnitude image has it.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    fraction : float
        Noise SD relative to the bright tissue, in [0, 0.5].
    seed : int, default=0
    """
    data = _check_img(img)
    if not 0 <= float(fraction) <= 0.5:
        raise ValueError(f"fraction must be in [0, 0.5], got {fraction!r}")
    rng = np.random.default_rng(seed)
    sigma = np.float32(float(fraction) * _scale(data))
    real = data + sigma * rng.standard_normal(data.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(data.shape, dtype=np.float32)
    return nib.Nifti1Image(np.sqrt(real**2 + imag**2), img.affine)


def add_bias_field(img: nib.Nifti1Image, strength: float, seed: int = 0) -> nib.Nifti1Image:
    """A smooth multiplicative bias field: ``exp`` of a random second-order polynomial of the
    voxel position (coordinates scaled to [-1, 1]) whose log has SD about ``strength`` over the
    field of view.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    strength : float
        SD of the log field, in [0, 1] (0.1: about ±10 % of intensity).
    seed : int, default=0
    """
    data = _check_img(img)
    if not 0 <= float(strength) <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in data.shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    basis = np.stack([x, y, z, x * y, x * z, y * z, x * x - 1 / 3, y * y - 1 / 3,
                      z * z - 1 / 3])  # (9, X, Y, Z)
    coef = np.random.default_rng(seed).standard_normal(9).astype(np.float32)
    field = np.tensordot(coef, basis, axes=1)
    sd = float(field.std())
    field = field * np.float32(float(strength) / sd) if sd > 0 else field * 0
    return nib.Nifti1Image(data * np.exp(field), img.affine)


def motion_ghosting(img: nib.Nifti1Image, intensity: float = 0.5, n_ghosts: int = 4,
                    axis: int = 1) -> nib.Nifti1Image:
    """Ghosts of periodic motion along the phase-encoding axis: every ``n_ghosts``-th line of
    k-space along ``axis`` scaled by ``1 - intensity`` (the k-space model of TorchIO's
    ``RandomGhosting``; TorchIO is not a dependency, and MONAI has no ghosting transform).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D scan.
    intensity : float, default=0.5
        In [0, 1]: 0 leaves the scan, 1 removes those lines.
    n_ghosts : int, default=4
        Spacing of the modulated lines (the ghosts' number), at least 2.
    axis : int, default=1
        The phase-encoding voxel axis.
    """
    data = _check_img(img)
    if not 0 <= float(intensity) <= 1:
        raise ValueError(f"intensity must be in [0, 1], got {intensity!r}")
    if isinstance(n_ghosts, bool) or int(n_ghosts) != n_ghosts or n_ghosts < 2:
        raise ValueError(f"n_ghosts must be a whole number >= 2, got {n_ghosts!r}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    k = np.fft.fftshift(np.fft.fftn(data))
    lines = [slice(None)] * 3
    lines[axis] = slice(None, None, int(n_ghosts))
    centre = data.shape[axis] // 2
    keep = k.take([centre], axis=axis).copy()  # the k-space centre keeps the contrast
    k[tuple(lines)] *= 1 - float(intensity)
    index = [slice(None)] * 3
    index[axis] = slice(centre, centre + 1)
    k[tuple(index)] = keep
    out = np.abs(np.fft.ifftn(np.fft.ifftshift(k))).astype(np.float32)
    return nib.Nifti1Image(out, img.affine)


#: Named acquisition changes of a real scan (:func:`acquisition_case`).
ACQUISITION_CASES = ("moved_3deg_4mm", "voxel_1.5mm", "voxel_3mm", "rician_2pct",
                     "bias_0.15", "ghosting", "axes_reordered")


def acquisition_case(img: nib.Nifti1Image, case: str, seed: int = 0) -> nib.Nifti1Image:
    """One of :data:`ACQUISITION_CASES` built from ``img`` (``seed`` for the noise and field)."""
    if case == "moved_3deg_4mm":
        return rigid_move(img, (3.0, -2.0, 3.0), (4.0, -3.0, 2.0))
    if case == "voxel_1.5mm":
        return resample_voxels(img, 1.5)
    if case == "voxel_3mm":
        return resample_voxels(img, 3.0)
    if case == "rician_2pct":
        return add_rician_noise(img, 0.02, seed)
    if case == "bias_0.15":
        return add_bias_field(img, 0.15, seed)
    if case == "ghosting":
        return motion_ghosting(img, 0.5, 4, 1)
    if case == "axes_reordered":
        return reorder_axes(img, (1, 0, 2), (False, True, False))
    raise ValueError(f"case must be one of {ACQUISITION_CASES}; got {case!r}"
                     f"{closest_hint(str(case), ACQUISITION_CASES)}")
