"""Checkpoints: plain state dicts with metadata, written atomically, read with weights only.

Every checkpoint the study writes is a dict with ``format`` (:data:`CHECKPOINT_FORMAT`), the
model and training configurations, the age normalisation and the weights, saved with
``torch.save`` and read back with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from brainage._utils import atomic_write
from brainage._utils.io import check_format_tag

__all__ = ["CHECKPOINT_FORMAT", "read_checkpoint", "write_checkpoint"]

#: The ``format`` field of the study's checkpoints.
CHECKPOINT_FORMAT = "brainage-checkpoint/1"


def write_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Save ``payload`` atomically (temporary file, then rename): an interruption leaves the
    old file."""
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a study checkpoint with ``torch.load(weights_only=True)``, on the CPU.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be read (corrupt, truncated, replaced, or holding code), or is not a
        checkpoint of :data:`CHECKPOINT_FORMAT`; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"checkpoint {path} is corrupt or changed (damaged, truncated or "
                         f"replaced): torch.load(weights_only=True) cannot read it: "
                         f"{' '.join(str(err).split())}") from err
    check_format_tag(payload, CHECKPOINT_FORMAT, f"checkpoint {path}",
                     kind="a brainage checkpoint")
    return payload
