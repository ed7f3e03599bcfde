"""The data manifest: which datasets the study reads, where they lie and how to read them.

``data_manifest.yaml`` lists datasets. Each entry names its layout (``format``), root folder,
the space of its scans, the ``participants.tsv`` columns that hold age, sex, site, group and
clinical scores, and optionally checksums, deliberate exclusions and an atlas.
:func:`load_manifest` validates the file against a JSON Schema (Draft 2020-12) and a few checks a
schema cannot express (folders that must exist, unique names), collects *every* problem, and
raises one :class:`ManifestError` listing them all. The result is a typed, resolved
:class:`Manifest`.

Formats:

- ``bids``: ``participants.tsv`` and ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` (read by
  :func:`brainage.data.cohort.load_cohort`).
- ``openbhb``: the OpenBHB benchmark's layout [2]_, ``participants.tsv`` (with its ``split``
  column) and ``{train,val}/derivatives/sub-<id>/ses-1/sub-<id>_preproc-quasiraw_T1w.npy``
  (read by :func:`brainage.data.openbhb.load_openbhb_cohort`). Its scans are skull-stripped and
  affinely aligned to MNI152 on FSL's 1 mm grid, so the entry must say ``space: MNI152Lin`` and
  ``skull_stripped: true``; ``participants`` defaults to ``participants.tsv`` as for BIDS::

      - name: openbhb
        format: openbhb
        root: data/openbhb
        space: MNI152Lin
        skull_stripped: true
        columns: {participant_id: participant_id, age: age, sex: sex, site: siteXacq}

Example
-------
>>> manifest = load_manifest("data_manifest.yaml", profile="quick")   # doctest: +SKIP
>>> spec = manifest.dataset("simulated")                              # doctest: +SKIP
>>> spec.root                                                         # doctest: +SKIP
PosixPath('/.../data/simulated/quick')

References
----------
.. [1] Gorgolewski KJ et al. The brain imaging data structure, a format for organizing and
   describing outputs of neuroimaging experiments. Sci Data 3, 160044 (2016).
.. [2] Dufumier B et al. OpenBHB: a large-scale multi-site brain MRI data-set for age prediction
   and debiasing. NeuroImage 263, 119637 (2022).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from brainage._utils import GROUPS, SPACES, bids_id, closest_hint
from brainage.exceptions import BrainageError

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "MANIFEST_SCHEMA",
    "Atlas",
    "DatasetSpec",
    "Manifest",
    "ManifestError",
    "Problem",
    "load_manifest",
]

#: Diagnostic groups of the study: healthy controls, Alzheimer's disease, Parkinson's disease.
#: Spaces a dataset's scans may be in: raw scanner space, or already in a template's space:
#: ``MNI152NLin2009cSym`` (nilearn's template, the simulated cohort) or ``MNI152Lin`` (affinely
#: aligned to MNI152 on FSL's 1 mm grid: OpenBHB's quasi-raw scans). Both template spaces are
#: only resampled by :mod:`brainage.imaging.preprocess`, never registered (it uses this tuple).
#: Dataset layouts (see the module docstring).
FORMATS = ("bids", "openbhb")
#: What an ``openbhb`` entry must declare: its arrays are skull-stripped and MNI-aligned.
_OPENBHB_FIXED = {"space": "MNI152Lin", "skull_stripped": True}
#: Cohort-table columns a score name may not shadow (see :mod:`brainage.data.cohort`).
RESERVED_COLUMNS = (
    "participant_id", "session", "dataset", "path", "age", "sex", "site", "group",
    "space", "skull_stripped", "official_split",
)

_NON_EMPTY = {"type": "string", "minLength": 1}
_LABELS = {
    "description": "a raw label or a non-empty list of raw labels",
    "anyOf": [
        _NON_EMPTY,
        {"type": "array", "items": _NON_EMPTY, "minItems": 1, "uniqueItems": True},
    ],
}
_DATASET = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "format", "root", "space", "skull_stripped", "columns"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
            "description": "letters, digits, '_', '.', '-', starting with a letter or digit",
        },
        "format": {"enum": list(FORMATS)},
        "root": _NON_EMPTY,
        "simulated": {"type": "boolean", "default": False},
        "space": {"enum": list(SPACES)},
        "skull_stripped": {"type": "boolean"},
        "participants": {**_NON_EMPTY, "default": "participants.tsv"},
        "columns": {
            "type": "object",
            "additionalProperties": False,
            "required": ["participant_id", "age"],
            "properties": {
                key: _NON_EMPTY for key in ("participant_id", "age", "sex", "site", "group")
            },
        },
        "scores": {
            "type": "object",
            "propertyNames": {
                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "a score name: letters, digits and '_', not starting with a digit",
            },
            "additionalProperties": _NON_EMPTY,
        },
        "groups": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {group: _LABELS for group in GROUPS},
        },
        "sha256": {
            "type": "object",
            "propertyNames": {"minLength": 1},
            "additionalProperties": {
                "type": "string",
                "pattern": r"^[0-9a-fA-F]{64}$",
                "description": "a sha256 digest: 64 hexadecimal characters",
            },
        },
        "exclude": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["participant_id", "reason"],
                "properties": {"participant_id": _NON_EMPTY, "reason": _NON_EMPTY},
            },
        },
        "atlas": {
            "type": "object",
            "additionalProperties": False,
            "required": ["image", "labels"],
            "properties": {"image": _NON_EMPTY, "labels": _NON_EMPTY},
        },
    },
}
#: JSON Schema (Draft 2020-12) of ``data_manifest.yaml``.
MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "brainage data manifest",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "datasets"],
    "properties": {
        "version": {"const": 1},
        "datasets": {"type": "array", "minItems": 1, "items": _DATASET},
    },
}


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest.

    Parameters
    ----------
    file : Path
        The manifest file.
    field : str
        Path of the offending field, such as ``datasets[0].columns.age``.
    message : str
        What is wrong: what is allowed and what was given.
    """

    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class ManifestError(BrainageError, ValueError):
    """A manifest is missing, not valid YAML, or breaks the schema; lists every problem.

    Parameters
    ----------
    problems : list of Problem
        Every problem found (at least one).
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        files = sorted({str(p.file) for p in self.problems})
        head = f"{len(self.problems)} problem(s) in manifest {', '.join(files)}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


@dataclass(frozen=True)
class Atlas:
    """A label image in template space and its table of region names (absolute paths)."""

    image: Path
    labels: Path


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the manifest, with every path resolved.

    Parameters
    ----------
    name : str
        Unique dataset name; the Cohort table's ``dataset`` column.
    format : str
        Dataset layout: ``"bids"`` or ``"openbhb"`` (see the module docstring).
    root : Path
        Absolute path of the dataset folder (``{profile}`` substituted).
    space : str
        ``"native"`` (raw scanner space), ``"MNI152NLin2009cSym"`` or ``"MNI152Lin"``.
    skull_stripped : bool
        Whether the scans are already brain-only.
    participants : Path
        Absolute path of the participants table.
    columns : dict of str to str
        Study field (``participant_id``, ``age``, and optionally ``sex``, ``site``, ``group``)
        to ``participants.tsv`` column.
    simulated : bool, default=False
        Whether the build generates the dataset (``root`` need not exist yet).
    scores : dict of str to str
        Score name to ``participants.tsv`` column.
    groups : dict of str to tuple of str
        Study group (``HC``, ``AD``, ``PD``) to the raw labels of the group column.
    sha256 : dict of str to str
        Path relative to ``root`` to its expected lower-case sha256 digest.
    exclude : dict of str to str
        ``sub-``-prefixed participant id to the reason it is excluded.
    atlas : Atlas or None, default=None
        Optional atlas in template space.
    """

    name: str
    format: str
    root: Path
    space: str
    skull_stripped: bool
    participants: Path
    columns: dict[str, str]
    simulated: bool = False
    scores: dict[str, str] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    exclude: dict[str, str] = field(default_factory=dict)
    atlas: Atlas | None = None

    def group_of(self, label: str) -> str | None:
        """Return the study group of a raw group label, or None if no group lists it."""
        for group, labels in self.groups.items():
            if label in labels:
                return group
        return None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its file and its datasets, in file order."""

    path: Path
    datasets: tuple[DatasetSpec, ...]

    @property
    def names(self) -> list[str]:
        """Dataset names in file order."""
        return [d.name for d in self.datasets]

    def dataset(self, name: str) -> DatasetSpec:
        """Return the dataset called ``name``.

        Raises
        ------
        ManifestError
            If there is none; the message lists the available names and the closest one.
        """
        for spec in self.datasets:
            if spec.name == name:
                return spec
        message = f"no dataset named {name!r}; available: {', '.join(self.names)}"
        hint = closest_hint(name, self.names)
        raise ManifestError([Problem(self.path, "datasets", message + hint)])


def load_manifest(
    path: str | Path, *, profile: str = "quick", check_paths: bool = True,
    dataset: str | None = None,
) -> Manifest:
    """Read, validate and resolve a data manifest.

    Parameters
    ----------
    path : str or Path
        The YAML manifest. Relative paths inside it resolve against its folder.
    profile : str, default="quick"
        Substituted for ``{profile}`` in each dataset's ``root``.
    check_paths : bool, default=True
        Check that roots, participants tables and atlas files exist (not for ``simulated``
        datasets' roots and participants tables, which the build generates).
    dataset : str, optional
        Check paths of this dataset only (the one a build uses): a manifest may list datasets
        that lie on disks absent from this machine. It must be one of the manifest's names.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        If the file is missing or not valid YAML, or has any schema or path problem; the
        message lists every problem with the file, the field path and what is wrong.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    data = _read_yaml(path)
    problems = list(_schema_problems(data, path))
    problems += _semantic_problems(data, path, profile, check_paths, _broken(problems), dataset)
    if problems:
        raise ManifestError(_unique(problems))
    datasets = tuple(_dataset_spec(entry, path.parent, profile) for entry in data["datasets"])
    logger.debug("manifest %s: datasets %s", path, [d.name for d in datasets])
    manifest = Manifest(path=path, datasets=datasets)
    if dataset is not None:
        manifest.dataset(dataset)  # an unknown name is an error naming the available ones
    return manifest


def _read_yaml(path: Path) -> Any:
    """Parse the manifest file; a missing file or a YAML error becomes a ManifestError."""
    if not path.is_file():
        what = "is a folder, not a file" if path.exists() else "does not exist"
        raise ManifestError([Problem(path, "(file)", f"the manifest file {what}")])
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        detail = " ".join(str(err).split())
        raise ManifestError([Problem(path, where, f"not valid YAML: {detail}")]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError([Problem(path, "(file)", f"cannot be read: {err}")]) from err


def _field_path(parts: Iterable[Any]) -> str:
    """``['datasets', 0, 'columns']`` -> ``datasets[0].columns``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _join(parent: str, key: str) -> str:
    return key if parent == "(top level)" else f"{parent}.{key}"


def _schema_problems(data: Any, path: Path) -> Iterator[Problem]:
    """Every schema violation (``iter_errors``: all of them, not the first)."""
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        where = _field_path(error.absolute_path)
        for field_path, message in _explain(error, where):
            yield Problem(path, field_path, message)


_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "boolean": "true or false",
    "integer": "an integer", "number": "a number",
}


def _explain(error: jsonschema.ValidationError, where: str) -> list[tuple[str, str]]:
    """Turn one jsonschema error into (field path, message) pairs saying allowed vs given."""
    kind, schema, given = error.validator, error.schema, error.instance
    described = isinstance(schema, dict) and "description" in schema
    note = f" ({schema['description']})" if described else ""
    if "propertyNames" in error.relative_schema_path:
        # jsonschema reports a bad key at its parent's path; name the key itself
        return [(_join(where, str(given)), f"invalid key {given!r}: must match "
                 f"{schema.get('pattern', 'a non-empty name')!r}{note}")]
    if kind in {"anyOf", "oneOf"} and described:
        return [(where, f"must be {schema['description']}; got {given!r}")]
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return [
            (_join(where, str(key)), f"unknown key {key!r}; allowed keys: {', '.join(allowed)}"
             + closest_hint(key, allowed))
            for key in given if key not in allowed
        ]
    if kind == "required":
        return [
            (_join(where, key), f"required key {key!r} is missing")
            for key in error.validator_value if key not in given
        ]
    if kind == "enum":
        options = ", ".join(repr(o) for o in error.validator_value)
        return [(where, f"must be one of {options}; got {given!r}"
                 + closest_hint(given, error.validator_value))]
    if kind == "const":
        return [(where, f"must be {error.validator_value!r}; got {given!r}")]
    if kind == "type":
        wanted = _TYPE_NAMES.get(error.validator_value, str(error.validator_value))
        quote = (" (YAML reads an unquoted value starting with '{' as a mapping: quote it)"
                 if error.validator_value == "string" and isinstance(given, dict) else "")
        return [(where, f"must be {wanted}; got {type(given).__name__} {given!r}{quote}")]
    if kind in {"minLength", "minItems", "minProperties"}:
        return [(where, f"must not be empty; got {given!r}")]
    if kind == "pattern":
        return [(where, f"must match {error.validator_value!r}{note}; got {given!r}")]
    return [(where, f"{error.message}{note}")]


def _broken(problems: Iterable[Problem]) -> set[int]:
    """Indices of the dataset entries that broke the schema (semantic checks skip them)."""
    found = (re.match(r"datasets\[(\d+)\]", p.field) for p in problems)
    return {int(match.group(1)) for match in found if match}


def _semantic_problems(
    data: Any, path: Path, profile: str, check_paths: bool, broken: set[int],
    only: str | None = None,
) -> list[Problem]:
    """Checks the schema cannot express: unique names, reserved score names, paths that exist.

    They run beside the schema so that one error lists everything; entries that broke the
    schema are skipped (their fields may have any type), except for the name check.
    """
    problems: list[Problem] = []
    entries = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return problems
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"datasets[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(Problem(path, f"{where}.name", f"duplicate dataset name {name!r}; "
                                    f"datasets[{seen[name]}] has the same name"))
        if isinstance(name, str):
            seen.setdefault(name, index)
        if not isinstance(entry, dict):
            continue
        if check_paths and (only is None or name == only):
            problems += _path_problems(entry, path, where, profile)
        if index in broken:
            continue
        for score in entry.get("scores", {}):
            if score in RESERVED_COLUMNS:
                problems.append(Problem(path, f"{where}.scores.{score}", f"score name {score!r} "
                                        f"clashes with a Cohort column; reserved: "
                                        f"{', '.join(RESERVED_COLUMNS)}"))
        problems += _label_problems(entry, path, where)
        problems += _exclude_problems(entry, path, where)
        problems += _format_problems(entry, path, where)
    return problems


def _format_problems(entry: dict, path: Path, where: str) -> list[Problem]:
    """An ``openbhb`` entry must declare the space and skull stripping of its arrays."""
    if entry.get("format") != "openbhb":
        return []
    problems = []
    for key, value in _OPENBHB_FIXED.items():
        if entry.get(key) != value:
            problems.append(Problem(path, f"{where}.{key}", f"format 'openbhb' holds "
                                    f"skull-stripped scans aligned to MNI152 on FSL's 1 mm grid: "
                                    f"{key} must be {value!r}; got {entry.get(key)!r}"))
    return problems


def _label_problems(entry: dict, path: Path, where: str) -> list[Problem]:
    """A raw group label may map to one study group only; groups need a group column."""
    problems = []
    owner: dict[str, str] = {}
    for group, labels in entry.get("groups", {}).items():
        for label in [labels] if isinstance(labels, str) else labels:
            if label in owner and owner[label] != group:
                problems.append(Problem(path, f"{where}.groups.{group}", f"raw label {label!r} "
                                        f"is listed under both {owner[label]} and {group}"))
            owner.setdefault(label, group)
    if set(entry.get("groups", {})) - {"HC"} and "group" not in entry["columns"]:
        problems.append(Problem(path, f"{where}.groups", "patient groups are listed but "
                                "columns.group is not set: without a group column every row "
                                "is a healthy control (HC)"))
    return problems


def _exclude_problems(entry: dict, path: Path, where: str) -> list[Problem]:
    """A participant may be excluded once."""
    problems, seen = [], set()
    for index, item in enumerate(entry.get("exclude", [])):
        pid = bids_id(item["participant_id"])
        if pid in seen:
            problems.append(Problem(path, f"{where}.exclude[{index}].participant_id",
                                    f"{pid!r} is excluded more than once"))
        seen.add(pid)
    return problems


def _path_problems(entry: dict, path: Path, where: str, profile: str) -> list[Problem]:
    """Roots, participants tables and atlas files must exist (simulated roots excepted).

    Written defensively (fields of the wrong type are skipped: the schema reports them), so
    that it also runs on entries with schema problems and one error lists everything.
    """
    problems = []
    root_text, table_text = entry.get("root"), entry.get("participants", "participants.tsv")
    if isinstance(root_text, str) and root_text and entry.get("simulated", False) is not True:
        root = _resolve(root_text.replace("{profile}", profile), path.parent)
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            problems.append(Problem(path, f"{where}.root", f"dataset root {root} {what}"))
        elif isinstance(table_text, str) and table_text:
            table = _resolve(table_text, root)
            if not table.is_file():
                problems.append(Problem(path, f"{where}.participants",
                                        f"participants file {table} does not exist"))
    atlas = entry.get("atlas")
    for key in ("image", "labels"):
        value = atlas.get(key) if isinstance(atlas, dict) else None
        if isinstance(value, str) and value:
            file = _resolve(value, path.parent)
            if not file.is_file():
                problems.append(Problem(path, f"{where}.atlas.{key}",
                                        f"atlas {key} file {file} does not exist"))
    return problems


def _resolve(value: str, base: Path) -> Path:
    """Absolute, normalised path; relative paths are relative to ``base``."""
    candidate = Path(value).expanduser()
    return Path(os.path.normpath(candidate if candidate.is_absolute() else base / candidate))


def _dataset_spec(entry: Mapping[str, Any], base: Path, profile: str) -> DatasetSpec:
    """Build the typed, resolved spec of one validated manifest entry."""
    root = _resolve(entry["root"].replace("{profile}", profile), base)
    groups = entry.get("groups") or {group: group for group in GROUPS}
    atlas = entry.get("atlas")
    return DatasetSpec(
        name=entry["name"],
        format=entry["format"],
        root=root,
        space=entry["space"],
        skull_stripped=entry["skull_stripped"],
        participants=_resolve(entry.get("participants", "participants.tsv"), root),
        columns=dict(entry["columns"]),
        simulated=entry.get("simulated", False),
        scores=dict(entry.get("scores", {})),
        groups={g: (v,) if isinstance(v, str) else tuple(v) for g, v in groups.items()},
        sha256={k: v.lower() for k, v in entry.get("sha256", {}).items()},
        exclude={bids_id(i["participant_id"]): i["reason"] for i in entry.get("exclude", [])},
        atlas=Atlas(_resolve(atlas["image"], base), _resolve(atlas["labels"], base))
        if atlas else None,
    )


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    """Drop repeated problems, keeping order (jsonschema may report a key once per rule)."""
    return list(dict.fromkeys(problems))
