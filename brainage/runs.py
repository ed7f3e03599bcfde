"""The run folder: where each notebook finds what the previous ones wrote.

Notebooks talk through files, never memory: ``01_data_audit`` writes ``cohort.csv`` (one row
per usable scan, with its split and its preprocessed volume) and ``audit/problems.csv``;
``02_training`` writes ``models/``; ``03_evaluation`` ``predictions.csv`` and ``metrics.json``;
``04_interpretability`` ``saliency/``; ``05_clinical`` ``clinical.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["RunFolder"]


@dataclass(frozen=True)
class RunFolder:
    """Paths and readers of a run folder (``runs/<profile>``).

    Parameters
    ----------
    path : Path
        The run folder.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def cohort_csv(self) -> Path:
        return self.path / "cohort.csv"

    @property
    def dataset_json(self) -> Path:
        return self.path / "dataset.json"

    @property
    def problems_csv(self) -> Path:
        return self.path / "audit" / "problems.csv"

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def predictions_csv(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def saliency(self) -> Path:
        return self.path / "saliency"

    @property
    def clinical_json(self) -> Path:
        return self.path / "clinical.json"

    def _require(self, path: Path, writer: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run the notebook {writer} first "
                                    f"(brainage build runs them in order)")
        return path

    def cohort(self) -> pd.DataFrame:
        """``cohort.csv``: the usable scans with their split and preprocessed volume."""
        table = pd.read_csv(self._require(self.cohort_csv, "01_data_audit"),
                            dtype={"participant_id": str, "session": str, "site": str})
        missing = {"participant_id", "age", "group", "split", "preprocessed"} - set(table.columns)
        if missing:
            raise ValueError(f"{self.cohort_csv} lacks the column(s) {sorted(missing)}")
        return table

    def write_dataset(self, spec) -> Path:
        """Record which dataset the run uses (``dataset.json``), from a manifest entry."""
        self.path.mkdir(parents=True, exist_ok=True)
        info = {"name": spec.name, "root": str(spec.root), "space": spec.space,
                "skull_stripped": spec.skull_stripped, "simulated": spec.simulated,
                "atlas": None if spec.atlas is None else
                {"image": str(spec.atlas.image), "labels": str(spec.atlas.labels)}}
        self.dataset_json.write_text(json.dumps(info, indent=2), encoding="utf-8")
        return self.dataset_json

    def dataset_info(self) -> dict:
        """What :meth:`write_dataset` recorded."""
        return json.loads(self._require(self.dataset_json, "01_data_audit").read_text("utf-8"))

    def ground_truth(self) -> tuple[pd.DataFrame, dict] | None:
        """The simulated cohort's ``participants_truth.tsv`` and ``simulation.json``, or None.

        None for real data (a dataset that is not simulated).
        """
        info = self.dataset_info()
        if not info.get("simulated"):
            return None
        truth_dir = Path(info["root"]) / "derivatives" / "ground_truth"
        table = pd.read_csv(truth_dir / "participants_truth.tsv", sep="\t", na_values="n/a")
        meta = json.loads((truth_dir / "simulation.json").read_text(encoding="utf-8"))
        return table, meta

    def require_no_errors(self) -> None:
        """Refuse to go on while the audit's problems table holds an error.

        Raises
        ------
        brainage.cohort.CohortError
            Naming every subject, file and reason.
        """
        from .cohort import CohortError

        problems = pd.read_csv(self._require(self.problems_csv, "01_data_audit"))
        errors = problems[problems["severity"] == "error"]
        if not errors.empty:
            raise CohortError(errors)

    def volumes(self, table: pd.DataFrame) -> np.ndarray:
        """The preprocessed volumes of ``table``'s rows, stacked: shape (N, D, H, W), float32."""
        if table.empty:
            raise ValueError("no scans selected: the table is empty")
        arrays = [np.asarray(nib.load(p).dataobj, dtype=np.float32) for p in table["preprocessed"]]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"preprocessed volumes have different shapes {sorted(shapes)}; "
                             f"re-run 01_data_audit")
        return np.stack(arrays)  # N x (D, H, W) -> (N, D, H, W)

    def dataset(self, splits: str | Sequence[str]):
        """A :class:`brainage.train.VolumeDataset` of the scans in ``splits``, held in memory."""
        from .train import VolumeDataset

        wanted = [splits] if isinstance(splits, str) else list(splits)
        table = self.cohort()
        rows = table[table["split"].isin(wanted)].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"no scans in split(s) {wanted} of {self.cohort_csv}; "
                             f"splits present: {sorted(table['split'].unique())}")
        return VolumeDataset(self.volumes(rows), rows["age"].to_numpy(),
                             rows["participant_id"].tolist())

    def reference_image(self) -> nib.Nifti1Image:
        """One preprocessed volume: the grid (shape, affine) that every map is written on."""
        first = self.cohort()["preprocessed"].iloc[0]
        return nib.load(first)
