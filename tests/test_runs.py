from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.cohort import CohortError
from brainage.runs import RunFolder


def _write_volume(path, value, shape=(7, 8, 9)):
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), path)
    return str(path)


@pytest.fixture
def run(tmp_path):
    run = RunFolder(tmp_path / "run")
    (run.path / "audit").mkdir(parents=True)
    rows = []
    for i, (split, group) in enumerate([("train", "HC"), ("train", "HC"), ("val", "HC"),
                                        ("test", "HC"), ("clinical", "AD")]):
        rows.append({"participant_id": f"sub-{i}", "age": 20.0 + 10 * i, "group": group,
                     "sex": "F", "site": "a", "dataset": "d", "split": split,
                     "preprocessed": _write_volume(tmp_path / f"{i}.nii.gz", float(i))})
    pd.DataFrame(rows).to_csv(run.cohort_csv, index=False)
    pd.DataFrame(columns=["dataset", "participant_id", "path", "check", "severity",
                          "message"]).to_csv(run.problems_csv, index=False)
    return run


def test_dataset_holds_only_the_requested_splits(run):
    train = run.dataset("train")
    assert train.ids == ["sub-0", "sub-1"] and list(train.ages) == [20.0, 30.0]
    assert train[1]["image"].shape == (1, 7, 8, 9) and float(train[1]["image"].max()) == 1.0
    held_out = run.dataset(["val", "test", "clinical"])
    assert held_out.ids == ["sub-2", "sub-3", "sub-4"]
    with pytest.raises(ValueError, match=r"no scans in split\(s\) \['nope'\].*present: \['clinical'"):
        run.dataset("nope")


def test_training_refuses_to_start_on_an_audit_error(run):
    run.require_no_errors()
    pd.DataFrame([{"dataset": "d", "participant_id": "sub-9", "path": "/x/sub-9.nii.gz",
                   "check": "age", "severity": "error",
                   "message": "/x/sub-9.nii.gz: age 'abc' is not a number"}]).to_csv(
        run.problems_csv, index=False)
    with pytest.raises(CohortError, match=r"sub-9.nii.gz: age 'abc' is not a number"):
        run.require_no_errors()


def test_missing_files_name_the_notebook_to_run(tmp_path):
    empty = RunFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cohort.csv does not exist: run the notebook 01_data_audit"):
        empty.cohort()
    with pytest.raises(FileNotFoundError, match="problems.csv does not exist"):
        empty.require_no_errors()


def test_volumes_of_different_shapes_are_refused(run, tmp_path):
    table = run.cohort()
    table.loc[0, "preprocessed"] = _write_volume(tmp_path / "odd.nii.gz", 1.0, shape=(7, 8, 8))
    with pytest.raises(ValueError, match="different shapes"):
        run.volumes(table)


def test_dataset_record_and_ground_truth(run, tmp_path):
    class Spec:
        name, root, space, skull_stripped, simulated, atlas = (
            "real", tmp_path, "native", False, False, None)

    run.write_dataset(Spec)
    assert json.loads(run.dataset_json.read_text())["name"] == "real"
    assert run.ground_truth() is None
