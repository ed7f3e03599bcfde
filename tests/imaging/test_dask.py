"""Preprocessing on a Dask cluster (a LocalCluster of 2 worker processes on 127.0.0.1): the
cache and the results are those of a local run, byte for byte; a bad scan is an error item; a
worker killed mid-task loses no cache entry and corrupts none (the task is rescheduled)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.cli import main
from brainage.data.cohort import find_scans
from brainage.data.simulate import simulate_cohort
from brainage.imaging import preprocess as pp
from tests.dask_cluster import dask_client, tree_bytes

__all__ = ["dask_client"]  # the fixture, imported for this module's tests

MNI = "MNI152NLin2009cSym"
PARAMS = pp.PreprocessParams(space=MNI, grid_mm=4.0, crop_to_brain=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four simulated template-space scans at 4 mm (fast to preprocess)."""
    root = tmp_path_factory.mktemp("sim") / "bids"
    simulate_cohort(root, n_healthy=4, seed=3, resolution_mm=4.0)
    return find_scans(root)["path"].tolist()


@pytest.fixture(scope="module")
def local_cache(cohort: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the cohort preprocessed in this process."""
    root = tmp_path_factory.mktemp("local_cache")
    items = pp.preprocess_cohort(cohort, PARAMS, pp.PreprocessCache(root))
    assert all(item.ok for item in items)
    return root


def _entries_are_complete(root: Path, cohort: list[str]) -> None:
    """Every scan's entry is under its final name, reads in full, and has its sidecar."""
    cache = pp.PreprocessCache(root)
    for path in cohort:
        target = cache.path_for(path, PARAMS)
        assert target.is_file(), f"entry of {path} is missing"
        data = np.asarray(nib.load(target).dataobj)  # a truncated gzip stream raises here
        assert data.shape == nib.load(target).shape and np.isfinite(data).all()
        meta = json.loads(target.with_suffix("").with_suffix(".json").read_text())
        # template-space scans: the misfit is not measured (JSON null), registered ones a float
        assert meta["sha256"] and isinstance(meta["registration_misfit_mm"], float | None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dask_cache_and_results_equal_the_local_run(cohort, local_cache, dask_client,
                                                    tmp_path: Path) -> None:
    items = pp.preprocess_cohort(cohort, PARAMS, pp.PreprocessCache(tmp_path),
                                 scheduler=dask_client)
    assert all(item.ok for item in items), [item.error for item in items]
    assert tree_bytes(tmp_path) == tree_bytes(local_cache)  # volumes and sidecars
    reference = pp.preprocess_cohort(cohort, PARAMS, pp.PreprocessCache(local_cache))
    for ours, theirs in zip(items, reference):
        assert str(ours.path) == str(theirs.path)
        np.testing.assert_equal(ours.alignment, theirs.alignment)  # NaN (not measured) == NaN
        np.testing.assert_array_equal(ours.image.get_fdata(), theirs.image.get_fdata())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bad_scan_on_dask_is_an_error_item(cohort, dask_client, tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x00 not a NIfTI file")
    items = pp.preprocess_cohort([cohort[0], bad, tmp_path / "missing.nii.gz"], PARAMS,
                                 pp.PreprocessCache(tmp_path / "cache"), scheduler=dask_client)
    assert items[0].ok and not items[1].ok and not items[2].ok
    assert str(bad) in items[1].error and "cannot read the image header" in items[1].error
    assert items[2].error.startswith("FileNotFoundError") and "missing.nii.gz" in items[2].error


def _executing(client) -> dict[str, int]:
    """Worker address -> number of tasks it is running now."""
    return client.run(lambda dask_worker: len(dask_worker.state.executing))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_worker_killed_mid_task_loses_and_corrupts_nothing(cohort, local_cache, dask_client,
                                                           tmp_path: Path) -> None:
    """SIGKILL a worker while it runs a preprocessing task: the scheduler reschedules the
    task (the nanny restarts the worker), every scan succeeds, and the cache holds exactly
    the local run's entries, each complete."""
    cache = pp.PreprocessCache(tmp_path / "cache")
    done: dict[str, list] = {}
    run = threading.Thread(target=lambda: done.setdefault(
        "items", pp.preprocess_cohort(cohort, PARAMS, cache, scheduler=dask_client)))
    run.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and run.is_alive() and time.monotonic() < deadline:
        busy = [address for address, n in _executing(dask_client).items() if n]
        if busy:
            victim = busy[0]
            pid = dask_client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
        else:
            time.sleep(0.05)
    run.join(timeout=300)
    assert victim is not None, "no task was seen running: nothing was killed"
    assert not run.is_alive()
    items = done["items"]
    assert all(item.ok for item in items), [item.error for item in items]
    _entries_are_complete(cache.root, cohort)
    kept = {name: data for name, data in tree_bytes(cache.root).items()
            if not Path(name).name.startswith(".")}  # a killed write may leave its temp file
    assert kept == tree_bytes(local_cache)
    dask_client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker
    assert victim not in dask_client.scheduler_info()["workers"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_preprocess_with_a_local_cluster(cohort, tmp_path: Path) -> None:
    """``brainage preprocess IN OUT --scheduler local:1`` writes what ``--jobs 1`` writes."""
    source = tmp_path / "in"  # the scans only (the simulated folder also holds ground truth)
    for scan in cohort:
        (source / Path(scan).name).parent.mkdir(exist_ok=True)
        shutil.copy(scan, source / Path(scan).name)
    assert main(["-q", "preprocess", str(source), str(tmp_path / "a"), "--space", MNI,
                 "--grid-mm", "4", "--crop-to-brain"]) == 0
    assert main(["-q", "preprocess", str(source), str(tmp_path / "b"), "--space", MNI,
                 "--grid-mm", "4", "--crop-to-brain", "--scheduler", "local:1"]) == 0
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert len([n for n in tree_bytes(tmp_path / "a") if n.endswith("_T1w.nii.gz")]) == 4
