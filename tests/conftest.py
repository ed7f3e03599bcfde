"""Shared fixtures of the brainage test suite."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

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


def copy_project_into(src: Path, dst: Path) -> Path:
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
    return lambda dst: copy_project_into(REPO_ROOT, dst)


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


# --- the end-to-end results, computed in a background process from the session's start --------

#: Session results that take minutes of mostly one-core work: the three builds (one notebook
#: kernel at a time) and the ten raw IXI scans' preprocessing. One background process computes
#: them from the session's start, in the order the collected tests first need them, while this
#: process runs the unit tests: on CI's 2 cores the unit tests leave about one core idle, and
#: these fill it (each was a fixture that this process ran while the other core waited).
#: Fixture name -> ("module:function", the session fixtures it is also given). The function
#: is called with a fresh folder and those fixtures' values and returns the fixture's value.
#: A job that reads the real IXI scans (it is given ``ixi10_cache``, or it is named in
#: :data:`REAL_SCAN_JOBS`) is submitted only where they are present.
BACKGROUND_JOBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ixi_results": ("tests.imaging.test_preprocess:preprocess_ixi10", ("ixi10_cache",)),
    "robustness_images": ("tests.imaging.test_preprocess:preprocess_robustness_cases", ()),
    "built": ("tests.study.test_book:build_tiny", ()),
    "openbhb_build": ("tests.study.test_openbhb_build:build_openbhb", ()),
    "ixi10_build": ("tests.study.test_real_data:build_ixi10", ("ixi10_cache",)),
    "user_run": ("tests.study.test_user_training:train_user_run", ()),
}
REAL_SCAN_JOBS = {"ixi_results", "robustness_images", "ixi10_build"}


def _quiet_worker(log: str) -> None:
    """The background process writes to a log file, not into pytest's output."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _run_job(target: str, *args: Any) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args)


class Background:
    """Jobs of :data:`BACKGROUND_JOBS` in one spawned process (in submission order)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future] = {}

    def submit(self, name: str, *args: Any) -> None:
        if name in self._futures:
            return
        if self._pool is None:
            log = self._factory.getbasetemp() / "background.log"
            self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                                             initializer=_quiet_worker, initargs=(str(log),))
        target, _ = BACKGROUND_JOBS[name]
        self._futures[name] = self._pool.submit(_run_job, target, self._factory.mktemp(name),
                                                *args)

    def result(self, name: str, *args: Any) -> Any:
        """The job's value (submitted now if it was not), as the fixture returned it."""
        self.submit(name, *args)
        return self._futures[name].result()

    def close(self) -> None:
        """Cancel what has not started; kill what runs (a session stopped early, ``-x``)."""
        if self._pool is None:
            return
        running = [f for f in self._futures.values() if not f.done()]
        # no public way to stop a running call: end the process (shutdown forgets it)
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=not running, cancel_futures=True)
        if running:
            for process in processes:
                process.kill()


@pytest.fixture(scope="session")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    jobs = Background(tmp_path_factory)
    yield jobs
    jobs.close()


@pytest.fixture(scope="session", autouse=True)
def _start_background_jobs(request: pytest.FixtureRequest, background: Background) -> None:
    """Submit the background jobs the collected tests use, in the order they first use them."""
    first: dict[str, int] = {}
    for index, item in enumerate(request.session.items):
        for name in BACKGROUND_JOBS:
            if name in getattr(item, "fixturenames", ()):
                first.setdefault(name, index)
    for name in sorted(first, key=first.__getitem__):
        if name in REAL_SCAN_JOBS and not (IXI10 / "participants.tsv").exists():
            continue  # the fixture skips, as before
        background.submit(name, *map(request.getfixturevalue, BACKGROUND_JOBS[name][1]))
