"""Bad model folders and scans given to ``brainage predict`` / ``preprocess`` (issue 26, part B).

Checkpoints without a checksum in the card, tampered checkpoints with a valid checksum, damaged
or oversized ``ood.npz``, malformed ``conformal.json``, deeply nested or huge-integer JSON,
saliency maps that would be overwritten, image formats the preprocessing does not read,
outputs on a read-only file system, resampling that would not fit in memory. Each message
must name the file; the good scans of the same run complete."""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainage._utils import sha256_file
from brainage.analysis.uncertainty import FeatureOOD
from brainage.cli import main
from brainage.data.cohort import check_header
from brainage.imaging import preprocess as pp
from brainage.imaging.preprocess import resample_to_grid
from brainage.imaging.registration import template_grid, template_images
from brainage.inference import model_folder
from brainage.inference.model_folder import save_calibration, save_ood
from brainage.models.datasets import VolumeDataset
from brainage.models.features import feature_size
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, load_model, train_l1
from brainage.study.trust import calibrate

MNI = "MNI152NLin2009cSym"
GRID_MM = 8.0  # the model's grid, cropped to the brain: (21, 25, 22)
SCAN_MM = 4.0  # the scans lie on the uncropped 4 mm template grid: (50, 59, 48)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with one head (l1, one epoch), its model.json, an OOD reference and a
    conformal calibration, both bound to the checkpoint."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape, _ = template_grid(GRID_MM, crop_to_brain=True)
    images = rng.gamma(2.0, 0.5, size=(4, *shape)).astype(np.float32)  # (N, D, H, W)
    train = VolumeDataset(images[:3], np.array([20.0, 50.0, 80.0]), ["a", "b", "c"])
    val = VolumeDataset(images[3:], np.array([40.0]), ["d"])
    root = tmp_path_factory.mktemp("run") / "models"
    train_l1(train, val, ModelConfig(depth=10, widths=(4, 8, 16, 32)),
             TrainConfig(epochs=1, batch_size=2, augment=None, progress=False, device="cpu",
                         probe_every=0), root / "l1")
    model_folder.write_model_card(root, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                          "skull_stripped": True, "crop_to_brain": True},
                        saliency_layer="encoder.layer2", profile="test")
    # the integrated-gradients reference of --saliency (notebook 02 writes it since issue 27)
    model_folder.save_ig_reference(root, images[:3].mean(axis=0),
                                   template_grid(GRID_MM, crop_to_brain=True)[1])
    sha = json.loads((root / model_folder.MODEL_CARD_FILE).read_text())["heads"]["l1"]["sha256"]
    dim = feature_size(load_model(root / "l1" / "best.pt"))
    ood = FeatureOOD.fit(rng.normal(size=(30, dim)), rng.normal(size=(25, dim)), rate=0.1, k=3)
    save_ood(root / "l1", ood, sha)
    age = rng.uniform(20, 80, 40)
    rows = pd.DataFrame({"model": "l1", "split": "val", "age": age,
                         "predicted": age + rng.normal(0, 5, 40)})
    save_calibration(root / "l1", replace(calibrate(rows, {})["l1"], checkpoint_sha256=sha))
    return root


@pytest.fixture(scope="module")
def template_4mm() -> np.ndarray:
    template, _ = template_images()
    return resample_to_grid(template, template_grid(SCAN_MM))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, template_4mm: np.ndarray) -> list[Path]:
    """Two good MNI-space scans (shared: the tests do not change them)."""
    folder, rng = tmp_path_factory.mktemp("good"), np.random.default_rng(0)
    paths = []
    for i in range(2):
        data = template_4mm * 300.0 * (i + 1) + rng.normal(0.0, 3.0, template_4mm.shape)
        paths.append(folder / f"good{i}.nii.gz")
        nib.save(nib.Nifti1Image(data.astype(np.float32), template_grid(SCAN_MM)[1]), paths[-1])
    return paths


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _copy_model(model_dir: Path, tmp_path: Path) -> Path:
    return shutil.copytree(model_dir, tmp_path / "models")


def _edit_card(root: Path, change) -> None:
    path = root / model_folder.MODEL_CARD_FILE
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


def _run(out: Path, cache: Path, *argv: str) -> tuple[int, pd.DataFrame | None]:
    code = main(["-q", "predict", *argv, "--out", str(out), "--cache", str(cache)])
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]) if out.is_file() else None
    return code, table


def _rewrite_checkpoint(root: Path, change) -> Path:
    """Change ``l1/best.pt``'s payload and record its new checksum in the card (a tampered
    checkpoint whose checksum is valid)."""
    path = root / "l1" / "best.pt"
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    digest = sha256_file(path)
    _edit_card(root, lambda c: c["heads"]["l1"].update(sha256=digest))
    return path


# --- defect 3: the checkpoint checksum is required -------------------------------------------


def test_card_without_checksum_is_refused(model_dir: Path, tmp_path: Path) -> None:
    root = _copy_model(model_dir, tmp_path)
    _edit_card(root, lambda c: c["heads"]["l1"].pop("sha256"))
    with pytest.raises(model_folder.ModelFolderError, match="has no checkpoint checksum") as info:
        model_folder.load_model_folder(root)
    assert str(root / model_folder.MODEL_CARD_FILE) in str(info.value) and "--allow-unverified" in str(
        info.value)


def test_card_without_checksum_is_used_with_a_warning_when_allowed(model_dir: Path,
                                                                   tmp_path: Path) -> None:
    root = _copy_model(model_dir, tmp_path)
    _edit_card(root, lambda c: c["heads"]["l1"].pop("sha256"))
    with pytest.warns(model_folder.UnverifiedCheckpointWarning, match="heads.l1.sha256"):
        folder = model_folder.load_model_folder(root, allow_unverified=True)
    assert folder.trust["l1"].ood is not None and folder.trust["l1"].calibration is not None


def test_other_weights_without_checksum_break_the_trust_files_binding(model_dir: Path,
                                                                      tmp_path: Path) -> None:
    """The issue's case: checksum deleted, other weights copied over best.pt. Even when
    unverified weights are allowed, ood.npz and conformal.json were fitted for the old ones."""
    root = _copy_model(model_dir, tmp_path)
    path = root / "l1" / "best.pt"
    payload = torch.load(path, weights_only=True)
    payload["model"] = {k: v + 0.01 if v.is_floating_point() else v
                        for k, v in payload["model"].items()}
    torch.save(payload, path)
    _edit_card(root, lambda c: c["heads"]["l1"].pop("sha256"))
    with pytest.warns(model_folder.UnverifiedCheckpointWarning), \
            pytest.raises(model_folder.ModelFolderError, match="fitted for other weights") as info:
        model_folder.load_model_folder(root, allow_unverified=True)
    assert str(root / "l1") in str(info.value)


def test_cli_refuses_a_card_without_checksum(model_dir: Path, good: list[Path], tmp_path: Path,
                                             cache: Path, capsys) -> None:
    root = _copy_model(model_dir, tmp_path)
    _edit_card(root, lambda c: c["heads"]["l1"].pop("sha256"))
    code, table = _run(tmp_path / "out.csv", cache, str(good[0]), "--model", str(root))
    assert code == 2 and table is None
    assert "has no checkpoint checksum" in capsys.readouterr().err
    with pytest.warns(model_folder.UnverifiedCheckpointWarning):
        code, table = _run(tmp_path / "out.csv", cache, str(good[0]), "--model", str(root),
                           "--allow-unverified")
    assert code == 0 and table["brain_age"].notna().all()


# --- defects 7 and 8: tampered checkpoints with a valid checksum -----------------------------


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.pop("model_config"), "lacks the field(s) ['model_config']"),
    (lambda p: p.pop("model"), "lacks the field(s) ['model']"),
    (lambda p: p.update(age_mean="sixty"), "field 'age_mean' must be a finite number; got 'sixty'"),
    (lambda p: p.update(age_mean=math.nan), "field 'age_mean' must be a finite number; got nan"),
    (lambda p: p.update(age_scale=0.0), "field 'age_scale' must be a finite number > 0; got 0.0"),
    (lambda p: p["model"].update({"age_scale": torch.tensor(0.0, dtype=torch.float64)}),
     "the weights' buffer 'age_scale' is 0.0"),
    (lambda p: p["model_config"].update(depth="ten"), "do not build a model"),
])
def test_tampered_checkpoint_with_a_valid_checksum(model_dir: Path, tmp_path: Path, change,
                                                   message: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    path = _rewrite_checkpoint(root, change)
    with pytest.raises(model_folder.ModelFolderError) as info:
        model_folder.load_model_folder(root)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


# --- defect 7: ood.npz ------------------------------------------------------------------------


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _junk(path: Path) -> None:
    """Random bytes behind a zip file's signature (np.load then takes it for an npz)."""
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(4000))


def _bad_crc(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # np.savez stores its members uncompressed
        info = archive.getinfo("reference.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    raw[start] ^= 0xFF  # one byte of the array's data
    path.write_bytes(bytes(raw))


def _huge_header(path: Path) -> None:
    """Replace 'reference' by a header declaring a (400000, 400000) float64 array."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (400000, 400000)})
    members["reference.npy"] = header.getvalue() + bytes(64)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(("damage", "message"), [
    (_truncated, "cannot be read as an npz file"),
    (_junk, "cannot be read as an npz file"),
    (_bad_crc, "Bad CRC-32"),
    (_huge_header, "declares shape (400000, 400000) of float64 (1,280,000,000,000 bytes)"),
])
def test_damaged_ood_npz_is_refused_naming_the_file(model_dir: Path, tmp_path: Path, damage,
                                                    message: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    path = root / "l1" / model_folder.OOD_FILE
    damage(path)
    with pytest.raises(model_folder.ModelFolderError) as info:
        model_folder.load_model_folder(root)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_ood_npz_inflating_past_the_limit_is_refused(model_dir: Path, tmp_path: Path,
                                                     monkeypatch) -> None:
    """A zip bomb in miniature: 8 MB of zeros compressed to a few kB, the limit set to 1 MB
    (the real limit, 1 GiB, works the same from the zip directory's sizes)."""
    root = _copy_model(model_dir, tmp_path)
    path = root / "l1" / model_folder.OOD_FILE
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["reference"] = np.zeros((1000, 1000))  # 8 MB
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(model_folder, "OOD_MAX_BYTES", 1_000_000)
    with pytest.raises(model_folder.ModelFolderError, match="inflate to more than 1,000,000 bytes") as info:
        model_folder.load_model_folder(root)
    assert str(path) in str(info.value)


def test_ood_npz_under_the_limit_is_read(model_dir: Path) -> None:
    ood = model_folder.load_ood(model_dir / "l1")
    assert ood is not None and ood.reference.shape[0] == 30


# --- defects 7, 8 and 9: conformal.json and JSON files ---------------------------------------


def test_conformal_bias_correction_of_the_wrong_type(model_dir: Path, tmp_path: Path) -> None:
    root = _copy_model(model_dir, tmp_path)
    path = root / "l1" / model_folder.CONFORMAL_FILE
    data = json.loads(path.read_text())
    data["bias_correction"] = [1, 2]
    path.write_text(json.dumps(data))
    with pytest.raises(model_folder.ModelFolderError, match="field 'bias_correction' must be null or a "
                                                  "mapping") as info:
        model_folder.load_model_folder(root)
    assert str(path) in str(info.value) and "got list [1, 2]" in str(info.value)


@pytest.mark.parametrize("name", [model_folder.CONFORMAL_FILE, model_folder.OOD_FILE,
                                  model_folder.BIAS_CORRECTION_FILE])
def test_trust_file_that_is_a_folder_is_not_absent(model_dir: Path, tmp_path: Path,
                                                   name: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    path = root / "l1" / name
    path.unlink(missing_ok=True)
    path.mkdir()
    with pytest.raises(model_folder.ModelFolderError, match="is a directory, not a file") as info:
        model_folder.load_model_folder(root)
    assert str(path) in str(info.value)


def _deep(root: Path, name: str) -> str:
    return "[" * 100_000 + "]" * 100_000


def _long_int(root: Path, name: str) -> str:
    text = (root / name).read_text()
    key = '"format"'
    return text.replace(key, f'"n": {"9" * 5000}, {key}', 1)


@pytest.mark.parametrize("name", [model_folder.MODEL_CARD_FILE, f"l1/{model_folder.CONFORMAL_FILE}",
                                  f"l1/{model_folder.BIAS_CORRECTION_FILE}"])
@pytest.mark.parametrize(("make", "message"), [
    (_deep, "nested too deeply"), (_long_int, "cannot be read as JSON")])
def test_json_that_python_cannot_parse_names_the_file(model_dir: Path, tmp_path: Path,
                                                      name: str, make, message: str) -> None:
    root = _copy_model(model_dir, tmp_path)
    if not (root / name).exists():  # the fixture's head has no bias correction: write one
        (root / name).write_text(json.dumps({"format": "x", "method": "linear"}))
    (root / name).write_text(make(root, name))
    with pytest.raises(model_folder.ModelFolderError) as info:
        model_folder.load_model_folder(root)
    assert str(root / name) in str(info.value) and message in str(info.value), str(info.value)


def test_deep_json_card_on_the_command_line_is_one_line(model_dir: Path, good: list[Path],
                                                        tmp_path: Path, cache: Path,
                                                        capsys) -> None:
    root = _copy_model(model_dir, tmp_path)
    (root / model_folder.MODEL_CARD_FILE).write_text(_deep(root, model_folder.MODEL_CARD_FILE))
    code, table = _run(tmp_path / "out.csv", cache, str(good[0]), "--model", str(root))
    err = capsys.readouterr().err
    assert code == 2 and table is None and "Traceback" not in err
    assert str(root / model_folder.MODEL_CARD_FILE) in err and "nested too deeply" in err


# --- defect 2: saliency maps are not overwritten without --overwrite --------------------------


def test_saliency_maps_are_not_overwritten(model_dir: Path, good: list[Path], tmp_path: Path,
                                           cache: Path, capsys) -> None:
    maps = tmp_path / "maps"
    code, _ = _run(tmp_path / "a.csv", cache, str(good[0]), "--model", str(model_dir),
                   "--saliency", str(maps))
    written = maps / "l1" / "good0.nii.gz"
    assert code == 0 and written.is_file()
    written.write_bytes(b"an edited map")
    code, table = _run(tmp_path / "b.csv", cache, str(good[0]), "--model", str(model_dir),
                       "--saliency", str(maps))
    assert code == 2 and table is None and written.read_bytes() == b"an edited map"
    err = capsys.readouterr().err
    assert f"--saliency {maps} holds 1 saliency map(s) already" in err and "--overwrite" in err
    code, table = _run(tmp_path / "b.csv", cache, str(good[0]), "--model", str(model_dir),
                       "--saliency", str(maps), "--overwrite")
    assert code == 0 and nib.load(written).shape == (21, 25, 22)


def test_saliency_path_that_is_a_file_is_refused(model_dir: Path, good: list[Path],
                                                 tmp_path: Path, capsys) -> None:
    (tmp_path / "maps").write_text("not a folder")
    code, _ = _run(tmp_path / "out.csv", tmp_path / "cache", str(good[0]), "--model",
                   str(model_dir), "--saliency", str(tmp_path / "maps"))
    assert code == 2 and "exists and is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before any work


# --- defect 9: formats, outputs, options -------------------------------------------------------


def _mgz(folder: Path, data: np.ndarray) -> Path:
    path = folder / "scan.mgz"
    nib.save(nib.MGHImage(data.astype(np.float32), template_grid(SCAN_MM)[1]), path)
    return path


def _analyze(folder: Path, data: np.ndarray) -> Path:
    path = folder / "scan.img"
    nib.save(nib.AnalyzeImage(data.astype(np.float32), template_grid(SCAN_MM)[1]), path)
    return path


@pytest.mark.parametrize(("make", "kind"), [(_mgz, "a FreeSurfer MGH file (.mgz)"),
                                            (_analyze, "an Analyze or NIfTI-pair image (.img/.hdr)")])
def test_other_image_formats_are_refused_by_name(model_dir: Path, good: list[Path],
                                                 template_4mm: np.ndarray, tmp_path: Path,
                                                 cache: Path, make, kind: str) -> None:
    bad = make(tmp_path, template_4mm * 500.0)
    code, table = _run(tmp_path / "out.csv", cache, str(good[0]), str(bad), str(good[1]),
                       "--model", str(model_dir))
    assert code == 1
    error = table.loc[table["path"] == str(bad), "error"].item()
    assert f"scan {bad}: the file is {kind}, which brainage does not read" in error and "\n" not in error
    assert "truncated" not in error and "install" not in error
    done = table[table["path"].isin([str(p) for p in good])]
    assert done["brain_age"].notna().all() and len(done) == 2
    with pytest.raises(pp.PreprocessError, match=f"scan {bad}: the file is "):
        pp.load_scan(bad)


def test_valid_mgz_is_not_called_truncated_by_the_header_check(template_4mm: np.ndarray,
                                                               tmp_path: Path) -> None:
    problems, readable = check_header(nib.load(_mgz(tmp_path, template_4mm * 500.0)))
    assert readable and not any("truncated" in p for p in problems), problems


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="no /sys on this system")
def test_out_on_a_pseudo_file_system_fails_before_any_work(model_dir: Path, good: list[Path],
                                                           tmp_path: Path, capsys) -> None:
    code, _ = _run(Path("/sys/x.csv"), tmp_path / "cache", str(good[0]), "--model",
                   str(model_dir))
    assert code == 2 and "--out /sys/x.csv: cannot write a file in /sys" in (
        capsys.readouterr().err)
    assert not (tmp_path / "cache").exists()


def test_preprocess_jobs_zero_is_refused(good: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.nii.gz"
    code = main(["-q", "preprocess", str(good[0]), str(out), "--space", MNI, "--jobs", "0"])
    assert code == 2 and not out.exists()
    assert "n_jobs (--jobs) must be" in capsys.readouterr().err


# --- defect 5: resampling that cannot fit in memory -------------------------------------------


def test_tiny_grid_is_refused_from_the_header(good: list[Path], tmp_path: Path,
                                              capsys) -> None:
    out = tmp_path / "out.nii.gz"
    code = main(["-q", "preprocess", str(good[0]), str(out), "--space", MNI, "--grid-mm",
                 "0.05"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"scan {good[0]}: resampling" in err and "onto the 0.05 mm grid" in err
    assert "would need about" in err and " TB of memory" in err


def test_fine_scan_over_the_memory_budget_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A 1 mm scan of 160 x 170 x 150 voxels onto the 4 mm grid needs about 0.4 GB; with a
    budget of 0.2 GB it is refused before its data is read, and the message says both."""
    path = tmp_path / "fine.nii.gz"
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-80, -100, -70)
    nib.save(nib.Nifti1Image(np.ones((160, 170, 150), np.float32), affine), path)
    monkeypatch.setattr(pp, "memory_budget", lambda: 200_000_000)
    with pytest.raises(pp.PreprocessError) as info:
        pp.preprocess_file(path, space=MNI, grid_mm=4.0)
    assert f"scan {path}: resampling its 160 x 170 x 150 voxels (1 x 1 x 1 mm)" in str(info.value)
    assert "more than the 0.2 GB here" in str(info.value)
    monkeypatch.setattr(pp, "memory_budget", lambda: 10**12)
    with pytest.raises(pp.PreprocessError, match="the image is constant"):  # now its data is read
        pp.preprocess_file(path, space=MNI, grid_mm=4.0)


@pytest.mark.parametrize("grid_mm", [1.0, 2.0, 4.0])
def test_real_scans_are_not_refused_for_memory(ixi10: Path, grid_mm: float) -> None:
    """The normal case the memory check must let through: every real IXI scan, on the grids the
    study uses (the estimate stays far below any machine's memory)."""
    scans = sorted(ixi10.glob("sub-*/anat/*_T1w.nii.gz"))
    assert len(scans) == 10
    for scan in scans:
        pp._check_resampling_memory(scan, template_grid(grid_mm))
