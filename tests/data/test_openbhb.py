from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from brainage._utils import sha256_file
from brainage.data.cohort import (
    BASE_COLUMNS,
    PROBLEM_COLUMNS,
    ImageLimits,
    check_image,
    load_cohort,
)
from brainage.data.manifest import DatasetSpec, load_manifest
from brainage.data.openbhb import (
    AFFINE,
    SHAPE,
    find_openbhb_scans,
    load_openbhb_array,
    load_openbhb_cohort,
    openbhb_grid,
    openbhb_path,
)

#: A small stand-in for FSL's 182 x 218 x 182 grid: unequal sides, LAS like the real affine,
#: 12 mm voxels so that the field of view (144 x 168 x 144 mm) covers a brain.
GRID = (12, 14, 12)
GRID_AFFINE = np.array([[-12.0, 0, 0, 66], [0, 12.0, 0, -84], [0, 0, 12.0, -66], [0, 0, 0, 1]])
TINY = ImageLimits(voxel_mm=(0.2, 16.0))
HEADER = "participant_id\tstudy\tsplit\tage\tsex\tsite\tsiteXacq\n"
GOOD = {
    "1": "1\tS1\ttrain\t25.5\tmale\t3\t17\n",
    "2": "2\tS1\ttrain\t40\tfemale\t3\t17\n",
    "3": "3\tS2\tinternal_test\t61.2\tmale\t5\t21\n",
    "4": "4\tS3\texternal_test\t70\tfemale\t60\t70\n",
}
FOLDER = {"train": "train", "internal_test": "val", "external_test": "val"}


def _array(path: Path, rng: np.random.Generator, shape: tuple[int, ...] = (1, *GRID),
           data: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, rng.uniform(1, 100, shape).astype(np.float32) if data is None else data)
    return path


def make_tree(root: Path, rng: np.random.Generator, rows: dict[str, str] | None = None,
              template: bool = True) -> Path:
    """A small OpenBHB folder: participants.tsv, one array per row in its split's folder."""
    rows = GOOD if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text(HEADER + "".join(rows.values()))
    for line in rows.values():
        pid, _, split = line.split("\t")[:3]
        if split in FOLDER:
            _array(openbhb_path(root, pid, split), rng)
    if template:
        (root / "resource").mkdir()
        nib.save(nib.Nifti1Image(np.ones(GRID, np.float32), GRID_AFFINE),
                 root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz")
    return root


def make_spec(root: Path, **changes) -> DatasetSpec:
    spec = DatasetSpec(
        name="obhb", format="openbhb", root=root, space="MNI152Lin", skull_stripped=True,
        participants=root / "participants.tsv",
        columns={"participant_id": "participant_id", "age": "age", "sex": "sex",
                 "site": "siteXacq"})
    return replace(spec, **changes)


@pytest.fixture
def tree(tmp_path, rng) -> Path:
    return make_tree(tmp_path / "openbhb", rng)


# --- layout and arrays -----------------------------------------------------------------------


def test_good_tree_gives_the_cohort_table(tree):
    result = load_openbhb_cohort(make_spec(tree), limits=TINY)
    assert result.problems.empty, result.problems["message"].tolist()
    table = result.table
    assert list(table.columns) == [*BASE_COLUMNS, "space", "skull_stripped", "official_split"]
    assert table["participant_id"].tolist() == ["sub-1", "sub-2", "sub-3", "sub-4"]
    assert table["session"].tolist() == ["ses-1"] * 4
    assert table["age"].tolist() == [25.5, 40.0, 61.2, 70.0] and table["age"].dtype == float
    assert table["sex"].tolist() == ["M", "F", "M", "F"]
    assert table["site"].tolist() == ["17", "17", "21", "70"]  # siteXacq, as text
    assert table["official_split"].tolist() == ["train", "train", "internal_test",
                                                "external_test"]
    assert (table["group"] == "HC").all() and (table["dataset"] == "obhb").all()
    assert (table["space"] == "MNI152Lin").all() and table["skull_stripped"].all()
    assert table["path"].iloc[0] == str(tree / "train/derivatives/sub-1/ses-1/"
                                               "sub-1_preproc-quasiraw_T1w.npy")
    assert table["path"].iloc[3].endswith("val/derivatives/sub-4/ses-1/"
                                          "sub-4_preproc-quasiraw_T1w.npy")
    result.raise_for_errors()


def test_site_column_is_configurable(tree):
    spec = make_spec(tree, columns={"participant_id": "participant_id", "age": "age",
                                    "site": "site"})
    table = load_openbhb_cohort(spec, limits=TINY).table
    assert table["site"].tolist() == ["3", "3", "5", "60"]
    assert table["sex"].isna().all()


def test_every_bad_input_is_reported_in_one_table(tmp_path, rng):
    rows = dict(GOOD, **{
        "5": "5\tS1\ttrain\t30\tmale\t3\t17\n",            # array missing
        "6": "6\tS1\ttrain\t31\tmale\t3\t17\n",            # bad shape
        "7": "7\tS1\ttrain\t32\tmale\t3\t17\n",            # NaN voxels
        "8": "8\tS1\ttrain\tn/a\tmale\t3\t17\n",           # missing age
        "9": "9\tS1\ttrain\told\tmale\t3\t17\n",           # non-numeric age
        "10": "10\tS1\ttrain\t33\tmale\t3\t17\n",
        "10b": "10\tS1\ttrain\t34\tmale\t3\t17\n",         # duplicate id
        "11": "11\tS1\tdev\t35\tmale\t3\t17\n",            # unknown split
        "12": "12\tS1\ttrain\t36\tmale\t3\t17\n",          # array under val/
        "13": "13\tS1\ttrain\t37\tmale\t3\t17\n",          # not a .npy file
    })
    root = make_tree(tmp_path / "openbhb", rng, rows=rows)
    openbhb_path(root, "5", "train").unlink()
    _array(openbhb_path(root, "6", "train"), rng, shape=(1, 12, 14, 11))
    nan = rng.uniform(1, 100, (1, *GRID)).astype(np.float32)
    nan[0, 3, 4, 5] = np.nan
    _array(openbhb_path(root, "7", "train"), rng, data=nan)
    moved = openbhb_path(root, "12", "internal_test")
    moved.parent.mkdir(parents=True)
    openbhb_path(root, "12", "train").rename(moved)
    openbhb_path(root, "13", "train").write_bytes(b"not an array")
    extra = _array(openbhb_path(root, "99", "train"), rng)  # array without a row
    result = load_openbhb_cohort(make_spec(root), limits=TINY)

    problems = result.problems
    assert list(problems.columns) == list(PROBLEM_COLUMNS)
    assert (problems["severity"] == "error").all()
    by_id = problems.set_index("participant_id")
    expected = {
        "sub-5": ("missing_image", openbhb_path(root, "5", "train"), r"without its array"),
        "sub-6": ("image", openbhb_path(root, "6", "train"),
                  r"array shape \(1, 12, 14, 11\) is not the grid's \(1, 12, 14, 12\)"),
        "sub-7": ("image", openbhb_path(root, "7", "train"), r"1 of 2016 voxels are NaN"),
        "sub-8": ("age", f"{root / 'participants.tsv'} line 9", r"age 'n/a' is missing"),
        "sub-9": ("age", f"{root / 'participants.tsv'} line 10", r"age 'old' is not a number"),
        "sub-10": ("duplicate_id", root / "participants.tsv", r"appears on lines 11, 12"),
        "sub-11": ("split", f"{root / 'participants.tsv'} line 13",
                   r"split 'dev' is not one of train, internal_test, external_test"),
        "sub-12": ("split_folder", moved, (r"lies under val/, but participants.tsv gives split "
                                           r"'train', whose arrays lie under train/")),
        "sub-13": ("image", openbhb_path(root, "13", "train"), r"cannot read the array"),
        "sub-99": ("missing_row", extra, r"image without a row in participants.tsv"),
    }
    assert sorted(by_id.index) == sorted(expected), problems.to_string()
    for pid, (check, path, pattern) in expected.items():
        row = by_id.loc[pid]
        assert row["check"] == check and row["path"] == str(path), (pid, row.to_dict())
        assert row["message"].startswith(f"dataset 'obhb', {pid}, {path}: ")
        assert re.search(pattern, row["message"]), (pid, row["message"])
    assert result.table["participant_id"].tolist() == ["sub-1", "sub-2", "sub-3", "sub-4"]


def test_missing_split_column_and_missing_folder(tmp_path, rng):
    root = make_tree(tmp_path / "a", rng)
    text = (root / "participants.tsv").read_text().replace("\tsplit\t", "\tfold\t")
    (root / "participants.tsv").write_text(text)
    result = load_openbhb_cohort(make_spec(root), limits=TINY)
    assert result.table.empty and "official_split" in result.table.columns
    [message] = result.problems["message"]
    assert "participants.tsv: OpenBHB's participants table needs a column 'split'" in message

    root = make_tree(tmp_path / "b", rng)
    for pid in ("3", "4"):
        openbhb_path(root, pid, "internal_test").unlink()
        openbhb_path(root, pid, "internal_test").parent.rmdir()
        openbhb_path(root, pid, "internal_test").parent.parent.rmdir()
    (root / "val" / "derivatives").rmdir()
    result = load_openbhb_cohort(make_spec(root), limits=TINY)
    [message] = result.problems["message"]  # one error for the folder, not one per row
    assert (f"{root / 'val'}: the folder val/derivatives does not exist: the 2 row(s) of "
            f"split(s) internal_test, external_test have no array") in message
    assert len(result.table) == 2


def test_explicit_grid_and_unreadable_template(tmp_path, rng):
    root = make_tree(tmp_path / "openbhb", rng, template=False)
    result = load_openbhb_cohort(make_spec(root), limits=TINY, grid=(GRID, GRID_AFFINE))
    assert result.problems.empty and len(result.table) == 4
    default = load_openbhb_cohort(make_spec(root), limits=TINY)  # FSL's grid: wrong shapes
    assert (default.problems["check"] == "image").sum() == 4
    assert "is not the grid's (1, 182, 218, 182)" in default.problems["message"].iloc[0]
    (root / "resource").mkdir()
    (root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz").write_bytes(b"junk")
    result = load_openbhb_cohort(make_spec(root), limits=TINY)
    [message] = result.problems["message"]
    assert re.search(r"quasiraw_space-MNI152_desc-brain_T1w.nii.gz: OpenBHB template .* cannot "
                     r"be read", message)
    with pytest.raises(ValueError, match=r"grid: expected \(shape of 3 ints, 4 x 4 affine\)"):
        load_openbhb_cohort(make_spec(root), grid=((12, 14), GRID_AFFINE))


def test_exclusions_and_checksums(tree):
    rel = "train/derivatives/sub-2/ses-1/sub-2_preproc-quasiraw_T1w.npy"
    spec = make_spec(tree, exclude={"sub-3": "motion"},
                     sha256={rel: sha256_file(tree / rel),
                             "train/derivatives/sub-1/ses-1/sub-1_preproc-quasiraw_T1w.npy":
                             "0" * 64})
    result = load_openbhb_cohort(spec, limits=TINY)
    assert result.problems[["participant_id", "check", "severity"]].values.tolist() == [
        ["sub-3", "exclude", "excluded"], ["sub-1", "checksum", "error"]]
    assert result.table["participant_id"].tolist() == ["sub-2", "sub-4"]


def test_without_image_checks_shapes_are_still_checked(tmp_path, rng):
    root = make_tree(tmp_path / "openbhb", rng)
    _array(openbhb_path(root, "2", "train"), rng, shape=(2, *GRID))
    result = load_openbhb_cohort(make_spec(root), check_images=False)
    assert result.problems["participant_id"].tolist() == ["sub-2"]
    assert "array shape (2, 12, 14, 12)" in result.problems["message"].iloc[0]


def test_default_grid_is_the_template_or_fsl(tree, tmp_path):
    shape, affine = openbhb_grid(tree)
    assert shape == GRID and np.allclose(affine, GRID_AFFINE)
    shape, affine = openbhb_grid(tmp_path / "elsewhere")
    assert shape == SHAPE == (182, 218, 182)
    assert np.allclose(affine, [[-1, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    # the real grid spans FSL's MNI152 box: x 90 .. -91, y -126 .. 91, z -72 .. 109 mm
    corner = AFFINE @ np.array([181, 217, 181, 1])
    assert corner[:3].tolist() == [-91.0, 91.0, 109.0]


def test_load_cohort_reads_openbhb_through_the_manifest(tree):
    manifest = tree.parent / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "datasets": [{
        "name": "openbhb", "format": "openbhb", "root": "openbhb", "space": "MNI152Lin",
        "skull_stripped": True,
        "columns": {"participant_id": "participant_id", "age": "age", "site": "siteXacq"}}]}))
    spec = load_manifest(manifest).dataset("openbhb")
    assert spec.participants == tree / "participants.tsv"  # the default
    result = load_cohort(spec, limits=TINY)
    assert result.problems.empty, result.problems["message"].tolist()
    assert result.table["official_split"].tolist() == ["train", "train", "internal_test",
                                                       "external_test"]


def test_find_scans(tree):
    scans = find_openbhb_scans(tree)
    assert scans[["participant_id", "session", "folder"]].values.tolist() == [
        ["sub-1", "ses-1", "train"], ["sub-2", "ses-1", "train"],
        ["sub-3", "ses-1", "val"], ["sub-4", "ses-1", "val"]]
    assert find_openbhb_scans(tree / "absent").empty


def test_load_array_squeezes_and_uses_the_template_affine(tree):
    path = openbhb_path(tree, "1", "train")
    img = load_openbhb_array(path)
    assert img.shape == GRID and img.get_fdata().dtype == np.float64
    assert np.allclose(img.affine, GRID_AFFINE)
    assert np.array_equal(np.asarray(img.dataobj), np.load(path)[0])
    assert check_image(path, TINY) == []  # cohort's image check reads .npy too


def test_load_array_bad_inputs(tmp_path, rng):
    small = _array(tmp_path / "x.npy", rng)
    with pytest.raises(ValueError, match=rf"OpenBHB array {small} has shape \(12, 14, 12\), but "
                                         r"the default OpenBHB grid .* has shape "
                                         r"\(182, 218, 182\): pass its affine"):
        load_openbhb_array(small)
    assert load_openbhb_array(small, GRID_AFFINE).shape == GRID  # an explicit affine
    with pytest.raises(ValueError, match=r"affine: expected a finite 4 x 4 matrix"):
        load_openbhb_array(small, np.eye(3))
    five = _array(tmp_path / "y.npy", rng, shape=(2, *GRID))
    with pytest.raises(ValueError, match=rf"{five} must have shape \(1, X, Y, Z\) or"):
        load_openbhb_array(five, GRID_AFFINE)
    text = _array(tmp_path / "t.npy", rng, data=np.full(GRID, "a"))
    with pytest.raises(TypeError, match=rf"{text} must hold numbers; got dtype <U1"):
        load_openbhb_array(text, GRID_AFFINE)
    with pytest.raises(FileNotFoundError, match=r"absent.npy does not exist"):
        load_openbhb_array(tmp_path / "absent.npy")
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match=r"bad.npy cannot be read as a .npy array"):
        load_openbhb_array(tmp_path / "bad.npy", GRID_AFFINE)
    assert check_image(tmp_path / "bad.npy")[0].startswith("cannot read the array")


def test_npy_through_load_scan_and_preprocess_file(tree):
    from brainage.imaging.preprocess import PreprocessError, load_scan, preprocess_file
    from brainage.imaging.registration import template_grid

    path = openbhb_path(tree, "3", "internal_test")
    scan = load_scan(path)  # reoriented to RAS: the LAS x axis is flipped
    assert scan.shape == GRID
    assert np.allclose(scan.affine, [[12, 0, 0, -66], [0, 12, 0, -84], [0, 0, 12, -66],
                                     [0, 0, 0, 1]])
    assert np.array_equal(np.asarray(scan.dataobj), np.load(path)[0, ::-1])
    out = preprocess_file(path, space="MNI152Lin", grid_mm=8.0, skull_stripped=True)
    shape, affine = template_grid(8.0)
    assert out.shape == shape and np.allclose(out.affine, affine)
    data = np.asarray(out.dataobj)
    assert np.isfinite(data).all() and data.min() >= 0
    assert np.isclose(data[data > 0].mean(), 1.0, atol=0.05)
    nan = np.load(path)
    nan[0, 0, 0, 0] = np.nan
    np.save(path, nan)
    with pytest.raises(PreprocessError, match=rf"scan {path}: 1 of 2016 voxels are NaN or infinite"):
        load_scan(path)
    np.save(path, nan[:, :, :, :5])
    with pytest.raises(PreprocessError, match=rf"scan {path}: cannot read the array \(OpenBHB "
                                              r"array .*has shape \(12, 14, 5\)"):
        load_scan(path)
