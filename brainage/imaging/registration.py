"""Registration of T1w scans to nilearn's MNI152 template, its grids and a quality figure.

The difficulty this module addresses: nilearn's MNI152 template is brain-only, while raw scans
carry skull, scalp fat, face and neck. An affine fitted directly (ANTs, from the scanner pose or
the intensity centre of mass, even with the template brain mask as metric mask) matches the
bright outline of the head to the outline of the template brain and squeezes the whole head into
the brain (2 of 3 IXI scans in the project's first trial). Two paths avoid it: brain to brain,
when the subject's brain mask is known (below), and, without one, the head-aware path of
preprocessing version 2, measured on the ten IXI scans of ``../shared/data/ixi10``:

1. **Vertex initialisation.** A head mask is found (:func:`ants.get_mask`); the top of the head
   (vertex) and the centre of the cranium (head voxels within 100 mm of the vertex) give a
   translation that puts the subject's brain near the template's. The neck, whose extent
   varies with the field of view and pulls the intensity centre of mass down, does not enter.
2. **Head stage** (similarity: rigid + isotropic scale) to a *pseudo-head*: the template brain
   wrapped in a dark band (CSF and skull, 6 mm) and a bright band (scalp, 6-16 mm), with the
   metric restricted to the pseudo-head above the skull base. The scan's scalp then has
   something to match, so the head is not squeezed into the brain. (Measured: from the same
   start, a rigid or affine stage straight to the brain template, with its brain mask eroded
   or dilated as metric mask, misregistered 2 of 3 IXI scans, scores 0.07-0.17.)
3. **Brain stage** (affine, 12 parameters) to the template, from the head stage, with the
   Mattes mutual information restricted to the template brain mask eroded by one voxel: only
   brain matches brain here.
4. **Multi-start.** If the result's :func:`alignment_score` is below
   :data:`ALIGNMENT_THRESHOLD`, the head stage is restarted with the head pitched by -15 and
   +15 degrees and the best result kept (IXI heads lie with different pitch in the coil).

Scans that are already skull-stripped skip the pseudo-head (their head stage registers to the
brain template itself, with the vertex taken as the top of the brain).

**Brain to brain** (the default for native scans since preprocessing version 3: a brain mask
from :mod:`brainage.imaging.brain_extraction` is given). The scan, N4-corrected inside its mask,
is multiplied by the mask and registered by one affine stage to the brain-only template
(Mattes mutual information inside the template brain mask eroded by a voxel, a pyramid that
stops at the output grid's scale), from a start that puts the template brain's centre of mass
on the mask's and pitches it by the angle between the two brains' long axes in the sagittal
plane (:func:`mask_pitch`). The start depends neither on the world origin nor on the voxel
order nor on the field of view. Restarts (:data:`_PITCHES_DEG`) run only when the score is
below the threshold. The same scans with their world origin 300 mm away, their voxel axes
permuted and reversed, 80 mm more neck in the field of view, or all three, score as the
originals (within 0.01; the head-aware path lost up to 0.11 with the extra neck). On the ten
IXI scans (median CPU time, one thread): N4 0.8 s and registration 3.3 s, against 1.9 s and
9.3 s on the head-aware path; alignment 0.52-0.61, higher on every scan than the head-aware
path's 0.49-0.60.

ANTsPy is used rather than DIPY: it is already a dependency of the project, its
multi-resolution affine registration takes a metric mask (both stages need one),
and on the ten IXI scans this path took 15-23 s per scan in all (N4 about 3 s, registration
10-17 s) on 2 busy cores and aligned all ten (alignment scores 0.49-0.60). DIPY was not measured
(not installed; it would be one more dependency).

References
----------
.. [1] Avants BB, Tustison NJ, Song G, et al. A reproducible evaluation of ANTs similarity metric
   performance in brain image registration. NeuroImage 54(3):2033-2044, 2011.
.. [2] Tustison NJ, Avants BB, Cook PA, et al. N4ITK: improved N3 bias correction. IEEE Trans
   Med Imaging 29(6):1310-1320, 2010.
.. [3] Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases for
   pediatric studies. NeuroImage 54(1):313-327, 2011 (the MNI152 2009 template).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from dataclasses import dataclass

# One ITK thread unless the user chose otherwise: with two, ANTs' multi-threaded registration
# (seeded) still differed slightly from run to run (measured on IXI013: outputs up to 0.1 SD
# apart, alignment score +-0.001); with one it is reproducible bit for bit, and on 2 busy cores
# not slower (cohorts use processes: preprocess_cohort's n_jobs). ITK reads this variable when
# it first runs a filter, so it works even if ants was imported before.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import ants
import ants.config
import nibabel as nib
import numpy as np
from nilearn import datasets, image
from scipy import ndimage

logger = logging.getLogger(__name__)

__all__ = [
    "ALIGNMENT_THRESHOLD",
    "RegistrationResult",
    "MISFIT_THRESHOLD_MM",
    "alignment_score",
    "ants_to_nifti",
    "brain_stage_pyramid",
    "mask_centre",
    "mask_pitch",
    "n4_correct",
    "nifti_to_ants",
    "outline_distances",
    "outline_misfit",
    "register_to_template",
    "registration_passes",
    "registration_qc_text",
    "template_grid",
    "template_images",
    "warp_to_template",
]

#: Restart criterion of :func:`register_to_template` only (not the scan's QC figure, which is
#: :func:`outline_misfit`): a start whose :func:`alignment_score` is below this is followed by
#: the next start. The correlation also falls with atrophy (simulated controls: Spearman -0.69
#: with age), so it does not decide whether a scan is accepted.
ALIGNMENT_THRESHOLD = 0.4

#: Registration QC: a scan whose :func:`outline_misfit` exceeds this many mm fails. Measured
#: (``benchmarks/bench_registration_qc.py``, 4 mm grid of the quick profile): correctly aligned
#: brains 2.6-4.4 mm (380 simulated subjects 20-100 y with AD and PD, and the 50 IXI scans of
#: ``../shared/data``), flat in age; shifts of 12 mm, rotations of 20 degrees and flipped
#: anterior-posterior or superior-inferior axes 5.0-9.8 mm.
MISFIT_THRESHOLD_MM = 5.0

#: Erosion of the template brain mask for :func:`alignment_score`, in mm: the figure then
#: compares brain interiors and ignores whatever lies at the brain's edge (skull, CSF, mask).
SCORE_EROSION_MM = 6.0

#: Pseudo-head geometry (mm from the template brain's surface): a dark band of CSF and skull,
#: then a bright band of scalp; the metric mask reaches a little further and stops below
#: ``z = -45 mm`` (skull base), where the face and neck of a real head have no counterpart.
_DARK_BAND_MM, _SCALP_MM, _HEAD_MASK_MM, _SKULL_BASE_Z = 6.0, 16.0, 22.0, -45.0
_DARK_VALUE, _SCALP_VALUE = 0.05, 0.6
#: The vertex lies about this far above the top of the brain (scalp and skull), in mm.
_VERTEX_ABOVE_BRAIN_MM = 10.0
#: The cranium: head voxels within this distance of the vertex, in mm.
_CRANIUM_DEPTH_MM = 100.0
#: Head-stage restarts: pitch angles (degrees) tried in turn until the score passes.
_PITCHES_DEG = (0.0, -15.0, 15.0)
#: Template voxel size (mm): a pyramid level of shrink factor f works at f times this.
_TEMPLATE_MM = 2.0
#: Brain-to-brain affine levels: (shrink factor, smoothing sigma in voxels, iterations). The
#: optimiser converges before these limits (measured on IXI012 and IXI034: (200, 100, 30)
#: iterations gave the same scores and times).
_BRAIN_LEVELS = ((4, 2, 500), (2, 1, 200), (1, 0, 50))
#: ANTs seed, passed as ``--random-seed`` so that the sampled metric is reproducible.
_ANTS_SEED = 20240501
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS (nibabel) <-> LPS (ITK) world coordinates


@functools.lru_cache(maxsize=1)
def template_images() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """nilearn's 2 mm MNI152 T1 template and its brain mask (packaged with nilearn, offline)."""
    template = datasets.load_mni152_template(resolution=2)
    mask = datasets.load_mni152_brain_mask(resolution=2)
    return template, mask


def template_grid(grid_mm: float = 2.0, *, crop_to_brain: bool = False,
                  margin_mm: float = 8.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """The MNI152 grid of a given spacing: ``(shape, affine)``.

    The field of view is that of nilearn's 2 mm template (voxel centres from
    (-98, -134, -72) to (98, 98, 116) mm, RAS), kept centred: ``grid_mm=2`` gives exactly
    nilearn's grid (99, 117, 95); ``grid_mm=4`` gives (50, 59, 48). With ``crop_to_brain`` the
    field of view is the template brain mask's bounding box, (-72, -106, -72) to (72, 72, 82) mm,
    widened by ``margin_mm`` on each side (4 mm, margin 8 mm: (41, 49, 43)).

    Parameters
    ----------
    grid_mm : float, default=2.0
        Isotropic voxel size in mm, in (0, 16].
    crop_to_brain : bool, default=False
        Use the brain's bounding box (plus margin) instead of the template's field of view.
    margin_mm : float, default=8.0
        Margin around the brain's bounding box, in mm (only with ``crop_to_brain``).

    Returns
    -------
    shape : tuple of int, length 3
    affine : ndarray, shape (4, 4)
        Voxel to RAS world (mm), diagonal.
    """
    shape, affine = _template_grid(float(grid_mm), bool(crop_to_brain), float(margin_mm))
    return shape, affine.copy()


@functools.lru_cache(maxsize=16)
def _template_grid(grid_mm: float, crop_to_brain: bool,
                   margin_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Cached body of :func:`template_grid` (its affine must not be modified)."""
    grid_mm = float(grid_mm)
    if not 0 < grid_mm <= 16:
        raise ValueError(f"grid_mm must be in (0, 16] mm; got {grid_mm}")
    template, mask = template_images()
    if crop_to_brain:
        ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
        xyz = nib.affines.apply_affine(mask.affine, ijk)  # (n, 3) mm
        low, high = xyz.min(axis=0) - margin_mm, xyz.max(axis=0) + margin_mm
    else:
        low = nib.affines.apply_affine(template.affine, np.zeros(3))
        high = nib.affines.apply_affine(template.affine, np.array(template.shape) - 1.0)
    extent = high - low
    shape = np.floor(extent / grid_mm + 1e-6).astype(int) + 1
    origin = (low + high) / 2 - (shape - 1) / 2 * grid_mm  # keep the field of view centred
    affine = np.diag([grid_mm, grid_mm, grid_mm, 1.0])
    affine[:3, 3] = origin
    return (int(shape[0]), int(shape[1]), int(shape[2])), affine


def nifti_to_ants(img: nib.Nifti1Image) -> ants.ANTsImage:
    """A 3D NIfTI image as a float32 ANTs image (RAS affine to ITK's LPS origin/direction)."""
    affine = _LPS @ img.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return ants.from_numpy(np.asarray(img.get_fdata(), dtype=np.float32),
                           origin=affine[:3, 3].tolist(), spacing=spacing.tolist(),
                           direction=affine[:3, :3] / spacing)


def ants_to_nifti(img: ants.ANTsImage) -> nib.Nifti1Image:
    """An ANTs image as a float32 NIfTI image (the inverse of :func:`nifti_to_ants`)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(img.direction) * np.asarray(img.spacing)
    affine[:3, 3] = img.origin
    return nib.Nifti1Image(img.numpy().astype(np.float32), _LPS @ affine)


def n4_correct(img: ants.ANTsImage, mask: ants.ANTsImage | None = None) -> ants.ANTsImage:
    """N4 bias-field correction, fitted at 4x shrink inside a mask.

    Parameters
    ----------
    img : ants.ANTsImage
        The scan.
    mask : ants.ANTsImage, optional
        Where the bias field is fitted: the brain mask of :mod:`brainage.imaging.brain_extraction`
        (on the scan cropped to it: median 0.8 s of CPU time on the ten 2 mm IXI scans, and
        higher alignment scores after registration than with the head mask); default: the head
        mask (:func:`ants.get_mask`; median 1.9 s), the path of scans without brain extraction.

    References
    ----------
    .. [1] Tustison NJ et al. N4ITK: improved N3 bias correction. IEEE TMI 29(6), 2010.
    """
    where = ants.get_mask(img) if mask is None else mask
    return ants.n4_bias_field_correction(img, mask=where, shrink_factor=4,
                                         convergence={"iters": [50, 50, 30], "tol": 1e-6})


@dataclass(frozen=True)
class RegistrationResult:
    """An affine registration of a scan to the MNI152 template.

    Parameters
    ----------
    matrix : ndarray, shape (4, 4)
        Affine map from template RAS mm to scan RAS mm (ANTs' fixed-to-moving direction): the
        scan lands on a template grid of affine ``G`` by sampling it at ``matrix @ G``.
    score : float
        :func:`alignment_score` of the registered scan.
    pitch_deg : float
        The start that was kept: on the head path 0 unless the multi-start was needed; on
        the brain path the mask's own pitch (:func:`mask_pitch`) unless it was needed.
    """

    matrix: np.ndarray
    score: float
    pitch_deg: float


@functools.lru_cache(maxsize=1)
def _targets() -> tuple[ants.ANTsImage, ants.ANTsImage, ants.ANTsImage, ants.ANTsImage]:
    """ANTs images: template, its brain mask eroded by a voxel, pseudo-head, pseudo-head mask."""
    template, mask = template_images()
    brain = np.asarray(mask.dataobj) > 0
    outside_mm = ndimage.distance_transform_edt(~brain, sampling=mask.header.get_zooms()[:3])
    head = np.asarray(template.get_fdata(), dtype=np.float32).copy()
    head[(outside_mm > 0) & (outside_mm <= _DARK_BAND_MM)] = _DARK_VALUE
    head[(outside_mm > _DARK_BAND_MM) & (outside_mm <= _SCALP_MM)] = _SCALP_VALUE
    ijk = np.indices(brain.shape).reshape(3, -1).T  # (n_voxels, 3)
    z_mm = nib.affines.apply_affine(mask.affine, ijk)[:, 2].reshape(brain.shape)
    head_mask = (outside_mm <= _HEAD_MASK_MM) & (z_mm > _SKULL_BASE_Z)
    eroded = ndimage.binary_erosion(brain, iterations=1)
    as_ants = [nifti_to_ants(nib.Nifti1Image(a.astype(np.float32), mask.affine))
               for a in (template.get_fdata(), eroded, head, head_mask)]
    return tuple(as_ants)  # type: ignore[return-value]


def _vertex_point(scan: ants.ANTsImage, skull_stripped: bool) -> np.ndarray:
    """The point of the scan (RAS mm) expected at the template brain's centre of mass."""
    head = ants_to_nifti(ants.get_mask(scan))
    ijk = np.argwhere(np.asarray(head.dataobj) > 0)
    if len(ijk) == 0:
        raise ValueError("no head found: the scan's foreground mask is empty")
    xyz = nib.affines.apply_affine(head.affine, ijk)  # (n, 3) RAS mm
    vertex = np.percentile(xyz[:, 2], 99.9)
    cranium = xyz[xyz[:, 2] > vertex - _CRANIUM_DEPTH_MM]
    _, brain_com, brain_top = _template_brain_geometry()
    above = 0.0 if skull_stripped else _VERTEX_ABOVE_BRAIN_MM
    centre_z = vertex - (brain_top + above - brain_com[2])
    return np.array([cranium[:, 0].mean(), cranium[:, 1].mean(), centre_z])


@functools.lru_cache(maxsize=1)
def _template_brain_geometry() -> tuple[np.ndarray, np.ndarray, float]:
    """Eroded score mask, brain centre of mass (RAS mm) and top of the brain (z, mm)."""
    template, mask = template_images()
    brain = np.asarray(mask.dataobj) > 0
    xyz = nib.affines.apply_affine(mask.affine, np.argwhere(brain))  # (n, 3)
    iterations = int(round(SCORE_EROSION_MM / float(mask.header.get_zooms()[0])))
    eroded = ndimage.binary_erosion(brain, iterations=iterations)
    return eroded, xyz.mean(axis=0), float(xyz[:, 2].max())


def _initial_transform(point_ras: np.ndarray, pitch_deg: float, folder: str) -> str:
    """An ANTs transform file mapping the template brain centre to ``point_ras``, pitched."""
    _, brain_com, _ = _template_brain_geometry()
    flip = np.array([-1.0, -1.0, 1.0])  # RAS -> LPS
    angle = np.deg2rad(pitch_deg)
    rotation = np.array([[1, 0, 0],  # about the left-right axis
                         [0, np.cos(angle), -np.sin(angle)],
                         [0, np.sin(angle), np.cos(angle)]])
    transform = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, matrix=rotation,
        center=(brain_com * flip).tolist(), translation=((point_ras - brain_com) * flip).tolist())
    path = os.path.join(folder, f"init_pitch{pitch_deg:+.0f}.mat")
    ants.write_transform(transform, path)
    return path


def _transform_matrix(path: str) -> np.ndarray:
    """The 4x4 RAS matrix (template mm -> scan mm) of an ANTs affine transform file."""
    transform = ants.read_transform(path)
    flip = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS
    # Sampled at the origin and the unit points, so that every ITK affine type (Euler,
    # Similarity, Affine, with or without a centre) converts the same way.
    points = np.vstack([np.zeros(3), np.eye(3)])  # (4, 3) RAS
    mapped = np.array([np.asarray(transform.apply_to_point((p * flip).tolist())) * flip
                       for p in points])  # (4, 3) RAS
    matrix = np.eye(4)
    matrix[:3, 3] = mapped[0]
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    return matrix


def warp_to_template(scan: ants.ANTsImage, matrix: np.ndarray) -> nib.Nifti1Image:
    """The scan resampled (linear) onto the 2 mm template grid by a template -> scan matrix."""
    scan_img = ants_to_nifti(scan)
    moved = nib.Nifti1Image(np.asarray(scan_img.dataobj), np.linalg.inv(matrix) @ scan_img.affine)
    template, _ = template_images()
    return image.resample_img(moved, target_affine=template.affine, target_shape=template.shape,
                              interpolation="continuous", force_resample=True, copy_header=True)


def _head_and_brain_stages(scan: ants.ANTsImage, init: str, skull_stripped: bool,
                           folder: str) -> np.ndarray:
    """Head stage (similarity to the pseudo-head) then brain stage (affine, brain mask)."""
    template, eroded_mask, head, head_mask = _targets()
    stages = dict(aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0),
                  aff_iterations=(1000, 500, 100))
    first_fixed, first_mask = (template, None) if skull_stripped else (head, head_mask)
    first = ants.registration(first_fixed, scan, type_of_transform="Similarity",
                              initial_transform=init, mask=first_mask,
                              outprefix=os.path.join(folder, "head_"), **stages)
    second = ants.registration(template, scan, type_of_transform="Affine",
                               initial_transform=first["fwdtransforms"][0], mask=eroded_mask,
                               outprefix=os.path.join(folder, "brain_"), **stages)
    return _transform_matrix(second["fwdtransforms"][0])


def brain_stage_pyramid(grid_mm: float = 2.0) -> dict[str, tuple[int, ...]]:
    """Multi-resolution schedule of the brain-to-brain affine, stopping at the grid's scale.

    The template has 2 mm voxels; a level of shrink factor ``f`` works at ``2 f`` mm. Levels
    finer than the output grid are skipped (a 4 mm grid stops at shrink 2): they cost most of
    the time and refine what the grid cannot hold.

    Parameters
    ----------
    grid_mm : float, default=2.0
        Voxel size of the output grid, in mm.

    Returns
    -------
    dict
        ``aff_shrink_factors``, ``aff_smoothing_sigmas`` (voxels) and ``aff_iterations`` for
        :func:`ants.registration`.
    """
    finest = max(1, int(float(grid_mm) // _TEMPLATE_MM + 1e-9))
    levels = [level for level in _BRAIN_LEVELS if level[0] >= finest] or [_BRAIN_LEVELS[0]]
    shrink, sigma, iterations = zip(*levels)
    return dict(aff_shrink_factors=shrink, aff_smoothing_sigmas=sigma,
                aff_iterations=iterations)


def _brain_stage(brain: ants.ANTsImage, init: str, grid_mm: float, folder: str) -> np.ndarray:
    """Brain-to-brain affine: the skull-stripped scan to the template, Mattes MI inside the
    template brain mask eroded by a voxel, from ``init``."""
    template, eroded_mask, _, _ = _targets()
    result = ants.registration(template, brain, type_of_transform="Affine",
                               initial_transform=init, mask=eroded_mask,
                               outprefix=os.path.join(folder, "brain_"),
                               **brain_stage_pyramid(grid_mm))
    return _transform_matrix(result["fwdtransforms"][0])


def _mask_points(mask: ants.ANTsImage | nib.Nifti1Image) -> np.ndarray:
    """World coordinates (RAS mm) of a mask's voxels, shape (n, 3)."""
    img = mask if isinstance(mask, nib.Nifti1Image) else ants_to_nifti(mask)
    ijk = np.argwhere(np.asarray(img.dataobj) > 0.5)
    if len(ijk) == 0:
        raise ValueError("the brain mask is empty: no start for the registration")
    return nib.affines.apply_affine(img.affine, ijk)


def mask_centre(mask: ants.ANTsImage) -> np.ndarray:
    """Centre of mass of a brain mask, in RAS mm (where the registration starts)."""
    return _mask_points(mask).mean(axis=0)


def _sagittal_angle(points: np.ndarray) -> float:
    """Angle (degrees, from anterior towards superior) of the long axis of a brain in the
    sagittal plane: the first principal axis of its (y, z) coordinates, pointing anterior."""
    yz = points[:, 1:] - points[:, 1:].mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(yz.T))
    y, z = vectors[:, -1] * (1.0 if vectors[0, -1] >= 0 else -1.0)
    return float(np.degrees(np.arctan2(z, y)))


def mask_pitch(mask: ants.ANTsImage) -> float:
    """Pitch of a brain mask relative to the template's brain, in degrees (nose up > 0).

    A brain's long (anterior-posterior) axis is well defined in the sagittal plane (standard
    deviations 41 mm along it and 31 mm across in the template; 38-44 and 27-29 mm in the ten
    IXI masks), so the angle between the mask's and the template's is a start for the pitch,
    the rotation by which heads differ most in the coil (the ten IXI scans: 6-16 degrees).
    """
    _, template_mask = template_images()
    template = _sagittal_angle(_mask_points(template_mask))
    return _sagittal_angle(_mask_points(mask)) - template


def _pitched_start(point_ras: np.ndarray, pitch_deg: float, folder: str) -> str:
    """An ANTs transform file: the template brain's centre of mass to ``point_ras``, then
    rotated about the left-right axis by ``pitch_deg`` (nose up > 0), in RAS converted to ITK's
    LPS (``F R F``, centre ``F c``, translation ``F t``)."""
    _, brain_com, _ = _template_brain_geometry()
    angle = np.deg2rad(pitch_deg)
    rotation = np.array([[1.0, 0.0, 0.0],  # about x (left-right): y towards z
                         [0.0, np.cos(angle), -np.sin(angle)],
                         [0.0, np.sin(angle), np.cos(angle)]])
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS
    transform = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, matrix=flip @ rotation @ flip,
        center=(flip @ brain_com).tolist(), translation=(flip @ (point_ras - brain_com)).tolist())
    path = os.path.join(folder, f"init_pitch{pitch_deg:+.1f}.mat")
    ants.write_transform(transform, path)
    return path


def _brain_starts(pitch_deg: float) -> list[float]:
    """Pitches tried in turn on the brain path: the mask's own, then version 2's set."""
    starts = [round(pitch_deg, 1)]
    for pitch in _PITCHES_DEG:
        if all(abs(pitch - s) > 5.0 for s in starts):
            starts.append(pitch)
    return starts


def register_to_template(scan: ants.ANTsImage, *, skull_stripped: bool = False,
                         brain_mask: ants.ANTsImage | None = None, grid_mm: float = 2.0,
                         threshold: float = ALIGNMENT_THRESHOLD) -> RegistrationResult:
    """Affine registration of a (bias-corrected) scan to the 2 mm MNI152 template.

    Two paths:

    * with ``brain_mask`` (the subject's own, from brain extraction): **brain to brain**. The
      scan is multiplied by the mask and registered by one affine stage to the (brain-only)
      template, starting from a translation that puts the template brain's centre of mass on
      the mask's, with the Mattes mutual information inside the template brain mask eroded by
      a voxel and a pyramid that stops at the grid's scale (:func:`brain_stage_pyramid`). The
      start does not depend on the world origin, the voxel order or the field of view.
    * without: the head-aware path of the module docstring (vertex start, head stage to the
      pseudo-head, brain stage).

    In both, the registration is restarted from pitched starts (:data:`_PITCHES_DEG`) while the
    :func:`alignment_score` stays below ``threshold``; the best start is kept, with a warning if
    even that one is below the threshold.

    Parameters
    ----------
    scan : ants.ANTsImage
        A 3D T1w scan in world coordinates (reoriented, N4-corrected), head or brain.
    skull_stripped : bool, default=False
        The scan holds the brain only: register it to the brain template directly (head path).
    brain_mask : ants.ANTsImage, optional
        The scan's brain mask (same grid, 1 inside): take the brain-to-brain path.
    grid_mm : float, default=2.0
        Voxel size of the output grid: the brain-to-brain pyramid stops at its scale.
    threshold : float, default=ALIGNMENT_THRESHOLD
        Score under which the next start is tried.

    Returns
    -------
    RegistrationResult
        ``matrix`` maps template RAS mm to scan RAS mm.
    """
    # ANTsPy switch (ants.config): with ``on=False`` it only sets the seed of antsRegistration.
    ants.config.set_ants_deterministic(on=False, seed_value=_ANTS_SEED)
    if brain_mask is not None:
        scan = scan * brain_mask
        point, starts = mask_centre(brain_mask), _brain_starts(mask_pitch(brain_mask))
    else:
        point, starts = _vertex_point(scan, skull_stripped), list(_PITCHES_DEG)
    best: RegistrationResult | None = None
    with tempfile.TemporaryDirectory(prefix="brainage_reg_") as folder:
        for pitch in starts:
            if brain_mask is not None:
                init = _pitched_start(point, pitch, folder)
                matrix = _brain_stage(scan, init, grid_mm, folder)
            else:
                init = _initial_transform(point, pitch, folder)
                matrix = _head_and_brain_stages(scan, init, skull_stripped, folder)
            score = alignment_score(warp_to_template(scan, matrix))
            logger.debug("registration start pitch %+.0f deg: alignment score %.3f", pitch, score)
            if best is None or score > best.score:
                best = RegistrationResult(matrix=matrix, score=score, pitch_deg=pitch)
            if score >= threshold:
                break
    assert best is not None
    if best.score < threshold:
        # the restart criterion only: whether the scan is kept is decided by its registration
        # QC (outline_misfit of the preprocessed volume), which atrophy does not lower
        # logged at debug level: a second figure beside the misfit would read as a QC verdict
        logger.debug("registration: no start reached a template correlation of %.2f (best "
                     "%.3f, below the threshold of the restarts); the registration QC of the "
                     "preprocessed scan decides whether it is kept", threshold, best.score)
    return best


def alignment_score(img: nib.Nifti1Image) -> float:
    """Registration quality: correlation with the MNI152 template inside the brain.

    Pearson correlation between the image and nilearn's 2 mm MNI152 template over the template
    brain mask eroded by 6 mm (:data:`SCORE_EROSION_MM`); the image is first resampled (linear)
    onto the 2 mm template grid if it lies on another. It is invariant to the image's intensity
    scale and offset and ignores the brain's edge, so skull stripping and intensity
    normalisation do not change it. Correctly aligned real T1w brains score about 0.5-0.6,
    misaligned ones (6 mm shift: about 0.33, 12 mm: about 0.05) lower; scans below
    :data:`ALIGNMENT_THRESHOLD` are flagged.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D image in MNI152 space (any grid).

    Returns
    -------
    float
        The correlation, in [-1, 1]; ``nan`` if the image is constant inside the mask.
    """
    if len(img.shape) != 3:
        raise ValueError(f"alignment_score needs a 3D image; got shape {img.shape}")
    template, _ = template_images()
    eroded, _, _ = _template_brain_geometry()
    same_grid = img.shape == template.shape and np.allclose(img.affine, template.affine)
    if not same_grid:
        img = image.resample_img(img, target_affine=template.affine, target_shape=template.shape,
                                 interpolation="continuous", force_resample=True,
                                 copy_header=True)
    values = np.asarray(img.get_fdata(), dtype=np.float64)[eroded]
    reference = np.asarray(template.get_fdata(), dtype=np.float64)[eroded]
    if not np.isfinite(values).all() or values.std() == 0:
        return float("nan")
    return float(np.corrcoef(values, reference)[0, 1])


@functools.lru_cache(maxsize=1)
def _template_signed_distance() -> np.ndarray:
    """Signed distance (mm) of each 2 mm template voxel to the template brain's outline:
    positive outside the brain mask, negative inside."""
    _, mask = template_images()
    brain = np.asarray(mask.dataobj) > 0
    zooms = mask.header.get_zooms()[:3]
    return (ndimage.distance_transform_edt(~brain, sampling=zooms)
            - ndimage.distance_transform_edt(brain, sampling=zooms))


def outline_distances(img: nib.Nifti1Image) -> np.ndarray:
    """Signed distances (mm) from the outline of the scan's brain to the template brain's outline.

    The scan's brain is its non-zero voxels with holes filled (preprocessing sets every voxel
    outside the subject's brain mask to 0, and enlarged ventricles inside it do not count); its
    outline is the brain voxels with a neighbour outside. Each outline voxel's centre is looked
    up (linear interpolation, world mm) in the template brain's signed distance map: positive
    outside the template brain.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D image in MNI152 space (any grid), 0 outside the brain.

    Returns
    -------
    ndarray, shape (n_outline_voxels,)
    """
    if len(img.shape) != 3:
        raise ValueError(f"outline_distances needs a 3D image; got shape {img.shape}")
    data = np.asarray(img.dataobj)
    brain = ndimage.binary_fill_holes(np.isfinite(data) & (data != 0))
    outline = brain & ~ndimage.binary_erosion(brain)  # the array's edge counts as outside
    xyz = nib.affines.apply_affine(img.affine, np.argwhere(outline))  # (n, 3) RAS mm
    _, mask = template_images()
    ijk = nib.affines.apply_affine(np.linalg.inv(mask.affine), xyz).T  # (3, n) template voxels
    return ndimage.map_coordinates(_template_signed_distance(), ijk, order=1, mode="nearest")


def outline_misfit(img: nib.Nifti1Image) -> float:
    """Registration QC: how unevenly the scan's brain outline lies on the template's, in mm.

    The standard deviation, over the outline voxels of the scan's brain, of their signed
    distance to the MNI152 template brain's outline (:func:`outline_distances`). A brain that
    is smaller or larger than the template everywhere (atrophy, a wider or tighter brain mask)
    moves every distance by the same amount and leaves the spread alone; a misregistered brain
    sticks out on one side and falls short on the other, and the spread grows. It thus measures
    registration and not atrophy, unlike :func:`alignment_score`, whose correlation falls with
    age and ventricle size. Scans above :data:`MISFIT_THRESHOLD_MM` fail
    (:func:`registration_passes`).

    It needs the subject's own brain outline: preprocessed volumes whose skull was removed by
    the subject's mask (deepbet) or delivered skull-stripped. A volume masked by the template's
    own brain mask (``brain_extraction="template"``, or MNI-space scans with skull) has the
    template's outline, whose misfit says nothing: :func:`brainage.imaging.preprocess` does not
    compute it for those (NaN).

    Measured (``benchmarks/bench_registration_qc.py``, quick profile's 4 mm grid): correctly
    aligned brains 2.6-4.4 mm, Spearman with age about 0 among simulated controls (the old
    correlation: -0.69); shifts of 6 / 12 mm, rotations of 10 / 20 degrees and flipped axes of
    the same brains 3.6-9.8 mm (ROC AUC about 0.99 between aligned and misaligned).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D image in MNI152 space (any grid), 0 outside the subject's brain.

    Returns
    -------
    float
        The spread in mm (>= 0); ``nan`` if the image holds fewer than 10 outline voxels.
    """
    distances = outline_distances(img)
    if distances.size < _MIN_OUTLINE_VOXELS:
        return float("nan")
    return float(distances.std())


#: Outline voxels below which :func:`outline_misfit` is undefined (NaN).
_MIN_OUTLINE_VOXELS = 10


def registration_passes(misfit: float) -> bool:
    """Whether a scan's :func:`outline_misfit` passes the QC: finite and at most
    :data:`MISFIT_THRESHOLD_MM` (NaN, a misfit that could not be measured, fails)."""
    return bool(np.isfinite(misfit) and misfit <= MISFIT_THRESHOLD_MM)


def registration_qc_text(misfit: float) -> str:
    """The registration QC of a scan as every command prints it: its misfit and the threshold,
    e.g. ``"registration misfit 3.4 mm (threshold 5.0 mm): passed"``: to 0.1 mm, as the
    ``registration_misfit_mm`` column of the output tables holds it."""
    if not np.isfinite(misfit):
        return (f"registration misfit not measured (threshold {MISFIT_THRESHOLD_MM:.1f} mm): "
                "no brain outline of the subject's own")
    verdict = "passed" if registration_passes(misfit) else "FAILED"
    return (f"registration misfit {misfit:.1f} mm (threshold {MISFIT_THRESHOLD_MM:.1f} mm): "
            f"{verdict}")
