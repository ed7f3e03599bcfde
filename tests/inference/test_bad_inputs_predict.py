"""Bad inputs of ``brainage predict`` (issue 13): degenerate affines, folders and symbolic-link
loops named like scans, failed registrations, invalid ages in participants.tsv, invalid model
cards and bias corrections, unusable output paths and interrupted runs.

Each test builds its bad input (tiny MNI-space scans on the 4 mm template grid, a one-head model
trained for one epoch) and checks that the message names the file and the problem and that the
good scans of the same run complete."""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import signal
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainage.cli import main
from brainage.imaging import registration
from brainage.imaging.preprocess import resample_to_grid
from brainage.imaging.registration import registration_passes, template_grid, template_images
from brainage.inference import model_folder
from brainage.inference import predict as bp
from brainage.models.datasets import VolumeDataset
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, train_l1

MNI = "MNI152NLin2009cSym"
GRID_MM = 8.0  # the model's grid, cropped to the brain: (21, 25, 22)
SCAN_MM = 4.0  # the good scans lie on the uncropped 4 mm template grid: (50, 59, 48)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with one head (l1, one epoch) and its model.json."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape, _ = template_grid(GRID_MM, crop_to_brain=True)
    images = rng.gamma(2.0, 0.5, size=(4, *shape)).astype(np.float32)  # (N, D, H, W), positive
    train = VolumeDataset(images[:3], np.array([20.0, 50.0, 80.0]), ["a", "b", "c"])
    val = VolumeDataset(images[3:], np.array([40.0]), ["d"])
    root = tmp_path_factory.mktemp("run") / "models"
    train_l1(train, val, ModelConfig(depth=10, widths=(4, 8, 16, 32)),
             TrainConfig(epochs=1, batch_size=2, augment=None, progress=False, device="cpu",
                         probe_every=0), root / "l1")
    model_folder.write_model_card(root, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                          "skull_stripped": True, "crop_to_brain": True},
                        saliency_layer="encoder.layer2", profile="test")
    return root


@pytest.fixture(scope="module")
def template_4mm() -> np.ndarray:
    """nilearn's template resampled onto the 4 mm template grid, shape (50, 59, 48)."""
    template, _ = template_images()
    return resample_to_grid(template, template_grid(SCAN_MM))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, template_4mm: np.ndarray) -> list[Path]:
    """Three good MNI-space scans (shared: the tests do not change them)."""
    folder, rng = tmp_path_factory.mktemp("good"), np.random.default_rng(0)
    paths = []
    for i in range(3):
        data = template_4mm * 300.0 * (i + 1) + rng.normal(0.0, 3.0, template_4mm.shape)
        paths.append(folder / f"good{i}.nii.gz")
        nib.save(nib.Nifti1Image(data.astype(np.float32), template_grid(SCAN_MM)[1]), paths[-1])
    return paths


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _run(out: Path, cache: Path, *argv: str) -> tuple[int, pd.DataFrame | None]:
    code = main(["-q", "predict", *argv, "--out", str(out), "--cache", str(cache)])
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]) if out.is_file() else None
    return code, table


def _assert_failed(table: pd.DataFrame, path: Path, *problems: str) -> None:
    """The rows of ``path`` have no age and an error naming the file and every problem."""
    rows = table[table["path"] == str(path)]
    assert len(rows) and rows["brain_age"].isna().all()
    for error in rows["error"].fillna(""):
        assert str(path) in error, error
        for problem in problems:
            assert problem in error, error


def _assert_completed(table: pd.DataFrame, paths: list[Path]) -> None:
    rows = table[table["path"].isin([str(p) for p in paths])]
    assert rows["path"].nunique() == len(paths)
    assert rows["error"].isna().all(), rows["error"].tolist()
    assert rows["brain_age"].notna().all()


def _raw_nifti(path: Path, data: np.ndarray, *, srow: np.ndarray | None = None,
               pixdim: tuple[float, float, float] | None = None) -> Path:
    """A NIfTI (.nii.gz) with a degenerate sform of rows ``srow`` (3, 4), or a qform with
    voxel size ``pixdim``, written past nibabel (which builds neither from an affine, and
    replaces a zero pixdim by 1 when it saves)."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    if srow is not None:
        header["sform_code"] = 1
        for k, axis in enumerate("xyz"):
            header[f"srow_{axis}"] = srow[k]
    if pixdim is not None:
        header["qform_code"] = 1
    plain = path.with_name("plain.nii")
    nib.save(nib.Nifti1Image(data.astype(np.float32), None, header=header), plain)
    raw = bytearray(plain.read_bytes())
    plain.unlink()
    if pixdim is not None:
        struct.pack_into("<3f", raw, 80, *pixdim)  # pixdim[1:4]: bytes 80-91 of the header
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


# --- 3: degenerate affines ------------------------------------------------------------------


@pytest.mark.parametrize("space", ["auto", MNI])
@pytest.mark.parametrize(("name", "header", "problem"), [
    ("zero", {"srow": np.zeros((3, 4))}, "voxel size 0 mm along axis [0, 1, 2]"),
    ("singular", {"srow": np.array([[4.0, 0, 4, 0], [0, 4, 0, 0], [0, 0, 0, 0]])},  # i = k
     "direction matrix is singular"),
    ("zero_voxel", {"pixdim": (0.0, 4.0, 4.0)}, "voxel size [0.0, 4.0, 4.0] mm (pixdim)"),
])
def test_degenerate_affine_is_an_error_row(model_dir: Path, good: list[Path],
                                           template_4mm: np.ndarray, tmp_path: Path,
                                           cache: Path, capsys, space: str, name: str,
                                           header: dict, problem: str) -> None:
    bad = _raw_nifti(tmp_path / f"{name}.nii.gz", template_4mm * 500.0, **header)
    code, table = _run(tmp_path / "out.csv", cache, str(good[0]), str(bad), str(good[1]),
                       "--model", str(model_dir), "--space", space)
    assert code == 1
    _assert_failed(table, bad, "degenerate affine", problem)
    _assert_completed(table, good[:2])
    assert f"FAILED {bad}" in capsys.readouterr().err


# --- 5: folders and symbolic links named like scans -----------------------------------------


def test_folder_named_like_a_scan_on_the_command_line(model_dir: Path, good: list[Path],
                                                      tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "x_T1w.nii.gz"
    folder.mkdir()
    code, table = _run(tmp_path / "out.csv", cache, str(good[0]), str(folder), str(good[1]),
                       "--model", str(model_dir), "--age", "30", "40", "50")
    assert code == 1
    _assert_failed(table, folder, "is a directory, not a file")
    _assert_completed(table, good[:2])
    assert table["age"].tolist() == [30.0, 40.0, 50.0]  # the folder took its own age


@pytest.mark.parametrize("space", ["auto", MNI])
def test_bids_folder_with_a_folder_and_symlinks_named_like_scans(
        model_dir: Path, good: list[Path], tmp_path: Path, cache: Path, space: str) -> None:
    root = tmp_path / "bids"
    anat = {sub: root / f"sub-{sub}" / "anat" for sub in ("01", "02", "03", "04")}
    for folder in anat.values():
        folder.mkdir(parents=True)
    scan = shutil.copy(good[0], anat["01"] / "sub-01_T1w.nii.gz")
    folder = anat["02"] / "sub-02_T1w.nii.gz"
    folder.mkdir()
    loop = anat["03"] / "sub-03_T1w.nii.gz"
    loop.symlink_to(loop.name)  # points at itself
    broken = anat["04"] / "sub-04_T1w.nii.gz"
    broken.symlink_to(tmp_path / "gone.nii.gz")
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t40\n"
                                           "sub-03\t50\nsub-04\t60\n")
    code, table = _run(tmp_path / "out.csv", cache, str(root), "--model", str(model_dir),
                       "--space", space)
    assert code == 1
    _assert_completed(table, [Path(scan)])
    _assert_failed(table, folder, "is a directory, not a file")
    _assert_failed(table, loop, "is a symlink loop")
    _assert_failed(table, broken, "is a broken symlink", str(tmp_path / "gone.nii.gz"))


# --- 6: failed registrations ----------------------------------------------------------------


def _native(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    assert bp.scan_space(path) == "native"
    return path


def test_native_scan_below_the_alignment_threshold_gets_no_age(
        model_dir: Path, good: list[Path], template_4mm: np.ndarray, tmp_path: Path,
        monkeypatch) -> None:
    """A registration that finds nothing (here: the identity, while the brain lies 40 mm off):
    the scan's alignment score is reported, its age is not."""
    affine = template_grid(SCAN_MM)[1].copy()
    affine[0, 3] += 40.0
    bad = _native(tmp_path / "off.nii.gz", template_4mm * 500.0, affine)
    monkeypatch.setattr(registration, "register_to_template", lambda scan, **kw:
                        registration.RegistrationResult(np.eye(4), math.nan, 0.0))
    code, table = _run(tmp_path / "out.csv", tmp_path / "cache", str(good[0]), str(bad),
                       "--model", str(model_dir))
    assert code == 1
    _assert_failed(table, bad, "registration to MNI152 failed the QC", "threshold 5.0 mm")
    row = table[table["path"] == str(bad)].iloc[0]
    assert row["space"] == "native" and not registration_passes(row["registration_misfit_mm"])
    qc = tmp_path / "out_qc" / f"{bad.name.split('.')[0]}_qc.png"
    assert qc.is_file(), sorted(p.name for p in tmp_path.rglob("*.png"))
    _assert_completed(table, good[:1])
    # the user looked at the picture and accepts the scan: --force predicts it, same figure
    code, forced = _run(tmp_path / "forced.csv", tmp_path / "cache", str(bad), "--model",
                        str(model_dir), "--force")
    assert code == 0
    _assert_completed(forced, [bad])
    assert forced["registration_misfit_mm"].iloc[0] == pytest.approx(row["registration_misfit_mm"])


def test_bids_draws_the_qc_image_of_a_refused_scan_and_force_accepts_it(
        model_dir: Path, template_4mm: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    """brainage bids: a native scan refused by the registration QC still gets its QC image
    (so that the user can judge it) and an error log, no table; --force predicts it."""
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "off", "BIDSVersion": "1.9.0"}))
    affine = template_grid(SCAN_MM)[1].copy()
    affine[0, 3] += 40.0
    _native(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz", template_4mm * 500.0, affine)
    monkeypatch.setattr(registration, "register_to_template", lambda scan, **kw:
                        registration.RegistrationResult(np.eye(4), math.nan, 0.0))
    common = ["participant", "--model", str(model_dir), "--cache", str(tmp_path / "cache")]
    out = tmp_path / "out"
    assert main(["-q", "bids", str(bids), str(out), *common]) == 1
    anat = out / "sub-01" / "anat"
    assert (anat / "sub-01_space-MNI152NLin2009cSym_desc-qc_T1w.png").is_file()
    assert not list(anat.glob("*_desc-brainage_T1w.tsv"))
    forced = tmp_path / "forced"
    assert main(["-q", "bids", str(bids), str(forced), *common, "--force"]) == 0
    table = pd.read_csv(forced / "sub-01" / "anat" / "sub-01_desc-brainage_T1w.tsv", sep="\t")
    assert table["brain_age"].notna().all()
    assert not table["registration_misfit_mm"].map(registration_passes).any()


def test_native_scan_with_50_mm_voxels_gets_no_age(model_dir: Path, good: list[Path],
                                                   template_4mm: np.ndarray, tmp_path: Path,
                                                   cache: Path) -> None:
    """A header claiming 50 mm voxels (a 2.5 m head) is refused by the header check before
    registration, an error row too. Since the one scan entry point (check_scan, issue 27) the
    refusal comes when predict first reads the header, with preprocessing's message."""
    bad = tmp_path / "vox50.nii.gz"
    nib.save(nib.Nifti1Image(template_4mm * 500.0, np.diag([50.0] * 3 + [1.0])), bad)
    code, table = _run(tmp_path / "out.csv", cache, str(bad), str(good[0]),
                       "--model", str(model_dir), "--age", "40", "50")
    assert code == 1
    _assert_failed(table, bad, "field of view 2500 x 2950 x 2400 mm")
    _assert_completed(table, good[:1])


@pytest.mark.slow
def test_native_scan_that_registration_cannot_align(model_dir: Path, good: list[Path],
                                                    template_4mm: np.ndarray, tmp_path: Path,
                                                    cache: Path) -> None:
    """A real registration (about 40 s): a plausible header, but no brain (the template's
    voxels shuffled), so ANTs finds nothing to align (score about 0)."""
    rng = np.random.default_rng(0)
    noise = rng.permutation(template_4mm.ravel()).reshape(template_4mm.shape) * 500.0
    affine = template_grid(SCAN_MM)[1].copy()
    affine[0, 3] += 6.0  # off the template grid: native
    bad = _native(tmp_path / "shuffled.nii.gz", noise, affine)
    code, table = _run(tmp_path / "out.csv", cache, str(bad), str(good[0]),
                       "--model", str(model_dir), "--age", "40", "50")
    assert code == 1
    _assert_failed(table, bad, "registration to MNI152 failed the QC", "threshold 5.0 mm")
    misfit = table.loc[table["path"] == str(bad), "registration_misfit_mm"]
    assert not misfit.map(registration_passes).any()
    _assert_completed(table, good[:1])


# --- 8: ages of participants.tsv ------------------------------------------------------------


def test_bids_invalid_ages_are_unknown_with_a_warning(model_dir: Path, good: list[Path],
                                                      tmp_path: Path, cache: Path,
                                                      caplog) -> None:
    root = tmp_path / "bids"
    subjects = ("01", "02", "03", "04", "05", "06")
    for sub in subjects:
        (root / f"sub-{sub}" / "anat").mkdir(parents=True)
        shutil.copy(good[0], root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
    tsv = root / "participants.tsv"
    tsv.write_text("participant_id\tage\nsub-01\t42\nsub-02\t300\nsub-03\t-5\nsub-04\tabc\n"
                   "sub-05\t30\nsub-05\t31\nsub-06\tn/a\n")  # lines 2-8
    code, table = _run(tmp_path / "out.csv", cache, str(root), "--model", str(model_dir))
    assert code == 0
    assert table["participant_id"].tolist() == [f"sub-{s}" for s in subjects]
    np.testing.assert_array_equal(table["age"], [42.0] + [np.nan] * 5)
    assert table["brain_age"].notna().all() and table["brain_age_gap"].notna().tolist() == [
        True] + [False] * 5
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for where, problem in ((f"{tsv} line 3", "age '300' is outside 0-120 years"),
                           (f"{tsv} line 4", "age '-5' is outside 0-120 years"),
                           (f"{tsv} line 5", "age 'abc' is not a number"),
                           (str(tsv), "appears on lines 6, 7")):
        assert any(where in m and problem in m and "age is unknown" in m for m in warned), (
            where, warned)
    assert not any("sub-06" in m for m in warned)  # n/a: unknown, not an error


# --- 9: model card and bias correction ------------------------------------------------------


def _copy_model(model_dir: Path, tmp_path: Path) -> Path:
    return shutil.copytree(model_dir, tmp_path / "models")


def _edit_card(root: Path, change) -> None:
    path = root / model_folder.MODEL_CARD_FILE
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(heads=[c["heads"]["l1"]]), "heads must be a mapping; got list"),
    (lambda c: c.update(preprocess="MNI"), "preprocess must be a mapping; got str 'MNI'"),
    (lambda c: c.update(grid={}),
     "grid: required key 'shape' is missing; grid: required key 'affine' is missing"),
    (lambda c: c["grid"].update(shape=[21, 25]), "grid.shape must hold 3 item(s)"),
    (lambda c: c["preprocess"].update(grid_mm="8"), "preprocess.grid_mm must be a number"),
    (lambda c: c["heads"]["l1"].update(checkpoint=7), "heads.l1.checkpoint must be a string"),
    (lambda c: c["heads"].update({"..": c["heads"]["l1"]}),
     "heads: key '..' must be a folder name of the model folder"),
])
def test_model_card_with_wrong_types_names_the_field(model_dir: Path, tmp_path: Path, change,
                                                     message: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    _edit_card(root, change)
    with pytest.raises(model_folder.ModelFolderError, match="is not a valid model card") as info:
        model_folder.load_model_folder(root)
    assert str(root / model_folder.MODEL_CARD_FILE) in str(info.value)
    assert message in str(info.value)


def _absolute(root: Path, outside: Path) -> str:
    return str(outside)


def _climbing(root: Path, outside: Path) -> str:
    return os.path.relpath(outside, root)  # ../elsewhere/best.pt


def _symlinked(root: Path, outside: Path) -> str:
    (root / "l1" / "best.pt").unlink()
    (root / "l1" / "best.pt").symlink_to(outside)
    return "l1/best.pt"


@pytest.mark.parametrize(("point", "message"), [
    (_absolute, "is an absolute path"),
    (_climbing, "outside the model folder"),
    (_symlinked, "outside the model folder"),
])
def test_checkpoint_outside_the_model_folder_is_refused(model_dir: Path, tmp_path: Path, point,
                                                        message: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    outside = tmp_path / "elsewhere" / "best.pt"
    outside.parent.mkdir()
    shutil.copy(root / "l1" / "best.pt", outside)  # the same weights: only the place is wrong
    checkpoint = point(root, outside)
    _edit_card(root, lambda c: c["heads"]["l1"].update(checkpoint=checkpoint))
    with pytest.raises(model_folder.ModelFolderError, match=message) as info:
        model_folder.load_model_folder(root)
    assert str(root / model_folder.MODEL_CARD_FILE) in str(info.value)
    assert f"heads.l1.checkpoint {checkpoint!r}" in str(info.value)


@pytest.mark.parametrize(("coefficients", "message"), [
    ({"slope": 0.0, "intercept": 10.0}, "divides by its slope, which is 0"),
    ({"slope": math.nan, "intercept": 10.0}, "{'slope': nan} must be finite numbers"),
    ({"slope": 0.8, "intercept": math.inf}, "{'intercept': inf} must be finite numbers"),
])
def test_bias_correction_that_cannot_correct_is_refused(model_dir: Path, tmp_path: Path,
                                                        coefficients: dict, message: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    path = root / "l1" / model_folder.BIAS_CORRECTION_FILE
    path.write_text(json.dumps({"method": "linear", "coefficients": coefficients, "n_fit": 9,
                                "age_range": [20.0, 80.0]}))  # json writes NaN and Infinity
    with pytest.raises(model_folder.ModelFolderError, match="is not a valid age-bias correction") as info:
        model_folder.load_model_folder(root)
    assert str(path) in str(info.value) and message in str(info.value)


def test_invalid_card_on_the_command_line(model_dir: Path, good: list[Path], tmp_path: Path,
                                          cache: Path, capsys) -> None:
    root = _copy_model(model_dir, tmp_path)
    _edit_card(root, lambda c: c.update(preprocess="MNI"))
    code, table = _run(tmp_path / "out.csv", cache, str(good[0]), "--model", str(root))
    assert code == 2 and table is None
    err = capsys.readouterr().err
    assert str(root / model_folder.MODEL_CARD_FILE) in err and "preprocess must be a mapping" in err


# --- 10: the output file --------------------------------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "folder.csv", "is a folder; give a file name"),
    (lambda d: d / "file.txt" / "out.csv", "file.txt is a file, not a folder"),
    (lambda d: d / "file.txt" / "deeper" / "out.csv", "file.txt is a file, not a folder"),
])
def test_unusable_out_fails_before_any_work(model_dir: Path, good: list[Path], tmp_path: Path,
                                            capsys, make, message: str) -> None:
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    out = make(tmp_path)
    code, _ = _run(out, tmp_path / "cache", str(good[0]), "--model", str(model_dir))
    assert code == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and message in err
    assert not (tmp_path / "cache").exists()  # nothing was preprocessed


def test_existing_out_needs_overwrite(model_dir: Path, good: list[Path], tmp_path: Path,
                                      cache: Path, capsys) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("earlier results\n")
    code, _ = _run(out, cache, str(good[0]), "--model", str(model_dir))
    assert code == 2 and out.read_text() == "earlier results\n"
    assert f"--out {out} exists; pass --overwrite" in capsys.readouterr().err
    code, table = _run(out, cache, str(good[0]), "--model", str(model_dir), "--overwrite")
    assert code == 0
    _assert_completed(table, good[:1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no temp file


def _interrupt_after_first_scan(monkeypatch, interrupt) -> list[int]:
    """Make the per-scan preprocessing step call ``interrupt()`` when the second scan starts."""
    calls: list[int] = []
    real = bp.preprocess_cohort

    def step(paths, *args, **kwargs):
        calls.append(len(paths))
        if len(calls) == 2:
            interrupt()
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(bp, "preprocess_cohort", step)
    return calls


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class _SigtermReachedTheTest(Exception):
    pass


def _unhandled_sigterm(signum, frame) -> None:
    raise _SigtermReachedTheTest("brainage predict did not handle SIGTERM")


@pytest.mark.parametrize(("interrupt", "status", "name"), [
    (_keyboard_interrupt, 130, "Ctrl-C"), (_sigterm, 143, "SIGTERM")])
def test_interrupted_run_writes_the_scans_that_finished(model_dir: Path, good: list[Path],
                                                        tmp_path: Path, cache: Path, capsys,
                                                        monkeypatch, interrupt, status: int,
                                                        name: str) -> None:
    calls = _interrupt_after_first_scan(monkeypatch, interrupt)
    out = tmp_path / "predictions.csv"
    previous = signal.signal(signal.SIGTERM, _unhandled_sigterm)  # never kill the test run
    try:
        code, table = _run(out, cache, *map(str, good), "--model", str(model_dir),
                           "--age", "30", "40", "50")
        restored = signal.getsignal(signal.SIGTERM)
    except (KeyboardInterrupt, _SigtermReachedTheTest) as err:
        pytest.fail(f"the interrupt escaped brainage predict: {err!r}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == [1, 1] and code == status
    assert table["path"].tolist() == [str(good[0])] and table["age"].tolist() == [30.0]
    _assert_completed(table, good[:1])
    assert f"interrupted ({name}) after 1 scan(s)" in capsys.readouterr().err
    assert restored is _unhandled_sigterm  # predict put the caller's handler back


def test_help_describes_overwrite(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in out and "replace --out if it exists" in out
    assert "exit 130" in out
