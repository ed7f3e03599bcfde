"""brainage: MRI brain-age estimation with Rank-N-Contrast, a reproducible study.

The package holds every piece of the study's logic; the notebooks call it. Submodules are
imported on first use (``brainage.simulate``, ``brainage.losses`` ...), so that the command
line starts fast and ``import brainage`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The package's modules, one concern each (see DESIGN.md).
_SUBMODULES = (
    "audit",
    "augment",
    "book",
    "cli",
    "clinical",
    "cohort",
    "evaluation",
    "fetch",
    "figures",
    "losses",
    "manifest",
    "metrics",
    "models",
    "openbhb",
    "predict",
    "preprocess",
    "profiles",
    "provenance",
    "registration",
    "runs",
    "saliency",
    "simulate",
    "splits",
    "train",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy submodule import: ``brainage.figures`` works after ``import brainage``.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
