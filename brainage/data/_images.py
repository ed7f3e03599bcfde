"""Checks of image files and headers shared by the cohort and OpenBHB readers and preprocessing.

Private to :mod:`brainage.data` (public names: :mod:`brainage.data.cohort` re-exports them).
Every check reads the header alone, so that a file declaring absurd dimensions is refused before
any data is read.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageLimits:
    """Bounds an image must meet to possibly be a T1-weighted head or brain scan.

    Parameters
    ----------
    voxel_mm : tuple of float, default=(0.2, 8.0)
        Allowed voxel size per axis. Structural MRI is acquired at about 0.5-1.5 mm and the
        study's coarsest grid is 4-8 mm; below 0.2 mm or above 8 mm is a header error
        (e.g. metres or voxel counts written as sizes).
    fov_mm : tuple of float, default=(100.0, 400.0)
        Allowed field of view (shape times voxel size) per axis. An adult brain measures about
        140 x 170 x 120 mm, so under 100 mm cannot hold one; over 400 mm is not a head scan.
    max_voxels : int, default=134217728
        Most voxels an image may declare (512 x 512 x 512, 512 MiB as float32), checked before
        any data is read. A 0.5 mm whole-head scan has about 512 x 512 x 400; a header that
        declares more is corrupt (or the file is not a brain MRI), and reading it would take
        gigabytes.
    """

    voxel_mm: tuple[float, float] = (0.2, 8.0)
    fov_mm: tuple[float, float] = (100.0, 400.0)
    max_voxels: int = 512**3


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable regular file, or None if it is one.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    str or None
        A phrase to follow the path in a message: ``"does not exist"``, ``"is a broken
        symlink ..."``, ``"is a symlink loop ..."``, ``"is a directory, not a file"``, ``"is
        not a regular file ..."``, ``"cannot be read: permission denied"`` ...
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return (f"is a broken symlink (its target {os.readlink(path)!r} does not exist)")
        return "does not exist"
    except PermissionError:
        return "cannot be reached: permission denied on a folder of its path"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symlink loop (its links lead back to themselves)"
        return f"cannot be reached ({err.strerror or err})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, socket or pipe)"
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return "cannot be read: permission denied"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return None


def image_problems(img: Any, limits: ImageLimits, *, plausible: bool = True) -> list[str]:
    """Problems of a loaded image: its header, then its data (see :func:`check_header` and
    :func:`data_problems`)."""
    problems, readable = check_header(img, limits, plausible=plausible)
    if not readable:
        return problems
    return [*problems, *data_problems(img)[1]]


def data_problems(img: Any) -> tuple[np.ndarray | None, list[str]]:
    """Read an image's voxels and check them: readable (not corrupt or truncated), not empty,
    finite, not all zeros nor constant.

    Returns
    -------
    data : ndarray or None
        The voxels as nibabel reads them (scaled, the file's own data type); None when they
        cannot be read.
    problems : list of str
        One message per problem, without the path.
    """
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # truncated gzip: EOFError, zlib.error; short file ...
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        return None, [f"cannot read the image data, the file is corrupt or truncated ({detail})"]
    if data.size == 0:
        return data, [f"the image has no voxels (shape {data.shape})"]
    problems = []
    finite = np.isfinite(data)
    if not finite.all():
        problems.append(f"{int(data.size - finite.sum())} of {data.size} voxels are NaN or "
                        f"infinite")
    values = data[finite]
    if values.size and not values.any():
        problems.append("the image is all zeros")
    elif values.size and values.min() == values.max():
        problems.append(f"the image is constant (every finite voxel is {values.min():g})")
    return data, problems


def check_header(img: Any, limits: ImageLimits | None = None, *,
                 plausible: bool = True) -> tuple[list[str], bool]:
    """Check an image's header before any of its data is read.

    The one check of declared shape, data type, voxel size and field of view, for the audit
    (:func:`check_image`) and for every command that reads a scan
    (:func:`brainage.imaging.preprocess.check_scan`). Always checked: a size below 1, more
    voxels than ``limits.max_voxels``, a data type that is not real numbers (complex, RGB), an
    uncompressed file shorter than its declared data, 3D (or 4D with one volume), a non-finite
    or degenerate affine (:func:`affine_problems`), voxel sizes that are not positive, a field
    of view above ``limits.fov_mm``'s upper bound. With ``plausible``, also what a brain scan
    must meet: voxel size within ``limits.voxel_mm``, field of view at least ``limits.fov_mm``'s
    lower bound.

    Parameters
    ----------
    img : nibabel image
        Loaded lazily (``nibabel.load``): nothing but the header is read here.
    limits : ImageLimits or None, default=None
        ``None`` uses :class:`ImageLimits` defaults.
    plausible : bool, default=True
        Also check what a brain scan must meet (the audit); ``False`` checks only what
        reading and resampling the data need.

    Returns
    -------
    problems : list of str
        One message per problem, without the path.
    readable : bool
        Whether the data may be read: False for a problem that makes reading it unsafe (too
        many voxels, a file shorter than its data, a non-numeric type, no voxels).
    """
    limits = limits or ImageLimits()
    shape = tuple(int(n) for n in img.shape)
    dtype = np.dtype(img.get_data_dtype())
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    unsafe = declared_problems(shape, dtype, limits) or _short_file_problems(img, shape, dtype)
    problems = list(unsafe)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):  # (X, Y, Z, 1): one volume
        hint = " (a 4D series: keep one volume)" if len(shape) == 4 else ""
        problems.append(f"expected a 3D image, got {len(shape)}D with shape {shape}{hint}")
    problems.extend(affine_problems(img))
    if len(shape) >= 3:
        problems.extend(_size_problems(shape[:3], zooms, limits, plausible))
    return problems, not unsafe


def affine_problems(img: Any) -> list[str]:
    """Problems of a scan's voxel-to-world affine, from its header: non-finite values, or a
    degenerate matrix that cannot place the voxels in space (a zero or singular matrix, or a
    zero voxel size in a NIfTI header without an sform, which nibabel silently reads as 1 mm).

    Checked by :func:`check_header`, so the audit, ``brainage preprocess``, ``brainage predict``
    and the BIDS App (through :func:`brainage.imaging.preprocess.check_scan`) refuse the same
    scans with the same message.

    Returns
    -------
    list of str
        One message per problem, without the path.
    """
    import nibabel as nib

    header = img.header
    if isinstance(header, nib.Nifti1Header) and int(header["sform_code"]) == 0:
        pixdim = _raw_pixdim(img)
        bad = [k for k in range(3) if not (np.isfinite(pixdim[k]) and pixdim[k] != 0)]
        if bad:
            return [f"degenerate affine: its header declares voxel size {pixdim.tolist()} mm "
                    f"(pixdim), zero or not finite along axis {bad}"]
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        return ["the affine contains NaN or infinite values"]
    if len(img.shape) < 3:
        return []
    matrix = affine[:3, :3]
    voxel = np.sqrt((matrix**2).sum(axis=0))
    if (voxel == 0).any():
        problem = f"voxel size 0 mm along axis {np.flatnonzero(voxel == 0).tolist()}"
    elif abs(np.linalg.det(matrix)) <= 1e-6 * np.prod(voxel):
        problem = "its direction matrix is singular (two voxel axes point the same way)"
    else:
        return []
    return [f"degenerate affine (voxel-to-world {np.round(affine, 3).tolist()}): {problem}"]


def _raw_pixdim(img: Any) -> np.ndarray:
    """The voxel size ``pixdim[1:4]`` as the file holds it (nibabel's loader reads 0 as 1); the
    header's own for an image not read from a file."""
    from nibabel.openers import ImageOpener

    holder = img.file_map.get("header") or img.file_map.get("image")  # .hdr/.img pair, or .nii
    filename = getattr(holder, "filename", None)
    if not filename:
        return np.asarray(img.header["pixdim"][1:4], dtype=np.float64)
    with ImageOpener(filename) as fobj:
        raw = type(img.header).from_fileobj(fobj, check=False)
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def declared_problems(shape: tuple[int, ...], dtype: np.dtype,
                       limits: ImageLimits) -> list[str]:
    """Declared shape and data type that make reading the data unsafe (see check_header)."""
    dims = " x ".join(map(str, shape))
    if not shape or min(shape) < 1:
        return [f"the image has no voxels (shape {shape})"]
    count = math.prod(shape)
    if count > limits.max_voxels:
        return [(f"the header declares {dims} voxels ({count:,} in all, "
                 f"{_bytes(count * dtype.itemsize)} of {dtype}), more than the "
                 f"{limits.max_voxels:,} a brain MRI may have (ImageLimits.max_voxels): a "
                 f"corrupt header or not a brain scan; the data was not read")]
    if dtype.fields is not None or dtype == np.bool_ or not (
            np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        return [(f"the data type {dtype} is not real numbers (complex, RGB or structured "
                 f"voxels are not T1w intensities)")]
    return []


def _short_file_problems(img: Any, shape: tuple[int, ...], dtype: np.dtype) -> list[str]:
    """An uncompressed image file shorter than the data its header declares."""
    proxy = img.dataobj
    name, offset = getattr(proxy, "file_like", None), getattr(proxy, "offset", None)
    if not isinstance(name, str) or name.endswith((".gz", ".bz2", ".zst", ".mgz")) or (
            offset is None):
        return []  # in memory, compressed (.mgz: gzip; its size says little) or not NIfTI-like
    needed = int(offset) + math.prod(shape) * dtype.itemsize
    size = os.path.getsize(name)
    if size >= needed:
        return []
    return [(f"the file holds {size:,} bytes, but its header declares "
             f"{' x '.join(map(str, shape))} voxels of {dtype} from byte {int(offset)}, "
             f"{needed:,} bytes: the file is truncated or its header is wrong; the data was "
             f"not read")]


def _size_problems(shape: tuple[int, ...], zooms: np.ndarray, limits: ImageLimits,
                   plausible: bool) -> list[str]:
    """Voxel size and field of view (see :func:`check_header`)."""
    problems = []
    fov = zooms * np.asarray(shape)
    low, high = limits.voxel_mm
    if plausible and not np.all((zooms >= low) & (zooms <= high)):
        problems.append(f"voxel size {_mm(zooms)} mm is outside {low:g}-{high:g} mm per axis: "
                        f"not a structural brain MRI (or a wrong header)")
    elif not np.all(np.isfinite(zooms) & (zooms > 0)):
        problems.append(f"voxel size {_mm(zooms)} mm is not positive and finite (a wrong "
                        f"header)")
    low, high = limits.fov_mm
    if plausible and not np.all((fov >= low) & (fov <= high)):
        problems.append(f"field of view {_mm(fov)} mm (shape {shape} x voxel size) is "
                        f"outside {low:g}-{high:g} mm per axis: cannot be a brain scan")
    elif not np.all(fov <= high):
        problems.append(f"field of view {_mm(fov)} mm (shape {shape} x voxel size) is over "
                        f"{high:g} mm on an axis: cannot be a brain scan (a wrong header?)")
    return problems


def _bytes(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.3g} {unit}" if unit != "bytes" else f"{count} bytes"
        count /= 1000
    return ""  # unreachable


def _mm(values: Iterable[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)
