from __future__ import annotations

import gzip
import math
import re
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainage._utils import sha256_file
from brainage.data.cohort import (
    BASE_COLUMNS,
    PROBLEM_COLUMNS,
    CohortError,
    CohortResult,
    ImageLimits,
    check_image,
    find_scans,
    load_cohort,
)
from brainage.data.manifest import DatasetSpec, load_manifest
from tests.conftest import IXI10

SHAPE = (7, 8, 9)
VOXEL = 15.0  # mm: a (7, 8, 9) volume then spans 105 x 120 x 135 mm, a plausible head FOV
#: Tiny test volumes need coarse voxels to reach a brain-sized field of view.
TINY = ImageLimits(voxel_mm=(0.2, 16.0))

HEADER = "participant_id\tage\tsex\tsite\tdx\tMMSE\n"
ROWS = {
    "sub-01": "sub-01\t30.5\tF\tA\tcontrol\t29\n",
    "sub-02": "02\t41\tmale\tB\tCN\tn/a\n",  # id without prefix, second HC label
    "sub-03": "sub-03\t72\tM\tA\tAlzheimer\t21\n",
    "sub-04": "sub-04\t65\tn/a\tB\tParkinson\t\n",
}


def _volume(path: Path, rng: np.random.Generator, data: np.ndarray | None = None,
            zooms: tuple[float, ...] = (VOXEL,) * 3) -> Path:
    """Write a small NIfTI (random positive intensities unless ``data`` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rng.uniform(1, 100, SHAPE).astype(np.float32) if data is None else data
    affine = np.diag([*zooms[:3], 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _scan(root: Path, pid: str, session: str = "") -> Path:
    folder = root / pid / session / "anat" if session else root / pid / "anat"
    stem = f"{pid}_{session}_T1w" if session else f"{pid}_T1w"
    return folder / f"{stem}.nii.gz"


def make_bids(root: Path, rng: np.random.Generator, rows: dict[str, str] | None = None,
              scans: list[tuple[str, str]] | None = None, header: str = HEADER) -> Path:
    """A small BIDS dataset: participants.tsv from ``rows`` and one image per (id, session)."""
    rows = ROWS if rows is None else rows
    scans = [("sub-01", ""), ("sub-02", ""), ("sub-03", "ses-1"), ("sub-03", "ses-2"),
             ("sub-04", "")] if scans is None else scans
    root.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text(header + "".join(rows.values()))
    for pid, session in scans:
        _volume(_scan(root, pid, session), rng)
    return root


def make_spec(root: Path, **changes) -> DatasetSpec:
    spec = DatasetSpec(
        name="toy", format="bids", root=root, space="native", skull_stripped=False,
        participants=root / "participants.tsv",
        columns={"participant_id": "participant_id", "age": "age", "sex": "sex",
                 "site": "site", "group": "dx"},
        scores={"mmse": "MMSE"},
        groups={"HC": ("control", "CN"), "AD": ("Alzheimer",), "PD": ("Parkinson",)},
    )
    return replace(spec, **changes)


@pytest.fixture
def bids(tmp_path, rng) -> Path:
    return make_bids(tmp_path / "bids", rng)


def _problems(result: CohortResult, check: str) -> pd.DataFrame:
    return result.problems[result.problems["check"] == check]


def _only(result: CohortResult, check: str, severity: str) -> pd.Series:
    rows = _problems(result, check)
    assert len(rows) == 1, result.problems.to_string()
    row = rows.iloc[0]
    assert row["severity"] == severity
    return row


def test_good_dataset_gives_the_cohort_table(bids):
    result = load_cohort(make_spec(bids), limits=TINY)
    assert result.problems.empty, result.problems["message"].tolist()
    table = result.table
    assert list(table.columns) == [*BASE_COLUMNS, "mmse", "space", "skull_stripped"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03", "sub-03", "sub-04"]
    assert table["session"].tolist() == ["", "", "ses-1", "ses-2", ""]
    assert table["age"].tolist() == [30.5, 41.0, 72.0, 72.0, 65.0]
    assert table["age"].dtype == float and table["mmse"].dtype == float
    assert table["sex"].iloc[:4].tolist() == ["F", "M", "M", "M"] and pd.isna(table["sex"].iloc[4])
    assert table["site"].tolist() == ["A", "B", "A", "A", "B"]
    assert table["group"].tolist() == ["HC", "HC", "AD", "AD", "PD"]
    assert table["mmse"].iloc[0] == 29 and math.isnan(table["mmse"].iloc[1])  # "n/a"
    assert math.isnan(table["mmse"].iloc[4])  # empty cell
    assert (table["dataset"] == "toy").all() and (table["space"] == "native").all()
    assert table["skull_stripped"].dtype == bool and not table["skull_stripped"].any()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
    assert table["path"].iloc[2].endswith("sub-03/ses-1/anat/sub-03_ses-1_T1w.nii.gz")
    result.raise_for_errors()  # no error: nothing raised


def test_without_group_column_everyone_is_hc(bids):
    columns = {"participant_id": "participant_id", "age": "age"}
    result = load_cohort(make_spec(bids, columns=columns, scores={}), limits=TINY)
    assert result.problems.empty
    assert (result.table["group"] == "HC").all()
    assert (result.table["site"] == "toy").all()  # no site column: the dataset is the site
    assert result.table["sex"].isna().all()
    assert list(result.table.columns) == [*BASE_COLUMNS, "space", "skull_stripped"]


def test_load_through_the_manifest(bids):
    manifest = bids.parent / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "datasets": [{
        "name": "toy", "format": "bids", "root": "bids", "space": "MNI152NLin2009cSym",
        "skull_stripped": True,
        "columns": {"participant_id": "participant_id", "age": "age", "group": "dx"},
        "groups": {"HC": ["control", "CN"], "AD": "Alzheimer", "PD": "Parkinson"},
        "sha256": {"sub-01/anat/sub-01_T1w.nii.gz":
                   sha256_file(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")},
    }]}))
    result = load_cohort(load_manifest(manifest).dataset("toy"), limits=TINY)
    assert result.problems.empty, result.problems["message"].tolist()
    assert len(result.table) == 5
    assert (result.table["space"] == "MNI152NLin2009cSym").all()
    assert result.table["skull_stripped"].all()


@pytest.mark.parametrize(
    ("age", "what"),
    [("n/a", "'n/a' is missing"), ("", "'' is missing"), ("forty", "'forty' is not a number"),
     ("-1", "'-1' is outside 0-120 years"), ("130", "'130' is outside 0-120 years"),
     ("inf", "'inf' is not a number"), ("nan", "'nan' is not a number")],
)
def test_bad_age_is_an_error(tmp_path, rng, age, what):
    rows = dict(ROWS, **{"sub-02": f"sub-02\t{age}\tM\tB\tCN\t28\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    row = _only(result, "age", "error")
    assert row["participant_id"] == "sub-02"
    assert f"sub-02, {root / 'participants.tsv'} line 3: age {what}" in row["message"]
    assert "sub-02" not in set(result.table["participant_id"])
    assert len(result.table) == 4  # the others stay


@pytest.mark.parametrize("age", ["0", "120", "7.25"])
def test_edge_ages_are_valid(tmp_path, rng, age):
    rows = dict(ROWS, **{"sub-02": f"sub-02\t{age}\tM\tB\tCN\t28\n"})
    result = load_cohort(make_spec(make_bids(tmp_path / "b", rng, rows=rows)), limits=TINY)
    assert result.problems.empty
    assert result.table.loc[result.table["participant_id"] == "sub-02", "age"].item() == float(age)


def test_duplicate_participant_ids_are_errors(tmp_path, rng):
    rows = dict(ROWS, dup="sub-01\t31\tF\tA\tcontrol\t29\n")
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    row = _only(result, "duplicate_id", "error")
    assert row["participant_id"] == "sub-01"
    assert re.search(r"sub-01, .*participants\.tsv: the participant id appears on lines 2, 6",
                     row["message"])
    assert "sub-01" not in set(result.table["participant_id"])
    assert _problems(result, "missing_row").empty  # its image is not reported twice


def test_row_without_image_warns(tmp_path, rng):
    rows = dict(ROWS, **{"sub-05": "sub-05\t50\tF\tA\tcontrol\t30\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    row = _only(result, "missing_image", "warning")
    assert row["participant_id"] == "sub-05"
    assert f"sub-05, {root}: participants row without a T1w image" in row["message"]
    assert len(result.table) == 5
    result.raise_for_errors()  # a warning does not raise


def test_image_without_row_is_an_error(tmp_path, rng):
    root = make_bids(tmp_path / "bids", rng)
    extra = _volume(_scan(root, "sub-09"), rng)
    result = load_cohort(make_spec(root), limits=TINY)
    row = _only(result, "missing_row", "error")
    assert row["participant_id"] == "sub-09" and row["path"] == str(extra)
    assert f"sub-09, {extra}: image without a row in participants.tsv" in row["message"]
    assert len(result.table) == 5


def test_row_without_participant_id_is_an_error(tmp_path, rng):
    rows = dict(ROWS, blank="n/a\t50\tF\tA\tcontrol\t30\n")
    result = load_cohort(make_spec(make_bids(tmp_path / "b", rng, rows=rows)), limits=TINY)
    row = _only(result, "participant_id", "error")
    assert re.search(r"participants\.tsv: line 6 has no participant id", row["message"])


def test_unknown_group_label_is_an_error(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tM\tB\tcontro\t28\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    row = _only(result, "group", "error")
    assert re.search(r"sub-02, .*participants\.tsv line 3: group 'contro' is not a known label; "
                     r"the manifest's groups map labels 'control', 'CN', 'Alzheimer', "
                     r"'Parkinson' \(did you mean 'control'\?\)", row["message"])
    assert "sub-02" not in set(result.table["participant_id"])


def test_missing_group_label_is_an_error(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tM\tB\tn/a\t28\n"})
    result = load_cohort(make_spec(make_bids(tmp_path / "b", rng, rows=rows)), limits=TINY)
    assert "group missing" in _only(result, "group", "error")["message"]


def test_unknown_sex_site_and_score_warn(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tX\tn/a\tCN\tabout 20\n"})
    result = load_cohort(make_spec(make_bids(tmp_path / "b", rng, rows=rows)), limits=TINY)
    assert "sex 'X' is not one of F, M" in _only(result, "sex", "warning")["message"]
    assert "site is missing; set to 'unknown'" in _only(result, "site", "warning")["message"]
    assert re.search(r"sub-02, .* line 3: score mmse \(column 'MMSE'\) value 'about 20' is not a "
                     r"number", _only(result, "score", "warning")["message"])
    row = result.table[result.table["participant_id"] == "sub-02"].iloc[0]
    assert pd.isna(row["sex"]) and row["site"] == "unknown" and math.isnan(row["mmse"])


def test_checksums(bids):
    scan = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    good = {"sub-01/anat/sub-01_T1w.nii.gz": sha256_file(scan)}
    assert load_cohort(make_spec(bids, sha256=good), limits=TINY).problems.empty
    bad = {"sub-01/anat/sub-01_T1w.nii.gz": "0" * 64,
           "sub-02/anat/sub-02_T2w.nii.gz": "1" * 64}
    result = load_cohort(make_spec(bids, sha256=bad), limits=TINY)
    rows = _problems(result, "checksum")
    assert rows["severity"].tolist() == ["error", "error"]
    assert rows["message"].iloc[0] == (
        f"dataset 'toy', sub-01, {scan}: sha256 mismatch: the manifest expects {'0' * 64}, "
        f"the file has {sha256_file(scan)}")
    assert "sub-02_T2w.nii.gz: a checksum is listed for a file that does not exist" in (
        rows["message"].iloc[1])
    assert "sub-01" not in set(result.table["participant_id"])


def test_manifest_exclusions_are_listed_not_errors(bids):
    spec = make_spec(bids, exclude={"sub-03": "motion artefact", "sub-08": "withdrew"})
    result = load_cohort(spec, limits=TINY)
    excluded = result.problems[result.problems["severity"] == "excluded"]
    assert excluded["participant_id"].tolist() == ["sub-03", "sub-03"]  # both sessions
    assert all("excluded by the manifest: motion artefact" in m for m in excluded["message"])
    assert "ses-2" in excluded["path"].iloc[1]
    assert "sub-03" not in set(result.table["participant_id"])
    warnings = result.problems[result.problems["severity"] == "warning"]
    assert len(warnings) == 1
    unknown = warnings.iloc[0]
    assert unknown["participant_id"] == "sub-08" and unknown["check"] == "exclude"
    assert "sub-08, " in unknown["message"]
    assert "no participants row and no image" in unknown["message"]
    result.raise_for_errors()


# (file writer, expected message) for load_cohort's image checks
def _corrupt(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())


def _truncated(path: Path, rng: np.random.Generator) -> None:
    _volume(path, rng)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])


IMAGE_CASES = {
    "corrupt": (_corrupt, r"cannot read the image header"),
    "truncated": (_truncated, r"cannot read the image data, the file is corrupt or truncated"),
    "4D": (lambda p, r: _volume(p, r, r.uniform(1, 2, (*SHAPE, 2)).astype(np.float32)),
           r"expected a 3D image, got 4D with shape \(7, 8, 9, 2\) \(a 4D series"),
    "all zero": (lambda p, r: _volume(p, r, np.zeros(SHAPE, np.float32)),
                 r"the image is all zeros"),
    "NaN": (lambda p, r: _volume(p, r, np.where(r.random(SHAPE) < 0.1, np.nan, 1.0 + r.random(
        SHAPE)).astype(np.float32)), r"\d+ of 504 voxels are NaN or infinite"),
    "voxel size": (lambda p, r: _volume(p, r, zooms=(15.0, 15.0, 30.0)),
                   r"voxel size 15 x 15 x 30 mm is outside 0.2-16 mm per axis"),
    "field of view": (lambda p, r: _volume(p, r, zooms=(1.0, 15.0, 15.0)),
                      r"field of view 7 x 120 x 135 mm \(shape \(7, 8, 9\) x voxel size\) is "
                      r"outside 100-400 mm per axis"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image_is_an_error(bids, rng, case):
    write, pattern = IMAGE_CASES[case]
    path = _scan(bids, "sub-02")
    write(path, rng)
    result = load_cohort(make_spec(bids), limits=TINY)
    rows = _problems(result, "image")
    assert len(rows) >= 1 and set(rows["participant_id"]) == {"sub-02"}
    assert (rows["severity"] == "error").all() and (rows["path"] == str(path)).all()
    assert any(re.search(re.escape(f"sub-02, {path}: ") + pattern, m) for m in rows["message"]), (
        rows["message"].tolist())
    assert "sub-02" not in set(result.table["participant_id"])
    assert len(result.table) == 4
    # not checked when image checks are off (the file still exists)
    assert load_cohort(make_spec(bids), check_images=False).problems.empty


def test_raise_for_errors_names_every_subject_file_and_reason(tmp_path, rng):
    rows = dict(ROWS, **{"sub-01": "sub-01\tn/a\tF\tA\tcontrol\t29\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    zero = _volume(_scan(root, "sub-02"), rng, np.zeros(SHAPE, np.float32))
    result = load_cohort(make_spec(root, exclude={"sub-04": "motion"}), limits=TINY)
    with pytest.raises(CohortError) as info:
        result.raise_for_errors()
    text = str(info.value)
    assert text.startswith("2 error(s) in dataset toy:")
    assert f"sub-01, {root / 'participants.tsv'} line 2: age 'n/a' is missing" in text
    assert f"sub-02, {zero}: the image is all zeros" in text
    assert "sub-04" not in text  # excluded on purpose: not an error
    assert isinstance(info.value, ValueError)
    assert list(info.value.problems.columns) == list(PROBLEM_COLUMNS)
    assert len(info.value.problems) == 2


def test_missing_participants_file_and_columns(tmp_path, rng):
    root = make_bids(tmp_path / "bids", rng)
    spec = make_spec(root, participants=root / "people.tsv")
    result = load_cohort(spec, limits=TINY)
    assert result.table.empty
    assert f"{root / 'people.tsv'}: the participants file does not exist" in (
        _only(result, "participants", "error")["message"])
    spec = make_spec(root, columns={"participant_id": "participant_id", "age": "Age"})
    result = load_cohort(spec, limits=TINY)
    assert list(result.table.columns) == [*BASE_COLUMNS, "mmse", "space", "skull_stripped"]
    message = _only(result, "columns", "error")["message"]
    assert re.search(r"participants\.tsv: the manifest maps age to column 'Age', which the table "
                     r"lacks; its columns: participant_id, age, .* \(did you mean 'age'\?\)",
                     message)
    with pytest.raises(CohortError, match="maps age to column 'Age'"):
        result.raise_for_errors()


def test_missing_root_names_simulation(tmp_path):
    spec = make_spec(tmp_path / "gen", simulated=True)
    result = load_cohort(spec)
    message = _only(result, "root", "error")["message"]
    assert f"{tmp_path / 'gen'}: the dataset root does not exist (a simulated dataset" in message


def test_dataset_without_scans_is_an_error(tmp_path, rng):
    root = make_bids(tmp_path / "bids", rng, scans=[])
    result = load_cohort(make_spec(root), limits=TINY)
    assert len(_problems(result, "missing_image")) == 4
    assert "no usable scan" in _only(result, "empty", "error")["message"]


def test_find_scans_skips_hidden_and_other_files(bids, rng):
    (bids / "sub-01" / "anat" / "._sub-01_T1w.nii.gz").write_bytes(b"mac")
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    _volume(bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz", rng)
    scans = find_scans(bids)
    assert list(scans.columns) == ["participant_id", "session", "path"]
    assert len(scans) == 5 and scans["path"].str.endswith("_T1w.nii.gz").all()


def test_load_cohort_rejects_a_non_spec():
    with pytest.raises(TypeError, match="spec: expected a DatasetSpec.*got dict"):
        load_cohort({"root": "x"})


def test_concat_results(tmp_path, rng):
    first = load_cohort(make_spec(make_bids(tmp_path / "a", rng)), limits=TINY)
    root = make_bids(tmp_path / "b", rng, rows={"sub-01": ROWS["sub-01"]}, scans=[("sub-01", "")])
    second = load_cohort(make_spec(root, name="other", scores={}), limits=TINY)
    both = CohortResult.concat([first, second])
    assert len(both.table) == 6 and both.table["dataset"].tolist()[-1] == "other"
    assert list(both.table.columns) == [*BASE_COLUMNS, "mmse", "space", "skull_stripped"]
    assert math.isnan(both.table["mmse"].iloc[-1])
    with pytest.raises(ValueError, match="results: expected at least one"):
        CohortResult.concat([])


# check_image on its own, with the default (real-scan) limits
def test_check_image_accepts_a_realistic_volume(tmp_path, rng):
    data = np.zeros((64, 72, 60), np.float32)  # 2.5 mm: 160 x 180 x 150 mm
    data[16:48, 16:56, 12:48] = rng.uniform(50, 100, (32, 40, 36))
    path = _volume(tmp_path / "head.nii.gz", rng, data, zooms=(2.5, 2.5, 2.5))
    assert check_image(path) == []


@pytest.mark.parametrize(
    ("zooms", "pattern"),
    [((1.0, 1.0, 1.0), r"field of view 7 x 8 x 9 mm .* outside 100-400 mm"),
     ((0.1, 20.0, 20.0), r"voxel size 0.1 x 20 x 20 mm is outside 0.2-8 mm"),
     ((60.0, 60.0, 60.0), r"field of view 420 x 480 x 540 mm .* outside 100-400 mm")],
)
def test_check_image_default_limits(tmp_path, rng, zooms, pattern):
    problems = check_image(_volume(tmp_path / "x.nii.gz", rng, zooms=zooms))
    assert any(re.search(pattern, p) for p in problems), problems


def test_check_image_other_problems(tmp_path, rng):
    assert check_image(_volume(tmp_path / "ok.nii", rng), TINY) == []
    const = _volume(tmp_path / "c.nii.gz", rng, np.full(SHAPE, 3.0, np.float32))
    assert check_image(const, TINY) == ["the image is constant (every finite voxel is 3)"]
    inf = np.ones(SHAPE, np.float32)
    inf[0, 0, 0] = np.inf
    inf[1, 0, 0] = 2
    assert check_image(_volume(tmp_path / "i.nii.gz", rng, inf), TINY) == [
        "1 of 504 voxels are NaN or infinite"]
    short = tmp_path / "short.nii"
    short.write_bytes((tmp_path / "ok.nii").read_bytes()[:500])
    assert re.match(r"the file holds 500 bytes, but its header declares 7 x 8 x 9 voxels of "
                    r"float32 from byte 352, 2,368 bytes: the file is truncated",
                    check_image(short, TINY)[0])
    assert check_image(tmp_path / "absent.nii.gz") == [
        "cannot read the image: the path does not exist"]


def test_ixi10_loads_as_a_native_dataset(tmp_path):
    if not (IXI10 / "participants.tsv").exists():
        pytest.skip(f"real IXI scans not available: {IXI10} is absent")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "datasets": [{
        "name": "ixi10", "format": "bids", "root": str(IXI10), "space": "native",
        "skull_stripped": False,
        "columns": {"participant_id": "participant_id", "age": "age", "sex": "sex",
                    "site": "site"},
    }]}))
    result = load_cohort(load_manifest(manifest).dataset("ixi10"))
    assert result.problems.empty, result.problems["message"].tolist()
    assert len(result.table) == 10
    assert (result.table["group"] == "HC").all() and (result.table["site"] == "HH").all()
    assert result.table["age"].between(23, 51).all()
    assert set(result.table["sex"]) == {"F", "M"}


def test_participants_table_with_bom_loads(bids):
    table = bids / "participants.tsv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    result = load_cohort(make_spec(bids), limits=TINY)
    assert result.problems.empty and len(result.table) == 5


def test_malformed_participants_table_is_an_error(bids):
    table = bids / "participants.tsv"
    table.write_text(table.read_text() + "sub-09\t1\t2\t3\t4\t5\t6\t7\n")
    result = load_cohort(make_spec(bids), limits=TINY)
    message = _only(result, "fields", "error")["message"]
    assert f"{table}: line 6 has 8 fields but the header has 6 (extra values '6', '7')" in message
    assert len(result.table) == 5  # the other rows are read
