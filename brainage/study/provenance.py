"""Provenance of a run: profile, parameters, versions, commit, hardware, data checksums, timings.

Every run folder holds ``provenance.json``. The build writes the environment part before the
notebooks run and adds each notebook's wall time after it ran; the data-audit notebook adds the
checksums of the data it read. The book's appendix renders the file.

The build writes the record only after the profile passed every check (a bad profile leaves an
existing run's record as it was), and always whole, to a temporary file renamed into place. It
is a record for readers, not a seal: it is read back only to merge new sections and to render
the book. What is checked on reading: size, UTF-8, JSON, nesting, a JSON object (else an error
naming the file). What a tampered record can still do: claim any profile, commit, versions,
hardware or data checksums; nothing verifies them against the run's files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from brainage._utils import atomic_write, package_versions, read_json, sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "PROVENANCE_FILE",
    "collect_environment",
    "cpu_description",
    "digest_files",
    "git_commit",
    "read_provenance",
    "update_provenance",
]

PROVENANCE_FILE = "provenance.json"
#: The largest provenance record read back (bytes); the build writes some tens of kilobytes.
MAX_PROVENANCE_BYTES = 20_000_000

#: Distributions whose versions are recorded.
PACKAGES = (
    "brainage", "torch", "monai", "numpy", "scipy", "pandas", "scikit-learn", "nibabel",
    "nilearn", "antspyx", "pingouin", "statsmodels", "plotly", "papermill", "jupytext",
    "jupyter-book", "myst-nb", "sphinx",
)


def git_commit(root: str | Path) -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes (``None`` outside git)."""
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


#: Vector instruction sets recorded: the floating-point kernels of numpy, scipy, ITK and torch
#: (resampling, training) round differently with them, so results differ in their last bits
#: from one CPU to another, and training amplifies that (see the README's "Same numbers?").
_SIMD_FLAGS = ("avx512f", "avx2", "fma", "avx", "sse4_2", "neon", "asimd")


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's model name and which of :data:`_SIMD_FLAGS` it has, as text such as
    ``"avx512f avx2 fma avx sse4_2"`` (Linux; elsewhere the platform's processor string and
    None)."""
    model, flags = platform.processor() or None, None
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")[:200_000]
    except OSError:
        return {"cpu_model": model, "simd": flags}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("cpu model") or model
    present = set((fields.get("flags") or fields.get("features") or "").split())
    if present:
        flags = " ".join(flag for flag in _SIMD_FLAGS if flag in present) or "none of " + (
            " ".join(_SIMD_FLAGS))
    return {"cpu_model": model, "simd": flags}


def _hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        **cpu_description(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        info["cuda"] = None
    return info


def collect_environment(root: str | Path) -> dict[str, Any]:
    """Python, package versions, git commit and hardware of this process."""
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "packages": package_versions(PACKAGES),
        "git": git_commit(root),
        "hardware": _hardware(),
    }


def digest_files(paths: Iterable[str | Path], root: str | Path | None = None) -> dict[str, Any]:
    """SHA-256 of each file and one digest over all of them (order-independent).

    Parameters
    ----------
    paths : iterable of path
        Files to hash.
    root : path, optional
        Paths are recorded relative to ``root`` where they lie below it.

    Returns
    -------
    dict
        ``{"n_files": int, "sha256": combined digest, "files": {path: sha256}}``.
    """
    files: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        key = str(path)
        if root is not None:
            try:
                key = str(path.resolve().relative_to(Path(root).resolve()))
            except ValueError:
                pass
        files[key] = sha256_file(path)
    combined = hashlib.sha256()
    for key in sorted(files):
        combined.update(f"{key}\0{files[key]}\n".encode())
    return {"n_files": len(files), "sha256": combined.hexdigest(), "files": files}


def read_provenance(run_dir: str | Path) -> dict[str, Any]:
    """Contents of ``run_dir/provenance.json`` (empty dict when absent).

    Raises
    ------
    ValueError
        Naming the file, when it is larger than :data:`MAX_PROVENANCE_BYTES`, not UTF-8, not
        JSON, nested too deeply, or not a JSON object.
    """
    path = Path(run_dir) / PROVENANCE_FILE
    if not path.exists():
        return {}
    size = path.stat().st_size
    if size > MAX_PROVENANCE_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than a provenance record's "
                         f"{MAX_PROVENANCE_BYTES}; move it aside and build again")
    try:
        record = read_json(path)  # names the file: not UTF-8, not JSON, nested too deeply
    except ValueError as err:
        raise ValueError(f"{path} is not a provenance record ({err}); move it aside and build "
                         f"again") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a provenance record: a JSON object is expected, "
                         f"got {type(record).__name__}")
    return record


def update_provenance(run_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into ``run_dir/provenance.json`` and return the whole record.

    Mapping values are merged one level deep (so ``notebooks={"01": {...}}`` adds one entry);
    other values replace what was there. The file is written atomically.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = read_provenance(run_dir)
    for key, value in sections.items():
        if isinstance(value, Mapping) and isinstance(record.get(key), Mapping):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    atomic_write(run_dir / PROVENANCE_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return record
