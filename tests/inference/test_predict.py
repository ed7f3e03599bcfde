"""Tests of brainage.inference.predict and model_folder: the model card and folder, input discovery, space detection, and
``brainage predict`` end to end on tiny MNI-space scans (files, a BIDS folder, corrupt files,
saliency), plus one real native IXI scan (slow, skipped when absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainage.analysis.metrics import AgeBiasCorrection
from brainage.cli import main
from brainage.imaging.preprocess import PREPROCESS_VERSION, preprocess_file, resample_to_grid
from brainage.imaging.registration import registration_passes, template_grid, template_images
from brainage.inference import model_folder
from brainage.inference import predict as bp
from brainage.models.train import load_model
from tests.conftest import IXI10

MNI = "MNI152NLin2009cSym"
GRID_MM = 8.0  # the model's grid, cropped to the brain: (21, 25, 22)
SCAN_MM = 4.0  # the test scans lie on the uncropped 4 mm template grid: (50, 59, 48)
#: The rnc head's stored correction: corrected = (predicted - intercept) / slope.
CORRECTION = AgeBiasCorrection("linear", {"slope": 0.8, "intercept": 10.0}, 12, (20.0, 80.0))


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_4mm() -> np.ndarray:
    """nilearn's template resampled onto the 4 mm template grid (computed once)."""
    template, _ = template_images()
    return resample_to_grid(template, template_grid(SCAN_MM))


def _mni_scan(path: Path, base: np.ndarray, scale: float, rng: np.random.Generator) -> Path:
    """The 4 mm template, rescaled, with 1 % noise: an MNI-space scan on its template grid."""
    data = base * scale + rng.normal(0.0, 0.01 * scale, base.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), template_grid(SCAN_MM)[1]), path)
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory, template_4mm: np.ndarray) -> list[Path]:
    """Three MNI-space scans with different intensities (shared: the tests do not change them)."""
    folder, rng = tmp_path_factory.mktemp("in"), np.random.default_rng(0)
    return [_mni_scan(folder / f"scan{i}.nii.gz", template_4mm, 300.0 * (i + 1), rng)
            for i in range(3)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessing cache shared by the tests: each scan is preprocessed once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def bids(tmp_path: Path, rng: np.random.Generator, template_4mm: np.ndarray) -> Path:
    """A BIDS folder: sub-01 (two sessions), sub-02 with age n/a, participants.tsv."""
    root = tmp_path / "bids"
    for sub, ses in (("01", "ses-1"), ("01", "ses-2"), ("02", None)):
        anat = root / f"sub-{sub}" / (ses or "") / "anat"
        name = f"sub-{sub}_{ses}_T1w.nii.gz" if ses else f"sub-{sub}_T1w.nii.gz"
        _mni_scan(anat / name, template_4mm, 500.0, rng)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t42.5\nsub-02\tn/a\n")
    return root


def _run(tmp_path: Path, cache: Path, *argv: str) -> tuple[int, pd.DataFrame | None]:
    out = tmp_path / "out" / "predictions.csv"
    code = main(["-q", "predict", *argv, "--out", str(out), "--cache", str(cache)])
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]) if out.exists() else None
    return code, table


def _expected_ages(model_dir: Path, scan: Path) -> dict[str, float]:
    """Each head's prediction for a scan, preprocessed and run independently of predict."""
    img = preprocess_file(scan, space=MNI, grid_mm=GRID_MM, crop_to_brain=True)
    x = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32))[None, None]  # (1, 1, D, H, W)
    with torch.no_grad():
        return {head: float(load_model(model_dir / head / "best.pt")(x)[0])
                for head in ("rnc", "l1")}


# --- model card and folder ------------------------------------------------------------------


def test_model_card_records_what_predict_needs(model_dir: Path) -> None:
    card = json.loads((model_dir / model_folder.MODEL_CARD_FILE).read_text())
    shape, affine = template_grid(GRID_MM, crop_to_brain=True)
    assert card["format"] == model_folder.MODEL_CARD_FORMAT and card["profile"] == "test"
    assert list(card["heads"]) == ["rnc", "l1"]
    assert card["heads"]["rnc"]["checkpoint"] == "rnc/best.pt"
    assert card["preprocess"] == {"space": MNI, "grid_mm": GRID_MM, "skull_stripped": True,
                                  "crop_to_brain": True, "brain_extraction": "deepbet",
                                  "version": PREPROCESS_VERSION}
    assert tuple(card["grid"]["shape"]) == shape
    np.testing.assert_allclose(card["grid"]["affine"], affine)
    assert card["versions"]["torch"] and card["saliency_layer"] == "encoder.layer2"
    assert card["registration_qc"] == {"figure": "outline misfit (mm)", "threshold_mm": 5.0}


def test_load_model_folder_all_heads_and_one_head(model_dir: Path) -> None:
    folder = model_folder.load_model_folder(model_dir)
    assert list(folder.models) == ["rnc", "l1"]
    assert folder.corrections["rnc"] == CORRECTION and folder.corrections["l1"] is None
    assert folder.grid_shape == (21, 25, 22)
    one = model_folder.load_model_folder(model_dir / "l1")
    assert list(one.models) == ["l1"] and one.root == model_dir


def _edit_card(root: Path, change) -> None:
    path = root / model_folder.MODEL_CARD_FILE
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize(("breaks", "culprit", "message"), [
    (lambda r: (r / "model.json").unlink(), "model.json", "model.json is missing"),
    (lambda r: (r / "model.json").write_text("{not json"), "model.json", "cannot be read as JSON"),
    (lambda r: _edit_card(r, lambda c: c.update(format="other/9")), "model.json",
     "field 'format' must be 'brainage-model/1', got 'other/9'"),  # read_tagged_json
    (lambda r: _edit_card(r, lambda c: c["preprocess"].update(version="0")), "model.json",
     "preprocessing version '0'"),
    (lambda r: _edit_card(r, lambda c: c.update(heads={})), "model.json", "lists no head"),
    (lambda r: _edit_card(r, lambda c: c["grid"].update(shape=[9, 9, 9])), "model.json",
     r"stored grid \(shape \(9, 9, 9\)\) differs"),
    (lambda r: _edit_card(r, lambda c: c.update(saliency_layer="encoder.layer9")), "model.json",
     "saliency_layer 'encoder.layer9' is not a module"),
    (lambda r: (r / "l1" / "best.pt").unlink(), "l1/best.pt", "checkpoint .* is missing"),
    (lambda r: torch.save({"format": "brainage-checkpoint/1"}, r / "l1" / "best.pt"),
     "l1/best.pt", "SHA-256 differs"),
    (lambda r: (r / "rnc" / "bias_correction.json").write_text('{"method": "cubic"}'),
     "rnc/bias_correction.json", "not a valid age-bias correction"),
])
def test_bad_model_folder_names_the_file(model_dir: Path, tmp_path: Path, breaks, culprit: str,
                                         message: str) -> None:
    root = shutil.copytree(model_dir, tmp_path / "models")
    breaks(root)
    with pytest.raises(model_folder.ModelFolderError, match=message) as info:
        model_folder.load_model_folder(root)
    assert str(root / culprit) in str(info.value)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(model_folder.ModelFolderError, match=r"model folder .*nowhere does not exist"):
        model_folder.load_model_folder(tmp_path / "nowhere")


def test_write_model_card_rejects_folder_without_heads(tmp_path: Path) -> None:
    with pytest.raises(model_folder.ModelFolderError, match=rf"{tmp_path} holds no head: no <name>/best.pt"):
        model_folder.write_model_card(tmp_path, preprocess={}, saliency_layer=None, profile="x")


def test_write_model_card_rejects_foreign_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "rnc").mkdir()
    checkpoint = tmp_path / "rnc" / "best.pt"
    torch.save({"format": "someone-else/2", "weights": torch.zeros(2)}, checkpoint)
    with pytest.raises(model_folder.ModelFolderError, match="is not a brainage checkpoint: field 'format' must be 'brainage-checkpoint/1', got 'someone-else/2'") as info:
        model_folder.write_model_card(tmp_path, preprocess={}, saliency_layer=None, profile="x")
    assert str(checkpoint) in str(info.value)


# --- inputs ---------------------------------------------------------------------------------


def _on_grid(tmp_path: Path, shape, affine, name: str = "s.nii.gz") -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), affine), path)
    return path


def _flipped_4mm(tmp_path: Path) -> Path:
    """The 4 mm template grid stored left-right flipped (LAS): still MNI space."""
    shape, affine = template_grid(4.0)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = shape[0] - 1
    return _on_grid(tmp_path, shape, affine @ flip)


def _shifted_4mm(tmp_path: Path) -> Path:
    shape, affine = template_grid(4.0)
    moved = affine.copy()
    moved[0, 3] += 2.0  # half a voxel off the template grid
    return _on_grid(tmp_path, shape, moved)


@pytest.mark.parametrize(("make", "space"), [
    (lambda d: _on_grid(d, *template_grid(4.0)), MNI),
    (lambda d: _on_grid(d, *template_grid(2.0)), MNI),  # nilearn's own 2 mm grid
    (lambda d: _on_grid(d, *template_grid(8.0, crop_to_brain=True)), MNI),
    (_flipped_4mm, MNI),
    (_shifted_4mm, "native"),
    (lambda d: _on_grid(d, (7, 8, 9), np.diag([1.0, 1.2, 1.0, 1.0])), "native"),  # anisotropic
])
def test_scan_space_reads_the_grid(tmp_path: Path, make, space: str) -> None:
    assert bp.scan_space(make(tmp_path)) == space


def test_scan_space_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError,
                       match="missing.nii.gz: cannot read the image: the path does not exist"):
        bp.scan_space(tmp_path / "missing.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match=r"garbage.nii.gz: cannot read the image header"):  # check_scan
        bp.scan_space(garbage)


@pytest.mark.parametrize(("name", "ids"), [
    ("sub-01_ses-2_T1w.nii.gz", ("sub-01", "ses-2")),
    ("sub-A_T1w.nii", ("sub-A", "")),
    ("my_scan.nii.gz", ("my_scan", "")),
])
def test_participant_ids_from_file_names(tmp_path: Path, name: str, ids: tuple) -> None:
    table = bp.collect_scans([tmp_path / name], ages=[50.0])
    assert tuple(table.loc[0, ["participant_id", "session"]]) == ids
    assert table.loc[0, "age"] == 50.0


def test_collect_scans_bids_ages_from_participants(bids: Path) -> None:
    table = bp.collect_scans([bids])
    assert table["participant_id"].tolist() == ["sub-01", "sub-01", "sub-02"]
    assert table["session"].tolist() == ["ses-1", "ses-2", ""]
    np.testing.assert_array_equal(table["age"], [42.5, 42.5, np.nan])


@pytest.mark.parametrize(("inputs", "ages", "message"), [
    (["a.nii.gz", "b.nii.gz"], [30.0], r"--age takes one value per scan file: got 1 age\(s\) "
                                       r"for 2 scan file\(s\)"),
    (["a.nii.gz"], [130.0], r"must lie in \[0.0, 120.0\] years; got \[130.0\]"),
    ([], None, "inputs must be a non-empty list"),
])
def test_collect_scans_bad_arguments(inputs: list, ages, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bp.collect_scans(inputs, ages=ages)


def test_empty_bids_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"BIDS folder {tmp_path} holds no"):
        bp.collect_scans([tmp_path])


# --- end to end -----------------------------------------------------------------------------


def test_cli_files_end_to_end(model_dir: Path, scans: list[Path], tmp_path: Path,
                              cache: Path) -> None:
    code, table = _run(tmp_path, cache, *map(str, scans), "--model", str(model_dir),
                       "--age", "30", "50", "70", "--all-heads")
    assert code == 0
    assert list(table.columns) == list(bp.OUTPUT_COLUMNS)
    assert len(table) == 6 and table["error"].isna().all()
    assert table["participant_id"].tolist() == ["scan0", "scan1", "scan2"] * 2
    # skull removed by the template's own mask: its outline says nothing, the QC is not measured
    assert (table["space"] == MNI).all() and table["registration_misfit_mm"].isna().all()
    # rounded to 0.1 y: the gap (computed before rounding) within 0.1 of the rounded difference
    np.testing.assert_allclose(table["brain_age_gap"], table["brain_age"] - table["age"],
                               atol=0.1 + 1e-9)
    rnc, l1 = table[table["head"] == "rnc"], table[table["head"] == "l1"]
    corrected = (rnc["brain_age"] - 10.0) / 0.8
    np.testing.assert_allclose(rnc["brain_age_corrected"], corrected, atol=0.05 / 0.8 + 0.05)
    np.testing.assert_allclose(rnc["brain_age_gap_corrected"], corrected - rnc["age"],
                               atol=0.05 / 0.8 + 0.1)
    assert (rnc["bias_correction"] == "linear").all() and (l1["bias_correction"] == "none").all()
    assert l1["brain_age_gap_corrected"].isna().all() and l1["brain_age_gap"].notna().all()
    assert table["domain"].eq("ok").all()  # no simulated training recorded, no OOD reference
    expected = [_expected_ages(model_dir, s) for s in scans]
    for head, rows in (("rnc", rnc), ("l1", l1)):
        np.testing.assert_allclose(rows["brain_age"], [e[head] for e in expected],
                                   atol=0.05 + 1e-4)


def test_default_table_has_one_row_per_scan_with_the_recommended_head_rounded(
        model_dir: Path, scans: list[Path], tmp_path: Path, cache: Path, capsys) -> None:
    code, table = _run(tmp_path, cache, *map(str, scans), "--model", str(model_dir),
                       "--age", "30.456", "50", "70")
    assert code == 0 and list(table.columns) == list(bp.OUTPUT_COLUMNS)
    assert len(table) == 3 and table["head"].eq("rnc").all()  # one row per scan
    full = bp.predict_scans(scans, model_dir, ages=[30.456, 50.0, 70.0], cache=cache)
    rnc = full[full["model"] == "rnc"].reset_index(drop=True)
    # each value rounded to what it carries, not truncated: years 0.1, the age 0.01
    np.testing.assert_allclose(table["brain_age"], rnc["predicted"].round(1), atol=1e-9)
    np.testing.assert_allclose(table["brain_age_gap"], rnc["gap"].round(1), atol=1e-9)
    assert table["age"].tolist() == [30.46, 50.0, 70.0]
    for column in ("brain_age", "brain_age_lower", "brain_age_gap_corrected"):
        values = table[column].dropna().to_numpy()
        np.testing.assert_allclose(values * 10, np.round(values * 10), atol=1e-6)
    text = (tmp_path / "out" / "predictions.csv").read_text()
    assert not any(len(cell.split(".")[-1]) > 2 for line in text.splitlines()[1:]
                   for cell in line.split(",")[:13] if cell.replace(".", "").isdigit())
    summary = capsys.readouterr().out.splitlines()[-1]
    low, high = table["brain_age"].min(), table["brain_age"].max()
    assert summary.startswith(f"summary: 3 predicted, 0 refused; brain age {low:.1f}-"
                              f"{high:.1f} y (rnc); domain: ok (3 of 3)")


def test_output_table_bad_input(model_dir: Path, scans: list[Path], cache: Path) -> None:
    full = bp.predict_scans(scans[:1], model_dir, cache=cache)
    with pytest.raises(TypeError, match="all_heads must be a bool, got 'yes'"):
        bp.output_table(full, all_heads="yes")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['predicted'\]"):
        bp.output_table(full.drop(columns="predicted"))
    assert bp.output_table(full, all_heads=True)["head"].tolist() == ["rnc", "l1"]
    assert bp.recommended_head(["l1"]) == "l1"  # a folder of one head reports it
    with pytest.raises(ValueError, match="no head to report"):
        bp.recommended_head([])
    assert full["predicted"].notna().all()  # the library's table is not changed


def test_one_progress_bar_per_run_and_quiet_after_the_subcommand(
        model_dir: Path, scans: list[Path], tmp_path: Path, cache: Path, capsys) -> None:
    argv = ["predict", *map(str, scans), "--model", str(model_dir), "--cache", str(cache),
            "--out", str(tmp_path / "a.csv")]
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("predict:   0%") == 1, err  # one bar for the three scans
    assert "3/3" in err and "preprocess:" not in err  # not one per scan group
    assert main([*argv, "--overwrite", "-q"]) == 0  # -q after the subcommand
    err = capsys.readouterr().err
    assert "predict:" not in err and "%|" not in err and "INFO" not in err, err


def test_preprocess_and_predict_print_the_same_registration_figure(
        model_dir: Path, scans: list[Path], tmp_path: Path, caplog, capsys) -> None:
    """One figure, worded once (registration_qc_text), to 0.1 mm: brainage preprocess prints
    it, brainage predict logs it (the scan cached or not) and writes it to the CSV."""
    import logging

    cache = tmp_path / "cache"
    assert main(["-q", "preprocess", str(scans[1]), str(tmp_path / "pre.nii.gz"), "--space",
                 MNI, "--grid-mm", str(GRID_MM), "--crop-to-brain", "--skull-stripped",
                 "--brain-extraction", "template", "--cache", str(cache)]) == 0
    printed = capsys.readouterr().out.strip()
    figure = printed.split("  ", 1)[1]
    assert figure.startswith("registration misfit ") and "(threshold 5.0 mm)" in figure
    for run in ("cached", "again"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="brainage.inference.predict"):
            out = tmp_path / f"{run}.csv"
            assert main(["predict", str(scans[1]), "--model", str(model_dir), "--space", MNI,
                         "--skull-stripped", "--cache", str(cache), "--out", str(out)]) == 0
        logged = [r.getMessage() for r in caplog.records if "registration misfit" in r.getMessage()]
        assert logged == [f"{scans[1]}: {figure}"], (run, logged)
        value = pd.read_csv(out)["registration_misfit_mm"].iloc[0]
        assert f"registration misfit {value:.1f} mm" in figure


def test_openbhb_array(model_dir: Path, template_4mm: np.ndarray, tmp_path: Path,
                       cache: Path) -> None:
    """An OpenBHB quasi-raw array (1, X, Y, Z) in its dataset layout: resampled, not
    registered, and predicted like the same volume as a NIfTI file."""
    root = tmp_path / "openbhb"
    (root / "resource").mkdir(parents=True)
    affine = template_grid(SCAN_MM)[1]
    nib.save(nib.Nifti1Image(template_4mm, affine),
             root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz")  # the grid
    array = root / "val" / "derivatives" / "sub-7" / "ses-1" / "sub-7_preproc-quasiraw_T1w.npy"
    array.parent.mkdir(parents=True)
    np.save(array, (template_4mm * 500.0)[None].astype(np.float32))
    assert bp.scan_space(array) == "MNI152Lin"
    code, table = _run(tmp_path, cache, str(array), "--model", str(model_dir), "--age", "40",
                       "--all-heads")
    assert code == 0 and table["error"].isna().all(), table["error"].tolist()
    assert table["participant_id"].tolist() == ["sub-7", "sub-7"]
    assert (table["space"] == "MNI152Lin").all()
    assert table["registration_misfit_mm"].isna().all()  # template-masked: not measured
    nifti = _mni_scan(tmp_path / "same.nii.gz", template_4mm, 500.0, np.random.default_rng(0))
    expected = _expected_ages(model_dir, nifti)  # the same brain, 1 % noise: nearly the same age
    for row in table.itertuples():
        assert row.brain_age == pytest.approx(expected[row.head], abs=1.0)


def test_cli_bids_folder(model_dir: Path, bids: Path, tmp_path: Path, cache: Path) -> None:
    code, table = _run(tmp_path, cache, str(bids), "--model", str(model_dir / "rnc"))
    assert code == 0
    assert table["head"].unique().tolist() == ["rnc"]
    assert table["session"].fillna("").tolist() == ["ses-1", "ses-2", ""]
    np.testing.assert_array_equal(table["age"], [42.5, 42.5, np.nan])
    assert table["brain_age_gap"].notna().tolist() == [True, True, False]
    assert table["brain_age"].notna().all()


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00 definitely not NIfTI")
    return path


def _truncated(path: Path, good: Path) -> Path:
    path.write_bytes(good.read_bytes()[:2000])  # the header survives, the voxels do not
    return path


@pytest.mark.parametrize("corrupt", ["garbage", "truncated"])
def test_corrupt_file_among_good_ones(model_dir: Path, scans: list[Path], tmp_path: Path,
                                      cache: Path, capsys, corrupt: str) -> None:
    bad = tmp_path / "broken.nii.gz"
    _garbage(bad) if corrupt == "garbage" else _truncated(bad, scans[0])
    code, table = _run(tmp_path, cache, str(scans[0]), str(bad), str(scans[1]),
                       "--model", str(model_dir), "--age", "30", "40", "50")
    assert code == 1
    failed = table[table["path"] == str(bad)]
    assert len(failed) == 1 and failed["brain_age"].isna().all()  # one row per scan: rnc
    assert failed["error"].str.contains(str(bad), regex=False).all()
    assert failed["error"].str.contains("cannot read the image").all()
    assert failed["domain"].isna().all()  # not predicted: no verdict
    good = table[table["path"] != str(bad)]
    assert good["error"].isna().all() and good["brain_age"].notna().all()
    captured = capsys.readouterr()
    assert f"FAILED {bad}" in captured.err
    assert captured.out.splitlines()[-1].startswith("summary: 2 predicted, 1 refused; ")


def test_age_count_mismatch_is_an_error(model_dir: Path, scans: list[Path], tmp_path: Path,
                                        cache: Path, capsys) -> None:
    code, table = _run(tmp_path, cache, str(scans[0]), str(scans[1]), "--model", str(model_dir),
                       "--age", "30")
    assert code == 2 and table is None
    assert "--age takes one value per scan file: got 1 age(s) for 2" in capsys.readouterr().err


def test_bad_model_folder_on_the_command_line(scans: list[Path], tmp_path: Path, cache: Path,
                                              capsys) -> None:
    code, _ = _run(tmp_path, cache, str(scans[0]), "--model", str(tmp_path))
    assert code == 2
    assert f"{tmp_path / 'model.json'} is missing" in capsys.readouterr().err


def test_saliency_maps_on_the_model_grid(model_dir: Path, scans: list[Path], tmp_path: Path,
                                         cache: Path) -> None:
    folder = model_folder.load_model_folder(model_dir)
    table = bp.predict_scans(scans[:2], folder, ages=[30.0, None], space=MNI,
                             saliency_dir=tmp_path / "maps", cache=cache)
    shape, affine = template_grid(GRID_MM, crop_to_brain=True)
    for head in ("rnc", "l1"):
        for name in ("scan0", "scan1"):
            img = nib.load(tmp_path / "maps" / head / f"{name}.nii.gz")
            assert img.shape == shape
            np.testing.assert_allclose(img.affine, affine)
    rnc_map = nib.load(tmp_path / "maps" / "rnc" / "scan0.nii.gz").get_fdata()
    assert np.isfinite(rnc_map).all() and np.abs(rnc_map).max() > 0
    assert table["saliency"].str.endswith(".nii.gz").all()
    assert np.isnan(table.loc[1, "gap"]) and np.isfinite(table.loc[0, "gap"])
    # integrated gradients against the folder's reference (the study's method, issue 27): each
    # map adds up to the predicted age minus the reference's (completeness, up to the error of
    # 16 quadrature steps: 14 % measured on this untrained tiny network), which no Grad-RAM map
    # is made to do
    for head in ("rnc", "l1"):
        model = folder.models[head]
        with torch.no_grad():
            reference_age = float(model(torch.from_numpy(folder.ig_reference)[None, None]
                                        ).reshape(-1)[0])
        for i, name in enumerate(("scan0", "scan1")):
            total = nib.load(tmp_path / "maps" / head / f"{name}.nii.gz").get_fdata().sum()
            row = table[(table["model"] == head) & (table["path"] == str(scans[i]))]
            expected = float(row["predicted"].iloc[0]) - reference_age
            assert total == pytest.approx(expected, rel=0.3, abs=0.1), (head, name)


def test_saliency_needs_the_folders_reference(model_dir: Path, scans: list[Path],
                                              tmp_path: Path, cache: Path) -> None:
    """A model folder without ig_reference.nii.gz (written before issue 27) predicts, but
    refuses saliency maps, naming the file; a reference of another grid is refused on load."""
    copy = tmp_path / "models"
    shutil.copytree(model_dir, copy)
    (copy / model_folder.IG_REFERENCE_FILE).unlink()
    with pytest.raises(model_folder.ModelFolderError, match="has no ig_reference.nii.gz"):
        bp.predict_scans(scans[:1], copy, space=MNI, saliency_dir=tmp_path / "maps", cache=cache)
    assert not (tmp_path / "maps").exists()
    table = bp.predict_scans(scans[:1], copy, space=MNI, cache=cache)
    assert table["predicted"].notna().all()
    model_folder.save_ig_reference(copy, np.ones((7, 8, 9)), np.eye(4))
    with pytest.raises(model_folder.ModelFolderError,
                       match=r"ig_reference.nii.gz must hold a finite volume of the model's grid"):
        model_folder.load_model_folder(copy)


def test_unknown_space_suggests_the_closest(model_dir: Path, scans: list[Path],
                                            tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"space \(--space\) must be one of .*did you mean "
                                         r"'native'"):
        bp.predict_scans(scans[:1], model_dir, space="nativ", cache=tmp_path / "cache")


def test_help_lists_predict(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--age", "--space", "--skull-stripped", "--saliency", "--cache"):
        assert option in out


# --- a real scan ----------------------------------------------------------------------------


@pytest.mark.slow
def test_native_ixi_scan(model_dir: Path, tmp_path: Path, ixi10_model_cache: Path) -> None:
    """One raw IXI scan: auto-detected as native, registered, aligned and predicted (its
    registration is shared with test_bids_app's cluster test through the session's cache)."""
    scan = sorted(IXI10.glob("sub-*/anat/*_T1w.nii.gz"))[0]
    code, table = _run(tmp_path, ixi10_model_cache, str(scan), "--model", str(model_dir / "l1"), "--age", "40")
    assert code == 0
    row = table.iloc[0]
    assert row["space"] == "native" and registration_passes(row["registration_misfit_mm"])
    assert np.isfinite(row["brain_age"]) and row["brain_age_gap"] == pytest.approx(
        row["brain_age"] - 40.0, abs=0.1)


def test_one_prediction_schema_for_the_run_and_brainage_predict() -> None:
    from brainage._utils import PREDICTION_VALUES
    from brainage.analysis import evaluation

    def values(columns):
        return [c for c in columns if c in PREDICTION_VALUES]

    assert values(evaluation.EVALUATION_COLUMNS) == list(PREDICTION_VALUES)
    assert values(bp.PREDICTION_COLUMNS) == list(PREDICTION_VALUES)
    assert not {"predicted_age", "corrected_predicted_age"} & set(bp.PREDICTION_COLUMNS)
