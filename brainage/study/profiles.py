"""Profiles: named sets of notebook parameters (``notebooks/params/<name>.yaml``).

A profile is a flat mapping of parameter names to plain values. Each notebook declares the
parameters it uses in its one cell tagged ``parameters``; the build passes every notebook the
subset of the profile that it declares. A profile key that no notebook declares is an error
(a typo would otherwise be ignored silently).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brainage._utils import closest_hint
from brainage.exceptions import BrainageError

logger = logging.getLogger(__name__)

__all__ = [
    "Profile",
    "ProfileError",
    "find_project_root",
    "display_path",
    "display_paths",
    "list_profiles",
    "load_profile",
    "profile_description",
    "resolve_path",
]

#: The largest profile file read (bytes): profiles are a few dozen lines.
MAX_PROFILE_BYTES = 1_000_000
#: The most values (after YAML aliases are expanded) and levels of nesting a profile may hold.
MAX_PROFILE_VALUES = 100_000
MAX_PROFILE_DEPTH = 50
#: Plain scalar types of a profile value (bool is an int).
_PLAIN = (str, int, float, type(None))

#: Files that mark the top of a brainage checkout.
_ROOT_MARKERS = ("data_manifest.yaml", "notebooks")


class ProfileError(BrainageError, ValueError):
    """A profile file is missing, unreadable or inconsistent with the notebooks."""


@dataclass(frozen=True)
class Profile:
    """A named set of notebook parameters.

    Parameters
    ----------
    name : str
        Profile name, the file stem (``quick``, ``paper``, ...).
    path : Path
        The YAML file the profile was read from.
    params : dict
        Flat mapping of parameter names to plain values (str, int, float, bool, list, dict).
    """

    name: str
    path: Path
    params: dict[str, Any] = field(default_factory=dict)

    def for_notebook(self, declared: Iterable[str]) -> dict[str, Any]:
        """Return the profile's values of the parameters a notebook declares."""
        declared = set(declared)
        return {k: v for k, v in self.params.items() if k in declared}

    def check_used(self, declared_by_notebook: Mapping[str, Iterable[str]]) -> None:
        """Raise :class:`ProfileError` if a profile key is declared by no notebook."""
        declared: set[str] = set()
        for names in declared_by_notebook.values():
            declared.update(names)
        unused = sorted(set(self.params) - declared)
        if unused:
            hints = [f"{key!r}{closest_hint(key, sorted(declared))}" for key in unused]
            raise ProfileError(
                f"{self.path}: parameter(s) {', '.join(hints)} are declared by no notebook; "
                f"the notebooks declare: {', '.join(sorted(declared))}"
            )


def find_project_root(start: str | Path | None = None) -> Path:
    """Return the brainage checkout containing ``start`` (default: the working directory).

    The root is the first folder, going upwards, that holds ``data_manifest.yaml`` and a
    ``notebooks`` folder. Notebooks run by hand from ``notebooks/`` find it the same way.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).exists() for marker in _ROOT_MARKERS):
            return folder
    raise FileNotFoundError(
        f"no brainage project above {here} (a folder holding "
        f"{' and '.join(_ROOT_MARKERS)}): the profiles and notebooks come with the source; "
        f"clone the repository (git clone, then run from inside it) or pass --root "
        f"PATH_TO_CLONE"
    )


def resolve_path(path: str | Path, root: str | Path | None = None) -> Path:
    """Resolve ``path`` against the project root unless it is absolute."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (Path(root) if root is not None else find_project_root()) / path


def display_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` as a reader of the book should see it: relative to the project root when it lies
    inside it (the machine's own folders mean nothing elsewhere), else as given."""
    path = Path(path)
    try:
        base = Path(root) if root is not None else find_project_root()
    except FileNotFoundError:  # not inside a project: nothing to be relative to
        return str(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def display_paths(frame: Any, columns: Sequence[str], root: str | Path | None = None) -> Any:
    """A copy of table ``frame`` whose text ``columns`` name files relative to the project root
    (a problem message, a path): what the book shows of a table that names files."""
    base = str((Path(root) if root is not None else find_project_root()).resolve())
    return frame.assign(**{c: frame[c].astype(str).str.replace(base + "/", "", regex=False)
                           for c in columns if c in frame.columns})


def list_profiles(params_dir: str | Path) -> list[str]:
    """Names of the profiles in ``params_dir`` (sorted)."""
    return sorted(p.stem for p in Path(params_dir).glob("*.yaml"))


def profile_description(path: str | Path, width: int = 100) -> str:
    """A profile's one-line description: the first sentence of the comment block at the top
    of its YAML file, cut at ``width`` characters (empty without a leading comment)."""
    lines = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return f"(unreadable: {err.__class__.__name__})"
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    block = " ".join(lines)
    match = re.match(r"(.+?[.!?])(\s+[A-Z`]|$)", block)  # "et al. 2022" goes on
    sentence = match.group(1) if match else block
    if len(sentence) > width:
        sentence = sentence[:width - 4].rsplit(" ", 1)[0] + " ..."
    return sentence


def load_profile(name_or_path: str | Path, params_dir: str | Path | None = None) -> Profile:
    """Read a profile by name (from ``params_dir``) or from a YAML path.

    Parameters
    ----------
    name_or_path : str or Path
        ``quick``, ``paper`` ... or a path to a YAML file.
    params_dir : str or Path, optional
        Folder of named profiles, default ``<project root>/notebooks/params``.

    Raises
    ------
    ProfileError
        If the profile does not exist (naming the closest existing one), is not valid YAML,
        is not a mapping with string keys, holds a value that is not plain (``!!binary``,
        timestamps, sets), expands through YAML aliases to more than
        :data:`MAX_PROFILE_VALUES` values, or has a ``run_dir`` that is not text.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        path = candidate
    else:
        params_dir = (Path(params_dir) if params_dir
                      else find_project_root() / "notebooks" / "params")
        path = params_dir / f"{name_or_path}.yaml"
        if not path.exists():
            known = list_profiles(params_dir)
            raise ProfileError(
                f"unknown profile {str(name_or_path)!r}{closest_hint(name_or_path, known)}: "
                f"no file {path}. Available profiles: {', '.join(known) or 'none'}."
            )
    if not path.is_file():
        raise ProfileError(f"profile file {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: {size} bytes; a profile is a short list of parameters "
                           f"(at most {MAX_PROFILE_BYTES} bytes)")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ProfileError(
            f"{path}: a profile must be a mapping of parameter names to values, "
            f"got {type(params).__name__}"
        )
    _check_plain(path, params)
    run_dir = params.get("run_dir")
    if "run_dir" in params and (not isinstance(run_dir, str) or not run_dir.strip()):
        raise ProfileError(f"{path}: run_dir must be a folder path (text), got {run_dir!r} "
                           f"({type(run_dir).__name__})")
    logger.debug("loaded profile %s from %s", path.stem, path)
    return Profile(name=path.stem, path=path.resolve(), params=params)


def _check_plain(path: Path, params: dict[str, Any]) -> None:
    """Refuse values that are not plain (text, numbers, booleans, null, lists, mappings with
    text keys) and values that expand to more than :data:`MAX_PROFILE_VALUES` items.

    YAML aliases share one object per anchor, so a few lines (an "anchor bomb", or a
    self-referencing list) can stand for 10^9 values that json, papermill and the provenance
    record would each expand; the walk counts expanded items and stops at the limit, so it
    costs at most that many steps.
    """
    budget = MAX_PROFILE_VALUES
    stack: list[tuple[str, Any, int]] = [(key, value, 1) for key, value in params.items()]
    while stack:
        where, value, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > MAX_PROFILE_DEPTH:
            raise ProfileError(
                f"{path}: parameter {where.split('.')[0].split('[')[0]!r} expands to more than "
                f"{MAX_PROFILE_VALUES} values or {MAX_PROFILE_DEPTH} levels (YAML anchors and "
                f"aliases that repeat or refer to themselves?); a profile holds plain values")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ProfileError(f"{path}: parameter {where!r} has the key {key!r} "
                                       f"({type(key).__name__}); keys must be text")
                stack.append((f"{where}.{key}", item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value))
        elif not isinstance(value, _PLAIN):
            raise ProfileError(
                f"{path}: parameter {where!r} is a {type(value).__name__} "
                f"({str(value)[:40]!r}); a profile holds text, numbers, booleans, null, lists "
                f"and mappings (no !!binary, !!timestamp or !!set values)")
