"""What ``brainage bids`` reads of its input dataset before any work: the validation summary
printed first (subjects, sessions, T1w scans found, problems) and the ``--bids-filter-file``
selection of T1w scans (fMRIPrep's JSON format).

Written by hand: the BIDS validator is a Deno/Node program (not a Python dependency of this
package), and pybids' ``BIDSLayout`` indexes every file of a dataset (minutes on a large one)
for the few entities of one T1w file name that are needed here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from brainage._utils import closest_hint
from brainage.data.cohort import CohortError, find_scans, read_participant_ages
from brainage.exceptions import BrainageError

logger = logging.getLogger(__name__)

__all__ = [
    "FILTER_ENTITIES",
    "BidsFilterError",
    "DatasetSummary",
    "apply_bids_filter",
    "read_bids_filter",
    "summarise_dataset",
]

#: ``--bids-filter-file`` entities of the ``t1w`` query -> their key in a BIDS file name.
FILTER_ENTITIES = {"session": "ses", "acquisition": "acq", "run": "run",
                   "reconstruction": "rec", "ceagent": "ce"}
#: Keys of a query that describe the file type: only T1w anatomical files are read here.
_TYPE_KEYS = {"datatype": "anat", "suffix": "T1w"}
#: fMRIPrep's other queries: accepted (a filter file written for fMRIPrep works) and unused.
_OTHER_QUERIES = ("bold", "sbref", "fmap", "t2w", "flair", "dwi", "roi", "pet", "asl", "m0scan",
                  "epi", "sbref", "phase", "magnitude", "fieldmap")
#: The largest filter file read (bytes).
_MAX_FILTER_BYTES = 1_000_000


class BidsFilterError(BrainageError, ValueError):
    """A ``--bids-filter-file`` that cannot be read or used."""


def _entities(path: str | os.PathLike) -> dict[str, str]:
    """``sub-01_ses-a_run-2_T1w.nii.gz`` -> ``{"sub": "01", "ses": "a", "run": "2"}``."""
    stem = Path(path).name.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_") if "-" in part)


def _check_value(where: str, value: Any) -> list[str | None]:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (str, int, type(None))):
            raise BidsFilterError(f"{where}: a value must be text, a whole number, null or a "
                                  f"list of them, got {item!r}")
    return [None if item is None else str(item) for item in values]


def read_bids_filter(path: str | os.PathLike) -> dict[str, list[str | None]]:
    """Read a ``--bids-filter-file`` (fMRIPrep's format) and return its T1w entity filters.

    The file is a JSON object of queries; the ``t1w`` query selects the scans, for example
    ``{"t1w": {"datatype": "anat", "suffix": "T1w", "session": "01", "acquisition": null}}``.
    An entity given a value keeps the scans with it (a list: any of them); ``null`` keeps the
    scans without that entity. Run numbers compare as numbers (``1`` matches ``run-01``).
    fMRIPrep's other queries (``bold``, ``t2w``, ...) are accepted and unused.

    Parameters
    ----------
    path : str or PathLike
        The JSON file.

    Returns
    -------
    dict of str to list
        Entity (``session``, ``acquisition``, ``run``, ``reconstruction``, ``ceagent``) to the
        values it may take (None: the entity is absent). Empty without a ``t1w`` query.

    Raises
    ------
    BidsFilterError
        Naming the file: not a file, not JSON, not an object, an unknown entity of the
        ``t1w`` query (with the closest known one), a ``datatype``/``suffix`` other than
        ``anat``/``T1w``, or a value that is not text, a number or null.
    """
    path = Path(path)
    if not path.is_file():
        raise BidsFilterError(f"--bids-filter-file {path} does not exist or is not a file")
    if path.stat().st_size > _MAX_FILTER_BYTES:
        raise BidsFilterError(f"--bids-filter-file {path}: larger than {_MAX_FILTER_BYTES} "
                              f"bytes; a filter file holds a few queries")
    try:
        queries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BidsFilterError(f"--bids-filter-file {path}: not valid JSON: {err}") from None
    if not isinstance(queries, dict):
        raise BidsFilterError(f"--bids-filter-file {path}: expected a JSON object of queries "
                              f"such as {{\"t1w\": {{\"session\": \"01\"}}}}, got "
                              f"{type(queries).__name__}")
    unknown = [k for k in queries if k != "t1w" and k not in _OTHER_QUERIES]
    if unknown:
        raise BidsFilterError(f"--bids-filter-file {path}: unknown query {unknown[0]!r}"
                              f"{closest_hint(unknown[0], ['t1w', *_OTHER_QUERIES])}; brainage "
                              f"reads the 't1w' query")
    query = queries.get("t1w")
    if query is None:
        logger.warning("--bids-filter-file %s has no 't1w' query: every T1w scan is used", path)
        return {}
    if not isinstance(query, dict):
        raise BidsFilterError(f"--bids-filter-file {path}: 't1w' must be an object of "
                              f"entities, got {type(query).__name__}")
    filters: dict[str, list[str | None]] = {}
    for key, value in query.items():
        where = f"--bids-filter-file {path}: t1w.{key}"
        if key in _TYPE_KEYS:
            if value != _TYPE_KEYS[key]:
                raise BidsFilterError(f"{where} is {value!r}; brainage reads "
                                      f"{key} {_TYPE_KEYS[key]!r} only")
            continue
        if key == "extension":
            continue
        if key not in FILTER_ENTITIES:
            known = [*FILTER_ENTITIES, *_TYPE_KEYS, "extension"]
            raise BidsFilterError(f"{where}: unknown entity{closest_hint(key, known)}; "
                                  f"known: {', '.join(known)}")
        filters[key] = _check_value(where, value)
    return filters


def _matches(value: str | None, allowed: list[str | None], entity: str) -> bool:
    if value is None:
        return None in allowed
    for item in allowed:
        if item is None:
            continue
        if entity == "run" and value.isdigit() and item.isdigit():
            if int(value) == int(item):
                return True
        elif value == item.removeprefix(f"{FILTER_ENTITIES[entity]}-"):
            return True
    return False


def apply_bids_filter(scans: pd.DataFrame,
                      filters: Mapping[str, list[str | None]] | None) -> pd.DataFrame:
    """The rows of ``scans`` (a ``path`` column) whose file names pass every entity filter of
    :func:`read_bids_filter` (none: all rows)."""
    if not filters:
        return scans
    keep = []
    for path in scans["path"]:
        found = _entities(path)
        keep.append(all(_matches(found.get(FILTER_ENTITIES[e]), allowed, e)
                        for e, allowed in filters.items()))
    return scans[keep].reset_index(drop=True)


@dataclass
class DatasetSummary:
    """What a BIDS folder holds, as ``brainage bids`` prints it before any work.

    Attributes
    ----------
    root : Path
        The dataset.
    n_subjects : int
        ``sub-*`` folders.
    n_sessions : int
        Distinct ``ses-*`` labels (0: no sessions).
    n_t1w : int
        T1w scans found (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``).
    n_with_age : int
        Of those, scans whose participant has an age in ``participants.tsv``.
    problems : list of str
        One line per problem, naming the file.
    """

    root: Path
    n_subjects: int = 0
    n_sessions: int = 0
    n_t1w: int = 0
    n_with_age: int = 0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary as printed: one line of counts, then one per problem."""
        sessions = f"{self.n_sessions} session label(s)" if self.n_sessions else "no sessions"
        head = (f"input {self.root}: {self.n_subjects} subject(s), {sessions}, {self.n_t1w} "
                f"T1w scan(s) found ({self.n_with_age} with an age), "
                f"{len(self.problems)} problem(s)")
        return [head, *(f"  problem: {p}" for p in self.problems)]


def summarise_dataset(bids_dir: str | os.PathLike) -> DatasetSummary:
    """Count a BIDS folder's subjects, sessions and T1w scans and list its problems: no
    ``dataset_description.json``, no ``participants.tsv`` (or no age column), subjects without
    a T1w scan, participants.tsv rows without a folder and folders without a row, T1w scans
    whose participant has no age. Problems never stop the run: each is one line."""
    root = Path(bids_dir).absolute()
    summary = DatasetSummary(root=root)
    if not (root / "dataset_description.json").is_file():
        summary.problems.append(f"{root / 'dataset_description.json'} is missing")
    subjects = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
    summary.n_subjects = len(subjects)
    scans = find_scans(root) if subjects else pd.DataFrame(columns=["participant_id",
                                                                    "session", "path"])
    summary.n_t1w = len(scans)
    summary.n_sessions = len({s for s in scans["session"] if s})
    without = sorted(set(subjects) - set(scans["participant_id"]))
    if without:
        summary.problems.append(f"{len(without)} subject(s) without a T1w scan: "
                                f"{', '.join(without[:5])}{' ...' if len(without) > 5 else ''}")
    ages = _ages(root, summary)
    if ages is not None:
        rows = set(ages)
        no_folder = sorted(rows - set(subjects))
        no_row = sorted(set(subjects) - rows)
        for what, ids in (("row(s) without a sub- folder", no_folder),
                          ("sub- folder(s) without a row", no_row)):
            if ids:
                summary.problems.append(f"participants.tsv: {len(ids)} {what}: "
                                        f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")
        known = [pid for pid in scans["participant_id"] if pd.notna(ages.get(pid))]
        summary.n_with_age = len(known)
        if summary.n_t1w > len(known):
            summary.problems.append(f"{summary.n_t1w - len(known)} T1w scan(s) without an age "
                                    f"in participants.tsv (predicted; no gap)")
    return summary


def _ages(root: Path, summary: DatasetSummary) -> dict[str, float | None] | None:
    tsv = root / "participants.tsv"
    if not tsv.is_file():
        summary.problems.append(f"{tsv} is missing: no ages (predicted ages only, no gaps)")
        return None
    try:
        ages, problems = read_participant_ages(tsv)
    except CohortError as err:
        summary.problems.append(f"{tsv}: {' '.join(str(err).split())}")
        return None
    summary.problems.extend(p for p in problems if not p.endswith("is missing"))
    return dict(ages)
