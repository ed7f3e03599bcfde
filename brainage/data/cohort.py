"""The Cohort table: one row per usable T1-weighted scan of a BIDS dataset.

:func:`load_cohort` reads a dataset described by a :class:`~brainage.data.manifest.DatasetSpec`:
``participants.tsv`` and every ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``. (A dataset of format
``openbhb`` is read by :func:`brainage.data.openbhb.load_openbhb_cohort`, which shares this module's
row parsing and problem reporting and returns the same tables.) It checks the table, the
files and (optionally) every image, and never stops at the first problem nor drops anything
silently: each problem becomes a row of :attr:`CohortResult.problems` (severity ``error``,
``warning`` or ``excluded``), and only scans without an error are in :attr:`CohortResult.table`.
Training calls :meth:`CohortResult.raise_for_errors` first; the audit notebook shows the table.

What is an error (the scan or the subject is left out) and what a warning (the row stays):

- error, whole dataset (empty table): root or ``participants.tsv`` absent or unreadable, a
  column the manifest maps is absent; also when no usable scan is left.
- error, subject left out: missing, non-numeric (NaN, infinite) or out-of-range age (0-120
  years); a duplicate participant id (every row with it); a missing or unknown group label; a
  row without an id; a row with more non-empty fields than the header (which is which?).
- error, scan left out: an image without a participants row (no age; BIDS requires the row),
  a checksum mismatch (``sha256`` in the manifest), a failed :func:`check_image`.
- excluded, subject left out with the manifest's reason: the manifest's ``exclude`` list.
- warning: a participants row without an image (tables often list more people than scans);
  empty fields beyond the header's columns (a stray tab: ignored);
  an unknown sex label (set to NA), a missing site (``"unknown"``), a non-numeric score (NaN).

References
----------
.. [1] Gorgolewski KJ et al. The brain imaging data structure, a format for organizing and
   describing outputs of neuroimaging experiments. Sci Data 3, 160044 (2016).
"""

from __future__ import annotations

import csv
import difflib
import errno
import logging
import math
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainage._utils import AGE_RANGE, bids_id, sha256_file
from brainage.data.manifest import DatasetSpec
from brainage.exceptions import BrainageError

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_COLUMNS",
    "PROBLEM_COLUMNS",
    "CohortError",
    "CohortResult",
    "ImageLimits",
    "check_header",
    "check_image",
    "file_problem",
    "find_scans",
    "load_cohort",
    "parse_age",
    "read_participant_ages",
]

#: Columns of the Cohort table before the score columns.
BASE_COLUMNS = ("participant_id", "session", "dataset", "path", "age", "sex", "site", "group")
#: Columns of the Cohort table after the score columns.
TAIL_COLUMNS = ("space", "skull_stripped")
#: Columns of the problems table.
PROBLEM_COLUMNS = ("dataset", "participant_id", "path", "check", "severity", "message")
#: Valid ages in years (inclusive).
#: Values read as missing: BIDS writes ``n/a``; an empty cell is missing too.
MISSING = frozenset({"", "n/a"})
_SEX = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


class CohortError(BrainageError, ValueError):
    """A dataset has errors; the message names every subject, file and reason.

    Attributes
    ----------
    problems : pandas.DataFrame
        The error rows of :attr:`CohortResult.problems`.
    """

    def __init__(self, problems: pd.DataFrame) -> None:
        self.problems = problems
        names = ", ".join(sorted(set(problems["dataset"])))
        lines = [f"  - {m}" for m in problems["message"]]
        super().__init__("\n".join([f"{len(problems)} error(s) in dataset {names}:", *lines]))


@dataclass(frozen=True)
class CohortResult:
    """What :func:`load_cohort` found.

    Parameters
    ----------
    table : pandas.DataFrame
        Usable scans, one row each: ``participant_id, session, dataset, path, age, sex, site,
        group, <one float column per score>, space, skull_stripped``.
    problems : pandas.DataFrame
        Every problem: ``dataset, participant_id, path, check, severity, message``.
    """

    table: pd.DataFrame
    problems: pd.DataFrame

    @property
    def errors(self) -> pd.DataFrame:
        """Problems of severity ``error``."""
        return self.problems[self.problems["severity"] == "error"]

    def raise_for_errors(self) -> None:
        """Raise :class:`CohortError` listing every error; do nothing if there is none."""
        if len(self.errors):
            raise CohortError(self.errors.reset_index(drop=True))

    @classmethod
    def concat(cls, results: Sequence[CohortResult]) -> CohortResult:
        """Stack the results of several datasets (score columns absent in one become NaN)."""
        if not results:
            raise ValueError("results: expected at least one CohortResult, got none")
        tables = [r.table for r in results]
        scores = list(dict.fromkeys(c for t in tables for c in t.columns
                                    if c not in BASE_COLUMNS + TAIL_COLUMNS))
        table = pd.concat([t.reindex(columns=[*BASE_COLUMNS, *scores, *TAIL_COLUMNS])
                           for t in tables], ignore_index=True)
        problems = pd.concat([r.problems for r in results], ignore_index=True)
        return cls(table, problems)


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


@dataclass
class _Log:
    """Collects problems of one dataset; each message names the dataset, subject and file."""

    dataset: str
    rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, check: str, severity: str, text: str, pid: str = "", path: Any = "") -> None:
        where = ", ".join(str(p) for p in (pid, path) if str(p))
        message = f"dataset {self.dataset!r}" + (f", {where}" if where else "") + f": {text}"
        self.rows.append({"dataset": self.dataset, "participant_id": pid, "path": str(path),
                          "check": check, "severity": severity, "message": message})
        logger.debug("%s: %s", severity, message)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(PROBLEM_COLUMNS))


def check_image(path: str | Path, limits: ImageLimits | None = None) -> list[str]:
    """Check that a file is a readable, plausible 3D brain image.

    Reads the header with nibabel and checks it (:func:`check_header`) before reading any
    data; then reads the full data, unless the header makes that unsafe (more voxels than
    ``limits.max_voxels``, a file shorter than its declared data, a non-numeric data type).
    Problems: not a readable regular file (:func:`file_problem`); unreadable, corrupt or
    truncated file; not 3D (e.g. 4D); empty or all-zero (or constant) data; NaN or infinite
    voxels; a non-finite affine; voxel size or field of view outside ``limits``.

    Parameters
    ----------
    path : str or Path
        A NIfTI (or any nibabel-readable) image, or an OpenBHB ``.npy`` array (read by
        :func:`brainage.data.openbhb.load_openbhb_array`, with the quasi-raw grid's affine).
    limits : ImageLimits or None, default=None
        Plausibility bounds; ``None`` uses :class:`ImageLimits` defaults.

    Returns
    -------
    list of str
        One message per problem (empty if the image is fine). Messages do not repeat the path;
        the caller adds it.
    """
    limits = limits or ImageLimits()
    problem = file_problem(path)
    if problem is not None:
        return [f"cannot read the image: the path {problem}"]
    if str(path).endswith(".npy"):
        from brainage.data.openbhb import load_openbhb_array

        try:
            img = load_openbhb_array(path)
        except (OSError, ValueError, TypeError) as err:
            return [f"cannot read the array ({' '.join(str(err).split())})"]
    else:
        try:
            img = nib.load(str(path))
        except Exception as err:  # noqa: BLE001 (nibabel raises ImageFileError, OSError...)
            return [f"cannot read the image header ({type(err).__name__}: {err})"]
    return _image_problems(img, limits)


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


def _image_problems(img: Any, limits: ImageLimits) -> list[str]:
    """Problems of a loaded image: its header, then its data (see :func:`check_image`)."""
    problems, readable = check_header(img, limits)
    if not readable:
        return problems
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 (truncated gzip: EOFError/zlib.error, short file...)
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        return [*problems, (f"cannot read the image data, the file is corrupt or truncated "
                            f"({detail})")]
    if data.size == 0:
        return [*problems, f"the image has no voxels (shape {data.shape})"]
    finite = np.isfinite(data)
    if not finite.all():
        problems.append(f"{int(data.size - finite.sum())} of {data.size} voxels are NaN or "
                        f"infinite")
    values = data[finite]
    if values.size and not values.any():
        problems.append("the image is all zeros")
    elif values.size and values.min() == values.max():
        problems.append(f"the image is constant (every finite voxel is {values.min():g})")
    return problems


def check_header(img: Any, limits: ImageLimits | None = None, *,
                 plausible: bool = True) -> tuple[list[str], bool]:
    """Check an image's header before any of its data is read.

    The one check of declared shape, data type, voxel size and field of view, for the audit
    (:func:`check_image`) and for preprocessing (:func:`brainage.imaging.preprocess.load_scan`).
    Always checked: a size below 1, more voxels than ``limits.max_voxels``, a data type that
    is not real numbers (complex, RGB), an uncompressed file shorter than its declared data,
    a non-finite affine, voxel sizes that are not positive, a field of view above
    ``limits.fov_mm``'s upper bound. With ``plausible``, also what a brain scan must meet:
    3D, voxel size within ``limits.voxel_mm``, field of view at least ``limits.fov_mm``'s
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
    unsafe = _declared_problems(shape, dtype, limits) or _short_file_problems(img, shape, dtype)
    problems = list(unsafe)
    if plausible and len(shape) != 3:
        hint = " (a 4D series: keep one volume)" if len(shape) == 4 else ""
        problems.append(f"expected a 3D image, got {len(shape)}D with shape {shape}{hint}")
    if not np.all(np.isfinite(img.affine)):
        problems.append("the affine contains NaN or infinite values")
    if len(shape) >= 3:
        problems.extend(_size_problems(shape[:3], zooms, limits, plausible))
    return problems, not unsafe


def _declared_problems(shape: tuple[int, ...], dtype: np.dtype,
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
    if dtype.fields is not None or dtype == bool or not (
            np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        return [(f"the data type {dtype} is not real numbers (complex, RGB or structured "
                 f"voxels are not T1w intensities)")]
    return []


def _short_file_problems(img: Any, shape: tuple[int, ...], dtype: np.dtype) -> list[str]:
    """An uncompressed image file shorter than the data its header declares."""
    proxy = img.dataobj
    name, offset = getattr(proxy, "file_like", None), getattr(proxy, "offset", None)
    if not isinstance(name, str) or name.endswith((".gz", ".bz2", ".zst")) or offset is None:
        return []  # in memory, compressed (its size says little) or not a NIfTI-like file
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


def find_scans(root: str | Path) -> pd.DataFrame:
    """T1-weighted scans of a BIDS folder: ``sub-*/[ses-*/]anat/sub-*_T1w.nii[.gz]``.

    Parameters
    ----------
    root : str or Path
        The BIDS dataset folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id`` (the ``sub-`` folder), ``session`` (``ses-`` folder or
        ``""``) and ``path`` (absolute), sorted by path.
    """
    root = Path(root)
    found = [*root.glob("sub-*/anat/*_T1w.nii*"), *root.glob("sub-*/ses-*/anat/*_T1w.nii*")]
    rows = []
    for path in sorted(found):
        if not path.name.startswith("sub-") or not path.name.endswith((".nii", ".nii.gz")):
            continue  # e.g. ._sub-01_T1w.nii.gz (macOS) or sidecar files
        parts = path.relative_to(root).parts
        session = parts[1] if len(parts) == 4 else ""
        rows.append({"participant_id": parts[0], "session": session, "path": str(path.absolute())})
    return pd.DataFrame(rows, columns=["participant_id", "session", "path"])


def load_cohort(
    spec: DatasetSpec, *, check_images: bool = True, limits: ImageLimits | None = None
) -> CohortResult:
    """Read one dataset into the Cohort table and collect every problem.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset, from :func:`brainage.data.manifest.load_manifest`. Format ``bids`` is read here;
        format ``openbhb`` by :func:`brainage.data.openbhb.load_openbhb_cohort` (its table has one
        more column, ``official_split``).
    check_images : bool, default=True
        Open every image and run :func:`check_image` (header and data; slow on large cohorts).
    limits : ImageLimits or None, default=None
        Bounds for :func:`check_image`; ``None`` uses the defaults.

    Returns
    -------
    CohortResult
        ``.table`` (usable scans) and ``.problems`` (every problem, see the module docstring).
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"spec: expected a DatasetSpec (see brainage.data.manifest), "
                        f"got {type(spec).__name__}")
    if spec.format == "openbhb":
        from brainage.data.openbhb import load_openbhb_cohort

        return load_openbhb_cohort(spec, check_images=check_images, limits=limits)
    log = _Log(spec.name)
    raw = _read_participants(spec, log)
    if raw is None:
        return CohortResult(_empty_table(spec), log.frame())
    people = _participants(spec, raw, log)
    scans = _match_scans(spec, people, find_scans(spec.root), log)
    bad = _checksum_problems(spec, log) | _image_check_problems(spec, scans, log, check_images,
                                                                limits)
    scans = scans[~scans["path"].isin(bad)]
    table = _build_table(spec, people, scans)
    return _finish(spec, table, log, "sub-*/[ses-*/]anat/*_T1w.nii[.gz]")


def _finish(spec: DatasetSpec, table: pd.DataFrame, log: _Log, pattern: str) -> CohortResult:
    """Log an empty table as an error and a one-line summary; the result of a reader."""
    if table.empty:
        log.add("empty", "error", f"no usable scan: every scan has a problem or none was found "
                f"under {pattern}", path=spec.root)
    counts = pd.Series([r["severity"] for r in log.rows], dtype=object).value_counts().to_dict()
    (logger.warning if counts else logger.info)(
        "dataset %s: %d usable scans; problems %s", spec.name, len(table), counts or "none")
    return CohortResult(table, log.frame())


def read_participant_ages(path: str | Path) -> tuple[dict[str, float | None], list[str]]:
    """Ages of a participants.tsv by ``sub-`` id, checked as the cohort reader checks them.

    The table is read and each row checked by the same code as :func:`load_cohort`
    (:func:`parse_age` for the ages), for callers without a manifest (``brainage predict``).

    Parameters
    ----------
    path : str or Path
        A BIDS ``participants.tsv`` with columns ``participant_id`` and ``age``.

    Returns
    -------
    ages : dict of str to float or None
        Age in years by ``sub-``-prefixed id; None for a participant whose age is missing, not
        a number (NaN or infinite included) or outside 0-120 years, and for a duplicated id.
    problems : list of str
        One message per problem, naming the file, the line and what is wrong.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CohortError
        If the table cannot be read at all (unreadable, no ``participant_id`` or ``age`` column).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "the participants table does not exist", str(path))
    log = _Log(path.parent.name or str(path.parent))
    columns = {"participant_id": "participant_id", "age": "age"}
    raw = _read_table(path, columns, log, manifest=False)
    if raw is None:
        raise CohortError(log.frame())
    ages: dict[str, float | None] = {}
    rows = _rows_by_id(_bids_ids(raw["participant_id"]), path, log,
                       bad_lines=raw.attrs.get("bad_lines", ()))
    for pid, line in rows.items():
        ages[pid] = None if line is None else _age(raw.at[line, "age"], pid,
                                                   f"{path} line {line}", log)
    return ages, log.frame()["message"].tolist()


def parse_age(text: str) -> tuple[float | None, str | None]:
    """An age in years from a participants cell, checked.

    Parameters
    ----------
    text : str
        The cell (surrounding blanks ignored; ``n/a`` or empty is missing).

    Returns
    -------
    age : float or None
        The age, or None if it is not valid.
    problem : str or None
        None for a valid age, else what is wrong: ``"missing"``, ``"not a number"`` (NaN and
        infinity included) or ``"outside 0-120 years"``.
    """
    text = str(text).strip()
    if text in MISSING:
        return None, "missing"
    age = _number(text)
    if age is None or not math.isfinite(age):
        return None, "not a number"
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return None, f"outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years"
    return age, None


def _age(text: str, pid: str, where: str, log: _Log) -> float | None:
    """:func:`parse_age` of a cell; None (with an error logged) if it is not a valid age."""
    age, problem = parse_age(text)
    if problem is not None:
        log.add("age", "error", f"age {text!r} is {problem}", pid, where)
    return age


def _read_participants(spec: DatasetSpec, log: _Log) -> pd.DataFrame | None:
    """The participants table as strings, or None (with an error) if it cannot be used."""
    if not spec.root.is_dir():
        hint = (" (a simulated dataset: generate it with brainage.data.simulate)"
                if spec.simulated else "")
        log.add("root", "error", f"the dataset root does not exist{hint}", path=spec.root)
        return None
    wanted = {**spec.columns, **{f"scores.{k}": v for k, v in spec.scores.items()}}
    return _read_table(spec.participants, wanted, log)


def _read_table(path: Path, wanted: dict[str, str], log: _Log,
                manifest: bool = True) -> pd.DataFrame | None:
    """A participants table as strings indexed by file line (header: line 1), or None.

    ``wanted`` maps what the caller needs (for messages: ``age``, ``scores.mmse``) to column
    names (from the manifest if ``manifest``); a missing column is an error and gives None, as
    does a file that cannot be read. Rows with more fields than the header (see
    :func:`_fit_rows`) are kept; the lines that cannot be used are in ``.attrs["bad_lines"]``.
    """
    records = _tsv_records(path, log)
    if records is None:
        return None
    header = _header(records[0][1], path, log)
    rows, bad = _fit_rows(records[1:], len(header), path, log)
    raw = pd.DataFrame(rows, columns=header, index=[line for line, _ in records[1:]],
                       dtype=object)
    raw.attrs["bad_lines"] = bad
    missing = {key: col for key, col in wanted.items() if col not in raw.columns}
    for key, col in missing.items():
        close = difflib.get_close_matches(col, list(raw.columns), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = (f"the manifest maps {key} to column {col!r}, which the table lacks" if manifest
                else f"the table lacks the column {col!r}")
        log.add("columns", "error", f"{what}; its columns: {', '.join(raw.columns)}{hint}",
                path=path)
    return None if missing else raw


def _tsv_records(path: Path, log: _Log) -> list[tuple[int, list[str]]] | None:
    """(file line, fields) of each non-blank line of a TSV file; None (logged) if unreadable.

    Read with :mod:`csv` rather than pandas so that a line with a stray tab is one line's
    problem, not a parser error for the whole table (and line numbers count blank lines).
    """
    try:
        # utf-8-sig: a BOM would corrupt the first column name
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter="\t")
            records = [(reader.line_num, row) for row in reader if row]
    except FileNotFoundError:
        log.add("participants", "error", "the participants file does not exist", path=path)
        return None
    except (OSError, UnicodeError, csv.Error) as err:
        log.add("participants", "error", f"cannot read the participants table: "
                f"{type(err).__name__}: {' '.join(str(err).split())}", path=path)
        return None
    if not records:
        log.add("participants", "error", "cannot read the participants table: the file is "
                "empty (a header line is needed)", path=path)
        return None
    return records


def _header(names: list[str], path: Path, log: _Log) -> list[str]:
    """Column names: trailing empty names (a stray tab) dropped, repeats renamed (``x.1``)."""
    names = [name.strip() for name in names]
    while len(names) > 1 and not names[-1]:
        names.pop()
        log.add("fields", "warning", "the header (line 1) ends with an empty column name (a "
                "stray tab?); it is ignored", path=path)
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names):
        name = name or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            log.add("fields", "warning", f"the header (line 1) repeats the column {name!r}; "
                    f"the later one is read as {name}.{seen[name]}", path=path)
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def _fit_rows(records: list[tuple[int, list[str]]], width: int, path: Path,
              log: _Log) -> tuple[list[list[str]], set[int]]:
    """Rows of ``width`` fields, and the lines that cannot be used.

    A short row is padded with empty (missing) fields, as pandas does. A row with extra fields
    that are all empty (a stray trailing tab) keeps its first ``width`` fields, with a warning;
    a row with non-empty extra fields is ambiguous (which value belongs to which column?): an
    error, and its line is returned as unusable.
    """
    rows, bad = [], set()
    for line, fields in records:
        extra = fields[width:]
        if extra and any(field.strip() for field in extra):
            log.add("fields", "error", f"line {line} has {len(fields)} fields but the header "
                    f"has {width} (extra values {', '.join(map(repr, extra))}): cannot tell "
                    f"which value belongs to which column; the row is left out", path=path)
            bad.add(line)
        elif extra:
            log.add("fields", "warning", f"line {line} ends with {len(extra)} empty field(s) "
                    f"more than the header's {width} (a stray tab?); they are ignored",
                    path=path)
        rows.append(fields[:width] + [""] * (width - len(fields)))
    return rows, bad


def _participants(spec: DatasetSpec, raw: pd.DataFrame, log: _Log) -> dict[str, dict | None]:
    """Participant id -> parsed fields, or None for participants that cannot be used.

    ``None`` marks ids with an error (already logged) or excluded by the manifest, so that
    their scans are not reported a second time as images without a row.
    """
    rows = _rows_by_id(_ids(spec, raw), spec.participants, log, skip=spec.exclude,
                       bad_lines=raw.attrs.get("bad_lines", ()))
    return {pid: None if line is None else _parse_row(spec, raw.loc[line], pid, line, log)
            for pid, line in rows.items()}


def _rows_by_id(ids: pd.Series, path: Path, log: _Log, skip: Iterable[str] = (),
                bad_lines: Iterable[int] = ()) -> dict[str, int | None]:
    """Participant id -> its file line; None for an id in ``skip`` or on several lines.

    Rows without an id and repeated ids are logged as errors (every row of a repeated id is
    left out). ``ids`` is indexed by file line, as :func:`_read_table` indexes the table; an
    id whose only line is in ``bad_lines`` (an error already logged) maps to None.
    """
    skip, bad_lines = set(skip), set(bad_lines)
    rows: dict[str, int | None] = {}
    for pid, lines in _lines_by_id(ids).items():
        if pid in MISSING:
            for line in sorted(set(lines) - bad_lines):
                log.add("participant_id", "error", f"line {line} has no participant id",
                        path=path)
        elif pid in skip:
            rows[pid] = None
        elif len(lines) > 1:
            log.add("duplicate_id", "error", f"the participant id appears on lines "
                    f"{', '.join(map(str, lines))}; every row is left out", pid, path)
            rows[pid] = None
        else:
            rows[pid] = None if lines[0] in bad_lines else lines[0]
    return rows


def _ids(spec: DatasetSpec, raw: pd.DataFrame) -> pd.Series:
    """The participant id of each row, ``sub-``-prefixed; missing ids stay as they are."""
    return _bids_ids(raw[spec.columns["participant_id"]])


def _bids_ids(column: pd.Series) -> pd.Series:
    ids = column.str.strip()
    return ids.where(ids.isin(MISSING), ids.map(bids_id))


def _lines_by_id(ids: pd.Series) -> dict[str, list[int]]:
    """File line numbers (the index of ``ids``) of each id, in order of first appearance."""
    lines: dict[str, list[int]] = {}
    for line, pid in ids.items():
        lines.setdefault(pid, []).append(int(line))
    return lines


def _parse_row(spec: DatasetSpec, row: pd.Series, pid: str, line: int, log: _Log) -> dict | None:
    """Typed fields of one participants row; None (with errors logged) if it is unusable."""
    where = f"{spec.participants} line {line}"
    cols = spec.columns
    age = _age(row[cols["age"]], pid, where, log)
    group = _group(spec, row, pid, where, log)
    fields = {"age": age, "group": group, "sex": _sex(spec, row, pid, where, log),
              "site": _site(spec, row, pid, where, log)}
    for name, col in spec.scores.items():
        value = _number(row[col])
        if value is None and row[col].strip() not in MISSING:
            log.add("score", "warning", f"score {name} (column {col!r}) value {row[col]!r} is "
                    f"not a number; set to NaN", pid, where)
        fields[name] = np.nan if value is None else value
    return fields if age is not None and group is not None else None


def _number(text: str) -> float | None:
    """A float, or None for missing (``n/a``, empty) or non-numeric text."""
    text = text.strip()
    if text in MISSING or "_" in text:  # float() reads "1_0" as 10
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _group(spec: DatasetSpec, row: pd.Series, pid: str, where: str, log: _Log) -> str | None:
    """Study group of a row: HC without a group column; None (logged) if unknown."""
    if "group" not in spec.columns:
        return "HC"
    label = row[spec.columns["group"]].strip()
    group = spec.group_of(label)
    if group is None:
        known = [lab for labels in spec.groups.values() for lab in labels]
        close = difflib.get_close_matches(label, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = "missing" if label in MISSING else f"{label!r} is not a known label"
        log.add("group", "error", f"group {what}; the manifest's groups map labels "
                f"{', '.join(map(repr, known))}{hint}", pid, where)
    return group


def _sex(spec: DatasetSpec, row: pd.Series, pid: str, where: str, log: _Log) -> Any:
    """``F``/``M``, or NA when absent, missing or unknown (unknown values warn)."""
    if "sex" not in spec.columns:
        return pd.NA
    text = row[spec.columns["sex"]].strip()
    if text in MISSING:
        return pd.NA
    if text.lower() not in _SEX:
        log.add("sex", "warning", f"sex {text!r} is not one of F, M, female, male; set to NA",
                pid, where)
        return pd.NA
    return _SEX[text.lower()]


def _site(spec: DatasetSpec, row: pd.Series, pid: str, where: str, log: _Log) -> str:
    """The site label; the dataset name without a site column, ``unknown`` when missing."""
    if "site" not in spec.columns:
        return spec.name
    text = row[spec.columns["site"]].strip()
    if text in MISSING:
        log.add("site", "warning", "site is missing; set to 'unknown'", pid, where)
        return "unknown"
    return text


def _match_scans(spec: DatasetSpec, people: dict[str, dict | None], scans: pd.DataFrame,
                 log: _Log) -> pd.DataFrame:
    """Pair scans with participants rows; log exclusions and unmatched rows or images."""
    _log_exclusions(spec, people, scans, log)
    _log_scans_without_row(spec, people, scans, log)
    with_scan = set(scans["participant_id"])
    for pid, fields in people.items():
        if fields is not None and pid not in with_scan:
            log.add("missing_image", "warning", "participants row without a T1w image "
                    f"(expected {pid}/[ses-*/]anat/{pid}_*T1w.nii[.gz])", pid, spec.root)
    usable = [pid for pid, fields in people.items() if fields is not None]
    return scans[scans["participant_id"].isin(usable)].reset_index(drop=True)


def _log_exclusions(spec: DatasetSpec, people: dict[str, dict | None], scans: pd.DataFrame,
                    log: _Log) -> None:
    """One ``excluded`` row per scan (or per row, without scans) the manifest excludes."""
    for pid, reason in spec.exclude.items():
        paths = scans.loc[scans["participant_id"] == pid, "path"].tolist()
        if not paths and pid not in people:
            log.add("exclude", "warning", "the manifest excludes this participant, who has no "
                    "participants row and no image", pid, spec.participants)
            continue
        for path in paths or [spec.participants]:
            log.add("exclude", "excluded", f"excluded by the manifest: {reason}", pid, path)


def _log_scans_without_row(spec: DatasetSpec, people: dict[str, dict | None],
                           scans: pd.DataFrame, log: _Log) -> None:
    """An error per scan whose participant has no row (and is not excluded): it has no age."""
    for path, pid in zip(scans["path"], scans["participant_id"]):
        if pid not in people and pid not in spec.exclude:
            log.add("missing_row", "error", f"image without a row in {spec.participants.name} "
                    f"(no age): add the row or exclude the participant", pid, path)


def _checksum_problems(spec: DatasetSpec, log: _Log) -> set[str]:
    """Check the manifest's checksums; returns the paths of files that do not match."""
    bad: set[str] = set()
    for rel, expected in spec.sha256.items():
        file = Path(os.path.normpath(spec.root / rel))
        pid = next((part for part in rel.split("/") if part.startswith("sub-")), "")
        if pid in spec.exclude:
            continue
        if not file.is_file():
            log.add("checksum", "error", "a checksum is listed for a file that does not exist",
                    pid, file)
            continue
        actual = sha256_file(file)
        if actual != expected:
            log.add("checksum", "error", f"sha256 mismatch: the manifest expects {expected}, "
                    f"the file has {actual}", pid, file)
            bad.add(str(file))
    return bad


def _image_check_problems(spec: DatasetSpec, scans: pd.DataFrame, log: _Log,
                          check_images: bool, limits: ImageLimits | None) -> set[str]:
    """:func:`check_image` on every scan (if ``check_images``); the paths with a problem."""
    bad: set[str] = set()
    pid_of = dict(zip(scans["path"], scans["participant_id"]))
    if check_images:
        for path in tqdm(scans["path"], desc=f"checking {spec.name} images", disable=None):
            for message in check_image(path, limits):
                log.add("image", "error", message, pid_of[path], path)
                bad.add(path)
    return bad


def _build_table(spec: DatasetSpec, people: dict[str, dict | None],
                 scans: pd.DataFrame) -> pd.DataFrame:
    """The Cohort table of the usable scans, columns in the documented order."""
    rows = []
    for pid, session, path in zip(scans["participant_id"], scans["session"], scans["path"]):
        fields = people[pid]
        rows.append({"participant_id": pid, "session": session, "dataset": spec.name,
                     "path": path, **fields, "space": spec.space,
                     "skull_stripped": spec.skull_stripped})
    if not rows:
        return _empty_table(spec)
    table = pd.DataFrame(rows)[_columns(spec)]
    return table.astype({"age": float, "skull_stripped": bool,
                         **{name: float for name in spec.scores}})


def _columns(spec: DatasetSpec) -> list[str]:
    return [*BASE_COLUMNS, *spec.scores, *TAIL_COLUMNS]


def _empty_table(spec: DatasetSpec) -> pd.DataFrame:
    """A Cohort table with no rows and the right columns and dtypes."""
    table = pd.DataFrame({col: pd.Series(dtype=object) for col in _columns(spec)})
    return table.astype({"age": float, "skull_stripped": bool,
                         **{name: float for name in spec.scores}})
