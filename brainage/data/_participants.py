"""The participants table and the problems log shared by the BIDS and OpenBHB readers.

Private to :mod:`brainage.data`: :mod:`brainage.data.cohort` and :mod:`brainage.data.openbhb`
both read ``participants.tsv`` and report problems with this code, so that the two formats
check a row in exactly the same way (public names: :mod:`brainage.data.cohort` re-exports the
ones users need).
"""

from __future__ import annotations

import csv
import difflib
import errno
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainage._utils import AGE_RANGE, bids_id, sha256_file
from brainage.data.manifest import DatasetSpec
from brainage.exceptions import BrainageError

logger = logging.getLogger(__name__)


#: Columns of the Cohort table before the score columns.
BASE_COLUMNS = ("participant_id", "session", "dataset", "path", "age", "sex", "site", "group")


#: Columns of the Cohort table after the score columns.
TAIL_COLUMNS = ("space", "skull_stripped")


#: Columns of the problems table.
PROBLEM_COLUMNS = ("dataset", "participant_id", "path", "check", "severity", "message")


#: Valid ages in years (inclusive).
#: Values read as missing: BIDS writes ``n/a``; an empty cell is missing too.
MISSING = frozenset({"", "n/a"})


_SEX = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


class CohortError(BrainageError, ValueError):
    """A dataset has errors; the message names every subject, file and reason.

    Attributes
    ----------
    problems : pandas.DataFrame
        The error rows of :attr:`CohortResult.problems`.
    """

    def __init__(self, problems: pd.DataFrame) -> None:
        self.problems = problems
        names = ", ".join(sorted(set(problems["dataset"])))
        lines = [f"  - {m}" for m in problems["message"]]
        super().__init__("\n".join([f"{len(problems)} error(s) in dataset {names}:", *lines]))


@dataclass(frozen=True)
class CohortResult:
    """What :func:`load_cohort` found.

    Parameters
    ----------
    table : pandas.DataFrame
        Usable scans, one row each: ``participant_id, session, dataset, path, age, sex, site,
        group, <one float column per score>, space, skull_stripped``.
    problems : pandas.DataFrame
        Every problem: ``dataset, participant_id, path, check, severity, message``.
    """

    table: pd.DataFrame
    problems: pd.DataFrame

    @property
    def errors(self) -> pd.DataFrame:
        """Problems of severity ``error``."""
        return self.problems[self.problems["severity"] == "error"]

    def raise_for_errors(self) -> None:
        """Raise :class:`CohortError` listing every error; do nothing if there is none."""
        if len(self.errors):
            raise CohortError(self.errors.reset_index(drop=True))

    @classmethod
    def concat(cls, results: Sequence[CohortResult]) -> CohortResult:
        """Stack the results of several datasets (score columns absent in one become NaN)."""
        if not results:
            raise ValueError("results: expected at least one CohortResult, got none")
        tables = [r.table for r in results]
        scores = list(dict.fromkeys(c for t in tables for c in t.columns
                                    if c not in BASE_COLUMNS + TAIL_COLUMNS))
        table = pd.concat([t.reindex(columns=[*BASE_COLUMNS, *scores, *TAIL_COLUMNS])
                           for t in tables], ignore_index=True)
        problems = pd.concat([r.problems for r in results], ignore_index=True)
        return cls(table, problems)


@dataclass
class ProblemLog:
    """Collects problems of one dataset; each message names the dataset, subject and file."""

    dataset: str
    rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, check: str, severity: str, text: str, pid: str = "", path: Any = "") -> None:
        where = ", ".join(str(p) for p in (pid, path) if str(p))
        message = f"dataset {self.dataset!r}" + (f", {where}" if where else "") + f": {text}"
        self.rows.append({"dataset": self.dataset, "participant_id": pid, "path": str(path),
                          "check": check, "severity": severity, "message": message})
        logger.debug("%s: %s", severity, message)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(PROBLEM_COLUMNS))


def finish_cohort(spec: DatasetSpec, table: pd.DataFrame, log: ProblemLog,
                  pattern: str) -> CohortResult:
    """Log an empty table as an error and a one-line summary; the result of a reader."""
    if table.empty:
        log.add("empty", "error", f"no usable scan: every scan has a problem or none was found "
                f"under {pattern}", path=spec.root)
    counts = pd.Series([r["severity"] for r in log.rows], dtype=object).value_counts().to_dict()
    (logger.warning if counts else logger.info)(
        "dataset %s: %d usable scans; problems %s", spec.name, len(table), counts or "none")
    return CohortResult(table, log.frame())


def read_participant_ages(path: str | Path) -> tuple[dict[str, float | None], list[str]]:
    """Ages of a participants.tsv by ``sub-`` id, checked as the cohort reader checks them.

    The table is read and each row checked by the same code as :func:`load_cohort`
    (:func:`parse_age` for the ages), for callers without a manifest (``brainage predict``).

    Parameters
    ----------
    path : str or Path
        A BIDS ``participants.tsv`` with columns ``participant_id`` and ``age``.

    Returns
    -------
    ages : dict of str to float or None
        Age in years by ``sub-``-prefixed id; None for a participant whose age is missing, not
        a number (NaN or infinite included) or outside 0-120 years, and for a duplicated id.
    problems : list of str
        One message per problem, naming the file, the line and what is wrong.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CohortError
        If the table cannot be read at all (unreadable, no ``participant_id`` or ``age`` column).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "the participants table does not exist", str(path))
    log = ProblemLog(path.parent.name or str(path.parent))
    columns = {"participant_id": "participant_id", "age": "age"}
    raw = _read_table(path, columns, log, manifest=False)
    if raw is None:
        raise CohortError(log.frame())
    ages: dict[str, float | None] = {}
    rows = _rows_by_id(_bids_ids(raw["participant_id"]), path, log,
                       bad_lines=raw.attrs.get("bad_lines", ()))
    for pid, line in rows.items():
        ages[pid] = None if line is None else _age(raw.at[line, "age"], pid,
                                                   f"{path} line {line}", log)
    return ages, log.frame()["message"].tolist()


def parse_age(text: str) -> tuple[float | None, str | None]:
    """An age in years from a participants cell, checked.

    Parameters
    ----------
    text : str
        The cell (surrounding blanks ignored; ``n/a`` or empty is missing).

    Returns
    -------
    age : float or None
        The age, or None if it is not valid.
    problem : str or None
        None for a valid age, else what is wrong: ``"missing"``, ``"not a number"`` (NaN and
        infinity included) or ``"outside 0-120 years"``.
    """
    text = str(text).strip()
    if text in MISSING:
        return None, "missing"
    age = _number(text)
    if age is None or not math.isfinite(age):
        return None, "not a number"
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return None, f"outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years"
    return age, None


def _age(text: str, pid: str, where: str, log: ProblemLog) -> float | None:
    """:func:`parse_age` of a cell; None (with an error logged) if it is not a valid age."""
    age, problem = parse_age(text)
    if problem is not None:
        log.add("age", "error", f"age {text!r} is {problem}", pid, where)
    return age


def read_participants(spec: DatasetSpec, log: ProblemLog) -> pd.DataFrame | None:
    """The participants table as strings, or None (with an error) if it cannot be used."""
    if not spec.root.is_dir():
        hint = (" (a simulated dataset: generate it with brainage.data.simulate)"
                if spec.simulated else "")
        log.add("root", "error", f"the dataset root does not exist{hint}", path=spec.root)
        return None
    wanted = {**spec.columns, **{f"scores.{k}": v for k, v in spec.scores.items()}}
    return _read_table(spec.participants, wanted, log)


def _read_table(path: Path, wanted: dict[str, str], log: ProblemLog,
                manifest: bool = True) -> pd.DataFrame | None:
    """A participants table as strings indexed by file line (header: line 1), or None.

    ``wanted`` maps what the caller needs (for messages: ``age``, ``scores.mmse``) to column
    names (from the manifest if ``manifest``); a missing column is an error and gives None, as
    does a file that cannot be read. Rows with more fields than the header (see
    :func:`_fit_rows`) are kept; the lines that cannot be used are in ``.attrs["bad_lines"]``.
    """
    records = _tsv_records(path, log)
    if records is None:
        return None
    header = _header(records[0][1], path, log)
    rows, bad = _fit_rows(records[1:], len(header), path, log)
    raw = pd.DataFrame(rows, columns=header, index=[line for line, _ in records[1:]],
                       dtype=object)
    raw.attrs["bad_lines"] = bad
    missing = {key: col for key, col in wanted.items() if col not in raw.columns}
    for key, col in missing.items():
        close = difflib.get_close_matches(col, list(raw.columns), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = (f"the manifest maps {key} to column {col!r}, which the table lacks" if manifest
                else f"the table lacks the column {col!r}")
        log.add("columns", "error", f"{what}; its columns: {', '.join(raw.columns)}{hint}",
                path=path)
    return None if missing else raw


def _tsv_records(path: Path, log: ProblemLog) -> list[tuple[int, list[str]]] | None:
    """(file line, fields) of each non-blank line of a TSV file; None (logged) if unreadable.

    Read with :mod:`csv` rather than pandas so that a line with a stray tab is one line's
    problem, not a parser error for the whole table (and line numbers count blank lines).
    """
    try:
        # utf-8-sig: a BOM would corrupt the first column name
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter="\t")
            records = [(reader.line_num, row) for row in reader if row]
    except FileNotFoundError:
        log.add("participants", "error", "the participants file does not exist", path=path)
        return None
    except (OSError, UnicodeError, csv.Error) as err:
        log.add("participants", "error", f"cannot read the participants table: "
                f"{type(err).__name__}: {' '.join(str(err).split())}", path=path)
        return None
    if not records:
        log.add("participants", "error", "cannot read the participants table: the file is "
                "empty (a header line is needed)", path=path)
        return None
    return records


def _header(names: list[str], path: Path, log: ProblemLog) -> list[str]:
    """Column names: trailing empty names (a stray tab) dropped, repeats renamed (``x.1``)."""
    names = [name.strip() for name in names]
    while len(names) > 1 and not names[-1]:
        names.pop()
        log.add("fields", "warning", "the header (line 1) ends with an empty column name (a "
                "stray tab?); it is ignored", path=path)
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names):
        name = name or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            log.add("fields", "warning", f"the header (line 1) repeats the column {name!r}; "
                    f"the later one is read as {name}.{seen[name]}", path=path)
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def _fit_rows(records: list[tuple[int, list[str]]], width: int, path: Path,
              log: ProblemLog) -> tuple[list[list[str]], set[int]]:
    """Rows of ``width`` fields, and the lines that cannot be used.

    A short row is padded with empty (missing) fields, as pandas does. A row with extra fields
    that are all empty (a stray trailing tab) keeps its first ``width`` fields, with a warning;
    a row with non-empty extra fields is ambiguous (which value belongs to which column?): an
    error, and its line is returned as unusable.
    """
    rows, bad = [], set()
    for line, fields in records:
        extra = fields[width:]
        if extra and any(field.strip() for field in extra):
            log.add("fields", "error", f"line {line} has {len(fields)} fields but the header "
                    f"has {width} (extra values {', '.join(map(repr, extra))}): cannot tell "
                    f"which value belongs to which column; the row is left out", path=path)
            bad.add(line)
        elif extra:
            log.add("fields", "warning", f"line {line} ends with {len(extra)} empty field(s) "
                    f"more than the header's {width} (a stray tab?); they are ignored",
                    path=path)
        rows.append(fields[:width] + [""] * (width - len(fields)))
    return rows, bad


def parse_participants(spec: DatasetSpec, raw: pd.DataFrame,
                       log: ProblemLog) -> dict[str, dict | None]:
    """Participant id -> parsed fields, or None for participants that cannot be used.

    ``None`` marks ids with an error (already logged) or excluded by the manifest, so that
    their scans are not reported a second time as images without a row.
    """
    rows = _rows_by_id(participant_ids(spec, raw), spec.participants, log, skip=spec.exclude,
                       bad_lines=raw.attrs.get("bad_lines", ()))
    return {pid: None if line is None else _parse_row(spec, raw.loc[line], pid, line, log)
            for pid, line in rows.items()}


def _rows_by_id(ids: pd.Series, path: Path, log: ProblemLog, skip: Iterable[str] = (),
                bad_lines: Iterable[int] = ()) -> dict[str, int | None]:
    """Participant id -> its file line; None for an id in ``skip`` or on several lines.

    Rows without an id and repeated ids are logged as errors (every row of a repeated id is
    left out). ``ids`` is indexed by file line, as :func:`_read_table` indexes the table; an
    id whose only line is in ``bad_lines`` (an error already logged) maps to None.
    """
    skip, bad_lines = set(skip), set(bad_lines)
    rows: dict[str, int | None] = {}
    for pid, lines in _lines_by_id(ids).items():
        if pid in MISSING:
            for line in sorted(set(lines) - bad_lines):
                log.add("participant_id", "error", f"line {line} has no participant id",
                        path=path)
        elif pid in skip:
            rows[pid] = None
        elif len(lines) > 1:
            log.add("duplicate_id", "error", f"the participant id appears on lines "
                    f"{', '.join(map(str, lines))}; every row is left out", pid, path)
            rows[pid] = None
        else:
            rows[pid] = None if lines[0] in bad_lines else lines[0]
    return rows


def participant_ids(spec: DatasetSpec, raw: pd.DataFrame) -> pd.Series:
    """The participant id of each row, ``sub-``-prefixed; missing ids stay as they are."""
    return _bids_ids(raw[spec.columns["participant_id"]])


def _bids_ids(column: pd.Series) -> pd.Series:
    ids = column.str.strip()
    return ids.where(ids.isin(MISSING), ids.map(bids_id))


def _lines_by_id(ids: pd.Series) -> dict[str, list[int]]:
    """File line numbers (the index of ``ids``) of each id, in order of first appearance."""
    lines: dict[str, list[int]] = {}
    for line, pid in ids.items():
        lines.setdefault(pid, []).append(int(line))
    return lines


def _parse_row(spec: DatasetSpec, row: pd.Series, pid: str, line: int,
               log: ProblemLog) -> dict | None:
    """Typed fields of one participants row; None (with errors logged) if it is unusable."""
    where = f"{spec.participants} line {line}"
    cols = spec.columns
    age = _age(row[cols["age"]], pid, where, log)
    group = _group(spec, row, pid, where, log)
    fields = {"age": age, "group": group, "sex": _sex(spec, row, pid, where, log),
              "site": _site(spec, row, pid, where, log)}
    for name, col in spec.scores.items():
        value = _number(row[col])
        if value is None and row[col].strip() not in MISSING:
            log.add("score", "warning", f"score {name} (column {col!r}) value {row[col]!r} is "
                    f"not a number; set to NaN", pid, where)
        fields[name] = np.nan if value is None else value
    return fields if age is not None and group is not None else None


def _number(text: str) -> float | None:
    """A float, or None for missing (``n/a``, empty) or non-numeric text."""
    text = text.strip()
    if text in MISSING or "_" in text:  # float() reads "1_0" as 10
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _group(spec: DatasetSpec, row: pd.Series, pid: str, where: str, log: ProblemLog) -> str | None:
    """Study group of a row: HC without a group column; None (logged) if unknown."""
    if "group" not in spec.columns:
        return "HC"
    label = row[spec.columns["group"]].strip()
    group = spec.group_of(label)
    if group is None:
        known = [lab for labels in spec.groups.values() for lab in labels]
        close = difflib.get_close_matches(label, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = "missing" if label in MISSING else f"{label!r} is not a known label"
        log.add("group", "error", f"group {what}; the manifest's groups map labels "
                f"{', '.join(map(repr, known))}{hint}", pid, where)
    return group


def _sex(spec: DatasetSpec, row: pd.Series, pid: str, where: str, log: ProblemLog) -> Any:
    """``F``/``M``, or NA when absent, missing or unknown (unknown values warn)."""
    if "sex" not in spec.columns:
        return pd.NA
    text = row[spec.columns["sex"]].strip()
    if text in MISSING:
        return pd.NA
    if text.lower() not in _SEX:
        log.add("sex", "warning", f"sex {text!r} is not one of F, M, female, male; set to NA",
                pid, where)
        return pd.NA
    return _SEX[text.lower()]


def _site(spec: DatasetSpec, row: pd.Series, pid: str, where: str, log: ProblemLog) -> str:
    """The site label; the dataset name without a site column, ``unknown`` when missing."""
    if "site" not in spec.columns:
        return spec.name
    text = row[spec.columns["site"]].strip()
    if text in MISSING:
        log.add("site", "warning", "site is missing; set to 'unknown'", pid, where)
        return "unknown"
    return text


def log_exclusions(spec: DatasetSpec, people: dict[str, dict | None], scans: pd.DataFrame,
                    log: ProblemLog) -> None:
    """One ``excluded`` row per scan (or per row, without scans) the manifest excludes."""
    for pid, reason in spec.exclude.items():
        paths = scans.loc[scans["participant_id"] == pid, "path"].tolist()
        if not paths and pid not in people:
            log.add("exclude", "warning", "the manifest excludes this participant, who has no "
                    "participants row and no image", pid, spec.participants)
            continue
        for path in paths or [spec.participants]:
            log.add("exclude", "excluded", f"excluded by the manifest: {reason}", pid, path)


def log_scans_without_row(spec: DatasetSpec, people: dict[str, dict | None],
                           scans: pd.DataFrame, log: ProblemLog) -> None:
    """An error per scan whose participant has no row (and is not excluded): it has no age."""
    for path, pid in zip(scans["path"], scans["participant_id"]):
        if pid not in people and pid not in spec.exclude:
            log.add("missing_row", "error", f"image without a row in {spec.participants.name} "
                    f"(no age): add the row or exclude the participant", pid, path)


def checksum_problems(spec: DatasetSpec, log: ProblemLog) -> set[str]:
    """Check the manifest's checksums; returns the paths of files that do not match."""
    bad: set[str] = set()
    for rel, expected in spec.sha256.items():
        file = Path(os.path.normpath(spec.root / rel))
        pid = next((part for part in rel.split("/") if part.startswith("sub-")), "")
        if pid in spec.exclude:
            continue
        if not file.is_file():
            log.add("checksum", "error", "a checksum is listed for a file that does not exist",
                    pid, file)
            continue
        actual = sha256_file(file)
        if actual != expected:
            log.add("checksum", "error", f"sha256 mismatch: the manifest expects {expected}, "
                    f"the file has {actual}", pid, file)
            bad.add(str(file))
    return bad


def build_table(spec: DatasetSpec, people: dict[str, dict | None],
                 scans: pd.DataFrame) -> pd.DataFrame:
    """The Cohort table of the usable scans, columns in the documented order."""
    rows = []
    for pid, session, path in zip(scans["participant_id"], scans["session"], scans["path"]):
        fields = people[pid]
        rows.append({"participant_id": pid, "session": session, "dataset": spec.name,
                     "path": path, **fields, "space": spec.space,
                     "skull_stripped": spec.skull_stripped})
    if not rows:
        return empty_table(spec)
    table = pd.DataFrame(rows)[_columns(spec)]
    return table.astype({"age": float, "skull_stripped": bool,
                         **{name: float for name in spec.scores}})


def _columns(spec: DatasetSpec) -> list[str]:
    return [*BASE_COLUMNS, *spec.scores, *TAIL_COLUMNS]


def empty_table(spec: DatasetSpec) -> pd.DataFrame:
    """A Cohort table with no rows and the right columns and dtypes."""
    table = pd.DataFrame({col: pd.Series(dtype=object) for col in _columns(spec)})
    return table.astype({"age": float, "skull_stripped": bool,
                         **{name: float for name in spec.scores}})
