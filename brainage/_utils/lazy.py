"""Lazy re-exports for subpackage ``__init__`` modules (PEP 562).

A subpackage lists its public names and the module that defines each; the module is imported
on first access, so that ``brainage --help`` and ``import brainage.data`` do not pull in torch,
nilearn or ANTs until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str],
                 modules: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names load on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : mapping of str to str
        Public name -> module (relative to ``package``) that defines it.
    modules : tuple of str, default=()
        Submodules also reachable as attributes (``brainage.data.cohort``).
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*names, *modules})

    return __getattr__, __dir__
