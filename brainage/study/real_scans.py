"""The study's model on the shared real scans (issue 28): which folders, the predictions, the
words. The numbers come from :mod:`brainage.analysis.transfer`.

The real scans (``../shared/data/ixi10`` and ``ixi40`` beside the checkout: raw IXI T1w scans
with ``participants.tsv`` ages) are a validation set: no model is trained, tuned or selected on
them. Where a folder is absent the evaluation says so and goes on without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainage.study.tables import format_number

__all__ = ["REAL_SCAN_FOLDERS", "predict_real_scans", "real_scans_sentence",
           "shared_real_folders"]

#: The shared real-scan folders, under ``<checkout>/../shared/data``.
REAL_SCAN_FOLDERS = ("ixi10", "ixi40")


def shared_real_folders(project_root: str | os.PathLike,
                        names: Sequence[str] = REAL_SCAN_FOLDERS) -> tuple[list[Path], list[str]]:
    """The shared real-scan folders beside a checkout that can be used, and why others cannot.

    Parameters
    ----------
    project_root : str or PathLike
        The checkout (:func:`brainage.study.profiles.find_project_root`).
    names : sequence of str, default=REAL_SCAN_FOLDERS
        Folder names under ``<project_root>/../shared/data``.

    Returns
    -------
    folders : list of Path
        Folders with a ``participants.tsv`` and at least one ``sub-*/anat/*_T1w.nii[.gz]``.
    skipped : list of str
        One sentence per other folder: which one (relative to the checkout, as the book may
        show it: no machine path) and why it is skipped.
    """
    base = Path(project_root).resolve().parent / "shared" / "data"
    folders, skipped = [], []
    for name in names:
        folder, shown = base / name, f"../shared/data/{name}"
        if not folder.is_dir():
            skipped.append(f"{shown} does not exist")
        elif not (folder / "participants.tsv").is_file():
            skipped.append(f"{shown} has no participants.tsv (the ages are needed)")
        elif not any(folder.glob("sub-*/anat/*_T1w.nii*")):
            skipped.append(f"{shown} holds no sub-*/anat/*_T1w.nii[.gz]")
        else:
            folders.append(folder)
    return folders, skipped


def predict_real_scans(models: str | os.PathLike, folders: Sequence[str | os.PathLike], *,
                       n_jobs: int = 1, cache: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every head's ages of the real scans of ``folders`` (BIDS), as ``brainage predict``
    computes them, with a ``dataset`` column (the folder's name).

    The scans are preprocessed through the user's preprocessing cache by default (raw native
    scans take 10-40 s each on a 2-core CPU the first time, brain extraction and registration
    included). A scan that fails keeps its row with the error; :func:`transfer_table` leaves
    it out.
    """
    from brainage.inference.predict import predict_scans

    if not folders:
        raise ValueError("folders: expected at least one real-scan folder, got none")
    table = predict_scans([str(f) for f in folders], models, n_jobs=n_jobs, cache=cache)
    names = {str(Path(f).resolve()): Path(f).name for f in folders}
    table["dataset"] = [next((name for root, name in names.items()
                              if str(Path(p).resolve()).startswith(root + os.sep)), "")
                        for p in table["path"]]
    return table


def real_scans_sentence(summary: pd.DataFrame) -> str:
    """One sentence per head of a :func:`brainage.analysis.transfer_table` (``by=("model",)``):
    r with its interval, MAE against the scans' own mean age, mean gap and slope."""
    parts = []
    for row in summary.itertuples():
        parts.append(
            f"{str(row.model).upper()}: r = {format_number(row.r, 2)} (95% CI "
            f"{format_number(row.r_low, 2)} to {format_number(row.r_high, 2)}), MAE "
            f"{format_number(row.mae, 3)} years (predicting the scans' own mean age: "
            f"{format_number(row.mae_own_mean, 3)}), mean gap {format_number(row.mean_gap, 3)} "
            f"years, slope {format_number(row.slope, 2)}")
    return "; ".join(parts)
