"""Brain age of new scans from a trained model folder: ``brainage predict``.

The model folder (its layout, card and checks) is :mod:`brainage.inference.model_folder`.

:func:`predict_scans` preprocesses each scan as the model's training data was (the model's grid
and crop; the scan's own space: ``native`` scans are bias-corrected and registered to MNI152,
scans already on an MNI152 template grid are only resampled), through the on-disk
:class:`brainage.imaging.preprocess.PreprocessCache`, then predicts with every head, and returns one
row per scan and head at full precision (``brainage predict`` writes :func:`output_table` of it:
one row per scan with the recommended head, the field's column names, rounded). A scan that
fails (missing, a folder or a symlink loop, unreadable, a
degenerate affine, 4D, a native scan whose registration fails the QC
(:func:`brainage.imaging.registration.registration_passes`: its outline misfit is above
:data:`brainage.imaging.registration.MISFIT_THRESHOLD_MM`) ...) gets rows whose ``error`` names the
file and the problem, and no age; the other scans complete. A scan that fails the registration QC
still gets its QC picture (``qc_dir``), and ``accept_registration`` predicts it anyway, for a
user who looked at the picture and found the registration right. :func:`iter_predictions`
yields the rows scan by scan, so that ``brainage predict`` rewrites its CSV (atomically) after
each one and an interrupted run keeps the scans that finished.

Space ``"auto"`` reads the scan's header: a scan whose grid (reoriented to RAS) is exactly the
MNI152 template grid of its voxel size (:func:`brainage.imaging.registration.template_grid`, full or
cropped field of view; nilearn's 1 and 2 mm grids among them) is taken as ``MNI152NLin2009cSym``,
anything else as ``native``. A scan registered to MNI152 by another tool but written on
another grid is therefore registered again (harmless, but slower); pass ``space`` to override.

The default cache folder is ``$XDG_CACHE_HOME/brainage/preprocessed`` (``~/.cache/...`` when
the variable is unset): a scan predicted twice is preprocessed once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainage._utils import (
    AGE_RANGE,
    atomic_write,
    check_scheduler,
    dask_client,
    default_cache_dir,
    progress_bar,
    worker_count,
)
from brainage._utils.columns import (
    COLUMN_DECIMALS,
    OUTPUT_COLUMNS,
    OUTPUT_NAMES,
    PREDICTION_COLUMNS,
    RECOMMENDED_HEAD,
    RECOMMENDED_HEAD_REASON,
)
from brainage.data.cohort import CohortError, find_scans, read_participant_ages
from brainage.imaging.preprocess import (
    SPACES,
    PreprocessCache,
    check_scan,
    preprocess_cohort,
)
from brainage.inference import trust
from brainage.inference.model_folder import (
    IG_REFERENCE_FILE,
    RETEST_FIELD,
    ModelFolder,
    ModelFolderError,
    load_model_folder,
)
from brainage.inference.qc_figures import save_registration_qc
from brainage.inference.sites import calibrations_by_scan, load_site_calibrations

# torch, MONAI and ANTs take seconds to import: they are imported in the functions that use
# them, so that the command line, which imports this module to build its parser, starts fast.

logger = logging.getLogger(__name__)

__all__ = [
    "RECOMMENDED_HEAD",
    "RECOMMENDED_HEAD_REASON",
    "collect_scans",
    "iter_predictions",
    "output_table",
    "recommended_head",
    "predict_scans",
    "CsvRun",
    "predict_to_csv",
    "scan_space",
]

#: Gauss-Legendre steps of the integrated-gradients maps (``--saliency``; notebook 04's default).
IG_STEPS = 16
#: ``space`` choices: ``auto`` reads the scan's grid (see the module docstring).
SPACE_OPTIONS = ("auto", *SPACES)
#: File names taken as one scan even when they name a folder (which then fails as a scan).
_SCAN_SUFFIXES = (".nii", ".nii.gz", ".npy")
#: Scans preprocessed per worker between two writes of the table (``n_jobs > 1``).
_SCANS_PER_JOB = 4







# --- the model card -------------------------------------------------------------------------








# --- loading a model folder -----------------------------------------------------------------






























# --- inputs ---------------------------------------------------------------------------------


def _ras_grid(img: nib.spatialimages.SpatialImage) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of an image after reorientation to RAS (from the header only)."""
    shape = np.asarray(img.shape[:3])
    ornt = nib.orientations.io_orientation(img.affine)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    ras_shape = np.empty(3, dtype=int)
    ras_shape[ornt[:, 0].astype(int)] = shape  # input axis i becomes output axis ornt[i, 0]
    return tuple(int(n) for n in ras_shape), affine


def scan_space(path: str | os.PathLike) -> str:
    """``"MNI152NLin2009cSym"`` if the scan lies on an MNI152 template grid, else ``"native"``.

    The scan's grid, reoriented to RAS, is compared with :func:`template_grid` at the scan's
    voxel size, full and cropped field of view (to 0.001 mm); only the header is read. An
    OpenBHB quasi-raw array (``.npy``) is affinely aligned to MNI152 by its distributor:
    ``"MNI152Lin"``.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI scan or an OpenBHB ``.npy`` array.

    Raises
    ------
    FileNotFoundError, ValueError
        The message names the file and the problem: it is missing or a broken symlink
        (``FileNotFoundError``); a folder, a symlink loop or unreadable, its header cannot be
        read, or its affine is degenerate (``ValueError``).
    """
    from brainage.imaging.registration import template_grid

    path = Path(path)
    img = check_scan(path)
    if img is None:
        return "MNI152Lin"
    if len(img.shape) < 3:
        return "native"  # not a volume: preprocessing reports the problem
    shape, affine = _ras_grid(img)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not (np.allclose(voxel, voxel[0], atol=1e-4) and 0 < voxel[0] <= 16):
        return "native"
    for crop in (False, True):
        grid_shape, grid_affine = template_grid(float(voxel[0]), crop_to_brain=crop)
        if shape == grid_shape and np.allclose(affine, grid_affine, atol=1e-3):
            return SPACES[1]
    return "native"


def _name_ids(path: Path) -> tuple[str, str]:
    """Participant id and session from a file name (BIDS ``sub-X[_ses-Y]_...`` or the stem)."""
    stem = path.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".npy")
    entities = dict(part.split("-", 1) for part in stem.split("_") if "-" in part)
    if stem.startswith("sub-") and "sub" in entities:
        session = f"ses-{entities['ses']}" if "ses" in entities else ""
        return f"sub-{entities['sub']}", session
    return stem, ""


def _participant_ages(root: Path) -> dict[str, float]:
    """Ages from a BIDS folder's participants.tsv, checked as the cohort reader checks them
    (:func:`brainage.data.cohort.read_participant_ages`): a missing, invalid (not a number, outside
    0-120 years) or duplicated one is NaN, with a warning naming the file and line (a missing
    one is only logged). Empty without the file or an age column."""
    tsv = root / "participants.tsv"
    if not tsv.is_file():
        logger.info("%s is absent: the BIDS scans have no age", tsv)
        return {}
    try:
        ages, problems = read_participant_ages(tsv)
    except CohortError as err:
        logger.warning("%s cannot give ages, the BIDS scans have none: %s", tsv, err)
        return {}
    for problem in problems:
        log = logger.info if problem.endswith("is missing") else logger.warning
        log("%s: that participant's age is unknown", problem)
    return {pid: math.nan if age is None else float(age) for pid, age in ages.items()}


def _check_ages(ages: Sequence[float | None], n_files: int) -> list[float]:
    if isinstance(ages, (str, bytes)) or not isinstance(ages, Sequence | np.ndarray):
        raise TypeError(f"ages (--age) must be a sequence of numbers, got {type(ages).__name__}")
    if len(ages) != n_files:
        raise ValueError(f"--age takes one value per scan file: got {len(ages)} age(s) for "
                         f"{n_files} scan file(s) (BIDS folders take their ages from "
                         f"participants.tsv)")
    values = [math.nan if a is None else float(a) for a in ages]
    bad = [a for a in values if not (math.isnan(a) or AGE_RANGE[0] <= a <= AGE_RANGE[1])]
    if bad:
        raise ValueError(f"ages (--age) must lie in {list(AGE_RANGE)} years; got {bad}")
    return values


def _is_scan_input(path: Path) -> bool:
    """Whether an input is one scan: not a folder, or a folder named like a scan file (it
    then fails as a scan, not as an empty BIDS folder)."""
    return not path.is_dir() or path.name.endswith(_SCAN_SUFFIXES)


def collect_scans(inputs: Sequence[str | os.PathLike],
                  ages: Sequence[float | None] | None = None) -> pd.DataFrame:
    """The scans to predict: files as given, BIDS folders expanded, with their ages.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        NIfTI files and/or BIDS folders (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``). A path that
        is not a folder, or is named like a scan (``.nii``, ``.nii.gz``, ``.npy``), is taken as
        a scan: if it is missing, a folder or unreadable, its row fails later.
    ages : sequence of float or None, optional
        One chronological age per *file* of ``inputs``, in order (None or NaN: unknown).
        BIDS scans take their participant's age from the folder's ``participants.tsv``
        (an invalid or duplicated age there is unknown, with a warning naming the line).

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id`` (BIDS ``sub-`` id, or the file name without extension),
        ``session``, ``path``, ``age`` (NaN when unknown).
    """
    if isinstance(inputs, (str, os.PathLike)) or not inputs:
        raise ValueError(f"inputs must be a non-empty list of scans or BIDS folders, "
                         f"got {inputs!r}")
    files = [Path(p) for p in inputs if _is_scan_input(Path(p))]
    file_ages = iter(_check_ages(ages, len(files)) if ages is not None else [math.nan] * len(files))
    rows = []
    for item in map(Path, inputs):
        if _is_scan_input(item):
            pid, session = _name_ids(item)
            rows.append({"participant_id": pid, "session": session, "path": str(item),
                         "age": next(file_ages)})
            continue
        scans = find_scans(item)
        if scans.empty:
            raise FileNotFoundError(f"BIDS folder {item} holds no sub-*/[ses-*/]anat/"
                                    f"*_T1w.nii[.gz] scan")
        known = _participant_ages(item)
        for scan in scans.itertuples():
            rows.append({"participant_id": scan.participant_id, "session": scan.session,
                         "path": scan.path, "age": known.get(scan.participant_id, math.nan)})
    return pd.DataFrame(rows, columns=["participant_id", "session", "path", "age"])


# --- preprocessing, inference, saliency -----------------------------------------------------


def _check_options(space: str, skull_stripped: bool, n_jobs: int) -> None:
    if space not in SPACE_OPTIONS:
        import difflib

        close = difflib.get_close_matches(str(space), SPACE_OPTIONS, n=1, cutoff=0.3)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"space (--space) must be one of {SPACE_OPTIONS}; got {space!r}{hint}")
    if not isinstance(skull_stripped, bool):
        raise TypeError(f"skull_stripped must be a bool, got {skull_stripped!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs (--jobs) must be a positive int; got {n_jobs!r}")


def _resolve_spaces(paths: Sequence[str], index: Sequence[int], space: str,
                    errors: dict[int, str]) -> dict[int, str]:
    """Space of each scan ``paths[i]``, ``i`` in ``index`` (``auto``: read from its header),
    its file and header checked first (:func:`brainage.imaging.preprocess.check_scan`);
    failures go to ``errors``."""
    spaces: dict[int, str] = {}
    for i in index:
        path = Path(paths[i])
        try:
            if space == "auto":
                spaces[i] = scan_space(path)
            else:
                check_scan(path)
                spaces[i] = space
        except Exception as err:  # nibabel: OrientationError ...; one bad scan must not stop
            # the run
            message = str(err) if str(path) in str(err) else f"scan {path}: {err}"
            errors[i] = f"{type(err).__name__}: {message}"
            logger.error("%s", errors[i])
    return spaces


@dataclass
class _Prepared:
    """Outcome of preprocessing, keyed by the scan's index: images (read lazily from the
    cache), spaces, errors and registration misfits (mm)."""

    images: dict[int, nib.Nifti1Image]
    spaces: dict[int, str]
    errors: dict[int, str]
    scores: dict[int, float]
    #: Native scans whose registration failed the QC (predicted only if accepted), by index.
    flagged: dict[int, nib.Nifti1Image] = field(default_factory=dict)


def _preprocess(paths: Sequence[str], index: Sequence[int], folder: ModelFolder, space: str,
                skull_stripped: bool, cache: PreprocessCache, n_jobs: int,
                client: Any = None, accept_registration: bool = False) -> _Prepared:
    """Preprocess the scans ``paths[i]``, ``i`` in ``index``, grouped by space (a cohort run
    per space). A native scan whose registration fails the QC
    (:func:`brainage.imaging.registration.registration_passes`) fails, unless
    ``accept_registration``; either way it is listed in ``flagged``."""
    from brainage.imaging.registration import registration_passes, registration_qc_text

    errors: dict[int, str] = {}
    spaces = _resolve_spaces(paths, index, space, errors)
    images: dict[int, nib.Nifti1Image] = {}
    scores: dict[int, float] = {}
    flagged: dict[int, nib.Nifti1Image] = {}
    for group in sorted(set(spaces.values())):
        members = [i for i, s in spaces.items() if s == group]
        params = folder.params_for(group, skull_stripped)
        items = preprocess_cohort([paths[i] for i in members], params, cache, n_jobs=n_jobs,
                                  scheduler=client, progress=False)  # the run's bar: _groups
        for i, item in zip(members, items):
            if not item.ok:
                errors[i] = item.error
                continue
            scores[i] = item.alignment  # computed once, stored in the cache's sidecar
            if tuple(item.image.shape) != folder.grid_shape:
                errors[i] = (f"scan {paths[i]}: preprocessed shape {item.image.shape} is not "
                             f"the model grid {folder.grid_shape}")
            elif group == "native" and not registration_passes(item.alignment):
                flagged[i] = item.image
                qc = registration_qc_text(item.alignment)
                if accept_registration:
                    logger.warning("scan %s: %s; accepted on request (accept_registration): "
                                   "its age is predicted", paths[i], qc)
                    images[i] = item.image
                    continue
                errors[i] = (f"scan {paths[i]}: registration to MNI152 failed the QC: {qc} "
                             f"(is the header's voxel size or orientation right? Look at its "
                             f"QC picture; --force accepts a registration found right); no "
                             f"age is predicted")
                logger.error("%s", errors[i])
            else:
                if group == "native" or np.isfinite(item.alignment):
                    # the figure brainage preprocess prints and the CSV holds (0.1 mm)
                    logger.info("%s: %s", paths[i], registration_qc_text(item.alignment))
                images[i] = item.image
    return _Prepared(images, spaces, errors, scores, flagged)


def _forward(model: Any, x: Any) -> np.ndarray:
    """Predicted ages (years) of ``x : Tensor, shape (B, 1, D, H, W)``, on the model's device."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(x).double().cpu().numpy()


def _infer(folder: ModelFolder, images: Mapping[int, nib.Nifti1Image], names: Sequence[str],
           saliency_dir: Path | None, batch_size: int = 4,
           ) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, str]],
                      dict[str, dict[int, np.ndarray]]]:
    """Every head's predicted age of every image, its integrated-gradients map if asked, and its
    feature statistics (captured in the same forward pass, for the OOD score).

    The maps are the study's (notebook 04): integrated gradients
    (:func:`brainage.models.saliency.integrated_gradients`, 16 Gauss-Legendre steps) from the
    model folder's reference, a typical training scan; a map's voxels add up to the predicted
    age minus the reference's, and a positive voxel pushes the prediction above it. (Signed
    Grad-RAM, written here before, has no reference point: its sign is not interpretable.)

    Volumes are read from the cache one batch at a time, so memory does not grow with the
    number of scans. Returns ``{head: {index: years}}``, ``{head: {index: map path}}`` and
    ``{head: {index: features}}``.
    """
    import torch

    from brainage.models.features import capture_features
    from brainage.models.saliency import integrated_gradients, save_map

    ages: dict[str, dict[int, float]] = {head: {} for head in folder.models}
    maps: dict[str, dict[int, str]] = {head: {} for head in folder.models}
    features: dict[str, dict[int, np.ndarray]] = {head: {} for head in folder.models}
    ok = sorted(images)
    for start in range(0, len(ok), batch_size):
        batch = ok[start:start + batch_size]
        volumes = np.stack([np.asarray(images[i].dataobj, dtype=np.float32) for i in batch])
        x = torch.from_numpy(volumes)[:, None]  # (B, D, H, W) -> (B, 1, D, H, W)
        for head, model in folder.models.items():
            x_head = x.to(next(model.parameters()).device)
            with capture_features(model) as captured:
                ages[head].update(zip(batch, _forward(model, x_head)))
            features[head].update(zip(batch, captured.array()))
            if saliency_dir is None:
                continue
            found = integrated_gradients(model, x_head, folder.ig_reference,
                                         n_steps=IG_STEPS)  # (B, 1, D, H, W), years
            for i, volume in zip(batch, found):
                path = saliency_dir / head / f"{names[i]}.nii.gz"
                maps[head][i] = str(save_map(volume[0], folder.grid_affine, path))
    return ages, maps, features


def _output_names(scans: pd.DataFrame) -> list[str]:
    """A unique file name per scan: ``<participant>[_<session>]``, numbered when repeated."""
    names: list[str] = []
    taken: set[str] = set()
    for row in scans.itertuples():
        base = row.participant_id + (f"_{row.session}" if row.session else "")
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
        taken.add(name)
    return names


def _corrected(correction: Any, age: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Bias-corrected predictions where age and prediction are known; NaN elsewhere."""
    out = np.full(age.shape, np.nan)
    known = np.isfinite(age) & np.isfinite(predicted)
    if correction is not None and known.any():
        out[known] = correction.apply(age[known], predicted[known])
    return out


def _head_rows(head: str, folder: ModelFolder, scans: pd.DataFrame, index: Sequence[int],
               predicted: Mapping[int, float], prepared: _Prepared,
               saliency: Mapping[int, str], features: Mapping[int, np.ndarray],
               site: Any = None, domain: trust.DomainCheck | None = None) -> pd.DataFrame:
    """The rows of one head for the scans ``index`` (the frame's index): predictions, gaps,
    bias-corrected gaps, their intervals and OOD flags, QC and errors. With ``site`` (scan
    index -> :class:`brainage.inference.model_folder.SiteCalibrationFile`,
    :func:`brainage.inference.calibrate.calibrations_by_scan`), the corrected columns and the
    intervals of those scans are their site calibration's, and ``calibration`` names it. ``domain``
    gives each predicted scan its ``domain`` verdict (:func:`_domain_verdicts`)."""
    index = list(index)
    rows = scans.loc[index]
    correction = folder.corrections[head]
    age = rows["age"].to_numpy(dtype=np.float64)
    years = np.array([predicted.get(i, np.nan) for i in index], dtype=np.float64)
    corrected = _corrected(correction, age, years)
    dim = next((len(v) for v in features.values()), 0)
    head_features = np.array([features.get(i, np.full(dim, np.nan)) for i in index]).reshape(
        len(index), dim)  # (n, D); NaN rows for failed scans
    trusted = trust.trust_columns(folder.trust.get(head), predicted=years, age=age,
                                  corrected_gap=corrected - age, features=head_features)
    method = np.full(len(index), correction.method if correction is not None else "none",
                     dtype=object)
    used = np.full(len(index), "training", dtype=object)
    calibrations = [None if site is None else site.get(i) for i in index]
    for calibration in {id(c): c for c in calibrations if c is not None}.values():
        rows_of = np.array([c is calibration for c in calibrations])  # this site's rows
        columns = trust.site_columns(calibration.heads[head], years[rows_of], age[rows_of])
        corrected[rows_of] = columns.pop("corrected_predicted")
        columns.pop("corrected_gap")
        for column, values in columns.items():
            trusted[column] = np.asarray(trusted[column], dtype=np.float64).copy()
            trusted[column][rows_of] = values
        method[rows_of], used[rows_of] = "site", f"site:{calibration.site}"
    return pd.DataFrame({
        "participant_id": rows["participant_id"].to_numpy(),
        "session": rows["session"].to_numpy(), "path": rows["path"].to_numpy(), "model": head,
        "space": [prepared.spaces.get(i, "") for i in index],
        "predicted": years, "age": age, "gap": years - age,
        "corrected_predicted": corrected, "corrected_gap": corrected - age, **trusted,
        "domain": _domain_verdicts(domain or trust.DomainCheck(folder.card), rows, index,
                                   prepared, trusted["ood"]),
        "retest_sd": _retest_sd(folder.card, head),
        "bias_correction": method, "calibration": used,
        "registration_misfit_mm": [prepared.scores.get(i, np.nan) for i in index],
        "saliency": [saliency.get(i, "") for i in index],
        "error": [prepared.errors.get(i, "") for i in index],
    }, index=index, columns=list(PREDICTION_COLUMNS))


def _domain_verdicts(domain: trust.DomainCheck, rows: pd.DataFrame, index: Sequence[int],
                     prepared: _Prepared, ood: Any) -> list[str]:
    """The ``domain`` column: ``sim2real`` where the model was trained on simulated data and
    the scan is real (the :class:`brainage.inference.trust.DomainWarning`), else ``ood`` where
    the head's OOD score flags it, else ``ok``; ``""`` for a scan that was not predicted."""
    flags = pd.array(ood, dtype="boolean").fillna(False)
    out = []
    for k, (i, path) in enumerate(zip(index, rows["path"])):
        if i not in prepared.images:
            out.append("")
        elif domain.mismatched(path, prepared.spaces[i]):
            out.append("sim2real")
        else:
            out.append("ood" if bool(flags[k]) else "ok")
    return out


def _retest_sd(card: Mapping[str, Any], head: str) -> float:
    """The within-subject SD of the head's bias-corrected gap the card records, else NaN."""
    value = card.get(RETEST_FIELD, {}).get(head, {}).get("corrected_gap", {}).get("sd_years")
    return float(value) if isinstance(value, (int, float)) else math.nan




def recommended_head(heads: Sequence[str]) -> str:
    """:data:`RECOMMENDED_HEAD` if the model folder has it, else its first head (a folder of
    one head)."""
    heads = list(heads)
    if not heads:
        raise ValueError("no head to report: the prediction table has no rows")
    return RECOMMENDED_HEAD if RECOMMENDED_HEAD in heads else heads[0]


def output_table(table: pd.DataFrame, *, all_heads: bool = False,
                 columns: Sequence[str] = OUTPUT_COLUMNS) -> pd.DataFrame:
    """What ``brainage predict`` and the BIDS App write: a view of a prediction table.

    One row per scan with the recommended head (:func:`recommended_head`; why:
    :data:`RECOMMENDED_HEAD_REASON`), or one per scan and head with ``all_heads``; the field's
    column names (:data:`brainage._utils.columns.OUTPUT_NAMES`: ``brain_age`` for
    ``predicted`` ...); values rounded to what they carry
    (:data:`brainage._utils.columns.COLUMN_DECIMALS`: years to 0.1). ``docs/outputs.md``
    describes every column and its brainageR and BIDS names.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`predict_scans` (columns :data:`PREDICTION_COLUMNS`, or a superset).
    all_heads : bool, default=False
        Keep every head's rows.
    columns : sequence of str, default=OUTPUT_COLUMNS
        The output columns, in order (the BIDS App adds its derivatives').

    Returns
    -------
    pandas.DataFrame
        A new table; ``table`` is not changed.
    """
    if not isinstance(all_heads, bool):
        raise TypeError(f"all_heads must be a bool, got {all_heads!r}")
    missing = [c for c in ("model", *OUTPUT_NAMES) if c not in table.columns]
    if missing:
        raise ValueError(f"not a prediction table: it lacks the column(s) {missing}")
    if not all_heads and len(table):
        table = table[table["model"] == recommended_head(dict.fromkeys(table["model"]))]
    out = table.rename(columns=OUTPUT_NAMES).reindex(columns=list(columns))
    for column, decimals in COLUMN_DECIMALS.items():
        if column in out.columns:
            out[column] = pd.to_numeric(out[column]).round(decimals)
    return out.reset_index(drop=True)


def _ordered(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The rows of :func:`iter_predictions`' tables head by head (the model folder's order),
    the scans of each head in input order."""
    table = pd.concat(frames)
    heads = {head: k for k, head in enumerate(dict.fromkeys(table["model"]))}
    order = np.lexsort((table.index.to_numpy(), table["model"].map(heads).to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def iter_predictions(paths: Sequence[str | os.PathLike],
                     model_folder: str | os.PathLike | ModelFolder, *,
                     ages: Sequence[float | None] | None = None, space: str = "auto",
                     skull_stripped: bool = False,
                     saliency_dir: str | os.PathLike | None = None,
                     cache: PreprocessCache | str | os.PathLike | None = None, n_jobs: int = 1,
                     device: str = "cpu", scheduler: Any = None,
                     allow_unverified: bool = False, accept_registration: bool = False,
                     qc_dir: str | os.PathLike | None = None,
                     site_calibration: str | os.PathLike | Sequence[str | os.PathLike] | None
                     = None,
                     features_out: dict[str, dict[int, np.ndarray]] | None = None
                     ) -> Iterator[pd.DataFrame]:
    """:func:`predict_scans`, one table per group of scans as soon as they are predicted.

    The scans are preprocessed and predicted one at a time (``n_jobs=1``), or ``4 * n_jobs``
    at a time (a worker pool per group; on a Dask ``scheduler``, 4 per worker thread, the
    cluster opened once for the whole run), so that a caller can save what finished before an
    interrupt (``brainage predict`` rewrites its CSV after each group). Takes the arguments of
    :func:`predict_scans`; the arguments are checked and the model folder loaded on the first
    ``next()``. ``features_out``, when given, is filled with each head's feature statistics by
    scan index (for :func:`brainage.inference.trust.batch_verdict`).

    Yields
    ------
    pandas.DataFrame
        The rows of one group (every head), columns :data:`PREDICTION_COLUMNS`, indexed by the
        scans' positions in :func:`collect_scans` order.
    """
    _check_options(space, skull_stripped, n_jobs)
    check_scheduler(scheduler)
    scans = collect_scans(paths, ages)  # argument errors first, before the heads are loaded
    folder = (model_folder if isinstance(model_folder, ModelFolder)
              else load_model_folder(model_folder, device=device,
                                     allow_unverified=allow_unverified))
    if saliency_dir is not None and folder.ig_reference is None:
        raise ModelFolderError(f"model folder {folder.root} has no {IG_REFERENCE_FILE} (the "
                               f"integrated-gradients reference, written by the training notebook "
                               f"since issue 27): rerun notebook 02, or predict without saliency "
                               f"maps")
    site = None
    if site_calibration is not None:  # each scan's: by its site in participants.tsv
        site = calibrations_by_scan(scans["path"].tolist(),
                                    load_site_calibrations(site_calibration, folder))
    cache = cache if isinstance(cache, PreprocessCache) else PreprocessCache(
        default_cache_dir() if cache is None else cache)
    with dask_client(scheduler) as client:
        yield from _groups(scans, folder, space, skull_stripped, saliency_dir, cache, n_jobs,
                           client, _RegistrationQC(accept_registration, qc_dir), site,
                           features_out)


@dataclass(frozen=True)
class _RegistrationQC:
    """What to do with a native scan that fails the registration QC: predict it anyway
    (``accept``), and where its QC picture goes (``folder``, none if None)."""

    accept: bool = False
    folder: str | os.PathLike | None = None

    def draw(self, flagged: Mapping[int, nib.Nifti1Image], scores: Mapping[int, float],
             names: Sequence[str]) -> None:
        """The QC picture of each flagged scan: ``folder/<participant>[_<session>]_qc.png``."""
        if self.folder is None or not flagged:
            return
        from brainage.imaging.registration import registration_qc_text

        for i, img in flagged.items():
            path = Path(self.folder) / f"{names[i]}_qc.png"
            save_registration_qc(path, img, f"{names[i]}: {registration_qc_text(scores[i])}",
                                 flagged=True)
            logger.warning("registration QC picture of %s: %s", names[i], path)


def _groups(scans: pd.DataFrame, folder: ModelFolder, space: str, skull_stripped: bool,
            saliency_dir: str | os.PathLike | None, cache: PreprocessCache, n_jobs: int,
            client: Any, qc: _RegistrationQC = _RegistrationQC(),
            site: Any = None, features_out: dict[str, dict[int, np.ndarray]] | None = None
            ) -> Iterator[pd.DataFrame]:
    """The tables of :func:`iter_predictions`, group by group (``client``: a Dask client)."""
    files = scans["path"].tolist()
    saliency = None if saliency_dir is None else Path(saliency_dir)
    workers = n_jobs if client is None else worker_count(client)
    step = 1 if workers == 1 and client is None else _SCANS_PER_JOB * workers
    domain = trust.DomainCheck(folder.card)  # warns once: simulated training, real scans
    # one bar for the run (its groups' preprocessing draws none), rewritten in place
    with progress_bar(len(files), "predict", "scan") as bar:
        for start in range(0, len(files), step):
            index = range(start, min(start + step, len(files)))
            frame = _group(scans, folder, index, space, skull_stripped, saliency, cache,
                           n_jobs, client, qc, site, features_out, domain)
            bar.update(len(index))
            logger.debug("%d of %d scan(s) done", index.stop, len(files))
            yield frame


def _group(scans: pd.DataFrame, folder: ModelFolder, index: range, space: str,
           skull_stripped: bool, saliency: Path | None, cache: PreprocessCache, n_jobs: int,
           client: Any, qc: _RegistrationQC, site: Any,
           features_out: dict[str, dict[int, np.ndarray]] | None,
           domain: trust.DomainCheck) -> pd.DataFrame:
    """The rows (every head) of the scans ``index``: preprocessed, predicted, QC drawn."""
    files, names = scans["path"].tolist(), _output_names(scans)
    prepared = _preprocess(files, index, folder, space, skull_stripped, cache, n_jobs,
                           client, qc.accept)
    qc.draw(prepared.flagged, prepared.scores, names)
    domain.check({files[i]: prepared.spaces[i] for i in prepared.images})
    ages_by_head, maps, features = _infer(folder, prepared.images, names, saliency)
    if features_out is not None:  # the batch shift test's input (predict_to_csv)
        for head, found in features.items():
            features_out.setdefault(head, {}).update(found)
    return pd.concat([_head_rows(head, folder, scans, index, ages_by_head[head], prepared,
                                 maps[head], features[head], site, domain)
                      for head in folder.models])


def predict_scans(paths: Sequence[str | os.PathLike], model_folder: str | os.PathLike | ModelFolder,
                  *, ages: Sequence[float | None] | None = None, space: str = "auto",
                  skull_stripped: bool = False, saliency_dir: str | os.PathLike | None = None,
                  cache: PreprocessCache | str | os.PathLike | None = None, n_jobs: int = 1,
                  device: str = "cpu", scheduler: Any = None, allow_unverified: bool = False,
                  accept_registration: bool = False,
                  qc_dir: str | os.PathLike | None = None,
                  site_calibration: str | os.PathLike | Sequence[str | os.PathLike] | None
                  = None) -> pd.DataFrame:
    """Predict the brain age of scans with every head of a model folder.

    Parameters
    ----------
    paths : sequence of str or PathLike
        NIfTI scans and/or BIDS folders (see :func:`collect_scans`).
    model_folder : str, PathLike or ModelFolder
        ``runs/<profile>/models`` or one head's folder (:func:`load_model_folder`).
    ages : sequence of float or None, optional
        One chronological age per scan *file* of ``paths``; BIDS scans use participants.tsv.
    space : {"auto", "native", "MNI152NLin2009cSym"}, default="auto"
        Space of the scans; ``auto`` decides per scan from its grid (:func:`scan_space`).
    skull_stripped : bool, default=False
        The scans hold the brain only (their own outline is kept, no template-mask stripping).
    saliency_dir : str or PathLike, optional
        Write the integrated-gradients map (years, against the model folder's reference, a
        typical training scan; the study's method) of each scan and head to
        ``saliency_dir/<head>/<participant>[_<session>].nii.gz`` (model grid, MNI152 mm),
        replacing a map of that name (:func:`predict_to_csv`, ``brainage predict``, refuses a
        folder holding maps unless ``overwrite``).
    cache : PreprocessCache, str or PathLike, optional
        Preprocessed-volume cache (default: :func:`brainage._utils.default_cache_dir`).
    n_jobs : int, default=1
        Preprocessing worker processes (scans are processed ``4 * n_jobs`` at a time when
        ``n_jobs > 1``, one at a time otherwise; see :func:`iter_predictions`).
    device : str, default="cpu"
        Where the models run.
    scheduler : None, str or distributed.Client, default=None
        Preprocess on a Dask cluster (``"local:N"``, a scheduler address or file, or a Client;
        :func:`brainage._utils.scheduler.run_tasks`) instead of ``n_jobs`` local processes;
        the models still run here. The table is the same as a local run's.
    allow_unverified : bool, default=False
        Accept a head whose card records no checkpoint checksum, with a warning
        (:func:`load_model_folder`).
    accept_registration : bool, default=False
        Predict native scans whose registration fails the QC too (a warning names each): for
        scans whose QC picture a user looked at and found right.
    qc_dir : str or PathLike, optional
        Draw the registration-QC picture (the registered scan under the template's outline) of
        each native scan that fails the QC to ``qc_dir/<participant>[_<session>]_qc.png``.
    site_calibration : str, PathLike or sequence of them, optional
        Site calibration files (``brainage calibrate``) and/or folders of them (one per site,
        :func:`brainage.inference.calibrate.load_site_calibrations`; refused for another
        checkpoint). Each scan uses the calibration of its site in its BIDS dataset's
        participants.tsv (``site``), or the only one given when its site is unknown
        (:func:`brainage.inference.calibrate.calibrations_by_scan`): its corrected columns
        and intervals are that site's (``bias_correction`` ``site``, ``calibration``
        ``site:<name>``); a scan without one, and every scan without this option, has the
        training calibration's (``calibration`` ``training``). Its intervals hold for scans
        exchangeable with its calibration scans (same site, healthy, in their age range).

    Returns
    -------
    pandas.DataFrame
        One row per scan and head, columns :data:`PREDICTION_COLUMNS`: ``gap`` is predicted
        minus chronological age, ``corrected_*`` apply the head's stored age-bias correction
        (NaN without an age or a correction; ``bias_correction`` says which),
        ``registration_misfit_mm`` is the registration QC figure in mm
        (:func:`brainage.imaging.registration.outline_misfit`, lower is better), ``domain``
        the scan's domain verdict (``ok``, ``sim2real``, ``ood``; empty if it failed),
        ``error`` names the file and the problem of a failed scan (its
        predictions are NaN): among them a native scan whose registration failed the QC
        (misfit above :data:`brainage.imaging.registration.MISFIT_THRESHOLD_MM`; its figure is
        still reported) unless ``accept_registration``.
        The trust columns (:data:`brainage._utils.TRUST_VALUES`) come from the head's
        ``conformal.json`` and ``ood.npz`` and the card's training domain (NaN or empty where
        absent): ``age_lower``/``age_upper`` bound the age around ``predicted`` at
        ``interval_level``, ``corrected_gap_lower``/``corrected_gap_upper`` the corrected gap,
        ``ood`` is True when ``ood_score`` exceeds 1. A model trained on simulated data warns
        (:class:`brainage.inference.trust.DomainWarning`) once when it meets real scans.

    References
    ----------
    .. [1] de Lange, A.-M. G., Cole, J. H. (2020). Commentary: Correction procedures in
       brain-age prediction. NeuroImage: Clinical 26, 102229.
    .. [2] Selvaraju R. R. et al. (2017). Grad-CAM: visual explanations from deep networks via
       gradient-based localization. ICCV, 618-626.
    """
    table = _ordered(list(iter_predictions(
        paths, model_folder, ages=ages, space=space, skull_stripped=skull_stripped,
        saliency_dir=saliency_dir, cache=cache, n_jobs=n_jobs, device=device,
        scheduler=scheduler, allow_unverified=allow_unverified,
        accept_registration=accept_registration, qc_dir=qc_dir,
        site_calibration=site_calibration)))
    failed = table.loc[table["error"] != "", "path"].nunique()
    logger.info("predicted %d of %d scans with heads %s", table["path"].nunique() - failed,
                table["path"].nunique(), list(dict.fromkeys(table["model"])))
    return table


# --- command line ---------------------------------------------------------------------------


def _check_out(out: Path, overwrite: bool) -> Path:
    """Refuse, before any work, an output path the table cannot be written to."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as "
                         f"{out / 'brainage_predictions.csv'}")
    if os.path.lexists(out):
        if not out.is_file():
            raise ValueError(f"--out {out} exists and is not a regular file")
        if not overwrite:
            raise ValueError(f"--out {out} exists; pass --overwrite to replace it")
    folder = out.parent
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {existing} is not writable")
    try:  # what access() cannot know (a read-only or pseudo file system such as /sys)
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write a file in {folder} "
                         f"({err.strerror or err})") from err
    return out


def _check_saliency(saliency_dir: str | os.PathLike | None, overwrite: bool) -> None:
    """Refuse, before any work, a ``--saliency`` folder that is a file, or that holds maps of
    an earlier run (``<head>/*.nii.gz``) without ``overwrite``: they would be replaced."""
    if saliency_dir is None:
        return
    folder = Path(saliency_dir)
    if os.path.lexists(folder) and not folder.is_dir():
        raise ValueError(f"--saliency {folder} exists and is not a folder")
    if overwrite or not folder.is_dir():
        return
    maps = sorted(folder.glob("*/*.nii.gz"))
    if maps:
        raise ValueError(f"--saliency {folder} holds {len(maps)} saliency map(s) already "
                         f"(e.g. {maps[0]}); pass --overwrite to replace them, or give another "
                         f"folder")


def _write_table(table: pd.DataFrame, out: Path) -> None:
    """Write the CSV atomically: a temporary file in the same folder, then ``os.replace``."""
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the scans that finished are written."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Meanwhile, SIGTERM raises :class:`_Terminated` (only the main thread can set it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise _Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class CsvRun:
    """What :func:`predict_to_csv` wrote.

    Attributes
    ----------
    out : Path
        The CSV.
    table : pandas.DataFrame or None
        The rows of every head at full precision, columns :data:`PREDICTION_COLUMNS` (None if
        no scan finished); the CSV holds their :func:`output_table`.
    interrupted : str or None
        ``"SIGINT"`` or ``"SIGTERM"`` if the run was interrupted (the scans that finished are in
        ``out``), else None.
    batch : dict or None
        The batch shift verdict (:func:`brainage.inference.trust.batch_verdict`) when at
        least :data:`brainage.inference.trust.MIN_BATCH` scans were predicted and a head has
        an OOD reference; else None.
    batch_file : Path or None
        Where it was written (:func:`batch_file`), None if not.
    """

    out: Path
    table: pd.DataFrame | None
    interrupted: str | None
    batch: dict[str, Any] | None = None
    batch_file: Path | None = None
    #: What the CSV holds (:func:`output_table`), None if no scan finished.
    output: pd.DataFrame | None = None


def predict_to_csv(inputs: Sequence[str | os.PathLike],
                   model_folder: str | os.PathLike | ModelFolder, out: str | os.PathLike, *,
                   overwrite: bool = False, all_heads: bool = False, **options: Any) -> CsvRun:
    """:func:`iter_predictions` into a CSV that holds every finished scan at any moment.

    The output path is checked before any work (a folder, a file in its path, not writable,
    or existing without ``overwrite`` is refused with ``ValueError``), and so is the
    ``saliency_dir`` option (a file, or a folder holding maps already without ``overwrite``);
    the CSV is rewritten atomically after each group of scans. Ctrl-C and SIGTERM stop the run
    after writing the scans that finished. ``options`` are those of :func:`iter_predictions`.
    When at least :data:`brainage.inference.trust.MIN_BATCH` scans were predicted, each head
    with an OOD reference tests the batch against its training scans
    (:func:`brainage.inference.trust.batch_verdict`) and the verdict is written beside ``out``
    (:func:`batch_file`; refused like ``out`` if it exists without ``overwrite``).

    The CSV holds :func:`output_table` of the rows: one per scan with the recommended head,
    or one per scan and head with ``all_heads``; ``CsvRun.table`` has every head's rows.
    """
    if not isinstance(all_heads, bool):
        raise TypeError(f"all_heads (--all-heads) must be a bool, got {all_heads!r}")
    out = _check_out(Path(out), overwrite)
    _check_saliency(options.get("saliency_dir"), overwrite)
    sidecar = batch_file(out)
    if os.path.lexists(sidecar) and not overwrite:
        raise ValueError(f"{sidecar} (the batch shift verdict of --out) exists; pass "
                         f"--overwrite to replace it")
    collect_scans(inputs, options.get("ages"))  # argument errors before the heads are loaded
    folder = (model_folder if isinstance(model_folder, ModelFolder) else load_model_folder(
        model_folder, device=options.get("device", "cpu"),
        allow_unverified=options.get("allow_unverified", False)))
    features: dict[str, dict[int, np.ndarray]] = {}
    options["features_out"] = features
    frames: list[pd.DataFrame] = []
    interrupted: KeyboardInterrupt | None = None
    with _sigterm_as_interrupt():
        try:
            for frame in iter_predictions(inputs, folder, **options):
                frames.append(frame)
                _write_table(output_table(_ordered(frames), all_heads=all_heads), out)
        except KeyboardInterrupt as err:
            interrupted = err
            if frames:  # the interrupt may have come during the last write
                _write_table(output_table(_ordered(frames), all_heads=all_heads), out)
    signal_name = None if interrupted is None else (
        "SIGTERM" if isinstance(interrupted, _Terminated) else "SIGINT")
    table = _ordered(frames) if frames else None
    verdict = None
    if table is not None and interrupted is None:
        verdict = trust.batch_verdict(folder.trust, features, pd.concat(frames))
        if verdict is not None:
            atomic_write(sidecar, lambda tmp: Path(tmp).write_text(
                json.dumps(verdict, indent=1), encoding="utf-8"))
            logger.info("batch shift verdict: %s", sidecar)
    written = None if table is None else output_table(table, all_heads=all_heads)
    return CsvRun(out, table, signal_name, verdict, sidecar if verdict is not None else None,
                  written)


def batch_file(out: str | os.PathLike) -> Path:
    """The batch shift verdict's JSON sidecar of a prediction table: ``<stem>_batch.json``."""
    out = Path(out)
    return out.with_name(f"{out.name.removesuffix('.csv')}_batch.json")
