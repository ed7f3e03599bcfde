"""BIDS names: participant ids with and without their ``sub-`` prefix."""

from __future__ import annotations

__all__ = ["bids_id", "bids_label"]


def bids_id(participant: object) -> str:
    """The BIDS participant id: ``"01"``, ``" sub-01 "`` and ``"sub-01"`` give ``"sub-01"``."""
    text = str(participant).strip()
    return text if text.startswith("sub-") else f"sub-{text}"


def bids_label(participant: object) -> str:
    """The participant label without ``sub-`` (as BIDS Apps take it): ``"sub-01"`` -> ``"01"``."""
    return bids_id(participant).removeprefix("sub-")
