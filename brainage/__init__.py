"""brainage: MRI brain-age estimation with Rank-N-Contrast, a reproducible study.

The package holds every piece of the study's logic, in subpackages named after its stages
(imports run one way, top to bottom; ``tests/test_imports.py`` enforces it):

``data``
    manifest, cohort and BIDS reading, OpenBHB, IXI fetching, splits, audit, the simulator
``imaging``
    loading, registration to MNI152, preprocessing onto the model grid, the cache
``models``
    the network, the RNC loss, augmentation, datasets, training, Grad-RAM (the torch users)
``analysis``
    metrics, evaluation, clinical statistics, benchmark scores
``study``
    the run folder, ``brainage predict``, figures, profiles, provenance, the book
``cli``
    the ``brainage`` command line

Subpackages are imported on first use (``brainage.data``, ``brainage.models`` ...), so that the
command line starts fast and ``import brainage`` does not pull in torch. The README's Layout
section shows the floor plan and its import rules.
"""

from __future__ import annotations

from brainage._utils.constants import VERSION as __version__
from brainage._utils.lazy import lazy_exports

#: The subpackages (and top-level modules), one stage of the study each.
_SUBPACKAGES = ("analysis", "cli", "data", "exceptions", "imaging", "models", "study")

__all__ = ["__version__", *_SUBPACKAGES]
__getattr__, __dir__ = lazy_exports(__name__, {}, _SUBPACKAGES)
