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

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainage.data._images import ImageLimits, check_header, data_problems, file_problem
from brainage.data._participants import (
    BASE_COLUMNS,
    PROBLEM_COLUMNS,
    TAIL_COLUMNS,
    CohortError,
    CohortResult,
    ProblemLog,
    build_table,
    checksum_problems,
    empty_table,
    finish_cohort,
    log_exclusions,
    log_scans_without_row,
    parse_age,
    parse_participants,
    read_participant_ages,
    read_participants,
)
from brainage.data.manifest import DatasetSpec
from brainage.data.openbhb import load_openbhb_array, load_openbhb_cohort

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_COLUMNS",
    "PROBLEM_COLUMNS",
    "TAIL_COLUMNS",
    "CohortError",
    "CohortResult",
    "ImageLimits",
    "OTHER_FORMATS",
    "ScanRead",
    "check_header",
    "check_image",
    "file_problem",
    "find_scans",
    "format_problem",
    "load_cohort",
    "open_image",
    "parse_age",
    "read_participant_ages",
    "read_scan",
]

#: Image formats nibabel opens but the preprocessing does not read (it reads NIfTI and OpenBHB
#: ``.npy``): refused by name before any reading, with the conversion to make.
OTHER_FORMATS = {".mgz": "a FreeSurfer MGH file (.mgz)", ".mgh": "a FreeSurfer MGH file (.mgh)",
                 ".img": "an Analyze or NIfTI-pair image (.img/.hdr)",
                 ".hdr": "an Analyze or NIfTI-pair header (.img/.hdr)",
                 ".img.gz": "an Analyze or NIfTI-pair image (.img.gz)",
                 ".mnc": "a MINC file (.mnc)", ".dcm": "a DICOM file (.dcm)"}


@dataclass
class ScanRead:
    """What :func:`read_scan` found: the image (header read), its voxels (if read) and every
    problem (messages without the path; empty when the scan is fine)."""

    image: Any = None
    data: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)


def read_scan(path: str | Path, limits: ImageLimits | None = None, *, plausible: bool = True,
              read_data: bool = True) -> ScanRead:
    """Open a scan and check it: the one reader of raw scans, like nilearn's ``check_niimg``.

    The audit (:func:`check_image`) and every command that reads a scan
    (:func:`brainage.imaging.preprocess.check_scan` and ``load_scan``: ``brainage
    preprocess``, ``brainage predict``, the BIDS App) call it, so they refuse the same files
    with the same message. Checks, in order, stopping at the first that fails: a readable
    regular file (:func:`file_problem`), a format brainage reads (:func:`format_problem`), a
    header nibabel (or the OpenBHB reader) can read; then the header (:func:`check_header`:
    dimensionality, declared size, data type, affine, voxel size, field of view) and, with
    ``read_data`` and a header that makes reading safe, the voxels (:func:`data_problems`:
    corrupt or truncated data, NaN or infinite, all zeros or constant).

    Parameters
    ----------
    path : str or Path
        A NIfTI (or any nibabel-readable) image, or an OpenBHB ``.npy`` array (read by
        :func:`brainage.data.openbhb.load_openbhb_array`, with the quasi-raw grid's affine).
    limits : ImageLimits or None, default=None
        Bounds of :func:`check_header`; ``None`` uses the defaults.
    plausible : bool, default=True
        Also check what a brain scan must meet (voxel size and field of view within
        ``limits``): the audit does; the commands that preprocess a scan do not.
    read_data : bool, default=True
        Read and check the voxels too.

    Returns
    -------
    ScanRead
        ``.image`` (None when the file or its header cannot be read), ``.data`` (None unless
        read) and ``.problems``.
    """
    problem = file_problem(path)
    if problem is not None:
        return ScanRead(problems=[f"cannot read the image: the path {problem}"])
    problem = format_problem(path)
    if problem is not None:
        return ScanRead(problems=[problem])
    try:
        img = open_image(path)
    except Exception as err:  # nibabel raises ImageFileError, OSError...; OpenBHB ValueError...
        if str(path).endswith(".npy"):
            return ScanRead(problems=[f"cannot read the array ({' '.join(str(err).split())})"])
        return ScanRead(problems=[f"cannot read the image header ({type(err).__name__}: {err})"])
    problems, readable = check_header(img, limits or ImageLimits(), plausible=plausible)
    if not (readable and read_data):
        return ScanRead(img, None, problems)
    data, more = data_problems(img)
    return ScanRead(img, data, [*problems, *more])


def format_problem(path: str | Path) -> str | None:
    """Why brainage does not read ``path``'s format (:data:`OTHER_FORMATS`: FreeSurfer
    ``.mgz``, Analyze ``.img``/``.hdr``, MINC, DICOM), with the conversion to make; None for a
    NIfTI or OpenBHB ``.npy`` name. Decided by the name alone."""
    name = Path(path).name.lower()
    kind = next((v for k, v in OTHER_FORMATS.items() if name.endswith(k)), None)
    if kind is None:
        return None
    return (f"the file is {kind}, which brainage does not read: convert it to NIfTI (.nii.gz) "
            f"first, e.g. with FreeSurfer's mri_convert or nibabel "
            f"(nib.save(nib.load(path), 'scan.nii.gz'))")


def check_image(path: str | Path, limits: ImageLimits | None = None) -> list[str]:
    """Check that a file is a readable, plausible 3D brain image: the audit's check, which is
    :func:`read_scan` (the one scan reader, shared with ``brainage preprocess``, ``predict``
    and the BIDS App) with the plausibility limits.

    Reads the header with nibabel and checks it (:func:`check_header`) before reading any
    data; then reads the full data, unless the header makes that unsafe (more voxels than
    ``limits.max_voxels``, a file shorter than its declared data, a non-numeric data type).
    Problems: not a readable regular file (:func:`file_problem`); a format brainage does not
    read (:func:`format_problem`); unreadable, corrupt or truncated file; not 3D (e.g. 4D with
    several volumes); empty or all-zero (or constant) data; NaN or infinite voxels; a
    non-finite or degenerate affine; voxel size or field of view outside ``limits``.

    Parameters
    ----------
    path : str or Path
        A scan, as for :func:`read_scan`.
    limits : ImageLimits or None, default=None
        Plausibility bounds; ``None`` uses :class:`ImageLimits` defaults.

    Returns
    -------
    list of str
        One message per problem (empty if the image is fine). Messages do not repeat the path;
        the caller adds it.
    """
    return read_scan(path, limits).problems


def open_image(path: str | Path) -> Any:
    """Open a scan of any format the study reads, as a nibabel image (data read lazily).

    NIfTI (and any nibabel format) through ``nibabel.load``; OpenBHB ``.npy`` arrays through
    :func:`brainage.data.openbhb.load_openbhb_array` (its header checked, the quasi-raw grid's
    affine). The one entry point for raw scans: the audit, preprocessing and the figures call it.
    """
    if str(path).endswith(".npy"):
        return load_openbhb_array(path)
    return nib.load(str(path))


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
        The dataset, from :func:`brainage.data.manifest.load_manifest`. Format ``bids`` is read
        here; format ``openbhb`` by :func:`brainage.data.openbhb.load_openbhb_cohort` (its table has
        one more column, ``official_split``).
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
        return load_openbhb_cohort(spec, check_images=check_images, limits=limits)
    log = ProblemLog(spec.name)
    raw = read_participants(spec, log)
    if raw is None:
        return CohortResult(empty_table(spec), log.frame())
    people = parse_participants(spec, raw, log)
    scans = _match_scans(spec, people, find_scans(spec.root), log)
    bad = checksum_problems(spec, log) | _image_check_problems(spec, scans, log, check_images,
                                                                limits)
    scans = scans[~scans["path"].isin(bad)]
    table = build_table(spec, people, scans)
    return finish_cohort(spec, table, log, "sub-*/[ses-*/]anat/*_T1w.nii[.gz]")


def _match_scans(spec: DatasetSpec, people: dict[str, dict | None], scans: pd.DataFrame,
                 log: ProblemLog) -> pd.DataFrame:
    """Pair scans with participants rows; log exclusions and unmatched rows or images."""
    log_exclusions(spec, people, scans, log)
    log_scans_without_row(spec, people, scans, log)
    with_scan = set(scans["participant_id"])
    for pid, fields in people.items():
        if fields is not None and pid not in with_scan:
            log.add("missing_image", "warning", "participants row without a T1w image "
                    f"(expected {pid}/[ses-*/]anat/{pid}_*T1w.nii[.gz])", pid, spec.root)
    usable = [pid for pid, fields in people.items() if fields is not None]
    return scans[scans["participant_id"].isin(usable)].reset_index(drop=True)


def _image_check_problems(spec: DatasetSpec, scans: pd.DataFrame, log: ProblemLog,
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


