from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.data import audit


def _table():
    return pd.DataFrame({
        "participant_id": [f"sub-{i}" for i in range(6)],
        "age": [20.0, 80.0, 50.0, 70.0, 60.0, 66.0],
        "sex": ["F", "M", "F", "F", "M", "M"],
        "site": ["a", "a", "b", "b", "a", "b"],
        "group": ["HC", "HC", "HC", "AD", "PD", "AD"],
    })


def test_demographics_hand_checked():
    out = audit.demographics(_table()).set_index("group")
    assert out.loc["HC", "n"] == 3
    assert out.loc["HC", "age_mean"] == 50.0
    assert out.loc["HC", "age_sd"] == 30.0
    assert out.loc["HC", "female_%"] == pytest.approx(66.7)
    assert out.loc["AD", "age_min"] == 66.0 and out.loc["AD", "age_max"] == 70.0


def test_demographics_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['site'\]"):
        audit.demographics(_table().drop(columns="site"), by=("group", "site"))


def test_problem_summary_counts_by_check():
    problems = pd.DataFrame({"check": ["age", "age", "image"],
                             "severity": ["error", "warning", "error"]})
    out = audit.problem_summary(problems).set_index("check")
    assert out.loc["age", "error"] == 1 and out.loc["age", "warning"] == 1
    assert out.loc["image", "excluded"] == 0
    assert audit.problem_summary(problems.iloc[:0]).empty


def test_example_subjects_picks_extremes_and_median_patients():
    out = audit.example_subjects(_table())
    assert list(out["example"]) == ["youngest control", "oldest control", "AD patient", "PD patient"]
    assert list(out["participant_id"]) == ["sub-0", "sub-1", "sub-3", "sub-4"]
    only_hc = audit.example_subjects(_table().query("group == 'HC'"))
    assert len(only_hc) == 2


def test_tissue_fractions_of_a_banded_volume(tmp_path):
    data = np.zeros((7, 8, 9), dtype=np.float32)
    data[1:6, 1:7, 1:8] = 1.0          # white matter
    data[1:6, 1:7, 1:3] = 0.65         # grey matter slab
    data[2:4, 2:4, 4:6] = 0.2          # ventricle
    path = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    out = audit.tissue_fractions(path)
    brain = 5 * 6 * 7
    assert out["brain_voxels"] == brain
    assert out["csf_fraction"] == pytest.approx(8 / brain)
    assert out["gm_fraction"] == pytest.approx(5 * 6 * 2 / brain)


@pytest.mark.parametrize(
    ("data", "mask", "message"),
    [(np.zeros((7, 8, 9)), None, "brain mask is empty"),
     (np.ones((7, 8, 9, 2)), None, "needs a 3D image"),
     (np.ones((7, 8, 9)), np.ones((7, 8, 8), bool), r"mask shape \(7, 8, 8\)")],
)
def test_tissue_fractions_bad_input(data, mask, message):
    with pytest.raises(ValueError, match=message):
        audit.tissue_fractions(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), mask=mask)


@pytest.mark.parametrize(("registered", "severity"), [(True, "error"), (False, "warning")])
def test_alignment_problems(registered, severity):
    table = _table().assign(dataset="d", path=[f"/d/{i}.nii.gz" for i in range(6)])
    errors = {"/d/0.nii.gz": "/d/0.nii.gz: cannot read"}
    scores = {"/d/1.nii.gz": 3.5, "/d/2.nii.gz": 7.25, "/d/3.nii.gz": float("nan"),
              "/d/4.nii.gz": 5.0}
    out = audit.alignment_problems(table, errors, scores, 5.0, registered=registered)
    # 5.0 passes; NaN (not measured) fails a registered scan only, as in brainage predict
    flagged = ["sub-0", "sub-2", "sub-3"] if registered else ["sub-0", "sub-2"]
    assert list(out["participant_id"]) == flagged
    assert list(out["check"]) == ["preprocessing"] + ["alignment"] * (len(flagged) - 1)
    assert out.loc[0, "severity"] == "error"
    assert set(out.loc[1:, "severity"]) == {severity}
    assert "misfit 7.25 mm is above the threshold 5.0 mm" in out.loc[1, "message"]
    assert out.loc[1, "message"].startswith("/d/2.nii.gz")


def test_tiv_problems_warn_outside_the_range():
    table = _table().assign(dataset="d", path=[f"/d/{i}.nii.gz" for i in range(6)])
    tivs = {"/d/0.nii.gz": 1500.0, "/d/1.nii.gz": 450.0, "/d/2.nii.gz": float("nan"),
            "/d/3.nii.gz": 2600.0}
    out = audit.tiv_problems(table, tivs, (900.0, 2300.0))
    assert list(out["participant_id"]) == ["sub-1", "sub-3"]
    assert set(out["severity"]) == {"warning"} and set(out["check"]) == {"tiv"}
    assert out.loc[0, "message"].startswith("/d/1.nii.gz: total intracranial volume 450 cm³")
    assert audit.tiv_problems(table, {}, (900.0, 2300.0)).empty


def test_tiv_summary_by_group():
    table = _table().assign(tiv_cm3=[1400.0, 1600.0, float("nan"), 1500.0, 1500.0, 1500.0])
    out = audit.tiv_summary(table)
    assert dict(zip(out["group"], out["n"])) == {"AD": 2, "HC": 2, "PD": 1}  # NaN: left out
    hc = out[out["group"] == "HC"].iloc[0]
    assert (hc["tiv_mean"], hc["tiv_min"], hc["tiv_max"]) == (1500.0, 1400.0, 1600.0)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['tiv_cm3'\]"):
        audit.tiv_summary(_table())


def test_qc_removals_by_group_and_age_band():
    """Hand-checked counts: HC 20-40 y one of two fails (7.0 mm), HC 60-80 y none; AD 60-80 y
    the unmeasured (NaN) scan fails only when the scans were registered here."""
    table = pd.DataFrame({"group": ["HC", "HC", "HC", "AD", "AD"],
                          "age": [25.0, 35.0, 70.0, 65.0, 75.0],
                          "registration_misfit_mm": [3.0, 7.0, 4.9, float("nan"), 3.5]})
    out = audit.qc_removals(table, 5.0).set_index(["group", "age_band"])
    assert out.loc[("HC", "0-40"), ["n", "failed"]].tolist() == [2, 1]
    assert out.loc[("HC", "0-40"), "failed_percent"] == pytest.approx(50.0)
    assert out.loc[("HC", "60-80"), ["n", "failed"]].tolist() == [1, 0]
    assert out.loc[("AD", "60-80"), ["n", "failed"]].tolist() == [2, 1]
    assert out.loc[("AD", "all"), "median"] == pytest.approx(3.5)
    assert out.loc[("HC", "all"), ["n", "failed"]].tolist() == [3, 1]
    kept = audit.qc_removals(table, 5.0, registered=False).set_index(["group", "age_band"])
    assert kept.loc[("AD", "60-80"), "failed"] == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bands": (40.0, 20.0)}, "increasing edges"),
    ({"bands": (40.0,)}, "increasing edges")])
def test_qc_removals_bad_input(kwargs, message):
    table = pd.DataFrame({"group": ["HC"], "age": [30.0], "registration_misfit_mm": [3.0]})
    with pytest.raises(ValueError, match=message):
        audit.qc_removals(table, 5.0, **kwargs)
    with pytest.raises(ValueError, match=r"column\(s\) \['registration_misfit_mm'\]"):
        audit.qc_removals(table.drop(columns="registration_misfit_mm"), 5.0)
