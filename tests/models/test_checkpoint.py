"""Tests of brainage.models.checkpoint: atomic writes, weights-only reads, corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainage.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, write_checkpoint
from brainage.models.train import load_model


def test_write_then_read_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    write_checkpoint({"format": CHECKPOINT_FORMAT, "w": torch.arange(3)}, path)
    payload = read_checkpoint(path)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["w"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": "someone-else/2"}, path)
    with pytest.raises(ValueError, match=r"other.pt is not a brainage checkpoint: field "
                                         r"'format' must be 'brainage-checkpoint/1', got "
                                         r"'someone-else/2'"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_corrupt_checkpoint_is_named_corrupt_or_changed(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(7, 8, 9)}}, path)
    body = path.read_bytes()
    path.write_bytes(body[: len(body) // 2] if kind == "truncated"
                     else np.random.default_rng(0).bytes(len(body)))
    with pytest.raises(ValueError) as info:
        load_model(path)
    message = str(info.value)
    assert f"checkpoint {path} is corrupt or changed" in message
    assert "retrained" not in message
