"""One scan entry point (issue 27, item 2): ``check_scan`` refuses a bad file with one message,
and the audit, ``brainage preprocess``, ``load_scan`` and ``brainage predict`` (through
``scan_space``) refuse the same files with the same message; good files pass all of them."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.cli import main
from brainage.data.cohort import ImageLimits, check_image
from brainage.imaging.preprocess import PreprocessError, check_scan, load_scan
from brainage.inference.predict import scan_space
from tests.inference.test_bad_inputs_predict import _raw_nifti  # NIfTI past nibabel

SHAPE = (7, 8, 9)


@pytest.fixture
def volume(rng) -> np.ndarray:
    return rng.uniform(10.0, 100.0, SHAPE).astype(np.float32)


def _bad_files(tmp_path: Path, volume: np.ndarray) -> dict[str, tuple[Path, str]]:
    """Bad scans and the problem text each must be refused with."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "folder.nii.gz"
    folder.mkdir()
    loop = tmp_path / "loop.nii.gz"
    os.symlink(loop, loop)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([volume, volume], axis=-1), np.eye(4)), four)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file at all" * 20)
    return {
        "zero affine": (_raw_nifti(tmp_path / "zero.nii.gz", volume, srow=np.zeros((3, 4))),
                        "degenerate affine (voxel-to-world"),
        "singular": (_raw_nifti(tmp_path / "singular.nii.gz", volume,
                                srow=np.array([[2.0, 0, 2, 0], [0, 2, 0, 0], [0, 0, 0, 0]])),
                     "direction matrix is singular"),
        "zero pixdim": (_raw_nifti(tmp_path / "pixdim.nii.gz", volume, pixdim=(0.0, 2.0, 2.0)),
                        "voxel size [0.0, 2.0, 2.0] mm (pixdim)"),
        "4D": (four, "expected a 3D image, got 4D with shape (7, 8, 9, 2)"),
        "folder": (folder, "is a directory"),
        "symlink loop": (loop, "symlink"),
        "garbage": (garbage, "cannot read the image header"),
    }


def _good_file(tmp_path: Path, volume: np.ndarray) -> Path:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-7.0, -8.0, -9.0]
    path = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def test_check_scan_passes_a_good_scan_and_reads_no_voxel(tmp_path, volume):
    path = _good_file(tmp_path, volume)
    img = check_scan(path)
    assert img.shape == SHAPE
    assert not img.in_memory  # header only
    np.testing.assert_allclose(load_scan(path).get_fdata().mean(), volume.mean(), rtol=1e-6)
    # the audit finds nothing either (plausibility limits off: the volume is tiny)
    assert not [p for p in check_image(path) if "affine" in p]


@pytest.mark.parametrize("case", ["zero affine", "singular", "zero pixdim", "4D", "folder",
                                  "symlink loop", "garbage"])
def test_check_scan_refuses_a_bad_scan_naming_file_and_problem(tmp_path, volume, case):
    path, problem = _bad_files(tmp_path, volume)[case]
    with pytest.raises((PreprocessError, FileNotFoundError)) as info:
        check_scan(path)
    message = str(info.value)
    assert str(path) in message and problem in message


@pytest.mark.parametrize("case", ["zero affine", "singular", "zero pixdim", "4D", "garbage"])
def test_every_command_refuses_the_same_file_with_the_same_message(tmp_path, volume, capsys,
                                                                   case):
    path, problem = _bad_files(tmp_path / "in", volume)[case]
    with pytest.raises((PreprocessError, FileNotFoundError)) as info:
        check_scan(path)
    expected = str(info.value)
    # load_scan (every preprocessing) and brainage predict's header read
    with pytest.raises(type(info.value)) as loaded:
        load_scan(path)
    assert str(loaded.value) == expected
    with pytest.raises(type(info.value)) as predicted:
        scan_space(path)
    assert str(predicted.value) == expected
    # brainage preprocess of the one file: refused (exit 2) with the same message
    capsys.readouterr()
    code = main(["preprocess", str(path), str(tmp_path / "out.nii.gz"),
                 "--space", "MNI152NLin2009cSym"])
    err = capsys.readouterr().err
    assert code == 2 and f"brainage preprocess: error: {expected}" in err, err
    # the audit: the same problem text (its table adds the path itself)
    if case in ("zero affine", "singular", "zero pixdim"):
        assert any(problem in p for p in check_image(path)), check_image(path)


def test_audit_flags_a_degenerate_affine_it_used_to_pass(tmp_path, volume):
    """The degenerate-affine check lived in predict alone: the audit passed these scans."""
    bad = _bad_files(tmp_path, volume)
    for case in ("zero affine", "singular", "zero pixdim"):
        path, problem = bad[case]
        assert any(problem in p for p in check_image(path)), (case, check_image(path))
    good = _good_file(tmp_path, volume)
    assert not any("degenerate" in p for p in check_image(good))


# --- one reader: the audit's rows and every command's error say the same (issue 27) --------

#: Limits that a (7, 8, 9) volume of 1-2 mm voxels meets, so that the audit's plausibility
#: checks (field of view of a head) add nothing to the problems compared here.
LOOSE = ImageLimits(voxel_mm=(0.1, 20.0), fov_mm=(1.0, 400.0))


def _shared_bad_files(tmp_path: Path, volume: np.ndarray) -> dict[str, tuple[Path, str]]:
    """The files of issue 27's list and a phrase of the problem each must be refused for."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    folder = tmp_path / "folder_T1w.nii.gz"
    folder.mkdir()
    empty = tmp_path / "empty_T1w.nii.gz"
    empty.write_bytes(b"")
    whole = tmp_path / "whole.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), whole)
    truncated = tmp_path / "truncated_T1w.nii.gz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    four = tmp_path / "four_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([volume, volume], axis=-1), affine), four)
    infinite = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, np.nan], [0, 0, 2.0, np.inf]])
    mgz = tmp_path / "scan_T1w.mgz"
    nib.save(nib.MGHImage(volume, affine), mgz)
    complex_ = tmp_path / "complex_T1w.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.complex64), affine), complex_)
    return {
        "directory": (folder, "cannot read the image: the path is a directory, not a file"),
        "empty file": (empty, "cannot read the image header (ImageFileError"),
        "truncated gzip": (truncated, "cannot read the image data, the file is corrupt or "
                                      "truncated"),
        "4D, 2 volumes": (four, "expected a 3D image, got 4D with shape (7, 8, 9, 2) (a 4D "
                                "series: keep one volume)"),
        "degenerate affine": (_raw_nifti(tmp_path / "zero_T1w.nii.gz", volume,
                                         srow=np.zeros((3, 4))), "degenerate affine"),
        "non-finite affine": (_raw_nifti(tmp_path / "nan_T1w.nii.gz", volume, srow=infinite),
                              "the affine contains NaN or infinite values"),
        ".mgz": (mgz, "the file is a FreeSurfer MGH file (.mgz), which brainage does not read"),
        "non-numeric dtype": (complex_, "the data type complex64 is not real numbers"),
    }


@pytest.mark.parametrize("case", ["directory", "empty file", "truncated gzip", "4D, 2 volumes",
                                  "degenerate affine", "non-finite affine", ".mgz",
                                  "non-numeric dtype"])
def test_audit_and_check_scan_refuse_the_same_file_with_the_same_text(tmp_path, volume, case):
    path, phrase = _shared_bad_files(tmp_path, volume)[case]
    audit = check_image(path, LOOSE)  # the audit's rows, without their path prefix
    assert audit and phrase in audit[0], audit
    expected = f"scan {path}: {'; '.join(audit)}"
    with pytest.raises(PreprocessError) as checked:
        check_scan(path, read_data=True)
    assert str(checked.value) == expected
    with pytest.raises(PreprocessError) as loaded:  # every preprocessing, predict, BIDS App
        load_scan(path)
    assert str(loaded.value) == expected
    if case != "truncated gzip":  # the header alone says it: refused before any voxel is read
        with pytest.raises(PreprocessError) as header:
            check_scan(path)
        assert str(header.value) == expected


def test_the_shared_reader_passes_good_scans_it_used_to_split_on(tmp_path, volume):
    """A 4D file with one volume: the audit refused it while preprocessing read it; now both
    read it, and the audit finds nothing on a good scan either."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    one = tmp_path / "one_T1w.nii.gz"
    nib.save(nib.Nifti1Image(volume[..., None], affine), one)
    good = _good_file(tmp_path, volume)
    for path in (one, good):
        assert check_image(path, LOOSE) == []
        assert check_scan(path, read_data=True).shape[:3] == SHAPE
        np.testing.assert_allclose(load_scan(path).get_fdata(), volume, rtol=1e-6)
