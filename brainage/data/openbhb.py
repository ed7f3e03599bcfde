"""OpenBHB: the brain-age benchmark's layout read into the Cohort table.

OpenBHB [1]_ gathers about 5,300 T1-weighted scans of healthy people from about 70 sites,
preprocessed ("quasi-raw": skull-stripped, bias-corrected, affinely aligned to MNI152 on FSL's
1 mm grid) and stored as NumPy arrays. Its public layout::

    <root>/participants.tsv          one row per scan: participant_id (an integer, no "sub-"),
                                     split (train, internal_test, external_test), age, sex,
                                     site, siteXacq (the challenge's site label), study ...
    <root>/train/derivatives/sub-<id>/ses-1/sub-<id>_preproc-quasiraw_T1w.npy   split train
    <root>/val/derivatives/sub-<id>/ses-1/sub-<id>_preproc-quasiraw_T1w.npy     both test splits
    <root>/resource/quasiraw_space-MNI152_desc-brain_T1w.nii.gz                 optional template

Each array is float32 of shape (1, 182, 218, 182); its affine is the template's when the
``resource`` file is there, else FSL's MNI152 1 mm affine (:data:`AFFINE`).

:func:`load_openbhb_cohort` (called by :func:`brainage.data.cohort.load_cohort` for a manifest entry
of ``format: openbhb``) returns the same Cohort and problems tables as the BIDS reader, with the
same row checks (it shares :mod:`brainage.data.cohort`'s parsing and logging), plus one column,
``official_split``. What is an error and what a warning is as for BIDS, except:

- error, scan left out: a row whose array is missing (the benchmark's metrics need every
  scan; drop a row on purpose with the manifest's ``exclude``), an array under the other split's
  folder, an array of another shape than the grid's, an unknown ``split`` label.
- error, whole dataset: no ``split`` column; a split folder (``train/derivatives`` or
  ``val/derivatives``) absent (one error naming the rows it leaves without an array).

The challenge's metrics (site balanced accuracy, combined score) are in
:mod:`brainage.analysis.benchmark`.

References
----------
.. [1] Dufumier B, Grigis A, Victor J, Ambroise C, Frouin V, Duchesnay E. OpenBHB: a large-scale
   multi-site brain MRI data-set for age prediction and debiasing. NeuroImage 263, 119637 (2022).
   doi:10.1016/j.neuroimage.2022.119637
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from brainage._utils import bids_id
from brainage.data._images import ImageLimits, declared_problems, image_problems
from brainage.data._participants import (
    CohortResult,
    ProblemLog,
    build_table,
    checksum_problems,
    empty_table,
    finish_cohort,
    log_exclusions,
    log_scans_without_row,
    parse_participants,
    participant_ids,
    read_participants,
)
from brainage.data.manifest import DatasetSpec

logger = logging.getLogger(__name__)

__all__ = [
    "AFFINE",
    "OFFICIAL_SPLITS",
    "SHAPE",
    "find_openbhb_scans",
    "load_openbhb_array",
    "load_openbhb_cohort",
    "openbhb_grid",
    "openbhb_path",
]

#: The official splits of ``participants.tsv`` (column ``split``).
OFFICIAL_SPLITS = ("train", "internal_test", "external_test")
#: Folder under the root that holds each official split's arrays.
SPLIT_FOLDERS = {"train": "train", "internal_test": "val", "external_test": "val"}
#: Spatial shape of the quasi-raw arrays: FSL's MNI152 1 mm grid.
SHAPE = (182, 218, 182)
#: Voxel -> MNI mm affine of FSL's MNI152 1 mm grid (x runs right to left: LAS voxel order).
AFFINE = np.array([[-1.0, 0.0, 0.0, 90.0], [0.0, 1.0, 0.0, -126.0], [0.0, 0.0, 1.0, -72.0],
                   [0.0, 0.0, 0.0, 1.0]])
#: The template shipped with the data; when present its header is the authority on the grid.
TEMPLATE = Path("resource") / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz"
#: End of an array's file name, after ``sub-<id>``.
SUFFIX = "_preproc-quasiraw_T1w.npy"
#: Session folder of every scan.
SESSION = "ses-1"
#: Column of ``participants.tsv`` that holds the official split.
SPLIT_COLUMN = "split"
#: Extra Cohort-table column of this reader.
OFFICIAL_COLUMN = "official_split"


# --- layout ----------------------------------------------------------------------------------


def openbhb_grid(root: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid of a dataset's arrays: ``(shape, affine)``.

    Parameters
    ----------
    root : str or PathLike
        The OpenBHB folder.

    Returns
    -------
    shape : tuple of 3 int
        Spatial shape: the template's (``resource/...``) if it exists, else :data:`SHAPE`.
    affine : ndarray, shape (4, 4)
        Voxel -> MNI mm: the template's if it exists, else :data:`AFFINE`.

    Raises
    ------
    ValueError
        If the template exists but cannot be read; the message names it.
    """
    template = Path(root) / TEMPLATE
    if not template.is_file():
        return SHAPE, AFFINE.copy()
    try:
        img = nib.load(str(template))
    except Exception as err:  # nibabel raises many types (ImageFileError, OSError, EOFError)
        raise ValueError(f"OpenBHB template {template} cannot be read: {err}") from err
    return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def openbhb_path(root: str | os.PathLike, participant_id: str, split: str) -> Path:
    """Where the array of a participant of an official split lies.

    Parameters
    ----------
    root : str or PathLike
        The OpenBHB folder.
    participant_id : str
        With or without its ``sub-`` prefix.
    split : {"train", "internal_test", "external_test"}
    """
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split: expected one of {', '.join(OFFICIAL_SPLITS)}, got {split!r}")
    pid = bids_id(participant_id)
    return (Path(root) / SPLIT_FOLDERS[split] / "derivatives" / pid / SESSION
            / f"{pid}{SUFFIX}")


def find_openbhb_scans(root: str | os.PathLike) -> pd.DataFrame:
    """Arrays of an OpenBHB folder: ``{train,val}/derivatives/sub-*/ses-*/sub-*<SUFFIX>``.

    Parameters
    ----------
    root : str or PathLike
        The OpenBHB folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id`` (the ``sub-`` folder), ``session`` (the ``ses-`` folder),
        ``folder`` (``train`` or ``val``) and ``path`` (absolute), sorted by folder and path.
    """
    rows = []
    for folder in dict.fromkeys(SPLIT_FOLDERS.values()):  # train, then val
        base = Path(root) / folder / "derivatives"
        for path in sorted(base.glob(f"sub-*/ses-*/sub-*{SUFFIX}")):
            pid, session, _ = path.relative_to(base).parts
            rows.append({"participant_id": pid, "session": session, "folder": folder,
                         "path": str(path.absolute())})
    return pd.DataFrame(rows, columns=["participant_id", "session", "folder", "path"])


def load_openbhb_array(path: str | os.PathLike,
                       affine: ArrayLike | None = None) -> nib.Nifti1Image:
    """Read an OpenBHB quasi-raw array as a 3D float32 NIfTI image.

    Parameters
    ----------
    path : str or PathLike
        A ``.npy`` array of shape (1, X, Y, Z) (the layout's) or (X, Y, Z).
    affine : array-like, shape (4, 4), optional
        Voxel -> MNI mm. By default the grid of the dataset the file lies in (its template
        ``resource/...``, found up to five folders above the file, else :data:`AFFINE`), and the
        array's shape must then match that grid's.

    Returns
    -------
    nibabel.Nifti1Image
        float32 data, shape (X, Y, Z), in the array's own voxel order (not reoriented).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a readable ``.npy`` array, has another shape than (1, X, Y, Z) or
        (X, Y, Z) or than the grid, or ``affine`` is not a finite 4 x 4 matrix.
    TypeError
        The array is not numeric.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OpenBHB array {path} does not exist")
    found, dtype = _npy_header(path)  # shape and dtype checked before any data is read
    shape3 = found[1:] if len(found) == 4 and found[0] == 1 else found  # drop the channel axis
    if len(shape3) != 3:
        raise ValueError(f"OpenBHB array {path} must have shape (1, X, Y, Z) or (X, Y, Z); "
                         f"got {found}")
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number):
        raise TypeError(f"OpenBHB array {path} must hold numbers; got dtype {dtype}")
    if affine is None:
        shape, affine, source = _grid_of(path)
        if shape3 != shape:
            raise ValueError(f"OpenBHB array {path} has shape {shape3}, but {source} has "
                             f"shape {shape}: pass its affine explicitly")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine: expected a finite 4 x 4 matrix, got shape {affine.shape}")
    problems = declared_problems(found, dtype, ImageLimits())
    if problems:
        raise ValueError(f"OpenBHB array {path}: {'; '.join(problems)}")
    try:
        data = np.load(path, allow_pickle=False).reshape(shape3)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"OpenBHB array {path} cannot be read as a .npy array: {err}") from err
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header; its size checked against them."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)  # 3.0: 2.0's layout, UTF-8 text
            shape, _, dtype = read(file)
            offset = file.tell()
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"OpenBHB array {path} cannot be read as a .npy array: {err}") from err
    shape = tuple(int(n) for n in shape)
    needed = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if not dtype.hasobject and size < needed:
        raise ValueError(f"OpenBHB array {path} holds {size:,} bytes, but its header declares "
                         f"shape {shape} of {dtype}, {needed:,} bytes: the file is truncated "
                         f"or its header is wrong")
    return shape, dtype


def _grid_of(path: Path) -> tuple[tuple[int, int, int], np.ndarray, str]:
    """Grid of the dataset ``path`` lies in, and where it comes from (for messages)."""
    # <root>/<folder>/derivatives/sub-<id>/ses-1/<file>: the root is five levels up
    for folder in list(path.parents)[:5]:
        if (folder / TEMPLATE).is_file():
            shape, affine = openbhb_grid(folder)
            return shape, affine, f"the template {folder / TEMPLATE}"
    return SHAPE, AFFINE.copy(), "the default OpenBHB grid (FSL's MNI152 1 mm; no template found)"


# --- the Cohort table ------------------------------------------------------------------------


def load_openbhb_cohort(
    spec: DatasetSpec, *, check_images: bool = True, limits: ImageLimits | None = None,
    grid: tuple[Sequence[int], ArrayLike] | None = None,
) -> CohortResult:
    """Read an OpenBHB folder into the Cohort table and collect every problem.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset (``format: openbhb``); ``columns`` maps ``participant_id``, ``age`` and
        usually ``sex`` and ``site`` (``siteXacq``, the challenge's site label).
    check_images : bool, default=True
        Read every array and check its data (:func:`brainage.data.cohort.check_image`'s checks: NaN
        or infinite voxels, all zeros, constant). Shapes are checked either way (header only).
    limits : ImageLimits or None, default=None
        Voxel size and field of view bounds; ``None`` uses the defaults.
    grid : (shape, affine), optional
        Expected spatial shape and affine of the arrays; default :func:`openbhb_grid` of the
        root (tests pass a small one).

    Returns
    -------
    CohortResult
        ``.table``: the Cohort columns (``participant_id`` as ``sub-<id>``, ``site`` the text of
        the mapped column) plus ``official_split``; ``.problems``: see the module docstring.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"spec: expected a DatasetSpec (see brainage.data.manifest), "
                        f"got {type(spec).__name__}")
    log = ProblemLog(spec.name)
    raw = read_participants(spec, log)
    grid = _grid(spec, grid, log) if raw is not None else None
    if raw is None or grid is None or not _has_split_column(spec, raw, log):
        return CohortResult(_openbhb_table(empty_table(spec), {}), log.frame())
    people = parse_participants(spec, raw, log)
    splits = _official_splits(spec, raw, people, log)
    scans = _match_arrays(spec, people, splits, find_openbhb_scans(spec.root), log)
    bad = checksum_problems(spec, log) | _array_problems(spec, scans, grid, log, check_images,
                                                          limits or ImageLimits())
    scans = scans[~scans["path"].isin(bad)]
    table = _openbhb_table(build_table(spec, people, scans), splits)
    return finish_cohort(spec, table, log, f"{{train,val}}/derivatives/sub-*/ses-*/sub-*{SUFFIX}")


def _grid(spec: DatasetSpec, grid: tuple[Sequence[int], ArrayLike] | None,
          log: ProblemLog) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The expected grid, checked; None (with an error) if the template cannot be read."""
    if grid is None:
        try:
            return openbhb_grid(spec.root)
        except ValueError as err:
            log.add("template", "error", str(err), path=spec.root / TEMPLATE)
            return None
    shape, affine = tuple(int(n) for n in grid[0]), np.asarray(grid[1], dtype=np.float64)
    if len(shape) != 3 or affine.shape != (4, 4):
        raise ValueError(f"grid: expected (shape of 3 ints, 4 x 4 affine), got shape {shape} "
                         f"and an affine of shape {affine.shape}")
    return shape, affine


def _has_split_column(spec: DatasetSpec, raw: pd.DataFrame, log: ProblemLog) -> bool:
    """Whether the table has the official split column (an error if not)."""
    if SPLIT_COLUMN in raw.columns:
        return True
    log.add("columns", "error", f"OpenBHB's participants table needs a column "
            f"{SPLIT_COLUMN!r} ({', '.join(OFFICIAL_SPLITS)}); its columns: "
            f"{', '.join(raw.columns)}", path=spec.participants)
    return False


def _official_splits(spec: DatasetSpec, raw: pd.DataFrame, people: dict[str, dict | None],
                     log: ProblemLog) -> dict[str, str]:
    """Participant id -> official split; a usable row with an unknown split becomes unusable."""
    splits: dict[str, str] = {}
    pairs = zip(participant_ids(spec, raw), raw[SPLIT_COLUMN].str.strip())
    for line, (pid, split) in enumerate(pairs, start=2):
        if people.get(pid) is None:
            continue  # an error or an exclusion already
        if split not in OFFICIAL_SPLITS:
            log.add("split", "error", f"split {split!r} is not one of "
                    f"{', '.join(OFFICIAL_SPLITS)}", pid, f"{spec.participants} line {line}")
            people[pid] = None
        else:
            splits[pid] = split
    return splits


def _match_arrays(spec: DatasetSpec, people: dict[str, dict | None], splits: dict[str, str],
                  scans: pd.DataFrame, log: ProblemLog) -> pd.DataFrame:
    """The arrays of the usable rows, each under its split's folder; every mismatch logged."""
    log_exclusions(spec, people, scans, log)
    log_scans_without_row(spec, people, scans, log)
    absent = sorted(f for f in set(SPLIT_FOLDERS.values())
                    if not (spec.root / f / "derivatives").is_dir())
    by_id = {pid: rows for pid, rows in scans.groupby("participant_id", sort=False)}
    keep: list[int] = []
    orphans: dict[str, int] = dict.fromkeys(absent, 0)
    for pid, split in splits.items():
        folder = SPLIT_FOLDERS[split]
        mine = by_id.get(pid, scans.iloc[:0])
        here = mine[mine["folder"] == folder]
        if len(here):
            keep.extend(here.index)
        elif len(mine):
            log.add("split_folder", "error", f"the array lies under {mine['folder'].iloc[0]}/, "
                    f"but participants.tsv gives split {split!r}, whose arrays lie under "
                    f"{folder}/", pid, mine["path"].iloc[0])
        elif folder in orphans:
            orphans[folder] += 1  # one error for the whole absent folder, below
        else:
            log.add("missing_image", "error", "participants row without its array (the "
                    "benchmark needs every scan; exclude the row in the manifest to drop it)",
                    pid, openbhb_path(spec.root, pid, split))
    for folder, count in orphans.items():
        if not count:
            continue  # no row of its splits: the folder is not needed
        which = ", ".join(s for s, f in SPLIT_FOLDERS.items() if f == folder)
        log.add("missing_image", "error", f"the folder {folder}/derivatives does not exist: "
                f"the {count} row(s) of split(s) {which} have no array", path=spec.root / folder)
    return scans.loc[keep].reset_index(drop=True)


def _array_problems(spec: DatasetSpec, scans: pd.DataFrame,
                    grid: tuple[tuple[int, ...], np.ndarray], log: ProblemLog, check_images: bool,
                    limits: ImageLimits) -> set[str]:
    """Shape (always) and data checks (``check_images``) of every array; the bad paths."""
    bad: set[str] = set()
    shape, affine = grid
    for pid, path in tqdm(list(zip(scans["participant_id"], scans["path"])),
                          desc=f"checking {spec.name} arrays", disable=None):
        problems = _shape_problems(path, shape)
        if not problems and check_images:
            try:
                problems = image_problems(load_openbhb_array(path, affine), limits)
            except (OSError, ValueError, TypeError) as err:
                problems = [f"cannot read the array ({' '.join(str(err).split())})"]
        for message in problems:
            log.add("image", "error", message, pid, path)
            bad.add(path)
    return bad


def _shape_problems(path: str, shape: tuple[int, ...]) -> list[str]:
    """A readable numeric .npy of shape (1, *shape) or ``shape``, from its header alone."""
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
    except (OSError, ValueError, EOFError) as err:
        return [f"cannot read the array ({type(err).__name__}: {' '.join(str(err).split())})"]
    found, dtype = tuple(header.shape), header.dtype
    del header  # close the memory map
    if found not in ((1, *shape), shape):
        return [f"array shape {found} is not the grid's {(1, *shape)} (or {shape})"]
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number):
        return [f"array dtype {dtype} is not numeric"]
    return []


def _openbhb_table(table: pd.DataFrame, splits: dict[str, str]) -> pd.DataFrame:
    """The Cohort table with its official split, as the last column."""
    out = table.copy()
    out[OFFICIAL_COLUMN] = out["participant_id"].map(splits).astype(object)
    return out
