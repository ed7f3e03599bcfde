"""Preprocessing of T1w scans onto the MNI152 grid of a profile, with an on-disk cache.

Scans in native (scanner) space, by default (``brain_extraction="deepbet"``)::

    load (nibabel, checked by brainage.data.cohort.read_scan) -> RAS (MONAI Orientation)
    -> brain extraction: the subject's brain mask (deepbet, imaging.brain_extraction)
    -> crop to the mask's bounding box plus 10 mm -> N4 bias-field correction inside the mask
    -> brain-to-brain affine registration to nilearn's MNI152 template, from the mask's centre
       of mass and pitch (ANTsPy, imaging.registration)
    -> resampling of the scan and its mask onto the template grid of ``grid_mm`` (one
       interpolation each, MONAI SpatialResample) -> skull removal by the subject's mask
    -> intensity normalisation inside the brain

With ``brain_extraction="template"`` (the path of preprocessing version 2, kept as a fallback):
N4 inside the head mask, the head-aware registration of :mod:`brainage.imaging.registration`,
and skull removal by the template's brain mask after registration.

Scans in a template space skip N4 and registration: they are only resampled onto the grid,
masked and normalised. These are ``MNI152NLin2009cSym`` (nilearn's template: the simulated cohort)
and ``MNI152Lin`` (affinely aligned to MNI152 on FSL's 1 mm grid: OpenBHB's quasi-raw ``.npy``
arrays, read by :func:`brainage.data.openbhb.load_openbhb_array`). Both are taken to coincide with
the output grid's MNI152 world coordinates; the MNI152 variants differ by a few millimetres at the
cortex, which an affine registration to the 2009c template would not remove either.

Choices (documented approximations):

* **Skull removal** of native scans keeps the voxels of the subject's own brain mask (deepbet),
  carried onto the grid by the registration (linear, then > 0.5). Its total intracranial volume
  (TIV, in native space) is written into the output's header (``descrip``) and the cache's
  sidecar (:func:`header_tiv`, :attr:`CohortItem.tiv_cm3`). With ``brain_extraction="template"``
  the registered scan is multiplied by the template's brain mask: after an affine (not a
  non-linear) registration this follows the template's brain outline, not the subject's; a thin
  rim of CSF/dura may remain or a little cortex be cut where the subject's brain shape differs.
  Scans in a template space are masked so too. Scans already skull-stripped
  (``skull_stripped=True``) keep their own brain outline: their foreground (voxels above 5 % of
  the 99th intensity percentile) is the brain mask.
* **Intensity normalisation**: inside the brain mask, intensities are clipped to their 0.5-99.5th
  percentiles, then divided by their mean inside the mask (as in Peng et al. 2021, SFCN), so
  the brain's mean is 1, tissue stays positive (CSF dark, white matter bright) and the
  background, 0, is darker than any tissue. (A z-score would put the background at the brain's
  mean intensity, and the MRI augmentations, a multiplicative bias field and a gamma
  contrast change, assume positive intensities.)
* **Anti-aliasing**: before resampling onto a grid coarser than the scan, the scan is smoothed
  with a Gaussian whose FWHM is ``sqrt(grid_mm**2 - voxel_mm**2)`` per axis.

The output grid is :func:`brainage.imaging.registration.template_grid` (nilearn's 2 mm template grid
for ``grid_mm=2``, the same field of view at other spacings; optionally cropped to the brain).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainage._utils import (
    BRAIN_EXTRACTION_METHODS,
    SPACES,
    atomic_write,
    check_choice,
    check_int,
    run_tasks,
    sha256_file,
)
from brainage.data.cohort import check_header, file_problem, format_problem, read_scan
from brainage.exceptions import BrainageError
from brainage.imaging import brain_extraction as bet

# torch, MONAI and ANTs (brainage.imaging.registration) take seconds to import: they are imported in
# the functions that use them, so that the command line, which imports this module to build its
# parser, starts fast. ``ALIGNMENT_THRESHOLD``, ``alignment_score`` and ``template_grid`` are
# re-exported from brainage.imaging.registration on first access (module ``__getattr__``, PEP 562).

logger = logging.getLogger(__name__)

__all__ = [
    "BRAIN_EXTRACTION_METHODS",
    "PREPROCESS_VERSION",
    "CohortItem",
    "PreprocessCache",
    "PreprocessError",
    "PreprocessParams",
    "check_scan",
    "check_scan_format",
    "header_tiv",
    "memory_budget",
    "load_scan",
    "normalise_intensity",
    "preprocess_cohort",
    "preprocess_file",
    "resample_to_grid",
    "preprocess_files",
    "registration_misfit",
]

#: Bumped whenever the output of :func:`preprocess_file` changes: part of every cache key.
#: 3: native scans get the subject's brain mask (deepbet) and a brain-to-brain registration by
#: default (``brain_extraction``, also in the key); template-space outputs are unchanged.
PREPROCESS_VERSION = "3"
# SPACES (imported from brainage.data.manifest): raw scanner space (registered here), or already in
# a template space (only resampled): MNI152 2009c symmetric (nilearn's template), or ``MNI152Lin``,
# affinely aligned to MNI152 on FSL's 1 mm grid (OpenBHB's quasi-raw scans).
#: Foreground of a skull-stripped scan: above this fraction of its 99th intensity percentile.
_FOREGROUND_FRACTION = 0.05
_CLIP_PERCENTILES = (0.5, 99.5)
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's axis convention
_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
#: The TIV record in a preprocessed volume's header (``descrip``, 80 bytes at most).
_TIV_RECORD = "brainage brain mask {method}, TIV {tiv:.1f} cm3"
_TIV_PATTERN = re.compile(r"^brainage brain mask (\w+), TIV ([0-9.]+) cm3$")
#: Memory :func:`resample_to_grid` takes, in bytes per voxel of the scan when it is smoothed
#: first (anti-aliasing onto a coarser grid) or not, and per voxel of the output grid. Measured
#: on a 2-core CPU (peak RSS of one call, 120^3-240^3 scans onto the 0.5-4 mm grids), rounded
#: up: ``benchmarks/bench_resample_memory.py`` prints the measured peak beside the estimate.
_SMOOTHED_BYTES, _UNSMOOTHED_BYTES, _GRID_BYTES = 100, 8, 32


class PreprocessError(BrainageError, ValueError):
    """A scan cannot be preprocessed (unreadable, not 3D, non-finite, empty ...)."""


@dataclass(frozen=True)
class PreprocessParams:
    """Parameters of :func:`preprocess_file` (and of the cache key).

    Parameters
    ----------
    space : {"native", "MNI152NLin2009cSym", "MNI152Lin"}, default="native"
        Space of the input scans: ``native`` scans are registered, MNI-space ones are not.
    grid_mm : float, default=2.0
        Isotropic voxel size of the output grid, in mm.
    skull_stripped : bool, default=False
        The scans hold the brain only (skip skull removal by the template mask).
    crop_to_brain : bool, default=False
        Crop the grid to the template brain's bounding box plus 8 mm.
    brain_extraction : {"deepbet", "template"}, default="deepbet"
        Skull removal of native scans that are not skull-stripped: ``deepbet``, the subject's
        own brain mask, found before registration, which then aligns brain to brain;
        ``template``, the template's brain mask after the head-aware registration (version 2's
        path). Scans in a template space, and skull-stripped ones, do not use it.
    """

    space: str = "native"
    grid_mm: float = 2.0
    skull_stripped: bool = False
    crop_to_brain: bool = False
    brain_extraction: str = "deepbet"

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            close = difflib.get_close_matches(str(self.space), SPACES, n=1, cutoff=0.3)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"space must be one of {SPACES}; got {self.space!r}{hint}")
        number = isinstance(self.grid_mm, (int, float)) and not isinstance(self.grid_mm, bool)
        if not number or not 0 < self.grid_mm <= 16:
            raise ValueError(f"grid_mm must be a number in (0, 16] mm; got {self.grid_mm!r}")
        for name in ("skull_stripped", "crop_to_brain"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")
        check_choice("brain_extraction", self.brain_extraction, BRAIN_EXTRACTION_METHODS)
        object.__setattr__(self, "grid_mm", float(self.grid_mm))

    @property
    def skull_removal(self) -> str:
        """What removes the skull of these scans: ``"deepbet"`` (the subject's mask),
        ``"template"`` (the template's mask) or ``"foreground"`` (delivered skull-stripped)."""
        if self.skull_stripped:
            return "foreground"
        return self.brain_extraction if self.space == "native" else "template"

    @classmethod
    def coerce(cls, params: PreprocessParams | Mapping[str, Any] | None) -> PreprocessParams:
        """``params`` as :class:`PreprocessParams` (from a mapping of its fields, or defaults)."""
        if params is None:
            return cls()
        if isinstance(params, cls):
            return params
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be PreprocessParams or a mapping; got {type(params)}")
        unknown = sorted(set(params) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown preprocessing parameter(s) {unknown}; "
                             f"allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**params)


def check_scan(path: str | os.PathLike, *,
               read_data: bool = False) -> nib.spatialimages.SpatialImage | None:
    """Check a scan file before any command reads its voxels: the one entry point, like
    nilearn's ``check_niimg``, so that the audit, ``brainage preprocess``, ``brainage
    predict`` and the BIDS App refuse the same files with the same message.

    It raises what :func:`brainage.data.cohort.read_scan` (the audit's reader) finds, without
    the plausibility limits: a path that is not a readable regular file, a format brainage does
    not read (FreeSurfer ``.mgz``, Analyze, MINC, DICOM), a header nibabel cannot read, not 3D
    (or 4D with one volume), and the header's problems
    (:func:`brainage.data.cohort.check_header`: too many voxels, a file shorter than its data,
    a non-numeric type, voxel sizes that are not positive, a non-finite or degenerate affine).
    With ``read_data`` also the voxels' (corrupt or truncated data, NaN or infinite, all zeros
    or constant), as :func:`load_scan` does.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI file, or an OpenBHB ``.npy`` array (its header checked by
        :func:`brainage.data.openbhb.load_openbhb_array`).
    read_data : bool, default=False
        Also read and check the voxels; by default no voxel is read.

    Returns
    -------
    nibabel image or None
        The scan with its header read (voxels not loaded unless ``read_data``); None for an
        OpenBHB array.

    Raises
    ------
    FileNotFoundError
        The file does not exist (or is a broken symlink).
    PreprocessError
        Any other problem: ``scan <path>: <problem>[; <problem> ...]``, the problems in the
        audit's words.
    """
    img = _read_checked(Path(path), read_data).image
    return None if str(path).endswith(".npy") else img


def _read_checked(path: Path, read_data: bool) -> Any:
    """:func:`brainage.data.cohort.read_scan` without the plausibility limits, its problems
    raised as one error naming the file."""
    found = read_scan(path, plausible=False, read_data=read_data)
    if found.problems:
        message = f"scan {path}: {'; '.join(found.problems)}"
        problem = file_problem(path)
        if problem == "does not exist" or (problem or "").startswith("is a broken symlink"):
            raise FileNotFoundError(message)
        raise PreprocessError(message)
    return found


def load_scan(path: str | os.PathLike) -> nib.Nifti1Image:
    """Read a 3D scan, reoriented to RAS, as a float32 NIfTI image; checked for problems.

    The file is read once, by :func:`brainage.data.cohort.read_scan` (the audit's reader:
    see :func:`check_scan`); MONAI reorients it.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI file (``.nii`` or ``.nii.gz``); a 4D file with a single volume is accepted. Or an
        OpenBHB ``.npy`` array, read by :func:`brainage.data.openbhb.load_openbhb_array` (channel
        axis dropped, the quasi-raw grid's affine).

    Raises
    ------
    FileNotFoundError
        The file does not exist (or is a broken symlink).
    PreprocessError
        Any problem :func:`check_scan` with ``read_data=True`` finds: the path is not a
        readable file (a directory, a symlink loop, permission denied), its format, the header
        (checked before any data is read), corrupt or truncated data, not 3D, NaN/inf voxels,
        all zeros or constant.
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import EnsureChannelFirst, Orientation

    found = _read_checked(Path(path), read_data=True)
    # As MONAI's LoadImage (NibabelReader) reads it: nibabel's scaled voxels as float32, the
    # image's affine; read here once so that the checks and the load see the same voxels.
    data = MetaTensor(torch.as_tensor(np.asarray(found.data, dtype=np.float32)),
                      affine=torch.as_tensor(np.asarray(found.image.affine, dtype=np.float64)))
    if data.ndim == 4:  # (X, Y, Z, 1): read_scan refuses more volumes
        data = data[..., 0]
    channel_first = EnsureChannelFirst(channel_dim="no_channel")(data)  # (1, X, Y, Z)
    ras = Orientation(axcodes="RAS", labels=_RAS_LABELS)(channel_first)
    affine = np.asarray(ras.affine, dtype=np.float64)
    return nib.Nifti1Image(np.asarray(ras[0], dtype=np.float32), affine)


def check_scan_format(path: str | os.PathLike) -> None:
    """Refuse, by name, an image format that nibabel opens but the preprocessing does not read
    (:func:`brainage.data.cohort.format_problem`: FreeSurfer ``.mgz``, Analyze
    ``.img``/``.hdr``, MINC, DICOM); NIfTI and OpenBHB ``.npy`` pass.

    Raises
    ------
    PreprocessError
        One line naming the file, its format and how to convert it.
    """
    problem = format_problem(path)
    if problem is not None:
        raise PreprocessError(f"scan {path}: {problem}")


def memory_budget() -> int:
    """Bytes of memory one scan's preprocessing may take: this machine's physical memory, or
    the container's limit (cgroup v2 ``memory.max``) when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = int(Path("/sys/fs/cgroup/memory.max").read_text().strip())
    except (OSError, ValueError):  # no cgroup v2, or "max"
        limit = total
    return min(total, limit)


def _check_resampling_memory(path: Path, grid: tuple[tuple[int, int, int], np.ndarray]) -> None:
    """Refuse, from the header alone, a scan whose resampling onto ``grid`` would need more
    memory than :func:`memory_budget` (a 0.2 mm scan, or a tiny ``grid_mm``)."""
    if path.name.endswith(".npy"):
        return  # OpenBHB arrays have one fixed grid
    try:
        header = nib.load(str(path))
        shape = tuple(int(n) for n in header.shape[:3])
        zooms = np.asarray(header.header.get_zooms()[:3], dtype=float)
        if check_header(header, plausible=False)[0]:
            return  # too many voxels, a short file ...: load_scan says so
    except Exception:  # load_scan reports an unreadable file with its reason
        return
    if len(shape) < 3 or not np.all(np.isfinite(zooms) & (zooms > 0)):
        return  # load_scan refuses it with the reason
    grid_shape, grid_affine = grid
    grid_mm = float(abs(grid_affine[0, 0]))
    smoothed = grid_mm**2 - float(zooms.min()) ** 2 > (0.5 * grid_mm) ** 2  # resample_to_grid
    voxels, grid_voxels = math.prod(shape), math.prod(grid_shape)
    need = voxels * (_SMOOTHED_BYTES if smoothed else _UNSMOOTHED_BYTES) + grid_voxels * _GRID_BYTES
    budget = memory_budget()
    if need > budget:
        raise PreprocessError(
            f"scan {path}: resampling its {' x '.join(map(str, shape))} voxels "
            f"({' x '.join(f'{z:g}' for z in zooms)} mm) onto the {grid_mm:g} mm grid "
            f"({' x '.join(map(str, grid_shape))} voxels) would need about {_size(need)} of "
            f"memory, more than the {_size(budget)} here; the data was not read (use a "
            f"coarser grid, or downsample the scan first)")


def _size(count: float) -> str:
    """Bytes in GB, or TB from 1000 GB."""
    return f"{count / 1e9:.3g} GB" if count < 1e12 else f"{count / 1e12:.3g} TB"


def resample_to_grid(img: nib.Nifti1Image, grid: tuple[tuple[int, int, int], np.ndarray],
                     matrix: np.ndarray | None = None) -> np.ndarray:
    """Resample a scan (linear, anti-aliased) onto a template grid, through an affine.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        3D scan.
    grid : (shape, affine)
        Output grid, from :func:`template_grid`.
    matrix : ndarray, shape (4, 4), optional
        Template RAS mm -> scan RAS mm (a registration); identity for scans in template space.

    Returns
    -------
    ndarray, shape ``grid[0]``, float32
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import GaussianSmooth, SpatialResample

    shape, grid_affine = grid
    matrix = np.eye(4) if matrix is None else np.asarray(matrix, dtype=np.float64)
    # Sampling the scan at matrix @ x for every grid point x = resampling an image whose affine
    # is inv(matrix) @ affine: one interpolation, done by MONAI.
    moved_affine = np.linalg.inv(matrix) @ img.affine
    voxel_mm = np.sqrt((moved_affine[:3, :3] ** 2).sum(axis=0))
    grid_mm = float(np.abs(grid_affine[0, 0]))
    fwhm_mm = np.sqrt(np.clip(grid_mm**2 - voxel_mm**2, 0.0, None))
    data = MetaTensor(torch.as_tensor(np.asarray(img.dataobj, dtype=np.float32))[None],
                      affine=torch.as_tensor(moved_affine))  # (1, X, Y, Z)
    if fwhm_mm.max() > 0.5 * grid_mm:
        sigma_vox = tuple(float(s) for s in fwhm_mm * _FWHM_TO_SIGMA / voxel_mm)
        data = GaussianSmooth(sigma=sigma_vox)(data)
    out = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float32)(
        data, dst_affine=torch.as_tensor(grid_affine), spatial_size=shape)
    return np.asarray(out[0], dtype=np.float32)


def _template_mask_on(grid: tuple[tuple[int, int, int], np.ndarray]) -> np.ndarray:
    """The template brain mask on a grid (resampled like a scan, then > 0.5)."""
    from brainage.imaging.registration import template_images

    _, mask = template_images()
    as_float = nib.Nifti1Image(np.asarray(mask.dataobj, dtype=np.float32), mask.affine)
    return resample_to_grid(as_float, grid) > 0.5


def normalise_intensity(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Clip to the 0.5-99.5th percentiles inside ``mask``, divide by the mean there, 0 outside.

    Written here because MONAI's ``NormalizeIntensity`` normalises over the non-zero voxels or
    the whole image, not over a given mask.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z)
    mask : ndarray of bool, shape (X, Y, Z)

    Returns
    -------
    ndarray, shape (X, Y, Z), float32
    """
    if data.shape != mask.shape:
        raise ValueError(f"data and mask shapes differ: {data.shape} and {mask.shape}")
    if mask.sum() < 2:
        raise PreprocessError(f"the brain mask holds {int(mask.sum())} voxel(s); need at least 2")
    inside = np.clip(data[mask], *np.percentile(data[mask], _CLIP_PERCENTILES))
    mean = inside.mean()
    if not mean > 0:
        raise PreprocessError(f"the mean intensity inside the brain mask is {mean:g}; a T1w "
                              "brain must be positive there")
    out = np.zeros(data.shape, dtype=np.float32)
    out[mask] = inside / mean
    return out


def preprocess_file(path: str | os.PathLike, *, space: str = "native", grid_mm: float = 2.0,
                    skull_stripped: bool = False, crop_to_brain: bool = False,
                    brain_extraction: str = "deepbet") -> nib.Nifti1Image:
    """Preprocess one T1w scan onto the MNI152 grid of ``grid_mm`` (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
        A 3D NIfTI scan, or an OpenBHB ``.npy`` array (see :func:`load_scan`).
    space : {"native", "MNI152NLin2009cSym", "MNI152Lin"}, default="native"
        ``native``: reorient, N4, register to MNI152 (affine); MNI-space scans are only resampled.
    grid_mm : float, default=2.0
        Isotropic voxel size of the output grid (:func:`template_grid`), in mm.
    skull_stripped : bool, default=False
        The scan holds the brain only: no skull removal by the template mask.
    crop_to_brain : bool, default=False
        Crop the grid to the template brain's bounding box plus 8 mm.
    brain_extraction : {"deepbet", "template"}, default="deepbet"
        Skull removal of native scans (see :class:`PreprocessParams`).

    Returns
    -------
    nibabel.Nifti1Image
        float32, shape and affine of ``template_grid(grid_mm, crop_to_brain=crop_to_brain)``,
        divided by its mean inside the brain mask (mean 1 there), 0 outside. With deepbet, the
        header's ``descrip`` records the native TIV (:func:`header_tiv`).

    Raises
    ------
    FileNotFoundError, PreprocessError
        The message names the file and the problem.
    """
    from brainage.imaging import registration as reg

    params = PreprocessParams(space=space, grid_mm=grid_mm, skull_stripped=skull_stripped,
                              crop_to_brain=crop_to_brain, brain_extraction=brain_extraction)
    grid = reg.template_grid(params.grid_mm, crop_to_brain=params.crop_to_brain)
    check_scan_format(path)
    _check_resampling_memory(Path(path), grid)
    scan = load_scan(path)
    brain = None
    if params.space == "native" and params.skull_removal == "deepbet":
        brain = _extract_brain(path, scan)
        scan, brain_mask = bet.crop_to_mask(scan, brain.mask)
        scan, matrix = _register_native(path, scan, params, brain_mask)
        data = resample_to_grid(scan, grid, matrix)
        as_float = nib.Nifti1Image(np.asarray(brain_mask.dataobj, np.float32), brain_mask.affine)
        mask = resample_to_grid(as_float, grid, matrix) > 0.5
    else:
        matrix = None
        if params.space == "native":
            scan, matrix = _register_native(path, scan, params, None)
        data = resample_to_grid(scan, grid, matrix)
        if params.skull_stripped:
            mask = data > _FOREGROUND_FRACTION * np.percentile(data, 99)
        else:
            mask = _template_mask_on(grid)
    try:
        out = normalise_intensity(data, mask)
    except PreprocessError as err:
        raise PreprocessError(f"scan {path}: {err} (does the scan overlap the template grid?)") \
            from None
    img = nib.Nifti1Image(out, grid[1])
    img.header.set_xyzt_units("mm")
    img.set_sform(grid[1], code="mni")
    img.set_qform(grid[1], code="mni")
    if brain is not None:
        img.header["descrip"] = _TIV_RECORD.format(method=brain.method, tiv=brain.tiv_cm3)
    return img


def _extract_brain(path: str | os.PathLike, scan: nib.Nifti1Image) -> Any:
    """The subject's brain mask (:func:`brainage.imaging.brain_extraction.extract_brain`)."""
    start = time.perf_counter()
    try:
        brain = bet.extract_brain(scan, source=path)
    except bet.BrainExtractionError as err:
        raise PreprocessError(str(err)) from err
    logger.info("%s: brain extraction %.1f s, TIV %.0f cm3", path, time.perf_counter() - start,
                brain.tiv_cm3)
    return brain


def _register_native(path: str | os.PathLike, scan: nib.Nifti1Image, params: PreprocessParams,
                     brain_mask: nib.Nifti1Image | None) -> tuple[nib.Nifti1Image, np.ndarray]:
    """N4 and registration of a native scan: the corrected scan and its template -> scan matrix.

    With ``brain_mask`` N4 is fitted inside it and the registration aligns brain to brain;
    without, N4 uses the head mask and the registration is head-aware.
    """
    from brainage.imaging import registration as reg

    start = time.perf_counter()
    mask = None if brain_mask is None else reg.nifti_to_ants(
        nib.Nifti1Image(np.asarray(brain_mask.dataobj, np.float32), brain_mask.affine))
    corrected = reg.n4_correct(reg.nifti_to_ants(scan), mask)
    n4_s = time.perf_counter() - start
    try:
        if mask is None:
            result = reg.register_to_template(corrected, skull_stripped=params.skull_stripped)
        else:
            result = reg.register_to_template(corrected, brain_mask=mask,
                                              grid_mm=params.grid_mm)
    except (ValueError, RuntimeError) as err:
        raise PreprocessError(f"scan {path}: registration to MNI152 failed: {err}") from err
    # The correlation only chose among the registration's starts; the scan's QC figure is
    # registration_misfit of the preprocessed volume (PreprocessCache logs it), one per scan.
    logger.info("%s: N4 %.1f s, registration %.1f s", path, n4_s,
                time.perf_counter() - start - n4_s)
    return reg.ants_to_nifti(corrected), result.matrix


def header_tiv(img: nib.Nifti1Image) -> float:
    """The native TIV (cm³) recorded in a preprocessed volume's header; NaN if none is.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A volume written by :func:`preprocess_file`.
    """
    try:
        text = img.header["descrip"].item().decode("ascii", "replace")
    except (KeyError, AttributeError, ValueError):  # not a NIfTI-1 header
        return float("nan")
    found = _TIV_PATTERN.match(text.strip())
    return float(found.group(2)) if found else float("nan")


class PreprocessCache:
    """Preprocessed volumes on disk, keyed by the scan's checksum and the parameters.

    A volume is stored as ``root/<kk>/<key>.nii.gz`` with a JSON sidecar (source, checksum,
    parameters, version); the key is the SHA-256 of the scan's SHA-256 (its bytes), the
    parameters and :data:`PREPROCESS_VERSION`, so a changed file, parameter or preprocessing version
    misses the cache. Writes go to a temporary file that is then renamed: a reader never sees a
    partial volume, and concurrent writers of the same key leave one complete file. An entry that
    cannot be read (a truncated or corrupt volume or sidecar, damaged outside this class) is
    discarded with a ``RuntimeWarning`` naming the file, and recomputed.

    Parameters
    ----------
    root : str or PathLike
        Cache folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root)!r})"

    @staticmethod
    def _record(digest: str, params: PreprocessParams) -> dict[str, Any]:
        return {"sha256": digest, "params": asdict(params), "version": PREPROCESS_VERSION}

    def _target(self, digest: str, params: PreprocessParams) -> Path:
        record = json.dumps(self._record(digest, params), sort_keys=True)
        key = hashlib.sha256(record.encode()).hexdigest()
        return self.root / key[:2] / f"{key}.nii.gz"

    def path_for(self, path: str | os.PathLike, params: PreprocessParams | Mapping | None) -> Path:
        """Where the preprocessed volume of ``path`` with ``params`` is (or would be) stored."""
        return self._target(sha256_file(path), PreprocessParams.coerce(params))

    def get_or_compute(self, path: str | os.PathLike,
                       params: PreprocessParams | Mapping | None = None) -> nib.Nifti1Image:
        """The preprocessed volume of ``path``: read from the cache, or computed and stored.

        Parameters
        ----------
        path : str or PathLike
            A 3D NIfTI scan.
        params : PreprocessParams or mapping, optional
            Keyword arguments of :func:`preprocess_file` (default: its defaults).
        """
        return nib.load(self._entry(path, params)[0])

    def alignment(self, path: str | os.PathLike,
                  params: PreprocessParams | Mapping | None = None) -> float:
        """The registration QC figure of the cached volume (:func:`registration_misfit`, mm;
        NaN where it cannot be measured).

        It is computed once, when the volume is, and stored in the JSON sidecar.
        """
        return self._entry(path, params)[1]

    def _entry(self, path: str | os.PathLike,
               params: PreprocessParams | Mapping | None) -> tuple[Path, float, float]:
        """The cached file of ``path`` (computed first if absent), its registration misfit (mm)
        and its native TIV in cm³ (NaN unless the brain was extracted)."""
        params = PreprocessParams.coerce(params)
        check_scan(path)
        digest = sha256_file(path)
        target = self._target(digest, params)
        sidecar = target.with_suffix("").with_suffix(".json")
        cached = self._read_entry(target, sidecar) if target.is_file() else None
        if cached is not None:
            logger.debug("cache hit: %s -> %s", path, target)
            img, meta = cached
            if _MISFIT_KEY in meta:
                return target, _misfit_of(meta), _sidecar_tiv(meta, img)
        else:
            img = preprocess_file(path, **asdict(params))
            meta = {"source": str(Path(path).resolve()), **self._record(digest, params)}
        misfit = registration_misfit(img, params)
        meta[_MISFIT_KEY] = misfit if np.isfinite(misfit) else None
        from brainage.imaging.registration import registration_qc_text

        # debug only: the commands print or log the figure once per scan, cached or not, with
        # the same words (brainage preprocess prints it; predict logs it or refuses the scan)
        logger.debug("%s: %s (computed)", path, registration_qc_text(misfit))
        tiv = header_tiv(img)
        if np.isfinite(tiv):
            meta["tiv_cm3"] = tiv
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(sidecar, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
        if not target.is_file():
            atomic_write(target, lambda tmp: nib.save(img, tmp))
        return target, misfit, tiv

    @staticmethod
    def _read_entry(target: Path, sidecar: Path) -> tuple[nib.Nifti1Image, dict] | None:
        """A cached volume (read in full) and its sidecar; None if either cannot be read.

        An unreadable entry (truncated or corrupt image, broken JSON) is deleted with a
        warning naming it, so that the caller recomputes it instead of failing on every run.
        """
        file = target
        try:
            lazy = nib.load(target)
            problems, _ = check_header(lazy, plausible=False)  # before reading any data
            if problems:
                raise ValueError("; ".join(problems))
            img = nib.Nifti1Image(np.asanyarray(lazy.dataobj), lazy.affine, lazy.header)
            file = sidecar
            meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
            score = meta.get(_MISFIT_KEY, 0.0) if isinstance(meta, dict) else "none"
            if score is not None and (isinstance(score, bool)
                                      or not isinstance(score, (int, float))):
                raise TypeError(f"not a JSON object with a numeric {_MISFIT_KEY}")
        except Exception as err:  # nibabel, gzip, zlib, json raise many types
            detail = " ".join(f"{type(err).__name__}: {err}".split())
            warnings.warn(f"preprocessing cache entry {file} cannot be read ({detail}); the "
                          f"entry ({target.name} and its sidecar) is discarded and recomputed",
                          RuntimeWarning, stacklevel=3)
            for path in (target, sidecar):
                path.unlink(missing_ok=True)
            return None
        return img, meta


#: Sidecar key of the registration QC figure (mm; ``null`` where it cannot be measured). Entries
#: written before it (with the template correlation under ``alignment``) get it on first read.
_MISFIT_KEY = "registration_misfit_mm"


def _misfit_of(meta: Mapping[str, Any]) -> float:
    value = meta.get(_MISFIT_KEY)
    return float("nan") if value is None else float(value)


def registration_misfit(img: nib.Nifti1Image, params: PreprocessParams | Mapping | None) -> float:
    """The registration QC figure of a volume preprocessed with ``params``: its
    :func:`brainage.imaging.registration.outline_misfit` (mm), or NaN where the volume's
    outline is the template's own (skull removed by the template's brain mask), which says
    nothing about the registration.

    The one place every command (``preprocess``, ``predict``, ``bids``, the audit) gets the
    figure from: the cache stores it in the volume's sidecar.
    """
    from brainage.imaging.registration import outline_misfit

    if PreprocessParams.coerce(params).skull_removal == "template":
        return float("nan")
    return outline_misfit(img)


def _sidecar_tiv(meta: Mapping[str, Any], img: nib.Nifti1Image) -> float:
    """The TIV of a cache entry: from its sidecar, else from the volume's header, else NaN."""
    value = meta.get("tiv_cm3")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return header_tiv(img)


@dataclass(frozen=True)
class CohortItem:
    """Outcome of one scan in :func:`preprocess_cohort`.

    Parameters
    ----------
    path : Path
        The scan.
    image : nibabel.Nifti1Image or None
        The preprocessed volume (read lazily from the cache); ``None`` if it failed.
    error : str or None
        What went wrong (names the file and the problem); ``None`` if it succeeded.
    alignment : float
        Registration QC figure (:func:`registration_misfit`, mm; lower is better,
        :func:`brainage.imaging.registration.registration_passes` says whether it passes);
        NaN if preprocessing failed or the figure cannot be measured.
    tiv_cm3 : float
        Total intracranial volume of the subject's brain mask, in native space (cm³); NaN
        unless the brain was extracted (``brain_extraction="deepbet"`` on a native scan).
    """

    path: Path
    image: nib.Nifti1Image | None
    error: str | None = None
    alignment: float = float("nan")
    tiv_cm3: float = float("nan")

    @property
    def ok(self) -> bool:
        """Whether the scan was preprocessed."""
        return self.error is None


def _cache_one(root: str, path: str, params: PreprocessParams) -> tuple[str, float, float]:
    """Worker: preprocess one scan through the cache; returns the cached file, its score and
    its TIV."""
    target, score, tiv = PreprocessCache(root)._entry(path, params)
    return str(target), score, tiv


def preprocess_cohort(paths: Sequence[str | os.PathLike],
                      params: PreprocessParams | Mapping | None, cache: PreprocessCache, *,
                      n_jobs: int = 1, scheduler: Any = None,
                      progress: bool = True) -> list[CohortItem]:
    """Preprocess many scans through a cache, collecting per-file errors.

    A scan that fails (unreadable, 4D, NaN, registration error ...) gives a :class:`CohortItem`
    whose ``error`` names the file and the problem; the others complete.

    Parameters
    ----------
    paths : sequence of str or PathLike
        The scans.
    params : PreprocessParams or mapping or None
        Parameters of :func:`preprocess_file`.
    cache : PreprocessCache
        Where volumes are read from or written to.
    n_jobs : int, default=1
        Worker processes (1: in this process).
    scheduler : None, str or distributed.Client, default=None
        Run the scans on a Dask cluster instead (``"local:N"``, a scheduler address or file,
        or a Client; :func:`brainage._utils.scheduler.run_tasks`): the cache and the results
        are the same as a local run's, byte for byte. Paths are made absolute first, and the
        cache folder must be one the workers see.
    progress : bool, default=True
        Draw a progress bar (a caller with its own bar over many calls passes False).

    Returns
    -------
    list of CohortItem
        In the order of ``paths``.
    """
    params = PreprocessParams.coerce(params)
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int; got {n_jobs!r}")
    root, files = str(cache.root), [str(p) for p in paths]
    if scheduler is not None:  # the workers' working folder may not be ours
        root, files = os.path.abspath(root), [os.path.abspath(p) for p in files]
    outcomes = run_tasks(_cache_one, [(root, p, params) for p in files], n_jobs=n_jobs,
                         scheduler=scheduler, desc="preprocess", unit="scan",
                         progress=progress)
    items = []
    for path, outcome in zip(paths, outcomes):
        if outcome.ok:
            target, score, tiv = outcome.value
            items.append(CohortItem(Path(path), nib.load(target), None, score, tiv))
        else:
            items.append(CohortItem(Path(path), None, _describe(path, outcome.error)))
    return items


def _describe(path: str | os.PathLike, err: BaseException) -> str:
    """The error of one scan, naming the file (logged: one bad scan must not stop the cohort)."""
    message = str(err) if str(path) in str(err) else f"scan {path}: {err}"
    error = f"{type(err).__name__}: {message}"
    logger.error("preprocessing failed: %s", error)
    return error


def preprocess_files(source: str | os.PathLike, dest: str | os.PathLike,
                     params: PreprocessParams, *, cache: str | os.PathLike | None = None,
                     n_jobs: int = 1, overwrite: bool = False,
                     scheduler: Any = None) -> list[tuple[CohortItem, Path]]:
    """Preprocess a scan or a folder of scans into output files (``brainage preprocess IN OUT``).

    Parameters
    ----------
    source : str or PathLike
        A NIfTI scan, or a folder searched recursively for ``*.nii[.gz]``.
    dest : str or PathLike
        The output file (one scan) or folder (mirroring ``source``'s layout).
    params : PreprocessParams
        The preprocessing.
    cache : str or PathLike, optional
        Cache folder (default: ``dest/.cache`` for a folder, no cache for a single scan).
    n_jobs : int, default=1
        Worker processes.
    overwrite : bool, default=False
        Replace output files that exist already.
    scheduler : None, str or distributed.Client, default=None
        Preprocess a folder's scans on a Dask cluster (see :func:`preprocess_cohort`).

    Returns
    -------
    list of (CohortItem, Path)
        Each scan's result and its output file (written when the item is ``ok``); a scan that
        failed is reported in its item and the others complete.

    Raises
    ------
    ValueError
        Before any work: ``n_jobs`` below 1, an output that is an input or lies inside the
        ``source`` folder (symlinks and hard links resolved), a cache inside ``source``, or
        existing outputs without ``overwrite``.
    FileNotFoundError
        ``source`` is neither a file nor a folder (the message says what it is), or a folder
        without scans.
    """
    check_int("n_jobs (--jobs)", n_jobs, low=1)
    source, dest = Path(source), Path(dest)
    paths, outputs, cache_root = _plan(source, dest, cache)
    _check_outputs(source, dest, paths, outputs, cache_root, overwrite=overwrite)
    if cache_root is None:
        img = preprocess_file(source, **asdict(params))
        items = [CohortItem(source, img, None, registration_misfit(img, params), header_tiv(img))]
    else:
        items = preprocess_cohort(paths, params, PreprocessCache(cache_root), n_jobs=n_jobs,
                                  scheduler=scheduler)
    for item, out in zip(items, outputs):
        if item.ok:
            out.parent.mkdir(parents=True, exist_ok=True)
            # a temporary file renamed: replaces a symlink itself, never the file it points to
            atomic_write(out, lambda tmp, img=item.image: nib.save(img, tmp))
    return list(zip(items, outputs))


def _plan(source: Path, dest: Path,
          cache: str | os.PathLike | None) -> tuple[list[Path], list[Path], Path | None]:
    """The scans of IN, their output files and the cache folder (None: no cache)."""
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
        if not paths:
            raise FileNotFoundError(f"IN folder {source} holds no .nii or .nii.gz file")
        if dest.exists() and not dest.is_dir():
            raise ValueError(f"OUT {dest} is a file, but IN {source} is a folder: OUT must be "
                             f"a folder (it mirrors IN's layout)")
        return ([*paths], [dest / p.relative_to(source) for p in paths],
                Path(cache) if cache else dest / ".cache")
    if source.is_file():
        out = dest / source.name if dest.is_dir() else dest
        if not out.name.endswith((".nii", ".nii.gz")):
            raise ValueError(f"OUT {dest} must be a folder or a file name ending in .nii or "
                             f".nii.gz")
        return [source], [out], Path(cache) if cache else None
    raise FileNotFoundError(f"IN {source} is neither a file nor a folder: it "
                            f"{file_problem(source) or 'cannot be read'}")


def _check_outputs(source: Path, dest: Path, paths: Sequence[Path], outputs: Sequence[Path],
                   cache_root: Path | None, *, overwrite: bool) -> None:
    """Refuse outputs that are or lie inside an input, and existing ones unless ``overwrite``."""
    folder = source.resolve() if source.is_dir() else None
    inputs = {p.resolve(): p for p in paths}
    inodes = {(st.st_dev, st.st_ino): p for p in paths if (st := _stat(p)) is not None}
    if folder is not None and dest.resolve().is_relative_to(folder):
        raise ValueError(f"OUT {dest} is IN {source} or lies inside it: the outputs would "
                         f"overwrite the raw scans or mix with them; choose an OUT outside IN")
    if cache_root is not None and folder is not None and cache_root.resolve().is_relative_to(
            folder):
        raise ValueError(f"--cache {cache_root} lies inside IN {source}: choose a cache "
                         f"folder outside IN")
    for out in [*outputs, *([cache_root] if cache_root is not None else [])]:
        st = _stat(out)
        same = inputs.get(out.resolve()) or (inodes.get((st.st_dev, st.st_ino)) if st else None)
        if same is not None:
            how = "" if out == same else " (the same file, through a symlink or a hard link)"
            raise ValueError(f"OUT {dest}: the output {out} is the input scan {same}{how}: "
                             f"refusing to overwrite it; choose an OUT outside IN")
    existing = [out for out in outputs if out.exists() or out.is_symlink()]
    if existing and not overwrite:
        listed = ", ".join(map(str, existing[:3])) + (", ..." if len(existing) > 3 else "")
        raise ValueError(f"{len(existing)} of the {len(outputs)} output file(s) exist already "
                         f"({listed}): pass --overwrite to replace them, or choose another OUT")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None
