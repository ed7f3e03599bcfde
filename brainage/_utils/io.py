"""File helpers: checksums, atomic writes, package versions."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "check_format_tag",
    "default_cache_dir",
    "package_versions",
    "read_json",
    "read_tagged_json",
    "schema_problems",
    "sha256_file",
]


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 digest of a file, read in chunks.

    Parameters
    ----------
    path : str or PathLike
        The file.
    chunk_size : int, default=1048576
        Bytes read at a time (memory stays bounded for large images).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``target`` so that a reader sees the old file or the new one, never a part.

    ``write(tmp)`` writes a temporary file beside ``target`` (same folder, so the rename is
    atomic; same suffixes, so ``.nii.gz`` writers pick the right format), which then replaces
    ``target``. On any error the temporary file is removed and ``target`` is left as it was.

    Parameters
    ----------
    target : str or PathLike
        The file to write; its folder must exist.
    write : callable
        Called with the temporary path; it must create that file.

    Returns
    -------
    Path
        ``target``.
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.time_ns()}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` where it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/brainage/preprocessed``, or ``~/.cache/brainage/preprocessed``: the
    preprocessed-volume cache of ``brainage predict`` when none is given."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "brainage" / "preprocessed"


# --- JSON files with a format tag --------------------------------------------------------------


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """``path`` parsed as JSON; any failure raises ``error`` naming the file (not UTF-8,
    not JSON, nested too deeply, an integer of more digits than Python converts ...)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise error(f"{path} cannot be read as JSON: it is nested too deeply for this "
                    f"reader (Python's recursion limit); a brainage file has a few levels") \
            from None
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError, long integers
        detail = " ".join(str(err).split())[:300]
        raise error(f"{path} cannot be read as JSON: {detail}") from err


def check_format_tag(data: Any, expected: str, source: str, *, kind: str | None = None,
                     error: type[Exception] = ValueError) -> dict[str, Any]:
    """``data`` if it is a mapping whose ``format`` field is ``expected``, else ``error``:
    ``"<source> [is not <kind>]: field 'format' must be <expected>, got <found>"``.

    The one check of every brainage file's format tag (model card, calibrations, checkpoints).
    """
    if not isinstance(data, Mapping) or data.get("format") != expected:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        what = f" is not {kind}" if kind else ""
        raise error(f"{source}{what}: field 'format' must be {expected!r}, got {found!r}")
    return dict(data)


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "boolean": "true or false", "integer": "an integer", "number": "a number",
               "null": "null"}


def _field_path(parts: Sequence[Any]) -> str:
    """``['grid', 'shape', 0]`` -> ``grid.shape[0]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def schema_problem(error: Any) -> str:
    """One JSON-Schema violation (``jsonschema.ValidationError``) as ``field: what is allowed;
    what was given``."""
    where, given, kind = _field_path(list(error.absolute_path)), error.instance, error.validator
    if kind == "type":
        wanted = error.validator_value
        names = [_TYPE_NAMES.get(w, w) for w in ([wanted] if isinstance(wanted, str) else wanted)]
        return f"{where} must be {' or '.join(names)}; got {type(given).__name__} {_short(given)}"
    if kind == "required":
        missing = [k for k in error.validator_value if k not in given]
        return "; ".join(f"{where}: required key {k!r} is missing" for k in missing)
    if "propertyNames" in error.relative_schema_path:  # reported at the parent: name the key
        return f"{where}: key {given!r} must be {error.schema['description']}"
    if kind in {"minItems", "maxItems"}:
        return f"{where} must hold {error.validator_value} item(s) here; got {_short(given)}"
    return f"{where}: {error.message}"


def schema_problems(data: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every violation of ``schema`` (JSON Schema, Draft 2020-12) by ``data``, one line each,
    in field order (empty when valid)."""
    import jsonschema  # imported here: every command imports _utils, few read a schema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return list(dict.fromkeys(schema_problem(e) for e in errors))


def read_tagged_json(path: str | os.PathLike, format: str,
                     schema: Mapping[str, Any] | None = None, *, kind: str | None = None,
                     error: type[Exception] = ValueError) -> dict[str, Any]:
    """Read a brainage JSON file: parsed (:func:`read_json`), its format tag checked first
    (:func:`check_format_tag`), then its fields against ``schema``.

    Parameters
    ----------
    path : str or PathLike
    format : str
        The ``format`` field the file must carry (e.g. ``"brainage-model/1"``).
    schema : mapping, optional
        A JSON Schema (Draft 2020-12) of the fields.
    kind : str, optional
        What the file is, for the messages (``"a valid model card"``).
    error : exception type, default=ValueError
        Raised with a message naming the file, the field and the problem.
    """
    data = check_format_tag(read_json(path, error), format, str(path), kind=kind, error=error)
    if schema is not None:
        problems = schema_problems(data, schema)
        if problems:
            raise error(f"{path} is not {kind or 'valid'}: " + "; ".join(problems))
    return data
