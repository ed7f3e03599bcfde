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


@pytest.fixture(scope="session")
def ixi10_model_cache(ixi10, tmp_path_factory) -> Path:
    """One preprocessing cache for IXI scans on the grid of the inference tests' tiny model (8 mm,
    cropped to the brain): test_predict's native scan and the BIDS App's local reference on the
    cluster test share sub-IXI012's registration (about 8 s of CPU) instead of each running it."""
    return tmp_path_factory.mktemp("ixi10_model_cache")


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


# --- the tiny trained model folder of the inference tests ------------------------------------


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as a run writes it: rnc/ and l1/ best.pt, model.json, rnc's correction.
    Trained once per session (6.6 s of CPU on the 2-core machine, three modules used to train
    it each); tests use :func:`model_dir`, a copy per module, never this folder itself.
    Here, not in a test module, so that every module shares the one session instance."""
    import json

    import torch

    from brainage.imaging.registration import template_grid
    from brainage.inference import model_folder
    from brainage.models.datasets import VolumeDataset
    from brainage.models.network import ModelConfig
    from brainage.models.train import TrainConfig, train_l1, train_rnc
    from tests.inference.test_predict import CORRECTION, GRID_MM, MNI
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape, _ = template_grid(GRID_MM, crop_to_brain=True)
    images = rng.gamma(2.0, 0.5, size=(8, *shape)).astype(np.float32)  # (N, D, H, W), positive
    ages = np.linspace(20.0, 80.0, 8)
    ids = [f"t{i}" for i in range(8)]
    train = VolumeDataset(images[:6], ages[:6], ids[:6])
    val = VolumeDataset(images[6:], ages[6:], ids[6:])
    model_cfg = ModelConfig(depth=10, widths=(4, 8, 16, 32))
    common = dict(batch_size=2, augment=None, progress=False, device="cpu", probe_every=0)
    root = tmp_path_factory.mktemp("run") / "models"
    train_rnc(train, val, model_cfg, TrainConfig(epochs=1, head_epochs=2, **common), root / "rnc")
    train_l1(train, val, model_cfg, TrainConfig(epochs=1, **common), root / "l1")
    model_folder.write_model_card(root, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                          "skull_stripped": True, "crop_to_brain": True},
                        saliency_layer="encoder.layer2", profile="test")
    (root / "rnc" / model_folder.BIAS_CORRECTION_FILE).write_text(json.dumps(CORRECTION.to_dict()))
    # the integrated-gradients reference, as notebook 02 writes it: a training scan's stand-in (their mean)
    model_folder.save_ig_reference(root, images[:6].mean(axis=0),
                                   template_grid(GRID_MM, crop_to_brain=True)[1])
    return root


@pytest.fixture(scope="module")
def model_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny models folder, copied for this module (its tests may change it)."""
    root = tmp_path_factory.mktemp("run") / "models"
    shutil.copytree(trained_model_dir, root)
    return root
