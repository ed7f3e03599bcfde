"""Shared fixtures of the brainage test suite."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Ten real IXI T1w scans (BIDS, raw orientation) shipped beside the repository, never inside it.
IXI10 = REPO_ROOT.parent / "shared" / "data" / "ixi10"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator: tests are deterministic."""
    return np.random.default_rng(0)


@pytest.fixture
def torch_one_thread():
    """Run a test on one torch thread (small models: threads only add overhead), then restore."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def ixi10() -> Path:
    """The ten real IXI scans; tests that need them skip when the folder is absent."""
    if not (IXI10 / "participants.tsv").exists():
        pytest.skip(f"real IXI scans not available: {IXI10} is absent (it lives in ../shared/data)")
    return IXI10


@pytest.fixture(scope="session")
def ixi10_cache(ixi10, tmp_path_factory) -> Path:
    """One preprocessing cache for the ten IXI scans, shared by the tests that preprocess them
    with the default parameters (registration is the slow part: ~17 s per scan per core)."""
    return tmp_path_factory.mktemp("ixi10_cache")


@pytest.fixture
def small_scan(tmp_path: Path, rng: np.random.Generator) -> Path:
    """A tiny 3D NIfTI scan with unequal sides (7, 8, 9), 2 mm voxels, so axis mix-ups fail."""
    path = tmp_path / "small.nii.gz"
    data = rng.normal(100, 10, (7, 8, 9)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def _copy_project(src: Path, dst: Path) -> Path:
    ignore = shutil.ignore_patterns("_build", "results", "_generated", "plotly.min.js",
                                    "*.ipynb", ".ipynb_checkpoints", "__pycache__")
    for folder in ("notebooks", "book", "docs"):  # the book's appendix includes docs/*.md
        shutil.copytree(src / folder, dst / folder, ignore=ignore)
    shutil.copy(src / "data_manifest.yaml", dst / "data_manifest.yaml")
    return dst


@pytest.fixture(scope="session")
def copy_project() -> Callable[[Path], Path]:
    """Copy the project's notebooks, book and manifest into a folder (no outputs), so that a
    build test never touches the user's own ``book/`` or ``runs/``; returns the copy's root."""
    return lambda dst: _copy_project(REPO_ROOT, dst)
