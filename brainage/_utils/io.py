"""File helpers: checksums, atomic writes, package versions."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

__all__ = ["atomic_write", "default_cache_dir", "package_versions", "sha256_file"]


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
