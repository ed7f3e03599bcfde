"""The run folder: where each notebook finds what the previous ones wrote.

Notebooks talk through files, never memory: ``01_data_audit`` writes ``cohort.csv`` (one row
per usable scan, with its split and its preprocessed volume) and ``audit/problems.csv``;
``02_training`` writes ``models/``; ``03_evaluation`` ``predictions.csv`` and ``metrics.json``;
``04_interpretability`` ``saliency/``; ``05_clinical`` ``clinical.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd

from brainage._utils import check_choice
from brainage.data.cohort import CohortError
from brainage.study.profiles import resolve_path

if TYPE_CHECKING:
    from brainage.data.manifest import DatasetSpec
    from brainage.models.datasets import VolumeDataset

logger = logging.getLogger(__name__)

__all__ = [
    "HELD_OUT",
    "RunFolder",
    "TISSUE_NAMES",
    "ageing_truth_mask",
    "effect_mask",
    "predict_run",
    "predictions_with_scores",
    "region_labels",
    "run_site_balanced_accuracy",
    "tissue_labels",
]

#: Tissue classes of :func:`tissue_labels`.
TISSUE_NAMES = {1: "grey matter", 2: "white matter", 3: "CSF"}

#: Splits that are predicted (training scans are not: their errors are optimistic);
#: ``external_test`` holds the OpenBHB benchmark's scans from sites unseen in training.
HELD_OUT = ("val", "test", "external_test", "clinical")


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

    def write_dataset(self, spec: DatasetSpec) -> Path:
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

    def truth_dir(self) -> Path | None:
        """The simulated cohort's ``derivatives/ground_truth`` folder, or None for real data."""
        info = self.dataset_info()
        if not info.get("simulated"):
            return None
        return resolve_path(info["root"]) / "derivatives" / "ground_truth"

    def ground_truth(self) -> tuple[pd.DataFrame, dict] | None:
        """The simulated cohort's ``participants_truth.tsv`` and ``simulation.json``, or None.

        None for real data (a dataset that is not simulated).
        """
        truth_dir = self.truth_dir()
        if truth_dir is None:
            return None
        table = pd.read_csv(truth_dir / "participants_truth.tsv", sep="\t", na_values="n/a")
        meta = json.loads((truth_dir / "simulation.json").read_text(encoding="utf-8"))
        return table, meta

    def require_no_errors(self) -> None:
        """Refuse to go on while the audit's problems table holds an error.

        Raises
        ------
        brainage.data.cohort.CohortError
            Naming every subject, file and reason.
        """
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

    def rows(self, splits: str | Sequence[str]) -> pd.DataFrame:
        """The cohort rows of the scans in ``splits``, in cohort order (an error if none)."""
        wanted = [splits] if isinstance(splits, str) else list(splits)
        table = self.cohort()
        rows = table[table["split"].isin(wanted)].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"no scans in split(s) {wanted} of {self.cohort_csv}; "
                             f"splits present: {sorted(table['split'].unique())}")
        return rows

    def dataset(self, splits: str | Sequence[str] | pd.DataFrame) -> VolumeDataset:
        """A :class:`~brainage.models.datasets.VolumeDataset` of the scans in ``splits`` (or of
        the rows of a table from :meth:`rows`), held in memory."""
        from brainage.models.datasets import VolumeDataset

        rows = splits if isinstance(splits, pd.DataFrame) else self.rows(splits)
        return VolumeDataset(self.volumes(rows), rows["age"].to_numpy(),
                             rows["participant_id"].tolist())

    def reference_image(self) -> nib.Nifti1Image:
        """One preprocessed volume: the grid (shape, affine) that every map is written on."""
        first = self.cohort()["preprocessed"].iloc[0]
        return nib.load(first)


def predict_run(run: RunFolder, models: Mapping[str, str | Path], *, batch_size: int = 8,
                device: str = "auto", features: dict[str, np.ndarray] | None = None
                ) -> pd.DataFrame:
    """Predicted age of every validation, test and clinical scan, for each model.

    Parameters
    ----------
    run : RunFolder
        The run whose ``cohort.csv`` lists the scans.
    models : mapping of str to path
        Model name (``"rnc"``, ``"l1"``) to checkpoint (``best.pt``).
    batch_size : int, default=8
        Scans per forward pass.
    device : str, default="auto"
        Where to run the models.
    features : dict, optional
        Filled with each model's feature statistics of the same scans
        (:func:`brainage.models.features.capture_features`), shape (N, F) in the rows' order,
        captured in the same forward pass (for the out-of-distribution score).

    Returns
    -------
    DataFrame
        One row per scan and model: participant_id, split, group, age, sex, site, model,
        predicted, gap (predicted minus chronological age).
    """
    from brainage.models.features import capture_features
    from brainage.models.train import load_model, predict

    rows = run.rows(HELD_OUT)
    dataset = run.dataset(rows)
    frames = []
    for name, checkpoint in models.items():
        model = load_model(checkpoint)
        with capture_features(model) as captured:
            predicted = predict(model, dataset, batch_size=batch_size, device=device)
        if features is not None:
            features[name] = captured.array()
        frame = rows[["participant_id", "split", "group", "age", "sex", "site"]].copy()
        frame["model"] = name
        frame["predicted"] = predicted
        frame["gap"] = predicted - frame["age"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run_site_balanced_accuracy(run: RunFolder, models: Mapping[str, str | Path], *, seed: int = 0,
                               batch_size: int = 8, device: str = "auto") -> dict[str, float]:
    """Site balanced accuracy of each model's learned representation in a run folder.

    The encoder's features of the training split (where the site classifier is fitted) and of
    the internal test split (where it is scored), as the challenge does; see
    :func:`brainage.analysis.benchmark.site_balanced_accuracy`.

    Parameters
    ----------
    run : RunFolder
        A run whose ``cohort.csv`` has ``train`` and ``test`` splits with a ``site`` column.
    models : mapping of str to path
        Model name to checkpoint (``best.pt``).
    seed : int, default=0
        Seed of the cross-validation folds.
    batch_size, device
        As for :func:`brainage.models.train.encode`.

    Returns
    -------
    dict of str to float
        Model name to balanced accuracy (chance: 1 / number of training sites).
    """
    from brainage.analysis.benchmark import site_balanced_accuracy
    from brainage.models.train import encode, load_model

    rows = {split: run.rows(split) for split in ("train", "test")}
    datasets = {split: run.dataset(table) for split, table in rows.items()}
    scores = {}
    for name, checkpoint in models.items():
        model = load_model(checkpoint)
        features = {split: encode(model, data, batch_size=batch_size, device=device)
                    for split, data in datasets.items()}
        scores[name] = site_balanced_accuracy(
            features["train"], rows["train"]["site"].astype(str), features["test"],
            rows["test"]["site"].astype(str), seed=seed)
    return scores


def _on_grid(source: str | Path | nib.Nifti1Image, reference: nib.Nifti1Image,
             interpolation: str) -> nib.Nifti1Image:
    from nilearn import image

    return image.resample_to_img(source if isinstance(source, nib.Nifti1Image) else str(source),
                                 reference, interpolation=interpolation, force_resample=True,
                                 copy_header=True)


def region_labels(run: RunFolder, reference: nib.Nifti1Image
                  ) -> tuple[nib.Nifti1Image, dict[int, str], str] | None:
    """The regions to summarise saliency maps over, on the grid of ``reference``.

    The simulated cohort's ground-truth regions; for real data, the manifest's atlas.

    Returns
    -------
    tuple or None
        ``(labels, names, source)``: a label image, label -> region name, and a phrase naming
        where the regions come from; None without truth or atlas.
    """
    truth_dir = run.truth_dir()
    atlas = run.dataset_info().get("atlas")
    if truth_dir is not None:
        labels = _on_grid(truth_dir / "regions.nii.gz", reference, "nearest")
        names = pd.read_csv(truth_dir / "regions.tsv", sep="\t")
        return (labels, dict(zip(names["index"], names["name"])),
                "the simulated cohort's ground-truth regions")
    if atlas:
        labels = _on_grid(atlas["image"], reference, "nearest")
        names = pd.read_csv(atlas["labels"], sep="\t")
        return (labels, dict(zip(names.iloc[:, 0], names.iloc[:, 1])),
                f"the atlas {atlas['image']}")
    return None


def effect_mask(run: RunFolder, reference: nib.Nifti1Image, process: str, threshold: float
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the simulator applied ``process``, on the grid of ``reference``; None for real data.

    Parameters
    ----------
    run : RunFolder
        A run on the simulated cohort.
    reference : nibabel image
        The grid of the maps.
    process : {"ageing", "ad", "pd"}
        The simulator's ``<process>_effect.nii.gz`` (effect strength at a reference dose).
    threshold : float
        Voxels whose effect strength exceeds it form the mask.

    Returns
    -------
    tuple of bool arrays or None
        ``(effect_mask, brain_mask)``: brain voxels whose simulated effect exceeds
        ``threshold``, and the MNI152 (2 mm) brain mask, both on the reference grid.
    """
    from nilearn import datasets

    check_choice("process", process, ("ageing", "ad", "pd"))
    truth_dir = run.truth_dir()
    if truth_dir is None:
        return None
    effect = _on_grid(truth_dir / f"{process}_effect.nii.gz", reference, "continuous")
    brain = _on_grid(datasets.load_mni152_brain_mask(resolution=2), reference, "nearest")
    brain_mask = np.asarray(brain.dataobj) > 0
    return (np.asarray(effect.dataobj) > threshold) & brain_mask, brain_mask


def ageing_truth_mask(run: RunFolder, reference: nib.Nifti1Image, threshold: float
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`effect_mask` of the ageing process (kept for callers of the first version)."""
    return effect_mask(run, reference, "ageing", threshold)


def tissue_labels(reference: nib.Nifti1Image) -> np.ndarray:
    """The MNI152 template's most probable tissue per voxel on ``reference``'s grid.

    1 grey matter, 2 white matter, 3 CSF (brain mask minus the two), 0 outside the brain:
    the strata of the tissue-matched enrichment AUC (nilearn's 2 mm probability maps,
    resampled linearly; the simulated cohort is built from the same maps).

    Returns
    -------
    ndarray of int, shape of ``reference``
    """
    from nilearn import datasets

    grey = np.asarray(_on_grid(datasets.load_mni152_gm_template(resolution=2), reference,
                               "continuous").dataobj, dtype=float)
    white = np.asarray(_on_grid(datasets.load_mni152_wm_template(resolution=2), reference,
                                "continuous").dataobj, dtype=float)
    brain = np.asarray(_on_grid(datasets.load_mni152_brain_mask(resolution=2), reference,
                                "nearest").dataobj) > 0
    csf = np.clip(1 - grey - white, 0, 1)
    labels = np.argmax(np.stack([grey, white, csf]), axis=0) + 1  # (3, D, H, W) -> (D, H, W)
    return np.where(brain, labels, 0).astype(np.int64)


def predictions_with_scores(run: RunFolder, scores: Sequence[str]) -> pd.DataFrame:
    """``predictions.csv`` with each participant's clinical ``scores`` from the cohort table.

    A score the cohort lacks is a column of NaN, so that every score column exists.
    """
    cohort = run.cohort()
    present = [s for s in scores if s in cohort.columns]
    predictions = pd.read_csv(run.predictions_csv).merge(
        cohort[["participant_id", *present]], on="participant_id", how="left")
    for score in scores:
        if score not in predictions.columns:
            predictions[score] = float("nan")
    return predictions
