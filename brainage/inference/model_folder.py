"""The model folder: its only owner (layout, file names, the card, checkpoints, corrections,
calibrations, OOD references), as MONAI's ``bundle/`` owns its model-package format.

Training (:mod:`brainage.models.train`), the notebooks, the study and the benchmarks import the
file names below; nothing else spells them.

A *model folder* is ``runs/<profile>/models`` (or one head of it, ``models/<name>``) and carries
everything prediction needs, so that a model trained on one machine predicts on another::

    models/model.json                 the model card (:func:`write_model_card`): format tag,
                                      preprocessing parameters and version, the grid (shape,
                                      affine), the heads with their checkpoints' checksums, the
                                      Grad-RAM layer, package versions, profile
    models/<head>/best.pt             weights + model config + age normalisation (models.train)
    models/<head>/bias_correction.json   age-bias correction fitted on the validation split
                                      (notebook 03; optional: without it gaps are uncorrected)
    models/<head>/conformal.json, ood.npz  interval calibration and out-of-distribution
                                      reference (optional; fitted by :mod:`brainage.study.trust`)

The card is checked against :data:`MODEL_CARD_SCHEMA` (messages name the field), and every path
it names must lie inside the model folder (after resolving ``..`` and symbolic links).

What is checked, and what a tampered folder can still do. The project trusts a model folder
it wrote itself; :func:`load_model_folder` checks that the folder is whole and consistent,
not that it is honest:

- ``model.json``: JSON (a file that is not, is nested too deeply or holds an integer Python
  will not convert is refused naming it), the format tag, the schema, the preprocessing
  version, the grid against the template grid computed here, paths inside the folder.
- ``best.pt``: its SHA-256 must equal the card's ``heads.<head>.sha256``; a card without it is
  refused unless ``allow_unverified`` (``--allow-unverified``), which warns
  (:class:`UnverifiedCheckpointWarning`). It is read with ``torch.load(weights_only=True)``
  (no pickled code runs), must hold ``model_config``, ``model``, finite ``age_mean`` and
  ``age_scale > 0`` (also in the weights' buffers), and must build the network.
- ``bias_correction.json``, ``conformal.json``, ``ood.npz``: optional, but a path that exists
  and is not a readable file (a folder ...) is an error, not an absent file. Each is
  validated field by field; ``conformal.json`` and ``ood.npz`` carry the SHA-256 of the
  checkpoint they were fitted for and must match the checkpoint *file* (even when the card has
  no checksum), and the gap interval the bias correction. ``ood.npz``'s arrays are
  size-checked from the zip directory and ``.npy`` headers before any is read
  (:data:`OOD_MAX_BYTES`).

The checksums are not signatures: whoever can write the folder can replace the weights and
rewrite the card's checksum (and the trust files' bindings) to match, and the folder then
predicts whatever those weights predict, with intervals and OOD flags that look valid. The
checks catch damage, stale files and mix-ups, not a deliberate forgery: use model folders
from sources you trust, as with any model weights. Within the checks a tampered folder can
still choose the predictions (weights), the bias correction and interval widths (any finite
numbers), the OOD threshold, and the training domain the card reports; it cannot run code
or make brainage read or write files outside the folder. (A ``model_config`` declaring a huge
network is not size-checked before the network is built.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainage._utils import CHECKPOINT_FILE, package_versions, sha256_file
from brainage._utils.io import read_json, read_tagged_json, schema_problems
from brainage.analysis.metrics import AgeBiasCorrection
from brainage.analysis.site_calibration import SiteCalibration
from brainage.analysis.uncertainty import ConformalInterval, FeatureOOD
from brainage.data.cohort import file_problem
from brainage.exceptions import BrainageError
from brainage.imaging.preprocess import PREPROCESS_VERSION, PreprocessParams

logger = logging.getLogger(__name__)

__all__ = [
    "BIAS_CORRECTION_FILE",
    "CALIBRATION_SPLIT",
    "CHECKPOINT_FILE",
    "CONFORMAL_FILE",
    "CONFORMAL_FORMAT",
    "DEFAULT_SALIENCY_LAYER",
    "DOMAIN_SCHEMA",
    "HISTORY_FILE",
    "IG_REFERENCE_FILE",
    "MODEL_CARD_FILE",
    "MODEL_CARD_FORMAT",
    "MODEL_CARD_SCHEMA",
    "OOD_FILE",
    "OOD_FORMAT",
    "OOD_MAX_BYTES",
    "REGISTRATION_QC_FIELD",
    "RETEST_FIELD",
    "TEST_ERROR_FIELD",
    "NOTE_FIELD",
    "INTERVAL_CONDITIONS",
    "SITE_CALIBRATION_FILE_FORMAT",
    "HeadCalibration",
    "HeadTrust",
    "ModelFolder",
    "ModelFolderError",
    "UnverifiedCheckpointWarning",
    "SiteCalibrationFile",
    "head_checkpoint_digest",
    "head_checkpoint_path",
    "head_dirs",
    "checkpoint_digest",
    "load_calibration",
    "load_head_trust",
    "load_ig_reference",
    "load_model_folder",
    "load_ood",
    "load_site_calibration",
    "present",
    "pretrained_checkpoints",
    "read_card",
    "read_model_preprocess",
    "record_retest",
    "record_test_error",
    "save_calibration",
    "save_ig_reference",
    "save_ood",
    "write_model_card",
]

#: Format tag of ``model.json``; a card of another format is refused.
MODEL_CARD_FORMAT = "brainage-model/1"
MODEL_CARD_FILE = "model.json"
BIAS_CORRECTION_FILE = "bias_correction.json"
#: Grad-RAM layer when the card names none (the study's profiles use it).
DEFAULT_SALIENCY_LAYER = "encoder.layer2"
#: Card field of the test-retest SD each head's gap showed in the study (:func:`record_retest`).
RETEST_FIELD = "retest"
#: Card field of each head's error on the run's held-out test scans (:func:`record_test_error`).
TEST_ERROR_FIELD = "test_error"
#: Card field of a line the profile says about the model (``model_note``: a starter model ...).
NOTE_FIELD = "note"
#: Card field of the registration QC the training scans passed and ``brainage predict`` applies.
REGISTRATION_QC_FIELD = "registration_qc"
#: The training curves notebook 02 writes beside the heads.
HISTORY_FILE = "history.csv"
#: The integrated-gradients reference of every head (a typical training scan of the mean age,
#: notebook 02): ``brainage predict --saliency`` attributes against it, as notebook 04 does.
IG_REFERENCE_FILE = "ig_reference.nii.gz"
CONFORMAL_FILE = "conformal.json"
OOD_FILE = "ood.npz"
CONFORMAL_FORMAT = "brainage-conformal/1"
OOD_FORMAT = "brainage-ood/1"
#: Most bytes ``ood.npz`` may inflate to, read from its zip and array headers before any
#: array is read (a zip bomb or a header declaring a huge array is refused). The paper
#: profile's reference (a few thousand scans x a few hundred features, float64) is about 10 MB.
OOD_MAX_BYTES = 1 << 30
#: Format tag of the site calibration file ``brainage calibrate`` writes (every head's
#: :class:`brainage.analysis.site_calibration.SiteCalibration`, bound to its checkpoint).
SITE_CALIBRATION_FILE_FORMAT = "brainage-site-calibrations/1"
#: When an interval from a site calibration holds at its level (split-conformal exchangeability).
INTERVAL_CONDITIONS = ("intervals hold at their level only for scans exchangeable with the "
                       "calibration scans: same site and protocol, healthy, within their age "
                       "range")
#: The split that calibrates the intervals and the OOD threshold (and fits the bias correction).
CALIBRATION_SPLIT = "val"
_HEAD_ORDER = ("rnc", "l1")  # the study's heads first, any other in name order
_VERSION_PACKAGES = ("brainage", "torch", "monai", "numpy", "nibabel", "nilearn", "antspyx")
_NUMBER = {"type": "number"}

#: JSON Schema of the model card's ``domain`` (:func:`training_domain`).
DOMAIN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "simulated", "n_train", "age_range"],
    "properties": {
        "dataset": {"type": "string"},
        "simulated": {"type": "boolean"},
        "space": {"type": "string"},
        "skull_stripped": {"type": "boolean"},
        "n_train": {"type": "integer", "minimum": 1},
        "n_val": {"type": "integer", "minimum": 0},
        "age_range": {"type": "array", "minItems": 2, "maxItems": 2,
                      "items": {"type": "number"}},
        "sites": {"type": "array", "items": {"type": "string"}},
    },
}

#: JSON Schema (Draft 2020-12) of ``model.json``: the fields :func:`load_model_folder` reads
#: (other fields are allowed; the format tag is checked first, the values after).
MODEL_CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "preprocess", "grid", "heads"],
    "properties": {
        "format": {"type": "string"},
        "profile": {"type": ["string", "null"]},
        "preprocess": {
            "type": "object",
            "properties": {"space": {"type": "string"}, "grid_mm": _NUMBER,
                           "skull_stripped": {"type": "boolean"},
                           "crop_to_brain": {"type": "boolean"},
                           "brain_extraction": {"type": "string"}},
        },
        "grid": {
            "type": "object",
            "required": ["shape", "affine"],
            "properties": {
                "shape": {"type": "array", "minItems": 3, "maxItems": 3,
                          "items": {"type": "integer", "minimum": 1}},
                "affine": {"type": "array", "minItems": 4, "maxItems": 4,
                           "items": {"type": "array", "minItems": 4, "maxItems": 4,
                                     "items": _NUMBER}},
            },
        },
        "heads": {
            "type": "object",
            # a head's name is its folder: one path component, not "." or ".."
            "propertyNames": {"pattern": r"^(?!\.\.?$)[^/\\]+$",
                              "description": "a folder name of the model folder"},
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "checkpoint": {"type": "string", "minLength": 1},
                    "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                },
            },
        },
        "saliency_layer": {"type": ["string", "null"]},
        "versions": {"type": "object"},
        "domain": DOMAIN_SCHEMA,
        NOTE_FIELD: {"type": ["string", "null"]},
        TEST_ERROR_FIELD: {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["mae_years", "n"],
                "properties": {"mae_years": {"type": "number", "minimum": 0},
                               "n": {"type": "integer", "minimum": 1},
                               "simulated": {"type": "boolean"}},
            },
        },
    },
}


class ModelFolderError(BrainageError, ValueError):
    """A model folder is incomplete or inconsistent; the message names the file."""


class UnverifiedCheckpointWarning(UserWarning):
    """A head is used although the model card records no checksum of its checkpoint."""


def head_dirs(models_dir: Path) -> list[Path]:
    """Sub-folders of ``models_dir`` holding a ``best.pt``, the study's heads first."""
    found = [p for p in models_dir.iterdir() if p.is_dir() and (p / CHECKPOINT_FILE).is_file()]
    rank = {name: i for i, name in enumerate(_HEAD_ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def _checkpoint_summary(path: Path) -> dict[str, Any]:
    """What the card records of a checkpoint: format, stage, config, normalisation, checksum."""
    from brainage.models.checkpoint import read_checkpoint

    try:
        payload = read_checkpoint(path)
    except ValueError as err:
        raise ModelFolderError(str(err)) from err
    return {"checkpoint_format": payload["format"], "stage": payload.get("stage"),
            "epoch": payload.get("epoch"), "model_config": payload["model_config"],
            "age_mean": float(payload["age_mean"]), "age_scale": float(payload["age_scale"]),
            "sha256": sha256_file(path)}


def write_model_card(models_dir: str | os.PathLike, *,
                     preprocess: PreprocessParams | Mapping[str, Any],
                     saliency_layer: str | None, profile: str,
                     domain: Mapping[str, Any] | None = None,
                     note: str | None = None) -> Path:
    """Write ``models_dir/model.json``: what :func:`predict_scans` needs besides the weights.

    Parameters
    ----------
    models_dir : str or PathLike
        The models folder of a run (``runs/<profile>/models``) whose sub-folders (``rnc``,
        ``l1``) hold a ``best.pt`` each.
    preprocess : PreprocessParams or mapping
        The preprocessing of the training scans (space, grid_mm, skull_stripped,
        crop_to_brain); the grid and crop are reused for new scans.
    saliency_layer : str or None
        Module whose feature maps Grad-RAM weights; None: :data:`DEFAULT_SALIENCY_LAYER`.
    profile : str
        The profile the models were trained with.
    domain : mapping, optional
        The training domain (:func:`brainage.study.trust.training_domain`): dataset,
        simulated or real, size, ages, sites; ``brainage predict`` prints it and checks new
        scans against it.
    note : str, optional
        What the model is, in a line ``brainage predict`` prints with the domain (the profile's
        ``model_note``, e.g. that it is a starter model).

    Returns
    -------
    Path
        The written ``model.json``.

    Raises
    ------
    ModelFolderError
        ``models_dir`` is not a folder, holds no ``<head>/best.pt``, or a checkpoint is not a
        brainage checkpoint.
    """
    from brainage.imaging.registration import MISFIT_THRESHOLD_MM, template_grid

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelFolderError(f"models_dir {models_dir} is not a folder")
    params = PreprocessParams.coerce(preprocess)
    if not isinstance(profile, str) or not profile:
        raise TypeError(f"profile must be a non-empty string, got {profile!r}")
    heads = head_dirs(models_dir)
    if not heads:
        raise ModelFolderError(f"models_dir {models_dir} holds no head: no <name>/"
                               f"{CHECKPOINT_FILE} (train with brainage.models.train first)")
    shape, affine = template_grid(params.grid_mm, crop_to_brain=params.crop_to_brain)
    card = {
        "format": MODEL_CARD_FORMAT,
        "profile": profile,
        "preprocess": {**{k: getattr(params, k) for k in PreprocessParams.__dataclass_fields__},
                       "version": PREPROCESS_VERSION},
        "grid": {"shape": list(shape), "affine": np.asarray(affine).tolist()},
        "heads": {p.name: {"checkpoint": f"{p.name}/{CHECKPOINT_FILE}",
                           **_checkpoint_summary(p / CHECKPOINT_FILE)} for p in heads},
        "saliency_layer": saliency_layer or DEFAULT_SALIENCY_LAYER,
        # the registration QC the training scans passed and brainage predict applies
        REGISTRATION_QC_FIELD: {"figure": "outline misfit (mm)",
                                "threshold_mm": MISFIT_THRESHOLD_MM},
        "versions": package_versions(_VERSION_PACKAGES),
    }
    if note is not None:
        if not isinstance(note, str) or not note.strip():
            raise TypeError(f"note must be a non-empty string or None, got {note!r}")
        card[NOTE_FIELD] = note.strip()
    if domain is not None:
        card["domain"] = dict(domain)
        problems = schema_problems(card, MODEL_CARD_SCHEMA)
        if problems:
            raise ValueError(f"domain is not a valid training domain: {'; '.join(problems)}")
    path = models_dir / MODEL_CARD_FILE
    path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    logger.info("wrote %s (heads %s, grid %s at %g mm)", path, list(card["heads"]), shape,
                params.grid_mm)
    return path


@dataclass(frozen=True)
class ModelFolder:
    """A validated model folder, its heads loaded.

    Attributes
    ----------
    root : Path
        The folder holding ``model.json``.
    card : dict
        ``model.json`` as read.
    preprocess : PreprocessParams
        The training preprocessing; new scans use its ``grid_mm`` and ``crop_to_brain``.
    grid_shape : tuple of int
        Shape of the model's input grid (D, H, W).
    grid_affine : ndarray, shape (4, 4)
        Its voxel-to-MNI152 (mm) affine.
    models : dict of str to BrainAgeModel
        The heads (``rnc``, ``l1``), in eval mode.
    corrections : dict of str to AgeBiasCorrection or None
        Each head's stored age-bias correction (None when ``bias_correction.json`` is absent).
    saliency_layer : str
        Grad-RAM layer.
    trust : dict of str to HeadTrust
        Each head's intervals, OOD reference and training ages (:class:`HeadTrust`).
    ig_reference : ndarray, shape (D, H, W), or None
        The integrated-gradients reference (:data:`IG_REFERENCE_FILE`); None when the folder
        has none (written before issue 27): ``--saliency`` is then refused.
    """

    root: Path
    card: dict[str, Any]
    preprocess: PreprocessParams
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray
    models: dict[str, Any]
    corrections: dict[str, Any]
    saliency_layer: str
    trust: dict[str, Any] = field(default_factory=dict)
    ig_reference: np.ndarray | None = None

    def params_for(self, space: str, skull_stripped: bool) -> PreprocessParams:
        """Preprocessing of a new scan: its own space and skull flag, the model's grid and
        skull-removal method."""
        return PreprocessParams(space=space, grid_mm=self.preprocess.grid_mm,
                                skull_stripped=skull_stripped,
                                crop_to_brain=self.preprocess.crop_to_brain,
                                brain_extraction=self.preprocess.brain_extraction)


def _locate_card(path: Path) -> tuple[Path, str | None]:
    """The folder holding model.json, and the one head asked for (a head folder) or None."""
    if not path.is_dir():
        raise ModelFolderError(f"model folder {path} does not exist or is not a folder")
    if (path / MODEL_CARD_FILE).is_file():
        return path, None
    if (path / CHECKPOINT_FILE).is_file() and (path.parent / MODEL_CARD_FILE).is_file():
        return path.parent, path.name
    raise ModelFolderError(
        f"model folder {path}: {path / MODEL_CARD_FILE} is missing (and {path} is not a head "
        f"folder beside one); the training notebook writes it with "
        f"brainage.inference.model_folder.write_model_card")


def read_card(path: Path) -> dict[str, Any]:
    """Parse model.json, check its format tag, its fields (:data:`MODEL_CARD_SCHEMA`) and its
    preprocessing version."""
    card = read_tagged_json(path, MODEL_CARD_FORMAT, MODEL_CARD_SCHEMA, kind="a valid model card",
                            error=ModelFolderError)
    version = card["preprocess"].get("version")
    if version != PREPROCESS_VERSION:
        trained = (card.get("versions") or {}).get("brainage")
        raise ModelFolderError(
            f"{path}: the model was trained on preprocessing version {version!r} (brainage "
            f"{trained}) but this brainage preprocesses with version {PREPROCESS_VERSION!r}; "
            f"predict with that brainage version or retrain")
    if not card["heads"]:
        raise ModelFolderError(f"{path} lists no head (key 'heads' is empty)")
    return card


def _card_grid(card: dict[str, Any], params: PreprocessParams,
               path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """The card's grid, checked against the template grid this installation computes."""
    from brainage.imaging.registration import template_grid

    shape, affine = template_grid(params.grid_mm, crop_to_brain=params.crop_to_brain)
    stored_shape = tuple(int(n) for n in card["grid"]["shape"])
    stored_affine = np.asarray(card["grid"]["affine"], dtype=np.float64)
    if stored_shape != shape or not np.allclose(stored_affine, affine, atol=1e-4):
        raise ModelFolderError(f"{path}: the stored grid (shape {stored_shape}) differs from "
                               f"the MNI152 grid computed here (shape {shape}) for grid_mm="
                               f"{params.grid_mm}, crop_to_brain={params.crop_to_brain}; "
                               f"the template (nilearn) differs between the two machines")
    return shape, affine


def _inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused (naming the card) unless it lies inside ``root``.

    Both are resolved first, so neither ``..`` nor a symbolic link leads out of the folder.
    """
    card = root / MODEL_CARD_FILE
    if Path(relative).is_absolute():
        raise ModelFolderError(f"{card}: {what} {relative!r} is an absolute path; it must be a "
                               f"path relative to the model folder {root}")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ModelFolderError(f"{card}: {what} {relative!r} resolves to {target}, outside "
                               f"the model folder {root}; it must lie inside it")
    return root / relative


def _card_checkpoint(root: Path, name: str, entry: Mapping[str, Any],
                     allow_unverified: bool = False) -> tuple[Path, str]:
    """A head's checkpoint and its SHA-256, checked to lie inside the folder, exist and be the
    one the card describes (``heads.<name>.sha256``). A card without that checksum is refused,
    or, with ``allow_unverified``, accepted with a warning."""
    checkpoint = _inside(root, entry.get("checkpoint", f"{name}/{CHECKPOINT_FILE}"),
                         f"heads.{name}.checkpoint")
    if not checkpoint.is_file():
        raise ModelFolderError(f"{root / MODEL_CARD_FILE} lists head {name!r} but its "
                               f"checkpoint {checkpoint} is missing")
    digest = sha256_file(checkpoint)
    if not entry.get("sha256"):
        message = (f"{root / MODEL_CARD_FILE}: head {name!r} has no checkpoint checksum "
                   f"(heads.{name}.sha256), so nothing shows that {checkpoint} holds the "
                   f"weights the card, bias correction and calibrations were made for")
        if not allow_unverified:
            raise ModelFolderError(f"{message}; rewrite the card with write_model_card, or "
                                   f"accept unverified weights explicitly (brainage predict "
                                   f"--allow-unverified)")
        warnings.warn(f"{message}; used anyway because unverified weights were allowed "
                      f"(SHA-256 of the file: {digest})", UnverifiedCheckpointWarning,
                      stacklevel=3)
    elif digest != entry["sha256"]:
        raise ModelFolderError(f"checkpoint {checkpoint} is not the one "
                               f"{root / MODEL_CARD_FILE} describes (SHA-256 differs): it is "
                               f"corrupt or changed (retrained, replaced or damaged); retrain, or "
                               f"rewrite the card with write_model_card for the new weights")
    return checkpoint, digest


def _load_head(root: Path, name: str, entry: Mapping[str, Any], layer: str,
               device: str, allow_unverified: bool = False) -> tuple[Any, str]:
    """Load one head's checkpoint after checking it is the one the card describes; the model
    and the checkpoint's SHA-256."""
    from brainage.models.train import load_model

    checkpoint, digest = _card_checkpoint(root, name, entry, allow_unverified)
    try:
        model = load_model(checkpoint, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise ModelFolderError(str(err)) from err
    if layer not in dict(model.named_modules()):
        raise ModelFolderError(f"{root / MODEL_CARD_FILE}: saliency_layer {layer!r} is not a "
                               f"module of head {name!r} (e.g. 'encoder.layer2')")
    return model, digest


def _load_correction(head_dir: Path) -> Any:
    """The head's AgeBiasCorrection, or None (with a warning) when the file is absent."""
    path = head_dir / BIAS_CORRECTION_FILE
    if not present(path, ModelFolderError):
        logger.warning("%s is absent: gaps of head %r are reported without age-bias "
                       "correction", path, head_dir.name)
        return None
    data = read_json(path, ModelFolderError)
    try:
        correction = AgeBiasCorrection.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ModelFolderError(f"{path} is not a valid age-bias correction: {err}") from err
    coefficients = correction.coefficients
    bad = {k: v for k, v in coefficients.items() if not math.isfinite(v)}
    if bad:
        raise ModelFolderError(f"{path} is not a valid age-bias correction: coefficient(s) "
                               f"{bad} must be finite numbers")
    if correction.method == "linear" and coefficients["slope"] == 0:
        raise ModelFolderError(f"{path} is not a valid age-bias correction: the linear "
                               f"correction divides by its slope, which is 0")
    return correction


def _load_trust(root: Path, name: str, card: dict[str, Any], correction: Any,
                model: Any, digest: str) -> Any:
    """The head's :class:`HeadTrust` (its files validated, and bound to the checkpoint file's
    own SHA-256 ``digest``, whether or not the card records one)."""
    from brainage.models.features import feature_size

    try:
        return load_head_trust(_inside(root, name, "head folder"), card=card,
                                     correction=correction,
                                     feature_dim=feature_size(model), checkpoint_sha256=digest)
    except ValueError as err:
        raise ModelFolderError(str(err)) from err


def _card_preprocess(card: dict[str, Any], card_path: Path) -> PreprocessParams:
    settings = {k: v for k, v in card["preprocess"].items() if k != "version"}
    try:
        return PreprocessParams.coerce(settings)
    except (TypeError, ValueError) as err:
        raise ModelFolderError(f"{card_path}: invalid preprocessing parameters: {err}") from err


def read_model_preprocess(path: str | os.PathLike) -> PreprocessParams:
    """The preprocessing a model folder was trained with, read from its card alone (no weights
    loaded): what ``brainage preprocess --model DIR`` writes scans onto.

    Parameters
    ----------
    path : str or PathLike
        A model folder or one head of it.

    Raises
    ------
    ModelFolderError
        Naming the file: a missing or invalid ``model.json``, another preprocessing version.
    """
    root, _ = _locate_card(Path(path))
    card_path = root / MODEL_CARD_FILE
    return _card_preprocess(read_card(card_path), card_path)


def load_model_folder(path: str | os.PathLike, *, device: str = "cpu",
                      allow_unverified: bool = False) -> ModelFolder:
    """Read and validate a model folder (see the module docstring) and load its heads.

    Parameters
    ----------
    path : str or PathLike
        ``runs/<profile>/models`` (every head) or ``runs/<profile>/models/<head>`` (that head).
    device : str, default="cpu"
        Where the heads are put (see :func:`brainage.models.train.resolve_device`).
    allow_unverified : bool, default=False
        Accept a head whose card entry has no ``sha256``, with an
        :class:`UnverifiedCheckpointWarning` (default: refuse it). Its trust files are still
        bound to the checkpoint file's own checksum.

    Returns
    -------
    ModelFolder

    Raises
    ------
    ModelFolderError
        Naming the file: missing ``model.json``, another card or checkpoint format, another
        preprocessing version, another template grid, a missing, changed or unverified
        checkpoint, an invalid ``bias_correction.json``, a head that is not in the card.
    """
    root, wanted = _locate_card(Path(path))
    card_path = root / MODEL_CARD_FILE
    card = read_card(card_path)
    params = _card_preprocess(card, card_path)
    shape, affine = _card_grid(card, params, card_path)
    names = list(card["heads"]) if wanted is None else [wanted]
    if wanted is not None and wanted not in card["heads"]:
        raise ModelFolderError(f"{card_path} does not list head {wanted!r}; it lists "
                               f"{sorted(card['heads'])}")
    layer = card.get("saliency_layer") or DEFAULT_SALIENCY_LAYER
    loaded = {n: _load_head(root, n, card["heads"][n], layer, device, allow_unverified)
              for n in names}
    models = {n: model for n, (model, _) in loaded.items()}
    corrections = {n: _load_correction(_inside(root, n, "head folder")) for n in names}
    trusts = {n: _load_trust(root, n, card, corrections[n], models[n], loaded[n][1])
              for n in names}
    logger.info("model folder %s: heads %s, grid %s at %g mm (profile %s)", root, names, shape,
                params.grid_mm, card.get("profile"))
    return ModelFolder(root=root, card=card, preprocess=params, grid_shape=shape,
                       grid_affine=affine, models=models, corrections=corrections,
                       saliency_layer=layer, trust=trusts,
                       ig_reference=load_ig_reference(root, shape))


def pretrained_checkpoints(path: str | os.PathLike, *, grid_mm: float,
                           crop_to_brain: bool) -> dict[str, Path]:
    """The checkpoints of a model folder, checked for fine-tuning on this run's grid.

    A run's ``init_from`` (notebook 02) starts each head's encoder from the same head of an
    earlier model folder, e.g. the simulated cohort's quick model before training on a small
    real cohort. The folder's card and checksums are checked as :func:`load_model_folder`
    checks them, and its input grid must be this run's (the encoder's receptive fields are in
    voxels); the space and brain extraction may differ (both end on the template grid).

    Parameters
    ----------
    path : str or PathLike
        A model folder holding ``model.json`` (``runs/<profile>/models``).
    grid_mm, crop_to_brain : float, bool
        This run's preprocessing grid.

    Returns
    -------
    dict of str to Path
        Head name (``rnc``, ``l1``) to its ``best.pt``.

    Raises
    ------
    ModelFolderError
        Naming the file: no card, another preprocessing version or grid, a missing or changed
        checkpoint.
    """
    root = Path(path)
    if not (root / MODEL_CARD_FILE).is_file():
        raise ModelFolderError(f"init_from {root}: no {MODEL_CARD_FILE} there; give the models "
                               f"folder of a finished run (runs/<profile>/models)")
    card_path = root / MODEL_CARD_FILE
    card = read_card(card_path)
    stored = card["preprocess"]
    if (float(stored["grid_mm"]), bool(stored["crop_to_brain"])) != (float(grid_mm),
                                                                     bool(crop_to_brain)):
        raise ModelFolderError(
            f"init_from {card_path}: the model was trained on a {stored['grid_mm']} mm grid "
            f"(crop_to_brain={stored['crop_to_brain']}), this run preprocesses onto {grid_mm} mm "
            f"(crop_to_brain={crop_to_brain}); set the profile's grid_mm and crop_to_brain to "
            f"the model's")
    return {name: _card_checkpoint(root, name, entry)[0] for name, entry in card["heads"].items()}


def record_retest(models_dir: str | os.PathLike,
                  values: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Path:
    """Add the test-retest agreement the study measured to ``model.json``.

    Parameters
    ----------
    models_dir : str or PathLike
        The model folder (its card must exist).
    values : mapping
        Per head, per measure (``corrected_gap``, ``predicted``): ``sd_years`` (within-subject
        SD of two scans), ``sdc_years`` (smallest detectable change), ``n`` and ``source``
        (:func:`brainage.study.retest.card_values`). :func:`predict_scans` reports the
        corrected gap's ``sd_years`` in the ``retest_sd`` column.
    """
    path, card = _card_for_heads(models_dir, values, "a test-retest SD")
    card[RETEST_FIELD] = json.loads(json.dumps(dict(values)))
    path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return path


def _card_for_heads(models_dir: str | os.PathLike, values: Mapping[str, Any],
                    what: str) -> tuple[Path, dict[str, Any]]:
    """The model card's path and contents, refusing per-head ``values`` for a head the card
    does not hold (``what``: the record, as the message names it)."""
    path = Path(models_dir) / MODEL_CARD_FILE
    card = read_card(path)
    unknown = set(values) - set(card["heads"])
    if unknown:
        raise ModelFolderError(f"{path}: no head {sorted(unknown)} to record {what} "
                               f"for (heads: {sorted(card['heads'])})")
    return path, card


def record_test_error(models_dir: str | os.PathLike,
                      values: Mapping[str, Mapping[str, Any]]) -> Path:
    """Add each head's error on the run's held-out test scans to ``model.json``.

    ``brainage predict`` prints it with the training domain, so that whoever applies the
    model reads how well it did where it was measured (and, for a model trained on simulated
    brains, that this was measured on simulated scans).

    Parameters
    ----------
    models_dir : str or PathLike
        The model folder (its card must exist).
    values : mapping
        Per head: ``mae_years`` (mean absolute error of the predicted age, years), ``n``
        (test scans) and ``simulated`` (whether the test scans were simulated).

    Raises
    ------
    ModelFolderError
        A head the card does not hold, or values that are not a valid test error (the
        message names the field).
    """
    path, card = _card_for_heads(models_dir, values, "a test error")
    card[TEST_ERROR_FIELD] = json.loads(json.dumps({h: dict(v) for h, v in values.items()}))
    problems = schema_problems(card, MODEL_CARD_SCHEMA)
    if problems:
        raise ModelFolderError(f"{path}: not a valid test error: {'; '.join(problems)}")
    path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return path


def present(path: Path, error: type[Exception] = ValueError) -> bool:
    """Whether an optional file of a model folder is there: False when nothing is at
    ``path``; ``error`` (naming the file) when something is but it is not a readable
    regular file (a folder, a symlink loop, a FIFO ...): that is not an absent file."""
    if not os.path.lexists(path):
        return False
    problem = file_problem(path)
    if problem is not None:
        raise error(f"{path} {problem}")
    return True


def checkpoint_digest(head_dir: str | os.PathLike) -> str:
    return sha256_file(Path(head_dir) / CHECKPOINT_FILE)


def _check_checkpoint(path: Path, field: str, stored: object, expected: str | None) -> None:
    """Refuse a trust file made for another checkpoint than the head's (retrained since)."""
    if expected is not None and stored != expected:
        raise ValueError(f"{path}: {field} {str(stored)[:12]}... is not the SHA-256 of the "
                         f"head's {CHECKPOINT_FILE} ({expected[:12]}...): it was fitted for other "
                         f"weights; rerun the notebooks 02 and 03 that write it")


def save_ood(head_dir: str | os.PathLike, ood: FeatureOOD, checkpoint_sha256: str) -> Path:
    """Write ``head_dir/ood.npz`` (plain arrays, the format tag and the checkpoint's SHA-256)."""
    path = Path(head_dir) / OOD_FILE
    with path.open("wb") as handle:
        np.savez(handle, format=np.asarray(OOD_FORMAT),
                 checkpoint_sha256=np.asarray(checkpoint_sha256), **ood.to_arrays())
    return path


def load_ood(head_dir: str | os.PathLike, feature_dim: int | None = None,
             checkpoint_sha256: str | None = None) -> FeatureOOD | None:
    """The head's OOD reference, or None (logged) when ``ood.npz`` is absent.

    Parameters
    ----------
    head_dir : str or PathLike
    feature_dim : int, optional
        The head's feature size: the reference must have it.
    checkpoint_sha256 : str, optional
        The head's checkpoint checksum (the card's): the reference must be fitted for it.

    Raises
    ------
    ValueError
        Naming the file and the array: not an npz, another format, a missing, malformed or
        non-finite array, features of another size than the head's, another checkpoint.
    """
    path = Path(head_dir) / OOD_FILE
    if not present(path):
        logger.warning("%s is absent: scans get no out-of-distribution score", path)
        return None
    arrays = _read_npz(path)
    found = arrays.pop("format", None)
    if found is None or found.shape != () or str(found) != OOD_FORMAT:
        raise ValueError(f"{path}: array 'format' must be {OOD_FORMAT!r}, got "
                         f"{None if found is None else str(found)!r}")
    stored = arrays.pop("checkpoint_sha256", None)
    _check_checkpoint(path, "array 'checkpoint_sha256'", None if stored is None else str(stored),
                      checkpoint_sha256)
    ood = FeatureOOD.from_arrays(arrays, source=str(path))
    if feature_dim is not None and ood.feature_dim != feature_dim:
        raise ValueError(f"{path}: array 'reference' has {ood.feature_dim} features per scan but "
                         f"the head's encoder gives {feature_dim}: it belongs to another model")
    return ood


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz file, each one's size checked from the zip directory and its
    ``.npy`` header before it is read (``np.load`` checks neither).

    Written here because numpy reads an npz member whatever size its headers declare: a small
    file inflating to gigabytes, or a header declaring a (400000, 400000) array, would be
    allocated before any check.
    """
    import zipfile
    import zlib

    arrays: dict[str, np.ndarray] = {}
    total, max_bytes = 0, OOD_MAX_BYTES
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                total += info.file_size
                if total > max_bytes:
                    raise ValueError(f"its members inflate to more than {max_bytes:,} bytes "
                                     f"(member {info.filename!r}: {info.file_size:,} bytes); "
                                     f"an OOD reference is a few MB")
                with archive.open(info) as member:  # zipfile stops at the declared size
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0)):
                        raise ValueError(f"array {name!r} has .npy format version {version}")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member, max_header_size=10_000)
                    declared = math.prod(shape) * dtype.itemsize
                    if declared > info.file_size:
                        raise ValueError(f"array {name!r} declares shape {shape} of {dtype} "
                                         f"({declared:,} bytes) but its member holds "
                                         f"{info.file_size:,} bytes")
                    if dtype.hasobject:
                        raise ValueError(f"array {name!r} holds Python objects")
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} cannot be read as an OOD reference: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
            NotImplementedError) as err:  # truncated, junk, bad CRC, unknown compression
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ValueError(f"{path} cannot be read as an npz file (damaged, truncated or not "
                         f"an npz): {detail}") from err
    return arrays


def save_calibration(head_dir: str | os.PathLike, calibration: HeadCalibration) -> Path:
    """Write ``head_dir/conformal.json``."""
    path = Path(head_dir) / CONFORMAL_FILE
    path.write_text(json.dumps(calibration.to_dict(), indent=1), encoding="utf-8")
    return path


def _same_correction(stored: Mapping[str, Any] | None, correction: Any) -> bool:
    if stored is None or correction is None:
        return stored is None and correction is None
    coefficients = stored.get("coefficients", {})
    return (stored.get("method") == correction.method
            and set(coefficients) == set(correction.coefficients)
            and all(math.isclose(float(coefficients[k]), v, rel_tol=1e-9, abs_tol=1e-12)
                    for k, v in correction.coefficients.items()))


def _check_stored_correction(path: Path, stored: object) -> None:
    """``conformal.json``'s ``bias_correction``: null, or a method and numeric coefficients."""
    if stored is None:
        return
    if isinstance(stored, dict) and isinstance(stored.get("method"), str):
        coefficients = stored.get("coefficients")
        if isinstance(coefficients, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in coefficients.values()):
            return
    raise ValueError(f"{path}: field 'bias_correction' must be null or a mapping with a "
                     f"'method' (string) and 'coefficients' (numbers); got "
                     f"{type(stored).__name__} {str(stored)[:80]}")


def load_calibration(head_dir: str | os.PathLike, correction: Any = None,
                     checkpoint_sha256: str | None = None) -> HeadCalibration | None:
    """The head's intervals, or None (logged) when ``conformal.json`` is absent.

    Parameters
    ----------
    head_dir : str or PathLike
    correction : AgeBiasCorrection, optional
        The head's stored correction: the gap's interval must have been calibrated with it.
    checkpoint_sha256 : str, optional
        The head's checkpoint checksum: the calibration must be of its predictions.

    Raises
    ------
    ValueError
        Naming the file and the field: not JSON, another format, a malformed interval, another
        level in the two intervals, a bias correction that differs from ``correction``.
    """
    path = Path(head_dir) / CONFORMAL_FILE
    if not present(path):
        logger.warning("%s is absent: predictions get no interval", path)
        return None
    data = read_tagged_json(path, CONFORMAL_FORMAT)
    _check_checkpoint(path, "field 'checkpoint_sha256'", data.get("checkpoint_sha256"),
                      checkpoint_sha256)
    age = ConformalInterval.from_dict(data.get("age"), source=f"{path}: field 'age'")
    gap = None
    if data.get("corrected_gap") is not None:
        gap = ConformalInterval.from_dict(data["corrected_gap"],
                                          source=f"{path}: field 'corrected_gap'")
        if gap.level != age.level:
            raise ValueError(f"{path}: fields 'age.level' ({age.level}) and "
                             f"'corrected_gap.level' ({gap.level}) differ")
    stored = data.get("bias_correction")
    _check_stored_correction(path, stored)
    if gap is not None and not _same_correction(stored, correction):
        current = None if correction is None else correction.to_dict()
        raise ValueError(f"{path}: field 'bias_correction' ({stored}) is not the head's "
                         f"bias_correction.json ({current}): "
                         f"the gap's interval was calibrated for another correction; rerun the "
                         f"evaluation notebook")
    folds = data["corrected_gap"].get("folds", 0) if gap is not None else 0
    return HeadCalibration(age, gap, stored, int(folds) if isinstance(folds, int) else 0,
                           data.get("checkpoint_sha256"))


def load_head_trust(head_dir: str | os.PathLike, *, card: Mapping[str, Any],
                    correction: Any = None, feature_dim: int | None = None,
                    checkpoint_sha256: str | None = None) -> HeadTrust:
    """Read (and validate) a head's ``conformal.json`` and ``ood.npz``; either may be absent.

    Both must belong to the checkpoint (``checkpoint_sha256``: the file's own checksum;
    default: the card's ``heads.<name>.sha256``), the gap's interval to the head's bias
    correction, the OOD reference to its feature size.
    """
    domain = card.get("domain") or {}
    age_range = tuple(float(v) for v in domain["age_range"]) if domain.get("age_range") else None
    entry = (card.get("heads") or {}).get(Path(head_dir).name) or {}
    sha = checkpoint_sha256 or entry.get("sha256")
    return HeadTrust(load_calibration(head_dir, correction, sha),
                     load_ood(head_dir, feature_dim, sha), age_range)  # type: ignore[arg-type]

@dataclass(frozen=True)
class HeadCalibration:
    """A head's intervals: of the age around ``predicted`` (Mondrian on the predicted age), and
    of the corrected gap (Mondrian on the age; None without a bias correction).

    Attributes
    ----------
    age : ConformalInterval
    corrected_gap : ConformalInterval or None
    correction : dict or None
        :meth:`brainage.analysis.metrics.AgeBiasCorrection.to_dict` of the correction the gap's
        residuals were cross-fitted with.
    folds : int
        Cross-fitting folds.
    checkpoint_sha256 : str or None
        The checkpoint whose predictions were calibrated.
    """

    age: ConformalInterval
    corrected_gap: ConformalInterval | None
    correction: dict[str, Any] | None
    folds: int
    checkpoint_sha256: str | None = None

    @property
    def level(self) -> float:
        return self.age.level

    def to_dict(self) -> dict[str, Any]:
        import crepes

        return {"format": CONFORMAL_FORMAT, "level": self.level,
                "library": f"crepes {getattr(crepes, '__version__', '?')}",
                "calibration_split": CALIBRATION_SPLIT,
                "checkpoint_sha256": self.checkpoint_sha256,
                "age": {"around": "predicted", "bins_on": "predicted", **self.age.to_dict()},
                "corrected_gap": None if self.corrected_gap is None else {
                    "around": "corrected_gap", "bins_on": "age", "scheme": "cross-fit",
                    "folds": self.folds, **self.corrected_gap.to_dict()},
                "bias_correction": self.correction}


@dataclass(frozen=True)
class HeadTrust:
    """What a head knows of its own trust: intervals, OOD reference, training ages."""

    calibration: HeadCalibration | None
    ood: FeatureOOD | None
    age_range: tuple[float, float] | None


# --- the integrated-gradients reference ---------------------------------------------------------


def save_ig_reference(models_dir: str | os.PathLike, volume: np.ndarray,
                      affine: np.ndarray) -> Path:
    """Write ``models_dir/ig_reference.nii.gz``: the reference volume of the heads'
    integrated gradients (the study's: a typical training scan of the mean training age, on
    the model grid; :func:`brainage.models.saliency.typical_scan`).

    Parameters
    ----------
    models_dir : str or PathLike
    volume : ndarray, shape (D, H, W)
        Finite values on the model grid.
    affine : ndarray, shape (4, 4)
        The grid's voxel-to-MNI152 affine.
    """
    import nibabel as nib

    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or not np.isfinite(volume).all():
        raise ValueError(f"the integrated-gradients reference must be a finite 3D volume; got "
                         f"shape {volume.shape}")
    path = Path(models_dir) / IG_REFERENCE_FILE
    nib.save(nib.Nifti1Image(volume, np.asarray(affine, dtype=np.float64)), path)
    return path


def load_ig_reference(root: str | os.PathLike,
                      shape: tuple[int, int, int]) -> np.ndarray | None:
    """The folder's integrated-gradients reference, float32 of the model's grid ``shape``;
    None (logged) when absent.

    Raises
    ------
    ModelFolderError
        Naming the file: not readable as NIfTI, another shape than the grid, non-finite values.
    """
    import nibabel as nib

    path = Path(root) / IG_REFERENCE_FILE
    if not present(path, ModelFolderError):
        logger.info("%s is absent: brainage predict --saliency is not available", path)
        return None
    try:
        volume = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises several types for a damaged file
        raise ModelFolderError(f"{path} cannot be read as NIfTI: {err}") from err
    if volume.shape != tuple(shape) or not np.isfinite(volume).all():
        raise ModelFolderError(f"{path} must hold a finite volume of the model's grid "
                               f"{tuple(shape)}; got shape {volume.shape}")
    return volume


# --- site calibrations (brainage calibrate) ---------------------------------------------


@dataclass(frozen=True)
class SiteCalibrationFile:
    """A site calibration file read for one model folder.

    Attributes
    ----------
    path : Path
        The file.
    site : str
        The site's name.
    heads : dict of str to SiteCalibration
        Each head of the model folder's calibration.
    """

    path: Path
    site: str
    heads: dict[str, SiteCalibration]


def head_checkpoint_path(folder: ModelFolder, head: str) -> Path:
    """The checkpoint file of ``head`` (the card's ``heads.<head>.checkpoint``)."""
    return folder.root / str(folder.card["heads"][head].get("checkpoint",
                                                            f"{head}/{CHECKPOINT_FILE}"))


def head_checkpoint_digest(folder: ModelFolder, head: str) -> str:
    """SHA-256 of the checkpoint file of ``head``."""
    return checkpoint_digest(head_checkpoint_path(folder, head).parent)


def load_site_calibration(path: str | os.PathLike, folder: ModelFolder) -> SiteCalibrationFile:
    """Read a site calibration file (:func:`brainage.inference.calibrate.calibrate_site`) for
    ``folder``'s heads; errors name the file.

    Raises
    ------
    ModelFolderError
        The file is not readable JSON of :data:`SITE_CALIBRATION_FILE_FORMAT`, lacks a head of
        the folder, or was fitted for another checkpoint of a head.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"--site-calibration {path} cannot be read as JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != SITE_CALIBRATION_FILE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelFolderError(f"--site-calibration {path} is not a site calibration file "
                               f"(format {found!r}, expected {SITE_CALIBRATION_FILE_FORMAT!r}; "
                               f"write one with brainage calibrate)")
    heads = data.get("heads")
    if not isinstance(heads, dict):
        raise ModelFolderError(f"--site-calibration {path} lacks the field 'heads'")
    loaded: dict[str, SiteCalibration] = {}
    for head in folder.models:
        entry = heads.get(head)
        if not isinstance(entry, dict):
            raise ModelFolderError(f"--site-calibration {path} has no calibration of head "
                                   f"{head!r} (it has {sorted(heads)}): it was written for "
                                   f"another model folder")
        expected = head_checkpoint_digest(folder, head)
        if entry.get("checkpoint_sha256") != expected:
            raise ModelFolderError(
                f"--site-calibration {path}: head {head!r} was calibrated for another "
                f"checkpoint ({str(entry.get('checkpoint_sha256'))[:12]}... is not the SHA-256 "
                f"of {head_checkpoint_path(folder, head)}, {expected[:12]}...): calibrate this "
                f"model again with brainage calibrate")
        try:
            loaded[head] = SiteCalibration.from_dict(entry.get("calibration"),
                                                     source=f"{path} (head {head})")
        except ValueError as err:
            raise ModelFolderError(f"--site-calibration {err}") from err
    site = {c.site for c in loaded.values()}
    return SiteCalibrationFile(path, site.pop() if len(site) == 1 else str(data.get("site")),
                               loaded)
