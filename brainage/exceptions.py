"""The package's errors: one base, :class:`BrainageError`, that every domain error derives from.

Domain errors also subclass the built-in type a caller would expect (``ValueError`` for bad
values, ``RuntimeError`` for a failed download), as nilearn's ``DimensionError`` does, so that
``except ValueError`` keeps working. This module imports nothing of brainage.
"""

from __future__ import annotations

__all__ = ["BrainageError"]


class BrainageError(Exception):
    """Base of every error raised on purpose by brainage: ``except BrainageError`` catches them."""
