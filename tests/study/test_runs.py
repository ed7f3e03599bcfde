from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.data.cohort import CohortError
from brainage.study.runs import RunFolder, region_labels


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


def _simulated(run, tmp_path, atlas=None):
    class Spec:
        name, root, space, skull_stripped, simulated = ("sim", tmp_path / "sim",
                                                        "MNI152NLin2009cSym", True, atlas is None)

    Spec.atlas = atlas
    run.write_dataset(Spec)
    truth = tmp_path / "sim" / "derivatives" / "ground_truth"
    truth.mkdir(parents=True)
    return truth


def test_region_labels_of_the_simulated_truth_and_of_an_atlas(run, tmp_path):
    reference = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), np.diag([2.0, 2, 2, 1]))
    truth = _simulated(run, tmp_path)
    labels = np.zeros((7, 8, 9), np.int16)
    labels[1:3, 2:5, 3:6] = 4
    nib.save(nib.Nifti1Image(labels, np.diag([2.0, 2, 2, 1])), truth / "regions.nii.gz")
    (truth / "regions.tsv").write_text("index\tname\n4\thippocampus\n")
    image, names, source = region_labels(run, reference)
    assert names == {4: "hippocampus"} and "ground-truth" in source
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)

    atlas = SimpleNamespace(image=truth / "regions.nii.gz", labels=truth / "regions.tsv")
    real = RunFolder(tmp_path / "real")

    class Spec:
        name, root, space, skull_stripped, simulated = ("real", tmp_path, "native", False, False)

    Spec.atlas = atlas
    real.write_dataset(Spec)
    _, names, source = region_labels(real, reference)
    assert names == {4: "hippocampus"} and source.startswith("the atlas ")
    Spec.atlas = None
    real.write_dataset(Spec)
    assert region_labels(real, reference) is None


def test_ageing_truth_mask_thresholds_the_effect_inside_the_brain(run, tmp_path):
    from nilearn import datasets

    from brainage.study.runs import ageing_truth_mask

    brain = datasets.load_mni152_brain_mask(resolution=2)
    truth = _simulated(run, tmp_path)
    effect = np.zeros(brain.shape, np.float32)
    effect[40:50, 50:60, 30:40] = 0.5  # inside the brain
    effect[0:3, 0:3, 0:3] = 0.9  # outside it
    nib.save(nib.Nifti1Image(effect, brain.affine), truth / "ageing_effect.nii.gz")
    truth_mask, brain_mask = ageing_truth_mask(run, brain, threshold=0.2)
    assert truth_mask.sum() == 1000 and not truth_mask[0:3, 0:3, 0:3].any()
    assert brain_mask.sum() == int((np.asarray(brain.dataobj) > 0).sum())
    assert not ageing_truth_mask(run, brain, threshold=0.6)[0].any()


def test_effect_mask_of_each_process(run, tmp_path):
    from nilearn import datasets

    from brainage.study.runs import effect_mask

    brain = datasets.load_mni152_brain_mask(resolution=2)
    truth = _simulated(run, tmp_path)
    effect = np.zeros(brain.shape, np.float32)
    effect[40:45, 50:55, 30:35] = 0.3
    nib.save(nib.Nifti1Image(effect, brain.affine), truth / "pd_effect.nii.gz")
    mask, _ = effect_mask(run, brain, "pd", threshold=0.05)
    assert mask.sum() == 125
    with pytest.raises(ValueError, match="process"):
        effect_mask(run, brain, "ms", threshold=0.05)


def test_tissue_labels_follow_the_template():
    from nilearn import datasets

    from brainage.study.runs import tissue_labels

    brain = datasets.load_mni152_brain_mask(resolution=2)
    labels = tissue_labels(brain)
    grey = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj)
    white = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj)
    inside = np.asarray(brain.dataobj) > 0
    assert set(np.unique(labels)) == {0, 1, 2, 3} and (labels[~inside] == 0).all()
    assert (labels[inside & (grey > 0.7)] == 1).all() and (labels[inside & (white > 0.7)] == 2).all()


def test_predictions_with_scores_merges_and_fills(run):
    from brainage.study.runs import predictions_with_scores

    table = run.cohort().assign(mmse=[30.0, 29, 28, 27, 20])
    table.to_csv(run.cohort_csv, index=False)
    pd.DataFrame({"participant_id": ["sub-4", "sub-3"], "model": "rnc",
                  "predicted": [70.0, 55.0]}).to_csv(run.predictions_csv, index=False)
    out = predictions_with_scores(run, ["mmse", "updrs3"])
    assert out["mmse"].tolist() == [20.0, 27.0] and out["updrs3"].isna().all()
