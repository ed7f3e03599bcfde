"""The BIDS App: ``brainage bids BIDS_DIR OUTPUT_DIR participant|group``.

The BIDS-Apps convention (Gorgolewski et al. 2017): a raw BIDS dataset in, a BIDS derivative
dataset out, a *participant* level that can run one participant per job (a SLURM array task
each) into one shared output folder, and a *group* level that collects what they wrote.

Participant level (:func:`run_participant_level`) writes, for each T1w scan of the chosen
participants (and sessions), under ``OUTPUT_DIR/sub-<label>/[ses-<label>/]anat/``, named after
the source scan (``<source>`` is its name without ``_T1w.nii[.gz]``, e.g. ``sub-01_ses-1``)::

    <source>_space-MNI152NLin2009cSym_desc-preproc_T1w.nii.gz   the scan on the model grid
    <source>_space-MNI152NLin2009cSym_desc-preproc_T1w.json     its sidecar (SkullStripped ...)
    <source>_space-MNI152NLin2009cSym_desc-brain_mask.nii.gz    the brain mask (and .json)
    <source>_desc-brainage_T1w.tsv                              one row (the recommended head;
                                                                one per head: all_heads)
    <source>_desc-brainage_T1w.json                             every column described
    <source>_space-MNI152NLin2009cSym_desc-ig<Head>_T1w.nii.gz  (--saliency) integrated gradients
    <source>_space-MNI152NLin2009cSym_desc-qc_T1w.png           registration QC (unless --no-qc)

and, at the top of ``OUTPUT_DIR``, ``dataset_description.json`` (``DatasetType: derivative``,
``GeneratedBy``), ``brainage_settings.json`` (the model's checksums and the preprocessing: a
second run with another model or other settings into the same folder is refused, so that the
derivative stays one coherent dataset) and ``.bidsignore`` (the files BIDS does not define).
The table carries :data:`brainage._utils.columns.BIDS_OUTPUT_COLUMNS`: the columns of
``brainage predict``'s CSV (``OUTPUT_COLUMNS``: the field's names, rounded, with the ``domain``
verdict; ``path`` and ``saliency`` as BIDS URIs) and ``preproc`` and ``brain_mask``; the same
registry describes each, and ``docs/outputs.md`` maps them onto brainageR's names.

A scan whose table exists (with its other outputs) is done: running it again is a no-op. A scan
that fails writes ``OUTPUT_DIR/logs/<source>_error.json`` and the others go on (the exit status
is then 1); a later successful run removes the log. Every file is written to a temporary name
and renamed, so parallel jobs, a killed job or a SLURM time limit never leave a partial file
under a final name. Nothing is ever written inside ``BIDS_DIR``.

Group level (:func:`run_group_level`) reads every participant table into
``OUTPUT_DIR/group_desc-brainage_T1w.tsv`` (with the raw dataset's ``participants.tsv``
columns: group, sex, site ...; and its JSON sidecar) and draws
``group_desc-brainage_T1w.png``: brain age against chronological age, and the gap by group,
with the domain verdict in each panel's title (``sim2real`` scans drawn as crosses).
Given the model folder (``--model``), it also tests the batch against each head's training
scans (:func:`brainage.inference.trust.batch_verdict`: MMD of the encoder features the
participant level stored in ``<source>_desc-brainageFeatures_T1w.json``, and the mean gap of
the healthy controls) and writes ``group_desc-brainage_batch.json``.
A participant table that cannot be read (not UTF-8, empty, not a table, columns the
participant level never writes) is left out and named; the others are collected, and
``brainage bids ... group`` then exits 1 (2 when no table can be read).

References
----------
.. [1] Gorgolewski K. J. et al. (2017). BIDS apps: improving ease of use, accessibility, and
   reproducibility of neuroimaging data analysis methods. PLoS Comput Biol 13(3), e1005209.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainage._utils import (
    VERSION,
    atomic_write,
    bids_label,
    check_scheduler,
    default_cache_dir,
    sha256_file,
)
from brainage._utils.columns import (
    BIDS_COLUMNS,
    BIDS_OUTPUT_COLUMNS,
    COLUMN_DESCRIPTIONS,
    OUTPUT_NAMES,
    PREDICTION_COLUMNS,
    describe_columns,
)
from brainage.exceptions import BrainageError
from brainage.imaging.preprocess import (
    PREPROCESS_VERSION,
    PreprocessCache,
    PreprocessParams,
    resample_to_grid,
)
from brainage.inference.bids_input import apply_bids_filter
from brainage.inference.model_folder import (
    IG_REFERENCE_FILE,
    MODEL_CARD_FILE,
    ModelFolder,
    load_model_folder,
)
from brainage.inference.predict import (
    collect_scans,
    iter_predictions,
    output_table,
    recommended_head,
)
from brainage.inference.qc_figures import save_registration_qc
from brainage.inference.trust import MIN_BATCH, batch_verdict, interval_conditions

logger = logging.getLogger(__name__)

__all__ = [
    "BidsAppError",
    "GroupReport",
    "ParticipantOptions",
    "ParticipantReport",
    "ScanOutputs",
    "check_dirs",
    "domain_verdict",
    "run_group_level",
    "run_participant_level",
    "select_scans",
]

#: The space entity of the outputs: the model grid is nilearn's MNI152 2009c template grid.
SPACE = "MNI152NLin2009cSym"
BIDS_VERSION = "1.9.0"
SETTINGS_FILE = "brainage_settings.json"
#: 2: the output tables of issue 30 (brain_age ..., one row per scan unless all heads).
SETTINGS_FORMAT = "brainage-bids/2"
LOG_DIR = "logs"
GROUP_STEM = "group_desc-brainage_T1w"
#: The group level's batch shift verdict (with ``--model``).
BATCH_FILE = "group_desc-brainage_batch.json"
#: Format tag of a scan's feature statistics (``<source>_desc-brainageFeatures_T1w.json``).
FEATURES_FORMAT = "brainage-scan-features/1"
#: Labels of participants.tsv's ``group`` whose gaps the batch's gap test reads.
_CONTROLS = ("HC", "CN", "control", "healthy")
#: Columns of ``<source>_desc-brainage_T1w.tsv``: brainage predict's, then the derivatives'.
#: Files of the output that BIDS does not define (``.bidsignore``, gitignore syntax).
_BIDSIGNORE = (SETTINGS_FILE, f"{LOG_DIR}/", f"{GROUP_STEM}.*", "*_desc-qc_T1w.png",
               "*_desc-brainage_T1w.*", "*_desc-ig*_T1w.nii.gz", BATCH_FILE,
               "*_desc-brainageFeatures_T1w.json")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_T1W_SUFFIXES = ("_T1w.nii.gz", "_T1w.nii")


class BidsAppError(BrainageError, ValueError):
    """The BIDS App cannot run as asked: a folder, a label or earlier outputs are wrong."""


# --- folders and labels ---------------------------------------------------------------------


def check_dirs(bids_dir: str | os.PathLike, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``BIDS_DIR`` and ``OUTPUT_DIR`` as absolute paths, checked.

    Raises
    ------
    BidsAppError
        ``BIDS_DIR`` is not a folder; ``OUTPUT_DIR`` is a file, or is ``BIDS_DIR`` or lies
        inside it (symbolic links resolved): a BIDS App never writes into the raw dataset.
    """
    bids, out = Path(bids_dir).absolute(), Path(output_dir).absolute()
    if not bids.is_dir():
        raise BidsAppError(f"BIDS_DIR {bids_dir} is not a folder")
    if out.resolve().is_relative_to(bids.resolve()):
        raise BidsAppError(f"OUTPUT_DIR {output_dir} is BIDS_DIR {bids_dir} or lies inside it: "
                           f"brainage never writes into the raw dataset; choose a folder "
                           f"outside it (e.g. {bids.parent / 'derivatives' / 'brainage'})")
    if out.exists() and not out.is_dir():
        raise BidsAppError(f"OUTPUT_DIR {output_dir} exists and is not a folder")
    if not (bids / "dataset_description.json").is_file():
        logger.warning("%s has no dataset_description.json: is it a BIDS dataset?", bids)
    return bids, out


def _labels(values: Iterable[str] | None, prefix: str, what: str) -> list[str] | None:
    """Labels without their prefix (``sub-01`` and ``01`` are ``01``), checked."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    labels = []
    for value in values:
        label = bids_label(value) if prefix == "sub-" else str(value).strip().removeprefix(
            prefix)
        if not _LABEL.match(label):
            raise BidsAppError(f"{what} label {value!r} is not a BIDS label (letters and "
                               f"digits only, without '{prefix}')")
        labels.append(label)
    return list(dict.fromkeys(labels))


def _unknown(given: Sequence[str], known: Sequence[str], what: str, where: Path) -> str:
    """The message for labels that name nothing: each with its closest known ones."""
    parts = []
    for label in given:
        close = difflib.get_close_matches(label, known, n=3, cutoff=0.5)
        parts.append(f"{label!r}" + (f" (close: {', '.join(close)})" if close else ""))
    listed = ", ".join(known[:10]) + (f", ... ({len(known)} in all)" if len(known) > 10 else "")
    return (f"{what} label(s) {'; '.join(parts)} not found in {where}; it holds "
            f"{listed or 'none'}")


def select_scans(bids_dir: str | os.PathLike, participant_labels: Iterable[str] | None = None,
                 session_labels: Iterable[str] | None = None) -> pd.DataFrame:
    """The T1w scans of a BIDS folder for the given participants and sessions, with ages.

    Parameters
    ----------
    bids_dir : str or PathLike
        A BIDS dataset (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``, ages from participants.tsv).
    participant_labels, session_labels : iterable of str, optional
        Labels with or without ``sub-`` / ``ses-`` (default: all).

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id``, ``session``, ``path``, ``age`` (see
        :func:`brainage.inference.predict.collect_scans`), sorted by path.

    Raises
    ------
    BidsAppError
        A label that is not a BIDS label or names no participant (session) of the folder: the
        message lists the closest ones.
    """
    bids_dir = Path(bids_dir).absolute()
    subjects = _labels(participant_labels, "sub-", "participant")
    sessions = _labels(session_labels, "ses-", "session")
    try:
        scans = collect_scans([bids_dir])
    except FileNotFoundError as err:
        raise BidsAppError(str(err)) from err
    known = sorted({bids_label(p) for p in scans["participant_id"]})
    if subjects is not None:
        missing = [s for s in subjects if s not in known]
        if missing:
            raise BidsAppError(_unknown(missing, known, "participant", bids_dir))
        scans = scans[scans["participant_id"].isin([f"sub-{s}" for s in subjects])]
    if sessions is not None:
        held = sorted({s.removeprefix("ses-") for s in scans["session"] if s})
        missing = [s for s in sessions if s not in held]
        if missing:
            raise BidsAppError(_unknown(missing, held, "session", bids_dir))
        scans = scans[scans["session"].isin([f"ses-{s}" for s in sessions])]
    return scans.sort_values("path").reset_index(drop=True)


# --- the outputs of one scan ----------------------------------------------------------------


@dataclass(frozen=True)
class ScanOutputs:
    """Where the outputs of one source scan go (see the module docstring)."""

    folder: Path
    prefix: str

    @classmethod
    def of(cls, bids_dir: Path, output_dir: Path, source: str | os.PathLike) -> ScanOutputs:
        """The outputs of ``source``, a scan of ``bids_dir``, under ``output_dir``."""
        relative = Path(source).absolute().relative_to(bids_dir)
        name = relative.name
        prefix = next((name.removesuffix(s) for s in _T1W_SUFFIXES if name.endswith(s)),
                      name.split(".")[0])
        return cls(output_dir / relative.parent, prefix)

    def _file(self, name: str) -> Path:
        return self.folder / f"{self.prefix}_{name}"

    @property
    def preproc(self) -> Path:
        return self._file(f"space-{SPACE}_desc-preproc_T1w.nii.gz")

    @property
    def mask(self) -> Path:
        return self._file(f"space-{SPACE}_desc-brain_mask.nii.gz")

    @property
    def table(self) -> Path:
        return self._file("desc-brainage_T1w.tsv")

    @property
    def sidecar(self) -> Path:
        return self._file("desc-brainage_T1w.json")

    @property
    def features(self) -> Path:
        """Each head's feature statistics of the scan (the group level's batch test)."""
        return self._file("desc-brainageFeatures_T1w.json")

    @property
    def qc(self) -> Path:
        return self._file(f"space-{SPACE}_desc-qc_T1w.png")

    def saliency(self, head: str) -> Path:
        """The integrated-gradients map of one head (``desc-ig<Head>``: letters and digits only)."""
        label = re.sub(r"[^A-Za-z0-9]", "", head)
        return self._file(f"space-{SPACE}_desc-ig{label[:1].upper()}{label[1:]}_T1w.nii.gz")

    def log(self, output_dir: Path) -> Path:
        """The error log of a failed scan."""
        return output_dir / LOG_DIR / f"{self.prefix}_error.json"

    def done(self, heads: Iterable[str], *, saliency: bool, qc: bool) -> bool:
        """Whether every output asked for exists (the table is written last)."""
        wanted = [self.preproc, self.mask, self.sidecar, self.table,
                  *([self.qc] if qc else []),
                  *([self.saliency(h) for h in heads] if saliency else [])]
        return all(path.is_file() for path in wanted)


def _uri(path: Path, root: Path, dataset: str = "") -> str:
    """A BIDS URI: ``bids:<dataset>:<path relative to the dataset>``."""
    return f"bids:{dataset}:{path.relative_to(root).as_posix()}"


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n",
                                                  encoding="utf-8"))


# --- the output folder ----------------------------------------------------------------------


def _settings(folder: ModelFolder, space: str, skull_stripped: bool,
              all_heads: bool = False) -> dict[str, Any]:
    """What makes the outputs of two runs comparable: the model, the preprocessing and the
    heads the tables report."""
    return {
        "format": SETTINGS_FORMAT,
        "model_card_sha256": sha256_file(folder.root / MODEL_CARD_FILE),
        "heads": {head: folder.card["heads"][head].get("sha256") for head in folder.models},
        "profile": folder.card.get("profile"),
        "preprocess_version": PREPROCESS_VERSION,
        "grid_mm": folder.preprocess.grid_mm,
        "crop_to_brain": folder.preprocess.crop_to_brain,
        "grid_shape": list(folder.grid_shape),
        "space": space,
        "skull_stripped": skull_stripped,
        "reported_heads": (list(folder.models) if all_heads
                           else [recommended_head(folder.models)]),
    }


def _dataset_description(bids_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    try:
        raw = json.loads((bids_dir / "dataset_description.json").read_text(encoding="utf-8"))
        name = raw.get("Name") if isinstance(raw, dict) else None
    except (OSError, ValueError):
        name = None
    heads = ", ".join(settings["heads"])
    return {
        "Name": f"brainage: brain age of {name or bids_dir.name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "brainage",
            "Version": VERSION,
            "Description": (f"T1w scans preprocessed onto the model's MNI152 grid "
                            f"({settings['grid_mm']:g} mm) and their brain age predicted by "
                            f"the heads {heads} of a model trained with profile "
                            f"{settings['profile']!r} (model.json SHA-256 "
                            f"{settings['model_card_sha256']})."),
        }],
        "SourceDatasets": [{"URL": bids_dir.as_uri()}],
        "DatasetLinks": {"raw": bids_dir.as_uri()},
    }


def _prepare_output(output_dir: Path, bids_dir: Path, settings: dict[str, Any]) -> None:
    """Create ``output_dir`` with its top-level files; refuse one made with other settings.

    Parallel jobs write the same bytes, each file atomically, so their order does not matter.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / SETTINGS_FILE
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BidsAppError(f"{path} cannot be read ({err}): is OUTPUT_DIR {output_dir} a "
                               f"brainage output?") from err
        differ = sorted(k for k in {*earlier, *settings} if earlier.get(k) != settings.get(k))
        if differ:
            raise BidsAppError(
                f"OUTPUT_DIR {output_dir} holds results made with other settings ({SETTINGS_FILE}"
                f" differs in {', '.join(differ)}: another model, space or preprocessing); "
                f"write into a new output folder")
    else:
        _write_json(path, settings)
    description = _dataset_description(bids_dir, settings)
    target = output_dir / "dataset_description.json"
    if not target.is_file() or _read_json(target) != description:
        _write_json(target, description)
    ignore = "\n".join(_BIDSIGNORE) + "\n"
    target = output_dir / ".bidsignore"
    if not target.is_file() or target.read_text(encoding="utf-8") != ignore:
        atomic_write(target, lambda tmp: tmp.write_text(ignore, encoding="utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- participant level ----------------------------------------------------------------------


@dataclass(frozen=True)
class ParticipantOptions:
    """Settings of :func:`run_participant_level` (the command's options).

    Parameters
    ----------
    participant_labels, session_labels : tuple of str or None, default=None
        Which participants and sessions (labels with or without ``sub-`` / ``ses-``); all
        by default.
    space : {"auto", "native", "MNI152NLin2009cSym", "MNI152Lin"}, default="auto"
        Space of the scans (``auto``: read from each scan's grid).
    skull_stripped : bool, default=False
        The scans hold the brain only.
    saliency : bool, default=False
        Write an integrated-gradients map per scan and head (against the model's reference).
    qc : bool, default=True
        Draw a registration-QC image per scan, also for a scan refused by the registration QC
        (so that the user can judge it).
    accept_registration : bool, default=False
        Predict native scans whose registration fails the QC too (``--force``): for scans
        whose QC picture a user looked at and found right.
    cache : str, PathLike or None, default=None
        Preprocessing cache (default: :func:`brainage._utils.default_cache_dir`); never
        inside ``BIDS_DIR``.
    n_jobs : int, default=1
        Local preprocessing processes.
    scheduler : None, str or distributed.Client, default=None
        Preprocess on a Dask cluster instead (:func:`brainage._utils.scheduler.run_tasks`).
    device : str, default="cpu"
        Where the models run.
    site_calibration : str, PathLike, sequence of them or None, default=None
        Site calibration files of ``brainage calibrate`` or folders of them (refused for
        another checkpoint): each scan uses its site's (participants.tsv's ``site``; the only
        one given when unknown), the ``calibration`` column says which.
    all_heads : bool, default=False
        One row per head in each scan's table (default: the recommended head only; see
        :data:`brainage._utils.columns.RECOMMENDED_HEAD_REASON`).
    bids_filter : mapping or None, default=None
        T1w entity filters (:func:`brainage.inference.bids_input.read_bids_filter`, from
        ``--bids-filter-file``): only the scans that pass them (default: every T1w scan).
    """

    participant_labels: tuple[str, ...] | None = None
    session_labels: tuple[str, ...] | None = None
    space: str = "auto"
    skull_stripped: bool = False
    saliency: bool = False
    qc: bool = True
    accept_registration: bool = False
    cache: str | os.PathLike | None = None
    n_jobs: int = 1
    scheduler: Any = None
    device: str = "cpu"
    site_calibration: str | os.PathLike | Sequence[str | os.PathLike] | None = None
    all_heads: bool = False
    bids_filter: Mapping[str, list[str | None]] | None = None


@dataclass(frozen=True)
class ParticipantReport:
    """What :func:`run_participant_level` did: counts, and each failed scan's error."""

    output_dir: Path
    n_scans: int
    n_done_before: int
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_participant_level(bids_dir: str | os.PathLike, output_dir: str | os.PathLike,
                          model: str | os.PathLike | ModelFolder,
                          options: ParticipantOptions | None = None) -> ParticipantReport:
    """Brain age of the chosen participants' T1w scans as a BIDS derivative.

    Parameters
    ----------
    bids_dir : str or PathLike
        The raw BIDS dataset (read only).
    output_dir : str or PathLike
        The derivative dataset (created; shared by parallel jobs).
    model : str, PathLike or ModelFolder
        A model folder (:func:`brainage.inference.model_folder.load_model_folder`).
    options : ParticipantOptions, optional
        Labels, space, optional outputs, cache, workers, scheduler.

    Returns
    -------
    ParticipantReport
        ``failed`` maps each failed source scan to its error (also in
        ``OUTPUT_DIR/logs/<source>_error.json``); the other scans are written.

    Raises
    ------
    BidsAppError
        Before any work: bad folders, unknown labels, a cache inside ``BIDS_DIR``, an
        ``OUTPUT_DIR`` made with another model or other settings.
    """
    options = options or ParticipantOptions()
    check_scheduler(options.scheduler)
    bids, out = check_dirs(bids_dir, output_dir)
    cache = PreprocessCache(_check_cache(options.cache, bids))
    selected = select_scans(bids, options.participant_labels, options.session_labels)
    scans = apply_bids_filter(selected, options.bids_filter)
    if scans.empty and not selected.empty:
        raise BidsAppError(f"--bids-filter-file keeps none of the {len(selected)} T1w scan(s) "
                           f"selected in {bids} (filters: {dict(options.bids_filter or {})})")
    folder = model if isinstance(model, ModelFolder) else load_model_folder(
        model, device=options.device)
    if options.saliency and folder.ig_reference is None:  # refused before writing anything
        raise BidsAppError(f"--saliency: model folder {folder.root} has no {IG_REFERENCE_FILE} "
                           f"(the integrated-gradients reference, written by the training "
                           f"notebook since issue 27); rerun notebook 02, or omit --saliency")
    settings = _settings(folder, options.space, options.skull_stripped, options.all_heads)
    _prepare_output(out, bids, settings)
    outputs = [ScanOutputs.of(bids, out, p) for p in scans["path"]]
    todo = [i for i, o in enumerate(outputs)
            if not o.done(folder.models, saliency=options.saliency, qc=options.qc)]
    logger.info("%d scan(s) of %d participant(s): %d done already, %d to do", len(scans),
                scans["participant_id"].nunique(), len(scans) - len(todo), len(todo))
    report = ParticipantReport(out, len(scans), len(scans) - len(todo))
    if not todo:
        return report
    features: dict[str, dict[int, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".work-") as work:
        frames = iter_predictions(
            [scans.at[i, "path"] for i in todo], folder,
            ages=[scans.at[i, "age"] for i in todo], space=options.space,
            skull_stripped=options.skull_stripped,
            saliency_dir=work if options.saliency else None, cache=cache,
            n_jobs=options.n_jobs, device=options.device, scheduler=options.scheduler,
            accept_registration=options.accept_registration,
            site_calibration=options.site_calibration, features_out=features)
        for frame in frames:
            for k, rows in frame.groupby(level=0, sort=True):
                i = todo[int(k)]
                scan = scans.loc[i]
                found = {head: by_scan[int(k)] for head, by_scan in features.items()
                         if int(k) in by_scan}
                error = _finish_scan(scan, rows, outputs[i], folder, cache, bids, out, options,
                                     found)
                if error:
                    report.failed[scan["path"]] = error
                else:
                    report.written.append(outputs[i].table)
    return report


def _check_cache(cache: str | os.PathLike | None, bids_dir: Path) -> Path:
    root = Path(cache) if cache is not None else default_cache_dir()
    if root.absolute().resolve().is_relative_to(bids_dir.resolve()):
        raise BidsAppError(f"--cache {root} lies inside BIDS_DIR {bids_dir}: brainage never "
                           f"writes into the raw dataset; choose a cache folder outside it")
    return root


def _finish_scan(scan: pd.Series, rows: pd.DataFrame, out: ScanOutputs, folder: ModelFolder,
                 cache: PreprocessCache, bids_dir: Path, output_dir: Path,
                 options: ParticipantOptions,
                 features: Mapping[str, np.ndarray] | None = None) -> str | None:
    """Write one scan's outputs (its table last); on failure its error log. Returns the error."""
    log = out.log(output_dir)
    error = str(rows["error"].iloc[0])
    if not error:
        try:
            _write_scan(scan, rows, out, folder, cache, bids_dir, output_dir, options,
                        features)
        except Exception as err:  # one scan's outputs must not stop the others: report it
            error = f"{type(err).__name__}: writing the outputs of {scan['path']} failed: {err}"
    if not error:
        log.unlink(missing_ok=True)
        return None
    logger.error("%s", error)
    if options.qc:
        _refused_qc_image(scan, rows, out, folder, cache, options)
    log.parent.mkdir(parents=True, exist_ok=True)
    _write_json(log, {"participant_id": scan["participant_id"],
                      "session": scan["session"] or None,
                      "source": _uri(Path(scan["path"]).absolute(), bids_dir, "raw"),
                      "error": error})
    return error


def _write_scan(scan: pd.Series, rows: pd.DataFrame, out: ScanOutputs, folder: ModelFolder,
                cache: PreprocessCache, bids_dir: Path, output_dir: Path,
                options: ParticipantOptions,
                features: Mapping[str, np.ndarray] | None = None) -> None:
    """The derivative files of one predicted scan; the table last (it marks the scan done)."""
    from brainage.imaging.registration import registration_passes, registration_qc_text

    params = folder.params_for(str(rows["space"].iloc[0]), options.skull_stripped)
    source = _uri(Path(scan["path"]).absolute(), bids_dir, "raw")
    out.folder.mkdir(parents=True, exist_ok=True)
    cached = cache.path_for(scan["path"], params)
    atomic_write(out.preproc, lambda tmp: shutil.copyfile(cached, tmp))
    preproc = nib.load(out.preproc)
    atomic_write(out.mask, lambda tmp: nib.save(_brain_mask(preproc, params), tmp))
    _write_json(out.preproc.with_suffix("").with_suffix(".json"), {
        "Description": "The T1w scan on the model's MNI152 grid: "
                       + ("bias-corrected (N4), registered affinely to MNI152, "
                          if params.space == "native" else "resampled, ")
                       + "skull-stripped and divided by its mean inside the brain mask.",
        "SkullStripped": True, "Sources": [source],
        "brainage_preprocessing": {**asdict(params), "version": PREPROCESS_VERSION}})
    _write_json(out.mask.with_suffix("").with_suffix(".json"), {
        "Type": "Brain",
        "Description": ("the scan's own brain outline (it was skull-stripped)"
                        if params.skull_stripped else
                        "the MNI152 template's brain mask on the model grid"),
        "Sources": [source]})
    maps = {}
    if options.saliency:
        for row in rows.itertuples():
            maps[row.model] = out.saliency(row.model)
            os.replace(row.saliency, maps[row.model])  # written by save_map in the work folder
    if options.qc:
        score = float(rows["registration_misfit_mm"].iloc[0])
        _qc_image(out.qc, preproc, f"{out.prefix}: {registration_qc_text(score)}",
                  not registration_passes(score))
    if features:  # the group level's batch test reads them
        _write_json(out.features, {"format": FEATURES_FORMAT, "source": source,
                                   "heads": {head: np.asarray(v, dtype=float).tolist()
                                             for head, v in features.items()}})
    table = _bids_table(scan, rows, out, maps, source, output_dir, options.all_heads)
    _write_json(out.sidecar, describe_columns(table.columns))
    atomic_write(out.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a"))


def _bids_table(scan: pd.Series, rows: pd.DataFrame, out: ScanOutputs, maps: Mapping[str, Path],
                source: str, output_dir: Path, all_heads: bool = False) -> pd.DataFrame:
    """The rows of one scan as the derivative stores them: BIDS ids and URIs, n/a for none;
    the output view of :func:`brainage.inference.predict.output_table` (the recommended head,
    or every head with ``all_heads``)."""
    table = rows.reset_index(drop=True).reindex(columns=list(PREDICTION_COLUMNS))
    table["participant_id"] = scan["participant_id"]
    table["session"] = scan["session"] or np.nan
    table["path"] = source
    table["saliency"] = [_uri(maps[m], output_dir) if m in maps else np.nan
                         for m in table["model"]]
    table["error"] = np.nan
    table["preproc"] = _uri(out.preproc, output_dir)
    table["brain_mask"] = _uri(out.mask, output_dir)
    return output_table(table.reindex(columns=list(BIDS_COLUMNS)), all_heads=all_heads,
                        columns=BIDS_OUTPUT_COLUMNS)


@lru_cache(maxsize=4)
def _template_mask(grid_mm: float, crop_to_brain: bool) -> np.ndarray:
    """The template brain mask on a model grid, as preprocessing computes it (resampled
    linearly, then > 0.5)."""
    from brainage.imaging.registration import template_grid, template_images

    _, mask = template_images()
    as_float = nib.Nifti1Image(np.asarray(mask.dataobj, dtype=np.float32), mask.affine)
    return resample_to_grid(as_float, template_grid(grid_mm, crop_to_brain=crop_to_brain)) > 0.5


def _brain_mask(preproc: nib.Nifti1Image, params: PreprocessParams) -> nib.Nifti1Image:
    """The brain mask preprocessing used: the template's, or a skull-stripped scan's own
    foreground (exactly the non-zero voxels of the normalised scan)."""
    if params.skull_stripped:
        data = np.asarray(preproc.dataobj) > 0
    else:
        data = _template_mask(params.grid_mm, params.crop_to_brain)
    img = nib.Nifti1Image(data.astype(np.uint8), preproc.affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(preproc.affine, code="mni")
    img.set_qform(preproc.affine, code="mni")
    return img


def _qc_image(path: Path, preproc: nib.Nifti1Image, label: str, flagged: bool) -> None:
    """The registration-QC panel of notebook 01 for one scan, as a PNG."""
    save_registration_qc(path, preproc, label, flagged=flagged)


def _refused_qc_image(scan: pd.Series, rows: pd.DataFrame, out: ScanOutputs,
                      folder: ModelFolder, cache: PreprocessCache,
                      options: ParticipantOptions) -> None:
    """The QC picture of a scan refused after preprocessing (its registration failed the QC),
    drawn from its cached volume so that the user can judge it; nothing for a scan that was
    never preprocessed."""
    from brainage.imaging.registration import registration_qc_text

    score = float(rows["registration_misfit_mm"].iloc[0])
    space = str(rows["space"].iloc[0])
    if not np.isfinite(score):  # failed before (or without) a QC figure
        return
    try:
        cached = cache.path_for(scan["path"], folder.params_for(space, options.skull_stripped))
        if cached.is_file():
            _qc_image(out.qc, nib.load(cached),
                      f"{out.prefix}: REFUSED: {registration_qc_text(score)}", True)
    except Exception as err:  # the picture is a help; the scan's error is already reported
        logger.warning("no QC picture for %s: %s", scan["path"], err)


# --- group level ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupReport:
    """What :func:`run_group_level` wrote."""

    table: Path
    sidecar: Path
    figure: Path
    n_scans: int
    n_participants: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    #: Participant-level tables left out because they cannot be read: ``{"path", "error"}``.
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: The table's domain verdict (:func:`domain_verdict`), as the figure shows it.
    domain: str = ""
    #: Which calibrations the table's intervals came from and when they hold
    #: (:func:`brainage.inference.trust.interval_conditions`; "" without intervals).
    intervals: str = ""
    #: The batch shift verdict (:func:`brainage.inference.trust.batch_verdict`, with
    #: ``n_without_features``), None without a model folder or with too few scans.
    batch: dict[str, Any] | None = None
    #: Where it was written (``OUTPUT_DIR/group_desc-brainage_batch.json``), None if not.
    batch_file: Path | None = None


#: The most bytes of one participant-level table (a scan's table has a few rows).
_MAX_TABLE_BYTES = 10_000_000


def _read_participant_table(path: Path) -> pd.DataFrame:
    """One ``<source>_desc-brainage_T1w.tsv`` as the participant level wrote it, or a
    :class:`BidsAppError` naming the file and what is wrong with it."""
    try:
        size = path.stat().st_size
        if size > _MAX_TABLE_BYTES:
            raise OSError(f"{size} bytes, more than a participant table's few rows")
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"],
                            encoding="utf-8", dtype={"participant_id": str, "session": str,
                                                     "error": str, "saliency": str})
    except pd.errors.EmptyDataError:
        problem = "the file is empty"
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
    except (OSError, ValueError, pd.errors.ParserError) as err:
        problem = f"cannot be read as a tab-separated table ({' '.join(str(err).split())})"
    else:
        required = {"participant_id", "head", "brain_age"}
        unknown = [c for c in table.columns if c not in COLUMN_DESCRIPTIONS]
        problem = (f"lacks the column(s) {sorted(required - set(table.columns))} (a table "
                   f"of an earlier brainage has predicted, not brain_age)"
                   if not required <= set(table.columns) else
                   f"has column(s) {unknown[:5]} that the participant level never writes"
                   if unknown else "has no rows" if table.empty else None)
        if problem is None:
            return table
    raise BidsAppError(f"participant-level table {path}: {problem}; left out of the group "
                       f"table (run the participant level again for this scan)")


def _participant_tables(output_dir: Path, labels: list[str] | None) -> list[Path]:
    found = sorted([*output_dir.glob("sub-*/anat/*_desc-brainage_T1w.tsv"),
                    *output_dir.glob("sub-*/ses-*/anat/*_desc-brainage_T1w.tsv")])
    if labels is None:
        return found
    held = sorted({p.relative_to(output_dir).parts[0].removeprefix("sub-") for p in found})
    missing = [label for label in labels if label not in held]
    if missing:
        raise BidsAppError(_unknown(missing, held, "participant", output_dir)
                           + " (participant-level results)")
    return [p for p in found if p.relative_to(output_dir).parts[0] in {f"sub-{s}"
                                                                       for s in labels}]


def _read_participants(bids_dir: Path) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The raw dataset's participants.tsv (numbers where a column holds only numbers) and
    its participants.json descriptions; (None, {}) without a readable table."""
    tsv = bids_dir / "participants.tsv"
    if not tsv.is_file():
        return None, {}
    try:
        table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False,
                            na_values=["n/a"])
    except (OSError, ValueError, pd.errors.ParserError) as err:
        logger.warning("%s cannot be read (%s): the group table has no participant columns",
                       tsv, err)
        return None, {}
    if "participant_id" not in table.columns:
        return None, {}
    for column in table.columns.drop("participant_id"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.notna().sum() == table[column].notna().sum():
            table[column] = numbers
    described = _read_json(bids_dir / "participants.json")
    return table.drop_duplicates("participant_id"), described if isinstance(described,
                                                                             dict) else {}


def run_group_level(bids_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                    participant_labels: Iterable[str] | None = None,
                    model: str | os.PathLike | ModelFolder | None = None) -> GroupReport:
    """Every participant's brain-age table in one, with a summary figure.

    Parameters
    ----------
    bids_dir : str or PathLike
        The raw BIDS dataset (its participants.tsv columns join the table).
    output_dir : str or PathLike
        The derivative dataset the participant level wrote.
    participant_labels : iterable of str, optional
        Only these participants (default: every one with a table).
    model : str, PathLike or ModelFolder, optional
        The model folder the participant level used (refused if ``output_dir``'s settings
        name other checkpoints): with it, the batch of scans is tested against each head's
        training scans (:func:`brainage.inference.trust.batch_verdict`, at least
        :data:`brainage.inference.trust.MIN_BATCH` scans with stored features; the gap test
        reads the healthy controls of participants.tsv's ``group``, every scan without one)
        and the verdict written to ``OUTPUT_DIR/group_desc-brainage_batch.json``.

    Returns
    -------
    GroupReport
        The files written, counts, the failed scans logged by the participant level, and the
        batch verdict.

    Raises
    ------
    BidsAppError
        No participant-level table in ``output_dir`` (or none of the labels'); ``model`` is
        not the participant level's.
    """
    bids, out = check_dirs(bids_dir, output_dir)
    labels = _labels(participant_labels, "sub-", "participant")
    folder = None if model is None else _group_model(model, out)
    paths = _participant_tables(out, labels)
    if not paths:
        raise BidsAppError(f"OUTPUT_DIR {output_dir} holds no participant-level table "
                           f"(sub-*/[ses-*/]anat/*_desc-brainage_T1w.tsv): run the "
                           f"participant level first")
    frames, skipped, read = [], [], []
    for path in paths:
        try:
            frames.append(_read_participant_table(path))
            read.append(path)
        except BidsAppError as err:  # one bad table must not stop the others: name it, go on
            logger.warning("%s", err)
            skipped.append({"path": str(path), "error": str(err)})
    if not frames:
        raise BidsAppError(f"none of the {len(paths)} participant-level table(s) in "
                           f"{output_dir} can be read: "
                           + "; ".join(entry["error"] for entry in skipped[:3]))
    table = pd.concat(frames, ignore_index=True)
    participants, described = _read_participants(bids)
    extra: dict[str, Any] = {}
    if participants is not None:
        columns = [c for c in participants.columns if c not in table.columns]
        table = table.merge(participants[["participant_id", *columns]], on="participant_id",
                            how="left")
        extra = {c: described.get(c) or {"Description": f"Column {c!r} of the raw dataset's "
                                                         f"participants.tsv."}
                 for c in columns}
    report = GroupReport(out / f"{GROUP_STEM}.tsv", out / f"{GROUP_STEM}.json",
                         out / f"{GROUP_STEM}.png", len(frames),
                         table["participant_id"].nunique(), _failures(out, labels), skipped,
                         domain_verdict(table), interval_conditions(table))
    _write_json(report.sidecar, describe_columns(table.columns, extra))
    atomic_write(report.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False,
                                                        na_rep="n/a"))
    _summary_figure(table, report.figure)
    if folder is not None:
        verdict = _group_batch(folder, frames, read, participants)
        if verdict is not None:
            _write_json(out / BATCH_FILE, verdict)
            report = replace(report, batch=verdict, batch_file=out / BATCH_FILE)
    logger.info("group table of %d scan(s), %d participant(s): %s", report.n_scans,
                report.n_participants, report.table)
    return report


def _group_model(model: str | os.PathLike | ModelFolder, output_dir: Path) -> ModelFolder:
    """The model folder of the group level's batch test, refused unless its checkpoints are
    the ones ``output_dir``'s settings record (the features are that model's)."""
    folder = model if isinstance(model, ModelFolder) else load_model_folder(model)
    settings = _read_json(output_dir / SETTINGS_FILE)
    recorded = settings.get("heads") if isinstance(settings, dict) else None
    given = {head: folder.card["heads"][head].get("sha256") for head in folder.models}
    if recorded != given:
        raise BidsAppError(f"--model {folder.root} is not the model of OUTPUT_DIR "
                           f"{output_dir} ({SETTINGS_FILE} records heads {recorded}, the model "
                           f"folder holds {given}): the batch test compares the features of "
                           f"the model that predicted the scans")
    return folder


def _scan_features(table_path: Path) -> dict[str, np.ndarray] | None:
    """The feature statistics the participant level stored beside one table, or None
    (missing, unreadable or of another format: the scan is left out of the batch test)."""
    path = table_path.with_name(table_path.name.replace("_desc-brainage_T1w.tsv",
                                                        "_desc-brainageFeatures_T1w.json"))
    data = _read_json(path) if path.is_file() else None
    if not isinstance(data, dict) or data.get("format") != FEATURES_FORMAT or not isinstance(
            data.get("heads"), dict):
        if path.exists():
            logger.warning("%s is not a feature file of brainage (format %s): the scan is "
                           "left out of the batch test", path, FEATURES_FORMAT)
        return None
    try:
        return {str(h): np.asarray(v, dtype=np.float64) for h, v in data["heads"].items()}
    except (TypeError, ValueError):
        logger.warning("%s holds features that are not numbers: the scan is left out of the "
                       "batch test", path)
        return None


def _group_batch(folder: ModelFolder, frames: Sequence[pd.DataFrame], paths: Sequence[Path],
                 participants: pd.DataFrame | None) -> dict[str, Any] | None:
    """The batch verdict of the group's scans (one per participant table), or None with fewer
    than :data:`MIN_BATCH` scans with features; the gap test reads the healthy controls."""
    features: dict[str, dict[int, np.ndarray]] = {}
    rows, missing = [], 0
    for k, (frame, path) in enumerate(zip(frames, paths)):
        found = _scan_features(path)
        missing += found is None
        for head, vector in (found or {}).items():
            features.setdefault(head, {})[k] = vector
        rows.append(frame)
    # the tables hold the output names (brain_age_gap ...); the verdict reads the library's
    table = pd.concat(rows, ignore_index=True).rename(
        columns={name: internal for internal, name in OUTPUT_NAMES.items()})
    table["error"] = table["error"].fillna("").astype(str) if "error" in table else ""
    if participants is not None and "group" in participants.columns:
        group = table["participant_id"].map(participants.set_index("participant_id")["group"])
        table = table[group.isna() | group.astype(str).isin(_CONTROLS)]
    if max((len(v) for v in features.values()), default=0) < MIN_BATCH:
        logger.info("batch test: %d scan(s) with features, fewer than %d", len(frames) - missing,
                    MIN_BATCH)
        return None
    verdict = batch_verdict(folder.trust, features, table)
    if verdict is not None:
        verdict["n_without_features"] = missing
    return verdict


def _failures(output_dir: Path, labels: list[str] | None) -> list[dict[str, Any]]:
    logs = [_read_json(p) for p in sorted((output_dir / LOG_DIR).glob("*_error.json"))]
    logs = [entry for entry in logs if isinstance(entry, dict)]
    if labels is not None:
        logs = [e for e in logs if bids_label(e.get("participant_id", "")) in labels]
    return logs


def _summary_figure(table: pd.DataFrame, path: Path) -> None:
    """Brain age against chronological age (top) and the gap by group (bottom), per head; each
    panel's title carries the domain verdict, and ``sim2real`` scans are drawn as crosses."""
    import matplotlib.pyplot as plt

    heads = list(dict.fromkeys(table["head"]))
    groups = (sorted(table["group"].dropna().astype(str).unique())
              if "group" in table.columns else [])
    fig, axes = plt.subplots(2, len(heads), figsize=(5.2 * len(heads), 9.0), squeeze=False)
    for (top, bottom), head in zip(axes.T, heads):
        rows = table[table["head"] == head]
        by_group = ([(g, rows[rows["group"].astype(str) == g]) for g in groups] if groups
                    else [("all", rows)])
        _age_panel(top, head, rows, by_group)
        _gap_panel(bottom, head, rows, by_group)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)


def domain_verdict(rows: pd.DataFrame) -> str:
    """The ``domain`` column of a table in a few words, e.g. ``"domain: 3 of 3 sim2real"``
    (the group figure's titles)."""
    domain = rows["domain"].astype("string").fillna("") if "domain" in rows.columns else None
    if domain is None or not (domain != "").any():
        return "domain: n/a"
    known = domain[domain != ""]
    flagged = [f"{int((known == level).sum())} of {len(known)} {level}"
               for level in ("sim2real", "ood") if (known == level).any()]
    return "domain: " + (", ".join(flagged) if flagged else f"ok ({len(known)} of "
                                                              f"{len(known)})")


def _sim2real(rows: pd.DataFrame) -> np.ndarray:
    if "domain" not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    return (rows["domain"].astype("string").fillna("") == "sim2real").to_numpy()


def _age_panel(ax: Any, head: str, rows: pd.DataFrame,
               by_group: list[tuple[str, pd.DataFrame]]) -> None:
    known = rows.dropna(subset=["age", "brain_age"])
    for k, (name, group) in enumerate(by_group):
        real = _sim2real(group)
        for mask, marker, label in ((~real, "o", name), (real, "x", f"{name} (sim2real)")):
            if mask.any():
                ax.scatter(group["age"][mask], group["brain_age"][mask], s=18, alpha=0.8,
                           marker=marker, color=f"C{k % 10}", label=label)
    verdict = domain_verdict(rows)
    if known.empty:
        ax.set_title(f"{head}: no chronological ages\n{verdict}")
    else:
        low = known[["age", "brain_age"]].min().min()
        high = known[["age", "brain_age"]].max().max()
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        mae = (known["brain_age"] - known["age"]).abs().mean()
        ax.set_title(f"{head}: brain age vs chronological age\n(n = {len(known)}, MAE "
                     f"{mae:.1f} y; {verdict})")
    ax.set_xlabel("chronological age (years)")
    ax.set_ylabel("predicted brain age (years)")
    ax.legend(fontsize=8)


def _gap_panel(ax: Any, head: str, rows: pd.DataFrame,
               by_group: list[tuple[str, pd.DataFrame]]) -> None:
    column = ("brain_age_gap_corrected" if rows["brain_age_gap_corrected"].notna().any()
              else "brain_age_gap")
    values = [g[column].dropna().to_numpy() for _, g in by_group]
    if any(len(v) for v in values):
        ax.boxplot([v if len(v) else [np.nan] for v in values], showfliers=False)
        for k, v in enumerate(values, start=1):
            jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(len(v))
            ax.scatter(k + jitter, v, s=14, alpha=0.7)
        ax.set_xticks(range(1, len(by_group) + 1), [name for name, _ in by_group])
    ax.axhline(0.0, color="grey", linewidth=1)
    corrected = column == "brain_age_gap_corrected"
    ax.set_title(f"{head}: {'bias-corrected ' if corrected else ''}brain-age gap by group\n"
                 f"({domain_verdict(rows)})")
    ax.set_ylabel("gap (years)")
