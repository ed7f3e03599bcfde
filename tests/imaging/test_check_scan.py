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
from brainage.data.cohort import check_image
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
        "4D": (four, "must be a 3D image; got shape (7, 8, 9, 2)"),
        "folder": (folder, "is a directory"),
        "symlink loop": (loop, "symlink"),
        "garbage": (garbage, "cannot be read as an image"),
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
