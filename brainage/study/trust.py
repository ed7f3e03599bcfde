"""Trust in each prediction of a run and of ``brainage predict``: intervals, domain, OOD flags.

The statistics are in :mod:`brainage.analysis.uncertainty`; this module fits them on the right
scans of a run, stores them in the model folder, reads them back (validated) and adds their
columns (:data:`brainage._utils.TRUST_VALUES`) to the prediction tables.

Files of each head's folder (``models/<head>/``)::

    ood.npz          out-of-distribution reference (notebook 02, :func:`fit_ood_references`):
                     the training scans' standardised feature statistics (the encoder's four
                     stages, :mod:`brainage.models.features`) and the threshold, the conformal
                     quantile of the validation scans' scores
    conformal.json   split-conformal calibration (notebook 03, :func:`calibrate_run`): the level,
                     the validation residuals of the age interval (Mondrian bins of the
                     predicted age) and the cross-fitted validation gaps of the corrected gap's
                     interval (Mondrian bins of the age), and the bias correction it belongs to

The model card (``model.json``) records the training domain under ``domain``
(:func:`training_domain`, written by :func:`brainage.study.predict.write_model_card`).

Nothing of the test split reaches these files: the OOD reference is the training split, its
threshold and the intervals are calibrated on the validation split, as the bias correction is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from brainage._utils import AGE_RANGE, TRUST_VALUES, check_int, check_number
from brainage.analysis.uncertainty import (
    ConformalInterval,
    FeatureOOD,
    coverage_table,
    cross_fitted_gaps,
    min_calibration_size,
)

if TYPE_CHECKING:
    from brainage.study.runs import RunFolder

logger = logging.getLogger(__name__)

__all__ = [
    "CONFORMAL_FILE",
    "CONFORMAL_FORMAT",
    "DOMAIN_SCHEMA",
    "DomainCheck",
    "DomainWarning",
    "HeadCalibration",
    "HeadTrust",
    "IntervalSettings",
    "OOD_FILE",
    "OOD_FORMAT",
    "TRUST_FILE",
    "add_trust_columns",
    "broken_versions",
    "calibrate",
    "calibrate_run",
    "coverage_report",
    "coverage_text",
    "describe_model",
    "domain_summary",
    "fit_ood_references",
    "glue_values",
    "is_simulated_scan",
    "load_calibration",
    "load_head_trust",
    "load_ood",
    "present",
    "read_json_file",
    "save_calibration",
    "save_ood",
    "score_volumes",
    "summary",
    "training_domain",
    "trust_columns",
]

CONFORMAL_FILE = "conformal.json"
CHECKPOINT = "best.pt"
OOD_FILE = "ood.npz"
CONFORMAL_FORMAT = "brainage-conformal/1"
OOD_FORMAT = "brainage-ood/1"
#: Most bytes ``ood.npz`` may inflate to, read from its zip and array headers before any
#: array is read (a zip bomb or a header declaring a huge array is refused). The paper
#: profile's reference (a few thousand scans x a few hundred features, float64) is about 10 MB.
OOD_MAX_BYTES = 1 << 30
#: The split that calibrates the intervals and the OOD threshold (and fits the bias correction).
CALIBRATION_SPLIT = "val"
#: ``GeneratedBy`` name in the ``dataset_description.json`` of a simulated cohort.
_SIMULATOR = "brainage.data.simulate"

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


class DomainWarning(UserWarning):
    """A model is applied to scans unlike its training data (real scans, simulated training)."""


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalSettings:
    """How the prediction intervals are calibrated.

    Parameters
    ----------
    level : float, default=0.9
        Nominal coverage of every interval.
    n_bins : int, default=3
        Mondrian age bins wanted (fewer when the validation split is too small for them).
    folds : int, default=5
        Cross-fitting folds of the corrected gap's residuals.
    seed : int, default=0
        Seed of the folds.
    """

    level: float = 0.9
    n_bins: int = 3
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("interval_level", self.level, low=0.0, high=1.0, low_open=True,
                     high_open=True)
        check_int("interval_bins", self.n_bins, low=1)
        check_int("IntervalSettings.folds", self.folds, low=2)
        check_int("seed", self.seed, low=0)


# --- training domain ----------------------------------------------------------------------------


def training_domain(run: RunFolder) -> dict[str, Any]:
    """What the model card records of the training data: dataset, simulated or real, size,
    ages, sites and the scans' space (the grid is the card's ``grid``)."""
    info = run.dataset_info()
    train = run.rows("train")
    cohort = run.cohort()
    sites = train["site"].dropna().astype(str) if "site" in train.columns else pd.Series([])
    return {"dataset": str(info["name"]), "simulated": bool(info.get("simulated", False)),
            "space": str(info["space"]), "skull_stripped": bool(info["skull_stripped"]),
            "n_train": int(len(train)), "n_val": int((cohort["split"] == "val").sum()),
            "age_range": [float(train["age"].min()), float(train["age"].max())],
            "sites": sorted(sites.unique().tolist())}


def domain_summary(card: Mapping[str, Any]) -> str:
    """One line on the training domain of a model card (``"unknown"`` parts when absent)."""
    domain = card.get("domain")
    preprocess = card.get("preprocess", {})
    grid = card.get("grid", {})
    where = (f"{preprocess.get('space', '?')} scans on a {preprocess.get('grid_mm', '?')} mm grid "
             f"({' x '.join(map(str, grid.get('shape', [])))})")
    retest = "; ".join(
        f"{head}: test-retest SD of the corrected gap {v['sd_years']:.1f} y (two scans of one "
        f"person differ really beyond {v['sdc_years']:.1f} y)"
        for head, measures in (card.get("retest") or {}).items()
        for key, v in measures.items() if key == "corrected_gap")  # predict.record_retest
    where += f"; {retest}" if retest else ""
    if not domain:
        return f"training domain not recorded (older model card); {where}"
    low, high = domain["age_range"]
    sites = domain.get("sites") or []
    site_text = (", ".join(sites) if len(sites) <= 6 else f"{len(sites)} sites") or "no site"
    kind = "simulated" if domain["simulated"] else "real"
    return (f"trained on {domain['dataset']!r} ({kind}), {domain['n_train']} scans aged "
            f"{low:.0f}-{high:.0f} years from {site_text}; {where}")


def describe_model(path: str | os.PathLike) -> str | None:
    """:func:`domain_summary` of the card of a model folder (or of a head folder's parent);
    None when it cannot be read (loading the folder then reports why)."""
    folder = Path(path)
    for candidate in (folder / "model.json", folder.parent / "model.json"):
        if candidate.is_file():
            try:
                card = read_json_file(candidate)
                return domain_summary(card) if isinstance(card, dict) else None
            except (ValueError, TypeError, KeyError, AttributeError):
                return None
    return None


@lru_cache(maxsize=256)
def _simulated_folder(folder: str) -> bool:
    """Whether ``folder`` or a parent holds a ``dataset_description.json`` of the simulator."""
    for parent in (Path(folder), *Path(folder).parents):
        description = parent / "dataset_description.json"
        if description.is_file():
            try:
                generated = json.loads(description.read_text(encoding="utf-8")).get(
                    "GeneratedBy", [])
            except (OSError, ValueError, AttributeError):
                return False
            return any(isinstance(g, Mapping) and g.get("Name") == _SIMULATOR
                       for g in generated or [])
    return False


def is_simulated_scan(path: str | os.PathLike) -> bool:
    """Whether a scan belongs to a cohort written by :mod:`brainage.data.simulate` (its BIDS
    folder's ``dataset_description.json`` says so)."""
    return _simulated_folder(str(Path(path).resolve().parent))


class DomainCheck:
    """Warn once (:class:`DomainWarning`) when a model trained on simulated data meets real
    scans: native-space scans, or scans outside a brainage-simulated cohort."""

    def __init__(self, card: Mapping[str, Any]) -> None:
        domain = card.get("domain") or {}
        self.simulated = bool(domain.get("simulated", False))
        self.dataset = domain.get("dataset", "?")
        self.warned = False

    def check(self, scans: Mapping[str, str]) -> None:
        """``scans``: path -> space of the scans just predicted."""
        if self.warned or not self.simulated:
            return
        for path, space in scans.items():
            if space == "native" or not is_simulated_scan(path):
                why = "in native space" if space == "native" else "not from a simulated cohort"
                warnings.warn(
                    f"the model was trained on simulated data ({self.dataset!r}) and is applied "
                    f"to real scans (first: {path}, {why}): simulated and real scans differ "
                    f"after the same preprocessing, so expect large errors; intervals were "
                    f"calibrated on simulated scans and do not hold here (see the ood column)",
                    DomainWarning, stacklevel=2)
                self.warned = True
                return


# --- reading the model folder's files ------------------------------------------------------------


def present(path: Path, error: type[Exception] = ValueError) -> bool:
    """Whether an optional file of a model folder is there: False when nothing is at
    ``path``; ``error`` (naming the file) when something is but it is not a readable
    regular file (a folder, a symlink loop, a FIFO ...): that is not an absent file."""
    from brainage.data.cohort import file_problem

    if not os.path.lexists(path):
        return False
    problem = file_problem(path)
    if problem is not None:
        raise error(f"{path} {problem}")
    return True


def read_json_file(path: Path, error: type[Exception] = ValueError) -> Any:
    """``path`` parsed as JSON; any failure raises ``error`` naming the file (not UTF-8,
    not JSON, nested too deeply, an integer of more digits than Python converts ...)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise error(f"{path} cannot be read as JSON: it is nested too deeply for this "
                    f"reader (Python's recursion limit); a brainage file has a few levels") \
            from None
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError, long integers
        detail = " ".join(str(err).split())[:300]
        raise error(f"{path} cannot be read as JSON: {detail}") from err


# --- out-of-distribution reference ---------------------------------------------------------------


def _checkpoint_sha256(head_dir: str | os.PathLike) -> str:
    from brainage._utils import sha256_file

    return sha256_file(Path(head_dir) / CHECKPOINT)


def _check_checkpoint(path: Path, field: str, stored: object, expected: str | None) -> None:
    """Refuse a trust file made for another checkpoint than the head's (retrained since)."""
    if expected is not None and stored != expected:
        raise ValueError(f"{path}: {field} {str(stored)[:12]}... is not the SHA-256 of the "
                         f"head's {CHECKPOINT} ({expected[:12]}...): it was fitted for other "
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


def fit_ood_references(run: RunFolder, models_dir: str | os.PathLike,
                       heads: Sequence[str] = ("rnc", "l1"), *, rate: float = 0.05, k: int = 5,
                       batch_size: int = 8, device: str = "auto") -> dict[str, FeatureOOD]:
    """Each head's OOD reference: training features, threshold from the validation scans.

    Computes the feature statistics (:func:`brainage.models.features.capture_features`) of the
    training and validation scans with each head's ``best.pt`` and writes ``<head>/ood.npz``.
    With too few
    validation scans for ``rate`` (``1 / rate - 1``) no reference is written (a stale one is
    removed), with a warning: those scans get no OOD score.

    Returns
    -------
    dict of str to FeatureOOD
        The heads that have a reference.
    """
    from brainage.models.features import capture_features
    from brainage.models.train import load_model, predict

    rate = check_number("ood_rate", rate, low=0.0, high=1.0, low_open=True, high_open=True)
    val = run.rows(CALIBRATION_SPLIT)
    needed = math.ceil(1 / rate - 1 - 1e-9)
    references: dict[str, FeatureOOD] = {}
    for head in heads:
        (Path(models_dir) / head / OOD_FILE).unlink(missing_ok=True)
    if len(val) < needed:
        warnings.warn(f"an OOD flag rate of {rate:g} needs at least {needed} {CALIBRATION_SPLIT} "
                      f"scans, the run has {len(val)}: no out-of-distribution reference is "
                      f"written (raise ood_rate or enlarge the split)", stacklevel=2)
        return references
    datasets = {"train": run.dataset("train"), CALIBRATION_SPLIT: run.dataset(val)}
    for head in heads:
        head_dir = Path(models_dir) / head
        model = load_model(head_dir / CHECKPOINT, device="cpu")
        features = {}
        for split, data in datasets.items():
            with capture_features(model) as captured:
                predict(model, data, batch_size=batch_size, device=device)
            features[split] = captured.array()
        references[head] = FeatureOOD.fit(features["train"], features[CALIBRATION_SPLIT],
                                          rate=rate, k=k)
        save_ood(head_dir, references[head], _checkpoint_sha256(head_dir))
    return references


# --- conformal calibration ----------------------------------------------------------------------


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


def calibrate(predictions: pd.DataFrame, corrections: Mapping[str, Any], *,
              settings: IntervalSettings = IntervalSettings(),
              split: str = CALIBRATION_SPLIT) -> dict[str, HeadCalibration]:
    """Calibrate each head's intervals on the rows of ``split`` only.

    Parameters
    ----------
    predictions : DataFrame
        From :func:`brainage.analysis.evaluation.correct_predictions` (``model``, ``split``,
        ``age``, ``predicted``).
    corrections : mapping of str to AgeBiasCorrection
        Each head's correction (fitted on the same split); its method is used for cross-fitting.
    settings : IntervalSettings
    split : str, default="val"
        The calibration split; no other row is read.
    """
    result = {}
    for head, rows in predictions[predictions["split"] == split].groupby("model", sort=False):
        age = rows["age"].to_numpy(dtype=np.float64)
        predicted = rows["predicted"].to_numpy(dtype=np.float64)
        needed = min_calibration_size(settings.level)
        if age.size < needed:
            warnings.warn(f"head {head!r} gets no interval: interval_level {settings.level:g} "
                          f"needs at least {needed} {split} scans, the run has {age.size} (lower "
                          f"interval_level or enlarge the {split} split)", stacklevel=2)
            continue
        interval = ConformalInterval.fit(age - predicted, level=settings.level,
                                         bin_values=predicted, n_bins=settings.n_bins,
                                         y_range=AGE_RANGE)
        correction = corrections.get(str(head))
        gap = None
        if correction is not None:
            gaps = cross_fitted_gaps(age, predicted, method=correction.method,
                                     folds=settings.folds, seed=settings.seed)
            gap = ConformalInterval.fit(gaps, level=settings.level, bin_values=age,
                                        n_bins=settings.n_bins)
        result[str(head)] = HeadCalibration(
            interval, gap, None if correction is None else correction.to_dict(),
            min(settings.folds, age.size))
        logger.info("head %s: %g intervals on %d %s scans, age half-widths %s", head,
                    settings.level, age.size, split, np.round(interval.half_widths(), 2))
    return result


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
    data = read_json_file(path)
    if not isinstance(data, dict) or data.get("format") != CONFORMAL_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: field 'format' must be {CONFORMAL_FORMAT!r}, got {found!r}")
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


# --- applying them ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadTrust:
    """What a head knows of its own trust: intervals, OOD reference, training ages."""

    calibration: HeadCalibration | None
    ood: FeatureOOD | None
    age_range: tuple[float, float] | None


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


def trust_columns(trust: HeadTrust | None, *, predicted: np.ndarray, age: np.ndarray,
                  corrected_gap: np.ndarray, features: np.ndarray | None) -> dict[str, Any]:
    """The :data:`brainage._utils.TRUST_VALUES` columns of one head's rows.

    Parameters
    ----------
    trust : HeadTrust or None
        None (or missing parts): NaN / NA columns.
    predicted, age, corrected_gap : ndarray, shape (n,)
        NaN where unknown (a failed scan, no age, no correction).
    features : ndarray, shape (n, D), optional
        Feature statistics (:mod:`brainage.models.features`; rows of NaN for failed scans).
    """
    n = predicted.size
    nan, unknown = np.full(n, np.nan), np.zeros(n, bool)
    columns: dict[str, Any] = {"interval_level": nan, "age_lower": nan, "age_upper": nan,
                               "corrected_gap_lower": nan, "corrected_gap_upper": nan,
                               "ood_score": nan, "ood": _flags(unknown, unknown),
                               "outside_age_range": _flags(unknown, unknown)}
    if trust is None:
        return columns
    calibration = trust.calibration
    if calibration is not None:
        columns["interval_level"] = np.where(np.isfinite(predicted), calibration.level, np.nan)
        columns["age_lower"], columns["age_upper"] = calibration.age.predict(predicted, predicted)
        if calibration.corrected_gap is not None:
            columns["corrected_gap_lower"], columns["corrected_gap_upper"] = (
                calibration.corrected_gap.predict(corrected_gap, age))
    if trust.ood is not None and features is not None and len(features):
        usable = np.isfinite(features).all(axis=1) & np.isfinite(predicted)
        scores = np.full(n, np.nan)
        if usable.any():
            scores[usable] = trust.ood.score(features[usable])
        columns["ood_score"] = scores
        columns["ood"] = _flags(scores > 1.0, usable)
    if trust.age_range is not None:
        low, high = trust.age_range
        value = np.where(np.isfinite(age), age, predicted)
        columns["outside_age_range"] = _flags((value < low) | (value > high), np.isfinite(value))
    return columns


def _flags(values: np.ndarray, known: np.ndarray) -> pd.arrays.BooleanArray:
    """True/False where ``known``, missing elsewhere (pandas' nullable booleans)."""
    return pd.arrays.BooleanArray(np.asarray(values, bool) & known, ~np.asarray(known, bool))


def add_trust_columns(predictions: pd.DataFrame, trusts: Mapping[str, HeadTrust],
                      features: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """``predictions`` (one row per scan and head) with the trust columns appended.

    ``features[head]`` holds the head's rows' features in the table's order of that head.
    """
    out = predictions.copy()
    for column in TRUST_VALUES:
        out[column] = pd.array([pd.NA] * len(out), dtype="boolean") if column in (
            "ood", "outside_age_range") else np.nan
    for head, rows in out.groupby("model", sort=False):
        head_features = None if features is None else features.get(str(head))
        if head_features is not None and len(head_features) != len(rows):
            raise ValueError(f"features of head {head!r} hold {len(head_features)} rows for "
                             f"{len(rows)} predictions")
        columns = trust_columns(trusts.get(str(head)), predicted=rows["predicted"].to_numpy(float),
                                age=rows["age"].to_numpy(float),
                                corrected_gap=rows["corrected_gap"].to_numpy(float),
                                features=head_features)
        for column, values in columns.items():
            out.loc[rows.index, column] = values
    return out


def calibrate_run(run: RunFolder, predictions: pd.DataFrame, corrections: Mapping[str, Any],
                  features: Mapping[str, np.ndarray] | None = None, *,
                  settings: IntervalSettings = IntervalSettings()
                  ) -> tuple[pd.DataFrame, dict[str, HeadTrust]]:
    """Notebook 03's step: calibrate on the validation split, store, apply to every row.

    Writes ``models/<head>/conformal.json``, reads ``ood.npz`` (written by notebook 02) and
    the card's training domain, and returns the predictions with the trust columns.
    """
    card_path = run.models / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    if not card.get("domain"):
        train = run.rows("train")
        card = {**card, "domain": {"age_range": [float(train["age"].min()),
                                                 float(train["age"].max())]}}
    calibrations = calibrate(predictions, corrections, settings=settings)
    age_range = tuple(card["domain"]["age_range"])
    trusts = {}
    for head in dict.fromkeys(predictions["model"].astype(str)):
        head_dir = run.models / head
        sha = _checkpoint_sha256(head_dir)
        calibration = calibrations.get(head)
        if calibration is None:
            (head_dir / CONFORMAL_FILE).unlink(missing_ok=True)  # no stale calibration
        else:
            calibration = dataclasses.replace(calibration, checkpoint_sha256=sha)
            save_calibration(head_dir, calibration)
        trusts[head] = HeadTrust(calibration, load_ood(head_dir, checkpoint_sha256=sha),
                                 age_range)  # type: ignore[arg-type]
    return add_trust_columns(predictions, trusts, features), trusts


# --- reporting ----------------------------------------------------------------------------------


def coverage_report(test: pd.DataFrame, *, level: float, age_bins: Sequence[float],
                    truth: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Coverage of the test rows' intervals: overall, by age bin and by site, per head.

    Returns
    -------
    dict of str to DataFrame
        ``"age"`` (chronological age by ``[age_lower, age_upper]``), ``"gap"`` (0 by the
        corrected gap's interval: the healthy controls' true gap), ``"by_age_bin"``,
        ``"by_site"`` and, with ``truth`` (participant_id, biological_age), ``"biological"``.
    """
    test = test.copy()
    test["age_bin"] = pd.cut(test["age"], list(age_bins), right=False)
    test["zero"] = 0.0
    common = dict(level=level)
    report = {
        "age": coverage_table(test, truth="age", lower="age_lower", upper="age_upper", **common),
        "gap": coverage_table(test, truth="zero", lower="corrected_gap_lower",
                              upper="corrected_gap_upper", **common),
        "by_age_bin": coverage_table(test.dropna(subset=["age_bin"]), truth="age",
                                     lower="age_lower", upper="age_upper",
                                     by=("model", "age_bin"), **common),
        "by_site": coverage_table(test, truth="age", lower="age_lower", upper="age_upper",
                                  by=("model", "site"), **common),
    }
    if truth is not None:
        joined = test.merge(truth[["participant_id", "biological_age"]], on="participant_id")
        report["biological"] = coverage_table(joined, truth="biological_age", lower="age_lower",
                                              upper="age_upper", **common)
    return report


#: Run-folder file of notebook 03's trust summary (:func:`summary`).
TRUST_FILE = "trust.json"


def coverage_text(table: pd.DataFrame) -> pd.DataFrame:
    """A coverage table (:func:`brainage.analysis.uncertainty.coverage_table`) for reading:
    ``coverage [CI]``, covered of n, the mean width, and whether the CI holds the nominal level."""
    out = table.drop(columns=["ci_low", "ci_high", "coverage", "covered", "n", "confidence",
                              "mean_width", "nominal", "nominal_in_ci"], errors="ignore").copy()
    out = out.astype({c: str for c in out.columns})
    out["coverage [95% CI]"] = [f"{r.coverage:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                                if r.n else "n/a" for r in table.itertuples()]
    out["covered / n"] = [f"{r.covered} / {r.n}" for r in table.itertuples()]
    out["mean width (years)"] = table["mean_width"].round(1).to_numpy()
    if "nominal_in_ci" in table.columns:
        out["nominal in CI"] = table["nominal_in_ci"].to_numpy()
    return out


def broken_versions(volume: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Three preprocessed volumes a model should not trust, made from a good one.

    ``noise`` (gamma noise inside the brain), ``inverted contrast`` (the brain's intensities
    reversed, as a T2-weighted scan roughly is) and ``upside down`` (the superior-inferior axis
    reversed, as a wrong orientation in the header gives), each normalised as preprocessing
    normalises a scan (mean 1 inside the brain); ``original`` is the volume itself.

    Parameters
    ----------
    volume : ndarray, shape (D, H, W)
        A preprocessed scan (RAS, background 0).
    """
    from brainage.imaging.preprocess import normalise_intensity

    if volume.ndim != 3:
        raise ValueError(f"volume must have shape (D, H, W), got {volume.shape}")
    brain = volume > 0
    rng = np.random.default_rng(seed)
    inverted = np.where(brain, volume.max() - volume, 0.0)
    return {"original": volume.astype(np.float32),
            "noise": normalise_intensity(rng.gamma(2.0, 0.5, volume.shape), brain),
            "inverted contrast": normalise_intensity(inverted, brain),
            "upside down": np.ascontiguousarray(volume[:, :, ::-1]).astype(np.float32)}


def score_volumes(models: Mapping[str, str | os.PathLike], trusts: Mapping[str, HeadTrust],
                  volumes: Mapping[str, np.ndarray], *, device: str = "cpu") -> pd.DataFrame:
    """Predicted age, OOD score and flag of preprocessed volumes, for each head.

    Returns
    -------
    DataFrame
        ``volume``, ``model``, ``predicted``, ``ood_score``, ``ood``.
    """
    from brainage.models.datasets import VolumeDataset
    from brainage.models.features import capture_features
    from brainage.models.train import load_model, predict

    names = list(volumes)
    dataset = VolumeDataset(np.stack([volumes[n] for n in names]).astype(np.float32),
                            np.zeros(len(names)), names)
    rows = []
    for head, checkpoint in models.items():
        model = load_model(checkpoint, device=device)
        with capture_features(model) as captured:
            predicted = predict(model, dataset, device=device)
        ood = trusts[head].ood if head in trusts else None
        scores = ood.score(captured.array()) if ood is not None else np.full(len(names), np.nan)
        rows += [{"volume": n, "model": head, "predicted": p, "ood_score": s,
                  "ood": bool(s > 1) if np.isfinite(s) else None}
                 for n, p, s in zip(names, predicted, scores)]
    return pd.DataFrame(rows)


def summary(report: Mapping[str, pd.DataFrame], rates: pd.DataFrame,
            trusts: Mapping[str, HeadTrust], *, seconds: float) -> dict[str, Any]:
    """Plain-JSON summary of notebook 03's trust results (``trust.json``): per head the test
    coverage of each interval, the calibration, the OOD flag rates; the seconds spent."""

    def records(table: pd.DataFrame | None, head: str) -> dict[str, Any] | None:
        if table is None or table.empty:
            return None
        row = table[table["model"] == head]
        return None if row.empty else json.loads(row.iloc[0].to_json())

    heads: dict[str, Any] = {}
    for head, head_trust in trusts.items():
        calibration = head_trust.calibration
        head_rates = rates[rates["model"] == head]
        heads[head] = {
            "coverage_age": records(report.get("age"), head),
            "coverage_gap": records(report.get("gap"), head),
            "coverage_biological": records(report.get("biological"), head),
            "calibration": None if calibration is None else {
                "level": calibration.level, "n": calibration.age.n,
                "age_half_widths": calibration.age.half_widths().tolist(),
                "age_edges": list(calibration.age.edges),
                "gap_half_widths": None if calibration.corrected_gap is None
                else calibration.corrected_gap.half_widths().tolist()},
            "ood_rate": None if head_trust.ood is None else head_trust.ood.rate,
            "flag_rates": json.loads(head_rates.to_json(orient="records")),
        }
    return {"heads": heads, "seconds": float(seconds)}


def glue_values(report: Mapping[str, pd.DataFrame], rates: pd.DataFrame,
                trusts: Mapping[str, HeadTrust], broken: pd.DataFrame | None = None
                ) -> dict[str, str]:
    """The trust numbers the book's prose quotes, as text (``"n/a"`` where there are none).

    Keys per head ``h``: ``coverage_h``, ``coverage_h_ci``, ``width_h``, ``gap_coverage_h``,
    ``gap_coverage_h_ci``, ``bio_coverage_h``, ``ood_test_h``, ``ood_broken_h``; and
    ``interval_level``, ``n_calibration``, ``ood_rate_nominal``.
    """
    def row(name: str, head: str) -> Any:
        table = report.get(name)
        if table is None or table.empty or head not in set(table["model"]):
            return None
        found = table.set_index("model").loc[head]
        return found if found["n"] else None

    values: dict[str, str] = {}
    calibrated = [t.calibration for t in trusts.values() if t.calibration is not None]
    references = [t.ood for t in trusts.values() if t.ood is not None]
    values["interval_level"] = f"{calibrated[0].level:.0%}" if calibrated else "n/a"
    values["n_calibration"] = str(calibrated[0].age.n) if calibrated else "n/a"
    values["ood_rate_nominal"] = f"{references[0].rate:.0%}" if references else "n/a"
    for head in trusts:
        for key, name in (("coverage", "age"), ("gap_coverage", "gap"),
                          ("bio_coverage", "biological")):
            found = row(name, head)
            values[f"{key}_{head}"] = "n/a" if found is None else f"{found['coverage']:.2f}"
            values[f"{key}_{head}_ci"] = ("n/a" if found is None else
                                          f"{found['ci_low']:.2f} to {found['ci_high']:.2f}")
        found = row("age", head)
        values[f"width_{head}"] = "n/a" if found is None else f"{found['mean_width']:.1f}"
        test = rates[(rates["model"] == head) & (rates["split"] == "test")]
        values[f"ood_test_{head}"] = ("n/a" if test.empty or not test.iloc[0]["n"] else
                                      f"{test.iloc[0]['flagged']} of {test.iloc[0]['n']} "
                                      f"({test.iloc[0]['rate']:.0%})")
        shown = [] if broken is None else [
            f"{r.volume} {'flagged' if r.ood else 'not flagged'} (score {r.ood_score:.1f})"
            for r in broken[(broken["model"] == head) & (broken["volume"] != "original")]
            .itertuples() if r.ood is not None]
        values[f"ood_broken_{head}"] = ", ".join(shown) or "n/a"
    return values
