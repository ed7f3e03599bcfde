"""Tests of brainage.imaging.preprocess (and brainage.imaging.registration): loading, grids, resampling,
normalisation, alignment score, cache, cohort runs, command line, and real IXI scans."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pytest

from brainage.cli import main
from brainage.imaging import perturb
from brainage.imaging import preprocess as pp
from brainage.imaging import registration as reg
from brainage.imaging.brain_extraction import TIV_RANGE_CM3
from brainage.imaging.registration import template_images
from tests.conftest import IXI10

MNI = "MNI152NLin2009cSym"


def _save(tmp_path: Path, name: str, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine),
             path)
    return path


@pytest.fixture
def template_scan(tmp_path: Path) -> Path:
    """nilearn's 2 mm MNI152 template with other intensities (x 300 + 20), as an MNI-space scan."""
    template, _ = template_images()
    data = (template.get_fdata() * 300 + 20).astype(np.float32)
    return _save(tmp_path, "mni.nii.gz", data, template.affine)


# --- loading -------------------------------------------------------------------------------

def test_load_scan_reorients_to_ras(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(7, 8, 9)).astype(np.float32)
    path = _save(tmp_path, "las.nii.gz", data, np.diag([-2.0, 2.0, 3.0, 1.0]))  # x runs R -> L
    img = pp.load_scan(path)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.shape == (7, 8, 9)
    np.testing.assert_allclose(img.get_fdata()[0], data[-1], rtol=1e-6)
    np.testing.assert_allclose(np.diag(img.affine)[:3], [2.0, 2.0, 3.0])


def test_load_scan_accepts_single_volume_4d(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _save(tmp_path, "one_volume.nii.gz", rng.normal(size=(7, 8, 9, 1)).astype(np.float32))
    assert pp.load_scan(path).shape == (7, 8, 9)


def _corrupt(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"not a nifti file at all")
    return path


def _four_d(tmp_path: Path, rng: np.random.Generator) -> Path:
    return _save(tmp_path, "fmri.nii.gz", rng.normal(size=(7, 8, 9, 3)).astype(np.float32))


def _nan(tmp_path: Path, rng: np.random.Generator) -> Path:
    data = rng.normal(size=(7, 8, 9)).astype(np.float32)
    data[1, 2, 3] = np.nan
    data[4, 5, 6] = np.inf
    return _save(tmp_path, "nan.nii.gz", data)


def _constant(tmp_path: Path, rng: np.random.Generator) -> Path:
    return _save(tmp_path, "empty.nii.gz", np.zeros((7, 8, 9), np.float32))


@pytest.mark.parametrize(("make", "problem"), [
    (_corrupt, "cannot read the image header"),
    (_four_d, r"expected a 3D image, got 4D with shape \(7, 8, 9, 3\)"),
    (_nan, "2 of 504 voxels are NaN or infinite"),
    (_constant, "the image is all zeros"),
])
@pytest.mark.parametrize("space", ["native", MNI])
def test_bad_scans_name_file_and_problem(tmp_path: Path, rng: np.random.Generator, make,
                                         problem: str, space: str) -> None:
    path = make(tmp_path, rng)
    with pytest.raises(pp.PreprocessError, match=problem) as info:
        pp.preprocess_file(path, space=space)
    assert str(path) in str(info.value)


def test_missing_scan(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError,
                       match="missing.nii.gz: cannot read the image: the path does not exist"):
        pp.preprocess_file(tmp_path / "missing.nii.gz")


# --- parameters and grids -----------------------------------------------------------------

@pytest.mark.parametrize(("grid_mm", "crop", "shape"), [
    (2.0, False, (99, 117, 95)),   # nilearn's own 2 mm grid
    (4.0, False, (50, 59, 48)),    # 196/4+1, 232/4+1, floor(188/4)+1
    (4.0, True, (41, 49, 43)),     # brain box +- 8 mm: 160/4+1, floor(194/4)+1, floor(170/4)+1
])
def test_template_grid(grid_mm: float, crop: bool, shape: tuple[int, int, int]) -> None:
    got_shape, affine = reg.template_grid(grid_mm, crop_to_brain=crop)
    assert got_shape == shape
    np.testing.assert_allclose(np.diag(affine)[:3], grid_mm)
    if not crop:  # the field of view stays centred on nilearn's: (0, -18, 22) mm
        centre = nib.affines.apply_affine(affine, (np.array(shape) - 1) / 2)
        np.testing.assert_allclose(centre, [0.0, -18.0, 22.0])
    if grid_mm == 2 and not crop:
        np.testing.assert_allclose(affine, template_images()[0].affine)


@pytest.mark.parametrize("grid_mm", [0.0, -2.0, 20.0])
def test_template_grid_rejects_bad_spacing(grid_mm: float) -> None:
    with pytest.raises(ValueError, match=rf"grid_mm must be in \(0, 16\] mm; got {grid_mm}"):
        reg.template_grid(grid_mm)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"space": "mni"}, ValueError, "space must be one of .*got 'mni'"),
    ({"grid_mm": "2"}, ValueError, "grid_mm must be a number .*got '2'"),
    ({"skull_stripped": "yes"}, TypeError, "skull_stripped must be a bool; got 'yes'"),
    ({"grid": 2}, ValueError, r"unknown preprocessing parameter\(s\) \['grid'\]"),
    ({"brain_extraction": "deepbeet"}, ValueError,
     "brain_extraction must be one of 'deepbet', 'template', got 'deepbeet' "
     r"\(did you mean 'deepbet'\?\)"),
])
def test_params_reject_bad_values(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        pp.PreprocessParams.coerce(kwargs)


def test_params_coerce() -> None:
    assert pp.PreprocessParams.coerce(None) == pp.PreprocessParams()
    assert pp.PreprocessParams.coerce({"grid_mm": 4}).grid_mm == 4.0
    assert pp.PreprocessParams().brain_extraction == "deepbet"


@pytest.mark.parametrize(("kwargs", "removal"), [
    ({}, "deepbet"),                                                # native: the subject's mask
    ({"brain_extraction": "template"}, "template"),                 # native: version 2's path
    ({"skull_stripped": True}, "foreground"),                       # delivered skull-stripped
    ({"space": MNI}, "template"),                                   # template space: unchanged
    ({"space": MNI, "skull_stripped": True}, "foreground"),         # the simulated cohort
    ({"space": "MNI152Lin", "brain_extraction": "template", "skull_stripped": True},
     "foreground"),                                                 # OpenBHB
])
def test_params_skull_removal(kwargs: dict, removal: str) -> None:
    assert pp.PreprocessParams(**kwargs).skull_removal == removal


# --- resampling, normalisation, alignment score -------------------------------------------

@pytest.mark.parametrize("shift_mm", [0.0, 12.0, -6.0])
def test_resample_through_matrix(shift_mm: float) -> None:
    """A matrix mapping template x to scan x + shift samples scan voxel i + shift/2 mm."""
    template, _ = template_images()
    grid = reg.template_grid(2.0)
    matrix = np.eye(4)
    matrix[0, 3] = shift_mm
    out = pp.resample_to_grid(template, grid, matrix)
    data = template.get_fdata()
    k = int(shift_mm / 2)
    expected = data[max(k, 0):data.shape[0] + min(k, 0)]
    got = out[max(-k, 0):out.shape[0] - max(k, 0)]
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0, 3.0], [1.01 / 2.0, 2.99 / 2.0]),  # clipped to 1.01/2.99 first, then / mean (2)
    ([5.0, 5.0, 5.0, 5.0], [1.0] * 4),       # constant brain: all at its mean
    ([2.0, 4.0, 6.0], [2.02 / 4.0, 1.0, 5.98 / 4.0]),
])
def test_normalise_intensity(values: list[float], expected: list[float]) -> None:
    data = np.full((7, 8, 9), 50.0)
    mask = np.zeros((7, 8, 9), bool)
    index = (np.arange(len(values)), np.arange(len(values)), np.arange(len(values)))
    data[index], mask[index] = values, True
    out = pp.normalise_intensity(data, mask)
    np.testing.assert_allclose(out[index], expected, atol=1e-6)
    assert (out[~mask] == 0).all()


def test_normalise_intensity_rejects_bad_mask() -> None:
    with pytest.raises(ValueError, match=r"shapes differ: \(7, 8, 9\) and \(7, 8, 8\)"):
        pp.normalise_intensity(np.zeros((7, 8, 9)), np.ones((7, 8, 8), bool))
    with pytest.raises(pp.PreprocessError, match=r"holds 1 voxel\(s\); need at least 2"):
        pp.normalise_intensity(np.zeros((7, 8, 9)), np.eye(1, 7 * 8 * 9, dtype=bool)
                               .reshape(7, 8, 9))
    with pytest.raises(pp.PreprocessError, match=r"mean intensity inside the brain mask is -1"):
        pp.normalise_intensity(np.full((7, 8, 9), -1.0), np.ones((7, 8, 9), bool))


@pytest.mark.parametrize(("shift_vox", "aligned"), [(0, True), (6, False), (-6, False)])
def test_alignment_score_flags_shifted_image(shift_vox: int, aligned: bool) -> None:
    """The template itself scores 1; shifted by 12 mm (6 voxels) it falls below the threshold."""
    template, _ = template_images()
    data = np.roll(template.get_fdata(), shift_vox, axis=1) * 7.0 + 3.0
    score = reg.alignment_score(nib.Nifti1Image(data, template.affine))
    assert (score > reg.ALIGNMENT_THRESHOLD) == aligned
    if aligned:
        assert score == pytest.approx(1.0)


def test_alignment_score_rejects_4d() -> None:
    with pytest.raises(ValueError, match=r"needs a 3D image; got shape \(7, 8, 9, 2\)"):
        reg.alignment_score(nib.Nifti1Image(np.zeros((7, 8, 9, 2), np.float32), np.eye(4)))


@pytest.mark.parametrize(("grid_mm", "skull_stripped"), [(2.0, False), (4.0, True)])
def test_mni_space_scan_is_resampled_and_normalised(template_scan: Path, grid_mm: float,
                                                    skull_stripped: bool) -> None:
    img = pp.preprocess_file(template_scan, space=MNI, grid_mm=grid_mm,
                             skull_stripped=skull_stripped)
    shape, affine = reg.template_grid(grid_mm)
    assert img.shape == shape
    np.testing.assert_allclose(img.affine, affine)
    data = img.get_fdata()
    inside = data != 0
    assert data[inside].mean() == pytest.approx(1.0, abs=1e-3) and data[inside].min() > 0
    assert reg.alignment_score(img) > 0.9  # 4 mm: smoothed, then compared at 2 mm


def test_openbhb_array_of_the_template_lands_on_the_template(tmp_path: Path) -> None:
    """The template as an OpenBHB array (LAS voxel order, shape (1, X, Y, Z), the affine of the
    dataset's resource template) is resampled, not registered, onto the grid: aligned."""
    template, _ = template_images()
    data = (template.get_fdata() * 300 + 20).astype(np.float32)[::-1]  # x runs right to left
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1  # voxel i of the LAS array is voxel X-1-i of the template
    root = tmp_path / "openbhb"
    (root / "resource").mkdir(parents=True)
    _save(root / "resource", "quasiraw_space-MNI152_desc-brain_T1w.nii.gz", data,
          template.affine @ flip)
    path = root / "train" / "derivatives" / "sub-1" / "ses-1" / "sub-1_preproc-quasiraw_T1w.npy"
    path.parent.mkdir(parents=True)
    np.save(path, data[None])
    assert pp.PreprocessParams(space="MNI152Lin").space == "MNI152Lin"
    img = pp.preprocess_file(path, space="MNI152Lin", grid_mm=4.0, skull_stripped=True)
    assert img.shape == reg.template_grid(4.0)[0]
    assert reg.alignment_score(img) > 0.9


def test_mni_space_scan_misaligned_scores_low(template_scan: Path, tmp_path: Path) -> None:
    """An MNI-space scan whose content is 12 mm off is not moved (no registration): flagged."""
    img = nib.load(template_scan)
    shifted = _save(tmp_path, "shifted.nii.gz",
                    np.roll(np.asarray(img.dataobj), 6, axis=2).astype(np.float32), img.affine)
    out = pp.preprocess_file(shifted, space=MNI)
    assert reg.alignment_score(out) < reg.ALIGNMENT_THRESHOLD


def _openbhb_template(tmp_path: Path) -> Path:
    """nilearn's template (x 300 + 20) as an OpenBHB quasi-raw array (LAS, shape (1, X, Y, Z))."""
    template, _ = template_images()
    data = (template.get_fdata() * 300 + 20).astype(np.float32)[::-1]  # x runs right to left
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    root = tmp_path / "openbhb"
    (root / "resource").mkdir(parents=True)
    _save(root / "resource", "quasiraw_space-MNI152_desc-brain_T1w.nii.gz", data,
          template.affine @ flip)
    path = root / "train" / "derivatives" / "sub-1" / "ses-1" / "sub-1_preproc-quasiraw_T1w.npy"
    path.parent.mkdir(parents=True)
    np.save(path, data[None])
    return path


#: Template-space outputs of preprocessing version 2 (commit 970ab9e, before brain extraction
#: existed): the quick build's simulated cohort (4 mm, cropped, skull-stripped), a 2 mm
#: template-masked scan, and an OpenBHB array. Their fingerprints (:func:`_fingerprint`) are in
#: ``preprocess_version2.npz``, written by ``python -m tests.imaging.test_preprocess`` with version
#: 2's code (``git archive 970ab9e brainage``); see :func:`_write_reference`.
_VERSION_2_CASES = {
    "quick-4mm": {"space": MNI, "grid_mm": 4.0, "skull_stripped": True, "crop_to_brain": True},
    "masked-2mm": {"space": MNI, "grid_mm": 2.0},
    "openbhb-4mm": {"space": "MNI152Lin", "grid_mm": 4.0, "skull_stripped": True},
}
_VERSION_2_REFERENCE = Path(__file__).with_name("preprocess_version2.npz")
#: Blocks of 4 x 4 x 4 voxels: 1e3 to 3e4 block means per output, small enough to ship.
_BLOCK = 4
#: Tolerance of the voxel values, relative to the largest |value|. Another CPU (AVX-512 against
#: AVX2) changes resampled float32 voxels in their last bits (about 1e-7 relative); 1e-5 leaves a
#: factor 100 for that and still fails a 1e-4 rescaling, a one-voxel shift or one voxel changed
#: by 2 % of the maximum (test_version_2_tolerance_is_tight).
_RTOL = 1e-5


def _fingerprint(img: nib.Nifti1Image) -> dict[str, np.ndarray]:
    """What a test of an output compares: shape, affine, header, 4^3-block means, moments."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    padded = np.pad(data, [(0, -n % _BLOCK) for n in data.shape])  # sides: multiples of 4
    # (X, Y, Z) -> (X/4, 4, Y/4, 4, Z/4, 4) -> block means (X/4, Y/4, Z/4)
    means = padded.reshape([d for n in padded.shape for d in (n // _BLOCK, _BLOCK)]).mean(
        axis=(1, 3, 5))
    return {"shape": np.asarray(data.shape), "affine": img.affine,
            "header": np.frombuffer(img.header.binaryblock, np.uint8).copy(),
            "block_means": means,
            "moments": np.asarray([data.sum(), (data ** 2).sum(), data.min(), data.max()])}


def _header_fields(block: np.ndarray) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in
            nib.Nifti1Header(binaryblock=block.tobytes()).items()}


def _assert_matches(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Integers and text exactly, floats within :data:`_RTOL` of the largest value."""
    np.testing.assert_array_equal(found["shape"], expected["shape"])
    np.testing.assert_allclose(found["affine"], expected["affine"], rtol=0, atol=1e-9)
    ours, theirs = _header_fields(found["header"]), _header_fields(expected["header"])
    for key, value in theirs.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(ours[key], value, rtol=1e-9, atol=1e-9, err_msg=key)
        else:
            np.testing.assert_array_equal(ours[key], value, err_msg=key)
    scale = float(np.abs(expected["moments"][2:]).max())
    np.testing.assert_allclose(found["block_means"], expected["block_means"],
                               rtol=_RTOL, atol=_RTOL * scale, err_msg="block means")
    np.testing.assert_allclose(found["moments"], expected["moments"], rtol=_RTOL,
                               atol=_RTOL * scale, err_msg="sum, sum of squares, min, max")


def _version_2_output(name: str, template_scan: Path, tmp_path: Path, **kwargs) -> nib.Nifti1Image:
    case = _VERSION_2_CASES[name]
    path = _openbhb_template(tmp_path) if case["space"] == "MNI152Lin" else template_scan
    return pp.preprocess_file(path, **case, **kwargs)


def _reference(name: str) -> dict[str, np.ndarray]:
    with np.load(_VERSION_2_REFERENCE) as stored:
        return {key.split("/", 1)[1]: stored[key] for key in stored.files
                if key.startswith(name + "/")}


@pytest.mark.parametrize("name", sorted(_VERSION_2_CASES))
@pytest.mark.parametrize("method", pp.BRAIN_EXTRACTION_METHODS)
def test_template_space_outputs_are_those_of_version_2(template_scan: Path, tmp_path: Path,
                                                       name: str, method: str) -> None:
    """Brain extraction is for native scans only: template-space outputs (the simulated
    cohort, OpenBHB) are version 2's, whatever ``brain_extraction`` says. Compared by value
    with a tolerance, never by the bytes of floats: other CPUs change their last bits."""
    img = _version_2_output(name, template_scan, tmp_path, brain_extraction=method)
    _assert_matches(_fingerprint(img), _reference(name))
    assert math.isnan(pp.header_tiv(img))


def _perturbed(img: nib.Nifti1Image, change: str, rng: np.random.Generator) -> nib.Nifti1Image:
    data = np.asarray(img.dataobj).copy()
    if change == "last bits":  # what another CPU does: +-4 ulp on every voxel
        data = data * (1 + rng.choice([-4, 4], data.shape) * np.finfo(np.float32).eps)
    elif change == "scale 1e-4":
        data = data * (1 + 1e-4)
    elif change.startswith("shift"):
        data = np.roll(data, 1, axis="xyz".index(change[-1]))
    elif change == "one voxel +2%":
        index = np.unravel_index(np.argmax(data), data.shape)
        data[tuple(np.subtract(index, 3))] += 0.02 * data.max()
    return nib.Nifti1Image(data.astype(np.float32), img.affine, img.header)


@pytest.mark.parametrize("name", sorted(_VERSION_2_CASES))
def test_version_2_tolerance_is_tight(template_scan: Path, tmp_path: Path, name: str,
                                      rng: np.random.Generator) -> None:
    """The tolerance passes last-bit noise (another CPU) and fails every real change."""
    img = _version_2_output(name, template_scan, tmp_path)
    expected = _reference(name)
    _assert_matches(_fingerprint(_perturbed(img, "last bits", rng)), expected)
    for change in ("scale 1e-4", "shift x", "shift y", "shift z", "one voxel +2%"):
        with pytest.raises(AssertionError):
            _assert_matches(_fingerprint(_perturbed(img, change, rng)), expected)


def _write_reference(source: str | os.PathLike) -> None:
    """Write :data:`_VERSION_2_REFERENCE` from the ``brainage`` package under ``source``
    (version 2's code: ``git archive 970ab9e brainage | tar -x -C SOURCE``)."""
    import importlib
    import sys
    import tempfile

    sys.path.insert(0, os.fspath(source))
    for module in [m for m in sys.modules if m == "brainage" or m.startswith("brainage.")]:
        del sys.modules[module]
    old = importlib.import_module("brainage.imaging.preprocess")
    template, _ = template_images()
    data = (template.get_fdata() * 300 + 20).astype(np.float32)
    arrays = {}
    with tempfile.TemporaryDirectory() as folder:
        scan = _save(Path(folder), "mni.nii.gz", data, template.affine)
        for name, case in _VERSION_2_CASES.items():
            path = _openbhb_template(Path(folder) / name) if case["space"] == "MNI152Lin" else scan
            img = old.preprocess_file(path, **case)
            arrays.update({f"{name}/{key}": value for key, value in _fingerprint(img).items()})
    np.savez_compressed(_VERSION_2_REFERENCE, **arrays)
    print(f"{_VERSION_2_REFERENCE}: from {old.__file__}, version {old.PREPROCESS_VERSION}")



def test_header_tiv_round_trip(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), np.eye(4))
    assert math.isnan(pp.header_tiv(img))
    img.header["descrip"] = pp._TIV_RECORD.format(method="deepbet", tiv=1561.23)
    nib.save(img, tmp_path / "v.nii.gz")
    assert pp.header_tiv(nib.load(tmp_path / "v.nii.gz")) == pytest.approx(1561.2)
    img.header["descrip"] = "something else"
    assert math.isnan(pp.header_tiv(img))


# --- cache ---------------------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Replace preprocess_file by a cheap stand-in that records its calls."""
    calls: list[tuple[str, dict]] = []

    def fake(path, **kwargs):
        calls.append((str(path), kwargs))
        data = pp.load_scan(path).get_fdata().astype(np.float32) * kwargs["grid_mm"]
        return nib.Nifti1Image(data, np.eye(4))

    monkeypatch.setattr(pp, "preprocess_file", fake)
    return calls


def test_cache_hit_on_second_call(small_scan: Path, tmp_path: Path, counted: list) -> None:
    cache = pp.PreprocessCache(tmp_path / "cache")
    first = cache.get_or_compute(small_scan, {"grid_mm": 4.0})
    second = cache.get_or_compute(small_scan, pp.PreprocessParams(grid_mm=4.0))
    assert len(counted) == 1
    np.testing.assert_array_equal(first.get_fdata(), second.get_fdata())
    stored = list((tmp_path / "cache").rglob("*"))
    assert sorted(p.suffix for p in stored if p.is_file()) == [".gz", ".json"]  # no temp file
    assert not [p for p in stored if p.name.startswith(".")]


@pytest.mark.parametrize("change", ["param", "file", "version", "method"])
def test_cache_invalidated(small_scan: Path, tmp_path: Path, counted: list,
                           monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator,
                           change: str) -> None:
    cache = pp.PreprocessCache(tmp_path / "cache")
    params = pp.PreprocessParams(grid_mm=2.0)
    before = cache.get_or_compute(small_scan, params).get_fdata()
    if change == "param":
        params = pp.PreprocessParams(grid_mm=3.0)
    elif change == "file":
        _save(small_scan.parent, small_scan.name, rng.normal(size=(7, 8, 9)).astype(np.float32))
    elif change == "method":  # the skull-removal method is part of the key
        params = pp.PreprocessParams(grid_mm=2.0, brain_extraction="template")
    else:
        monkeypatch.setattr(pp, "PREPROCESS_VERSION", "test-next")
    after = cache.get_or_compute(small_scan, params).get_fdata()
    assert len(counted) == 2
    assert not np.array_equal(before, after) or change in ("version", "method")
    if change == "method":
        assert counted[1][1]["brain_extraction"] == "template"
        assert cache.path_for(small_scan, params) != cache.path_for(small_scan, {})
    assert cache.get_or_compute(small_scan, params) is not None and len(counted) == 2


def test_cache_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.nii: cannot read the image: the path does not exist"):
        pp.PreprocessCache(tmp_path).get_or_compute(tmp_path / "nowhere.nii")


def test_cohort_collects_errors(small_scan: Path, tmp_path: Path, counted: list,
                                rng: np.random.Generator) -> None:
    bad = _nan(tmp_path, rng)
    cache = pp.PreprocessCache(tmp_path / "cache")
    items = pp.preprocess_cohort([small_scan, bad, small_scan], None, cache)
    assert [item.ok for item in items] == [True, False, True]
    assert str(bad) in items[1].error and "NaN" in items[1].error and items[1].image is None
    assert items[0].image.shape == (7, 8, 9)
    assert len(counted) == 2  # the third item is the first one again: read from the cache


def test_cohort_rejects_bad_n_jobs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_jobs must be a positive int; got 0"):
        pp.preprocess_cohort([], None, pp.PreprocessCache(tmp_path), n_jobs=0)


@pytest.mark.slow
def test_cohort_in_worker_processes(template_scan: Path, tmp_path: Path,
                                    rng: np.random.Generator) -> None:
    bad = _four_d(tmp_path, rng)
    items = pp.preprocess_cohort([template_scan, bad], {"space": MNI, "grid_mm": 4.0},
                                 pp.PreprocessCache(tmp_path / "cache"), n_jobs=2)
    assert items[0].ok and items[0].image.shape == (50, 59, 48)
    assert not items[1].ok and str(bad) in items[1].error and "3D" in items[1].error


# --- command line --------------------------------------------------------------------------

def _cli(*argv: str) -> int:
    return main(["-q", "preprocess", *argv])


def test_cli_one_file(template_scan: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.nii.gz"
    assert _cli(str(template_scan), str(out), "--space", MNI, "--grid-mm", "4") == 0
    assert nib.load(out).shape == (50, 59, 48)
    printed = capsys.readouterr().out
    assert "registration misfit not measured (threshold 5.0 mm)" in printed  # template mask
    # skull-stripped (the brain-only template, 0 outside): the scan's own outline; the same
    # figure without and with a cache
    template, _ = template_images()
    (tmp_path / "in").mkdir()
    brain = _save(tmp_path / "in", "brain.nii.gz",
                  (template.get_fdata() * 300).astype(np.float32), template.affine)
    stripped = ("--space", MNI, "--grid-mm", "4", "--skull-stripped")
    assert _cli(str(brain), str(tmp_path / "a.nii.gz"), *stripped) == 0
    alone = capsys.readouterr().out
    assert _cli(str(brain), str(tmp_path / "b.nii.gz"), *stripped,
                "--cache", str(tmp_path / "cache")) == 0
    cached = capsys.readouterr().out
    figure = alone.split("  ", 1)[1].strip()
    assert figure.startswith("registration misfit ") and figure.endswith(
        "mm (threshold 5.0 mm): passed")
    assert cached.split("  ", 1)[1].strip() == figure


def test_cli_brain_extraction_option(template_scan: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.nii.gz"
    assert _cli(str(template_scan), str(out), "--space", MNI, "--grid-mm", "4",
                "--brain-extraction", "template") == 0
    with pytest.raises(SystemExit) as info:
        _cli(str(template_scan), str(out), "--brain-extraction", "bet")
    assert info.value.code == 2 and "invalid choice: 'bet'" in capsys.readouterr().err


def test_cli_folder_reports_failures(template_scan: Path, tmp_path: Path, capsys,
                                     rng: np.random.Generator, tmp_path_factory) -> None:
    bad = _corrupt(tmp_path, rng)
    out = tmp_path_factory.mktemp("out")  # outside IN: an OUT inside IN is refused
    assert _cli(str(tmp_path), str(out), "--space", MNI, "--grid-mm", "4",
                "--cache", str(out / "c")) == 1
    assert (out / "mni.nii.gz").is_file()
    printed = capsys.readouterr().out
    assert f"{bad}: FAILED" in printed and "cannot read the image" in printed


def test_cli_missing_input(tmp_path: Path, capsys) -> None:
    assert _cli(str(tmp_path / "absent.nii"), str(tmp_path / "o.nii")) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err


# --- registration --------------------------------------------------------------------------

def _shift(mm: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[1, 3] = mm
    return matrix


@pytest.mark.parametrize(("outcomes", "pitch", "warns"), [
    ({0.0: 12.0, -15.0: 0.0, 15.0: 0.0}, -15.0, False),   # first start off by 12 mm: restart
    ({0.0: 0.0, -15.0: 12.0, 15.0: 12.0}, 0.0, False),    # first start good: no restart
    ({0.0: 12.0, -15.0: 8.0, 15.0: 12.0}, -15.0, True),   # all poor: best kept, warned
])
def test_registration_multistart(monkeypatch: pytest.MonkeyPatch, caplog, outcomes: dict,
                                 pitch: float, warns: bool) -> None:
    """The head stage restarts from pitched starts while the score is below the threshold
    (logged at debug level: the registration misfit, not this score, is the QC users see)."""
    caplog.set_level(logging.DEBUG, logger=reg.__name__)


    tried: list[float] = []

    def stages(scan, init, skull_stripped, folder):  # stands in for the two ANTs stages
        start = float(Path(init).stem.removeprefix("init_pitch"))
        tried.append(start)
        return _shift(outcomes[start])

    monkeypatch.setattr(reg, "_head_and_brain_stages", stages)
    template, _ = template_images()
    result = reg.register_to_template(reg.nifti_to_ants(template), skull_stripped=True)
    assert result.pitch_deg == pitch
    assert tried == [0.0] if pitch == 0.0 else tried[:2] == [0.0, -15.0]
    assert (result.score < reg.ALIGNMENT_THRESHOLD) == warns
    assert ("below the threshold" in caplog.text) == warns


@pytest.mark.parametrize(("grid_mm", "shrink"), [
    (2.0, (4, 2, 1)),   # the template's own scale: every level
    (3.0, (4, 2, 1)),
    (4.0, (4, 2)),      # a 4 mm grid: stops at 4 mm
    (8.0, (4,)),
    (16.0, (4,)),       # never fewer than one level
])
def test_brain_stage_pyramid_stops_at_the_grid(grid_mm: float, shrink: tuple) -> None:
    pyramid = reg.brain_stage_pyramid(grid_mm)
    assert pyramid["aff_shrink_factors"] == shrink
    assert len(pyramid["aff_smoothing_sigmas"]) == len(pyramid["aff_iterations"]) == len(shrink)


def test_brain_to_brain_registration_starts_at_the_mask_centre(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a brain mask, the brain stage alone runs, from the mask's centre of mass, and is
    restarted (pitched) only while the score is below the threshold."""
    template, mask = template_images()
    starts: list[tuple[float, np.ndarray]] = []

    def stage(brain, init, grid_mm, folder):  # stands in for the ANTs affine
        transform = ants.read_transform(init)
        starts.append((float(Path(init).stem.removeprefix("init_pitch")),
                       np.asarray(transform.parameters)[-3:]))
        return moved @ _shift(12.0 if len(starts) == 1 else 0.0)  # the first start misses

    monkeypatch.setattr(reg, "_brain_stage", stage)
    moved = np.eye(4)
    moved[:3, 3] = [300.0, -300.0, 300.0]  # world origin far from the brain
    scan = nib.Nifti1Image(template.get_fdata().astype(np.float32), moved @ template.affine)
    brain = nib.Nifti1Image(np.asarray(mask.dataobj, np.float32), moved @ mask.affine)
    result = reg.register_to_template(reg.nifti_to_ants(scan),
                                      brain_mask=reg.nifti_to_ants(brain))
    assert [pitch for pitch, _ in starts] == [0.0, -15.0] and result.pitch_deg == -15.0
    # the start's translation (ITK, LPS) takes the template brain's centre to the mask's
    np.testing.assert_allclose(starts[0][1], [-300.0, 300.0, 300.0], atol=1e-6)
    np.testing.assert_allclose(reg.mask_centre(reg.nifti_to_ants(brain)),
                               reg._template_brain_geometry()[1] + [300.0, -300.0, 300.0])
    assert result.score > 0.9


def test_mask_centre_rejects_an_empty_mask() -> None:
    empty = reg.nifti_to_ants(nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), np.eye(4)))
    with pytest.raises(ValueError, match="the brain mask is empty"):
        reg.mask_centre(empty)


@pytest.mark.slow
def test_native_call_on_moved_template(tmp_path: Path) -> None:
    """The native path registers a skull-stripped MNI brain moved by 10 deg pitch and
    (8, -10, 15) mm (its own brain outline: no template-mask skull removal)."""
    template, _ = template_images()
    angle = np.deg2rad(10.0)
    moved = np.eye(4)
    moved[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    moved[:3, 3] = [8.0, -10.0, 15.0]
    path = _save(tmp_path, "moved.nii.gz", (template.get_fdata() * 500 + 40).astype(np.float32),
                 moved @ template.affine)
    before = reg.alignment_score(nib.load(path))
    out = pp.preprocess_file(path, skull_stripped=True)
    assert before < reg.ALIGNMENT_THRESHOLD < 0.9 < reg.alignment_score(out)


# --- real IXI scans (raw heads) -------------------------------------------------------------

#: All ten raw scans run by default, two at a time (a raw scan takes ~8 s of CPU time on one
#: core: brain extraction ~3 s, N4 ~1 s, registration ~4 s); BRAINAGE_IXI_SUBSET=1 keeps only
#: the lowest-scoring one (0.49 with the template mask, 0.50 with deepbet) for a quicker run.
_IXI_SUBSET = ("sub-IXI013",)


def preprocess_ixi10(folder: Path, ixi10_cache: Path):
    """The ten raw scans preprocessed into the session's ixi10 cache: :func:`ixi_results`,
    computed in the background process of tests/conftest.py (``folder`` is not used)."""
    paths = sorted(IXI10.glob("sub-*/anat/*_T1w.nii.gz"))
    if os.environ.get("BRAINAGE_IXI_SUBSET"):
        paths = [p for p in paths if p.name.split("_")[0] in _IXI_SUBSET]
    cache = pp.PreprocessCache(ixi10_cache)
    return paths, cache, pp.preprocess_cohort(paths, pp.PreprocessParams(), cache, n_jobs=2)


@pytest.fixture(scope="module")
def ixi_results(ixi10: Path, ixi10_cache: Path, background):
    return background.result("ixi_results", ixi10_cache)


@pytest.mark.slow
def test_ixi_scans_preprocess_and_align(ixi_results) -> None:
    paths, _, items = ixi_results
    assert len(paths) == (1 if os.environ.get("BRAINAGE_IXI_SUBSET") else 10)
    assert all(item.ok for item in items), [item.error for item in items]
    shape, affine = reg.template_grid(2.0)
    for item in items:
        assert item.image.shape == shape
        np.testing.assert_allclose(item.image.affine, affine)
        score = reg.alignment_score(item.image)
        assert score > reg.ALIGNMENT_THRESHOLD, f"{item.path}: alignment score {score:.3f}"
        assert item.alignment == pytest.approx(reg.outline_misfit(item.image))
        assert reg.registration_passes(item.alignment), reg.registration_qc_text(item.alignment)
        # the subject's own mask (deepbet), its native TIV in the header and the item
        low, high = TIV_RANGE_CM3
        assert low < item.tiv_cm3 < high and pp.header_tiv(item.image) == pytest.approx(
            item.tiv_cm3, abs=0.05)
        brain = np.asarray(item.image.dataobj) > 0
        template_mask = pp._template_mask_on((shape, affine))
        overlap = (brain & template_mask).sum() / (brain | template_mask).sum()
        assert 0.75 < overlap < 1.0, f"{item.path}: mask overlap with the template's {overlap}"


@pytest.mark.slow
def test_ixi_second_read_comes_from_cache(ixi_results, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, cache, items = ixi_results

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(pp, "preprocess_file", fail)
    again = cache.get_or_compute(paths[0], pp.PreprocessParams())
    np.testing.assert_array_equal(again.get_fdata(), items[0].image.get_fdata())


def test_cache_stores_the_registration_misfit(template_scan: Path, tmp_path: Path) -> None:
    cache = pp.PreprocessCache(tmp_path / "cache")
    params = {"space": MNI, "grid_mm": 4.0, "skull_stripped": True}
    score = cache.alignment(template_scan, params)
    assert score == pytest.approx(reg.outline_misfit(cache.get_or_compute(template_scan, params)))
    sidecar = cache.path_for(template_scan, params).with_suffix("").with_suffix(".json")
    assert json.loads(sidecar.read_text())["registration_misfit_mm"] == pytest.approx(score)
    items = pp.preprocess_cohort([template_scan, tmp_path / "missing.nii.gz"], params, cache)
    assert items[0].alignment == pytest.approx(score)
    assert math.isnan(items[1].alignment) and "missing.nii.gz" in items[1].error


# --- robustness: scans stored as other scanners store them ----------------------------------

def preprocess_robustness_cases(folder: Path) -> dict[str, nib.Nifti1Image | Exception]:
    """IXI013 stored as each robustness case and preprocessed (:func:`preprocess_file`, the
    defaults): case -> the volume, or the error it raised (its test re-raises it). Computed
    in the background process of tests/conftest.py."""
    source = IXI10 / "sub-IXI013" / "anat" / "sub-IXI013_T1w.nii.gz"
    out: dict[str, nib.Nifti1Image | Exception] = {}
    for case in perturb.ROBUSTNESS_CASES:
        path = folder / f"IXI013_{case}.nii.gz"
        nib.save(perturb.robustness_case(nib.load(source), case), path)
        try:
            out[case] = pp.preprocess_file(path)
        except Exception as err:  # one case's failure fails that case's test only
            out[case] = err
    return out


@pytest.fixture(scope="module")
def robustness_images(ixi10: Path, background) -> dict[str, nib.Nifti1Image | Exception]:
    return background.result("robustness_images")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", perturb.ROBUSTNESS_CASES)
def test_ixi_robustness_cases_land(robustness_images: dict, case: str) -> None:
    """IXI013 (the lowest-scoring scan) with its world origin 300 mm away, its voxel axes
    permuted and reversed, 80 mm more neck in the field of view, or all three: the default
    path (deepbet, brain to brain from the mask's centre) lands every one."""
    img = robustness_images[case]
    if isinstance(img, Exception):
        raise img
    score = reg.alignment_score(img)
    assert score > reg.ALIGNMENT_THRESHOLD, f"{case}: alignment score {score:.3f}"
    low, high = TIV_RANGE_CM3
    assert low < pp.header_tiv(img) < high


if __name__ == "__main__":
    import sys

    _write_reference(sys.argv[1])
