"""``brainage train``: the study's two heads trained on a user's BIDS folder (or the simulated
cohort) with a profile of their choice, without the clinical notebooks and the book.

Nothing here trains: the command runs the study's own notebooks 01 (audit, preprocessing,
splits), 02 (training, :mod:`brainage.study.training`) and 03 (age-bias correction, interval
calibration, test metrics) with the profile's parameters, into a run folder of the user's
choice, so a model trained this way is the model a build would train. Its ``models/`` folder is
what ``brainage predict --model`` takes.

A user's BIDS folder comes in through a one-entry manifest written into the run folder
(``train_manifest.yaml``): the ``participants.tsv`` columns ``participant_id`` and ``age``
(required), and ``sex``, ``site`` and ``group`` where present; with a group column, rows
labelled as healthy controls (:data:`brainage.inference.calibrate.CONTROL_LABELS`) train and
every other row is excluded with its reason (the audit lists them).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from brainage._utils import atomic_write
from brainage.exceptions import BrainageError
from brainage.inference.calibrate import CONTROL_LABELS
from brainage.inference.model_folder import MODEL_CARD_FILE
from brainage.study.book import execute_notebooks, prepare_notebooks
from brainage.study.profiles import find_project_root, load_profile
from brainage.study.provenance import collect_environment, update_provenance

logger = logging.getLogger(__name__)

__all__ = ["TRAIN_MANIFEST", "TRAIN_NOTEBOOKS", "TrainError", "TrainReport", "train_models",
           "user_manifest"]

#: The notebooks ``brainage train`` runs: audit and splits, training, correction and calibration.
TRAIN_NOTEBOOKS = ("01_data_audit", "02_training", "03_evaluation")
#: The one-entry manifest written into the run folder for a user's BIDS folder.
TRAIN_MANIFEST = "train_manifest.yaml"
#: The dataset name of that entry.
_USER_DATASET = "user"
_OPTIONAL_COLUMNS = ("sex", "site", "group")


class TrainError(BrainageError, ValueError):
    """A ``brainage train`` request that cannot run (bad folder, existing model, ...)."""


@dataclass(frozen=True)
class TrainReport:
    """What :func:`train_models` did.

    Attributes
    ----------
    run_dir : Path
        The run folder (audit, splits, predictions, metrics, provenance).
    models_dir : Path
        Its model folder, for ``brainage predict --model``.
    seconds : dict of str to float
        Wall time of each notebook.
    """

    run_dir: Path
    models_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)


def user_manifest(bids_dir: str | os.PathLike, path: str | os.PathLike, *, space: str = "native",
                  skull_stripped: bool = False) -> Path:
    """Write a one-entry manifest (:data:`TRAIN_MANIFEST`) describing a user's BIDS folder.

    Parameters
    ----------
    bids_dir : str or PathLike
        ``participants.tsv`` (``participant_id``, ``age``; optionally ``sex``, ``site``,
        ``group``) and ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``.
    path : str or PathLike
        The manifest file to write.
    space : str, default="native"
        Space of the scans (``native``: registered to MNI152).
    skull_stripped : bool, default=False
        The scans hold the brain only.

    Raises
    ------
    TrainError
        ``bids_dir`` is not a folder, has no ``participants.tsv`` or it lacks
        ``participant_id`` or ``age``.
    """
    root = Path(bids_dir).expanduser().absolute()
    tsv = root / "participants.tsv"
    if not root.is_dir():
        raise TrainError(f"--bids {root} does not exist or is not a folder")
    if not tsv.is_file():
        raise TrainError(f"--bids {root}: {tsv.name} is missing; training needs each "
                         f"participant's age (columns participant_id and age)")
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    header = table.columns.str.strip().tolist()
    missing = [c for c in ("participant_id", "age") if c not in header]
    if missing:
        raise TrainError(f"{tsv}: column(s) {', '.join(missing)} missing (it has "
                         f"{', '.join(header) or 'none'}); training needs participant_id and age")
    columns = {c: c for c in ("participant_id", "age", *_OPTIONAL_COLUMNS) if c in header}
    entry: dict[str, Any] = {"name": _USER_DATASET, "format": "bids", "root": str(root),
                             "space": space, "skull_stripped": bool(skull_stripped),
                             "participants": tsv.name, "columns": columns}
    if "group" in columns:
        entry["groups"] = {"HC": list(CONTROL_LABELS)}
        # patients (any other label) stay out on purpose: the audit lists them as excluded
        others = table[~table["group"].str.strip().isin(CONTROL_LABELS)]
        if len(others):
            entry["exclude"] = [{"participant_id": str(row.participant_id).strip(),
                                 "reason": f"group {str(row.group).strip()!r} is not a "
                                           f"control label; brainage train trains on controls"}
                                for row in others.itertuples()]
    text = "# written by brainage train\n" + yaml.safe_dump(
        {"version": 1, "datasets": [entry]}, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def train_models(profile: str | os.PathLike = "quick", *, out: str | os.PathLike,
                 bids: str | os.PathLike | None = None, space: str = "native",
                 skull_stripped: bool = False, device: str = "auto",
                 root: str | os.PathLike | None = None) -> TrainReport:
    """Train the two heads (RNC, L1) with a profile's settings into ``out``.

    Parameters
    ----------
    profile : str or PathLike, default="quick"
        A profile name of ``notebooks/params`` or a profile YAML file: model, schedule, grid,
        splits, seed.
    out : str or PathLike
        The run folder to write; its ``models/`` is the model folder. A folder holding a
        trained model already is refused; an interrupted one resumes.
    bids : str or PathLike, optional
        A BIDS folder of healthy scans with ages (default: the profile's dataset, the
        simulated cohort for ``quick``).
    space, skull_stripped
        The scans' space and skull flag (with ``bids``).
    device : str, default="auto"
        ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda``, ``cuda:1`` ...
    root : str or PathLike, optional
        The brainage checkout whose notebooks run (default: found from the working
        directory).

    Returns
    -------
    TrainReport

    Raises
    ------
    TrainError
        ``out`` holds a trained model, or the BIDS folder cannot be described.
    ProfileError
        An unknown or invalid profile.
    """
    root = Path(root).resolve() if root else find_project_root()
    chosen = load_profile(profile, root / "notebooks" / "params")
    run_dir = Path(out).expanduser().absolute()
    if (run_dir / "models" / MODEL_CARD_FILE).exists():
        raise TrainError(f"--out {run_dir} holds a trained model already "
                         f"({run_dir / 'models' / MODEL_CARD_FILE}); choose another folder")
    params = {**chosen.params, "run_dir": str(run_dir), "device": device}
    run_dir.mkdir(parents=True, exist_ok=True)
    if bids is not None:
        manifest = user_manifest(bids, run_dir / TRAIN_MANIFEST, space=space,
                                 skull_stripped=skull_stripped)
        params.update(manifest=str(manifest), dataset=_USER_DATASET)
    profile_file = run_dir / "profile.yaml"
    profile_text = yaml.safe_dump(params, sort_keys=False)
    atomic_write(profile_file, lambda tmp: tmp.write_text(profile_text, encoding="utf-8"))
    used = replace(chosen, path=profile_file, params=params)
    prepared = prepare_notebooks(used, root)
    update_provenance(run_dir, profile=used.name, profile_file=str(profile_file),
                      parameters=params, environment=collect_environment(root))
    seconds = execute_notebooks(used, root, run_dir, run_dir / "notebooks",
                                only=list(TRAIN_NOTEBOOKS), prepared=prepared)
    return TrainReport(run_dir=run_dir, models_dir=run_dir / "models", seconds=seconds)
