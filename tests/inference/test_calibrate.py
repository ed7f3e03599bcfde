"""Tests of ``brainage calibrate`` (brainage.inference.calibrate) and ``brainage predict
--site-calibration``: a site calibration fitted on tiny MNI-space scans, applied to each row,
and refused for bad calibration sets and for damaged or foreign calibration files."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainage._utils import AGE_RANGE
from brainage.analysis.site_calibration import fit_site_calibration, training_line
from brainage.cli import main
from brainage.imaging.registration import template_grid
from brainage.inference import model_folder
from brainage.inference.calibrate import calibrate_site
from brainage.inference.predict import predict_scans
from tests.inference import test_predict
from tests.inference.test_predict import CORRECTION, GRID_MM, MNI, SCAN_MM

#: Factors on each head's age scale: the tiny heads' predictions of the test scans spread
#: by about 0.5 (rnc) and 0.004 (l1) years; scaled, both spread by about 20-30 years.
SPREAD = {"rnc": 60.0, "l1": 6000.0}
N_SCANS = 12


@functools.lru_cache(maxsize=1)
def _template_4mm() -> np.ndarray:
    """test_predict's 4 mm template, computed once for this module's scans."""
    return test_predict.template_4mm.__wrapped__()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessing cache shared by the tests of this module."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def models(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of test_predict's tiny model folder (trained once per session) with each head's
    age scale enlarged (checkpoints and card rewritten), so that its predictions of different
    scans differ by years."""
    root = tmp_path_factory.mktemp("run") / "models"
    shutil.copytree(trained_model_dir, root)
    for head, factor in SPREAD.items():
        path = root / head / model_folder.CHECKPOINT_FILE
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["age_scale"] *= factor
        checkpoint["model"]["age_scale"] = checkpoint["model"]["age_scale"] * factor
        torch.save(checkpoint, path)
    model_folder.write_model_card(root, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                                    "skull_stripped": True,
                                                    "crop_to_brain": True},
                                  saliency_layer="encoder.layer2", profile="test")
    return root


@pytest.fixture(scope="module")
def site_scans(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Twelve MNI-space scans of different contrast (the template to powers 0.5-1.5)."""
    template_4mm = _template_4mm()
    folder, rng = tmp_path_factory.mktemp("site"), np.random.default_rng(1)
    paths = []
    for i in range(N_SCANS):
        data = template_4mm ** (0.5 + i / (N_SCANS - 1)) * 500.0 + rng.normal(
            0.0, 5.0, template_4mm.shape)
        path = folder / f"s{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), template_grid(SCAN_MM)[1]), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def site(models: Path, site_scans: list[Path], cache: Path) -> dict:
    """Each head's raw predictions of the scans, and ages that rise with both heads'
    predictions (their standardised mean, 10 years per SD, 1 year of seeded noise): the
    site's healthy controls, on whose ages both heads' predictions rise."""
    table = predict_scans(site_scans, models, cache=cache)
    predicted = {head: rows["predicted"].to_numpy() for head, rows in table.groupby("model")}
    rng = np.random.default_rng(2)
    z = sum((p - p.mean()) / p.std() for p in predicted.values()) / len(predicted)
    ages = 50.0 + 10.0 * z + rng.normal(0.0, 1.0, z.size)
    return {"predicted": predicted, "ages": ages}


def _calibrate(tmp_path: Path, models: Path, inputs: list, *extra: str,
               cache: Path) -> tuple[int, Path]:
    out = tmp_path / "site.json"
    code = main(["-q", "calibrate", str(models), *map(str, inputs), "--out", str(out),
                 "--cache", str(cache), *extra])
    return code, out


def _predict(tmp_path: Path, models: Path, inputs: list, *extra: str,
             cache: Path) -> tuple[int, pd.DataFrame | None]:
    out = tmp_path / "pred.csv"
    code = main(["-q", "predict", *map(str, inputs), "--model", str(models), "--out", str(out),
                 "--cache", str(cache), *extra])
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]) if out.exists() else None
    return code, table


@pytest.fixture(scope="module")
def calibration(models: Path, site_scans: list[Path], site: dict, cache: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brainage calibrate`` of the twelve scans (site ``HH``)."""
    folder = tmp_path_factory.mktemp("cal")
    ages = [f"{a:.6f}" for a in site["ages"]]
    code, out = _calibrate(folder, models, site_scans, "--site", "HH", "--age", *ages,
                           cache=cache)
    assert code == 0 and out.is_file()
    return out


# --- brainage calibrate ---------------------------------------------------------------------


def test_calibrate_writes_each_heads_site_calibration(models: Path, site: dict,
                                                      calibration: Path) -> None:
    data = json.loads(calibration.read_text())
    assert data["format"] == model_folder.SITE_CALIBRATION_FILE_FORMAT
    assert data["site"] == "HH" and data["n_scans"] == N_SCANS and data["failed"] == []
    ages = np.round(site["ages"], 6)
    np.testing.assert_allclose(data["age_range"], [ages.min(), ages.max()], atol=1e-9)
    assert "same site" in data["conditions"]
    folder = model_folder.load_model_folder(models)
    for head in ("rnc", "l1"):
        entry = data["heads"][head]
        assert entry["checkpoint_sha256"] == model_folder.checkpoint_digest(models / head)
        prior = None if head == "l1" else training_line(CORRECTION)
        assert (folder.corrections[head] is None) == (head == "l1")
        expected = fit_site_calibration(ages, site["predicted"][head], site="HH", prior=prior,
                                        created=data["created"])
        got = entry["calibration"]
        assert got["n_scans"] == N_SCANS and got["created"] == data["created"]
        for key in ("slope", "intercept", "weight"):
            assert got["correction"][key] == pytest.approx(
                getattr(expected.correction, key), rel=1e-5, abs=1e-6)
        assert got["half_width"] == pytest.approx(expected.half_width, rel=1e-5)
    # the l1 head has no training correction: its own slope; the rnc head's is shrunk
    # towards the training slope 0.8 with the weight of 12 scans against 10
    assert data["heads"]["l1"]["calibration"]["correction"]["weight"] == 1.0
    assert data["heads"]["rnc"]["calibration"]["correction"]["weight"] == pytest.approx(
        N_SCANS / (N_SCANS + 10.0))


def test_calibrate_refuses_to_overwrite(models: Path, site_scans: list[Path], site: dict,
                                        calibration: Path, tmp_path: Path, cache: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "site.json"
    out.write_text("keep me")
    ages = [str(a) for a in site["ages"]]
    code, _ = _calibrate(tmp_path, models, site_scans, "--age", *ages, cache=cache)
    assert code == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    code, _ = _calibrate(tmp_path, models, site_scans, "--age", *ages, "--overwrite",
                         cache=cache)
    assert code == 0
    assert json.loads(out.read_text())["site"] == site_scans[0].parent.name


def test_calibrate_refuses_too_few_scans(models: Path, site_scans: list[Path], site: dict,
                                         tmp_path: Path, cache: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    ages = [str(a) for a in site["ages"][:6]]
    code, out = _calibrate(tmp_path, models, site_scans[:6], "--age", *ages, cache=cache)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "needs at least 10 healthy controls" in err and str(site_scans[0]) in err


def test_calibrate_refuses_scans_without_age(models: Path, site_scans: list[Path],
                                             tmp_path: Path, cache: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    ages = ["50"] * (N_SCANS - 1) + ["nan"]
    code, out = _calibrate(tmp_path, models, site_scans, "--age", *ages, cache=cache)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "1 of 12 have no age" in err and str(site_scans[-1]) in err


def _bids(root: Path, scans: list[Path], ages: np.ndarray, groups: list[str]) -> Path:
    lines = ["participant_id\tage\tgroup"]
    for i, (scan, age, group) in enumerate(zip(scans, ages, groups)):
        anat = root / f"sub-{i:02d}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(scan, anat / f"sub-{i:02d}_T1w.nii.gz")
        lines.append(f"sub-{i:02d}\t{age:.6f}\t{group}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_calibrate_bids_folder_and_patients(models: Path, site_scans: list[Path], site: dict,
                                            tmp_path: Path, cache: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    healthy = _bids(tmp_path / "hc", site_scans, site["ages"], ["HC"] * N_SCANS)
    code, out = _calibrate(tmp_path, models, [healthy], cache=cache)
    assert code == 0 and json.loads(out.read_text())["n_scans"] == N_SCANS
    mixed = _bids(tmp_path / "mixed", site_scans, site["ages"], ["HC"] * 10 + ["AD"] * 2)
    out.unlink()
    code, out = _calibrate(tmp_path, models, [mixed], cache=cache)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "healthy controls only" in err and "['AD']" in err and str(mixed) in err


# --- brainage predict --site-calibration ----------------------------------------------------


def test_predict_applies_the_site_calibration(models: Path, site_scans: list[Path],
                                              site: dict, calibration: Path, tmp_path: Path,
                                              cache: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    ages = [str(a) for a in site["ages"][:3]]
    code, plain = _predict(tmp_path, models, site_scans[:3], "--age", *ages, "--all-heads",
                           cache=cache)
    assert code == 0 and (plain["calibration"] == "training").all()
    code, table = _predict(tmp_path, models, site_scans[:3], "--age", *ages, "--all-heads",
                           "--site-calibration", str(calibration), "--overwrite", cache=cache)
    printed = capsys.readouterr().out
    assert code == 0 and "site:HH" in printed and "same site and protocol, healthy" in printed
    assert (table["calibration"] == "site:HH").all() and (table["bias_correction"] == "site").all()
    np.testing.assert_allclose(table["brain_age"], plain["brain_age"], atol=1e-9)
    data = json.loads(calibration.read_text())
    # the CSV's years are rounded to 0.1: each value within 0.05 of the exact one, which is
    # computed from the rounded brain age (itself within 0.05) and the rounded age (0.005)
    for head, rows in table.groupby("head"):
        c = data["heads"][head]["calibration"]
        line = c["correction"]
        corrected = (rows["brain_age"] - line["intercept"]) / line["slope"]
        slack = 0.05 + 0.05 / abs(line["slope"])
        np.testing.assert_allclose(rows["brain_age_corrected"], corrected, atol=slack)
        np.testing.assert_allclose(rows["brain_age_gap_corrected"], corrected - rows["age"],
                                   atol=slack + 0.01)
        q = c["half_width"]
        np.testing.assert_allclose(rows["brain_age_lower"], np.clip(corrected - q, *AGE_RANGE),
                                   atol=slack)
        np.testing.assert_allclose(rows["brain_age_upper"], np.clip(corrected + q, *AGE_RANGE),
                                   atol=slack)
        np.testing.assert_allclose(rows["brain_age_gap_corrected_upper"]
                                   - rows["brain_age_gap_corrected_lower"], 2 * q, atol=0.1 + 1e-9)
        assert (rows["interval_level"] == 0.9).all()
    # the calibration scans' own corrected gaps are small: the site's line removes the offset
    assert (np.abs(table["brain_age_gap_corrected"]).max()
            < np.abs(plain["brain_age_gap"]).max())


def _damage(calibration: Path, tmp_path: Path, how: str) -> Path:
    path = tmp_path / f"{how}.json"
    text = calibration.read_text()
    data = json.loads(text)
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
        return path
    if how == "other_checkpoint":
        data["heads"]["l1"]["checkpoint_sha256"] = "0" * 64
    elif how == "no_head":
        del data["heads"]["rnc"]
    elif how == "format":
        data["format"] = "brainage-conformal/1"
    elif how == "bad_slope":
        data["heads"]["rnc"]["calibration"]["correction"]["slope"] = "steep"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("how", "message"), [
    ("truncated", "cannot be read as JSON"),
    ("other_checkpoint", "calibrated for another checkpoint"),
    ("no_head", "has no calibration of head 'rnc'"),
    ("format", "is not a site calibration file"),
    ("bad_slope", "correction.slope"),
])
def test_predict_refuses_a_damaged_or_foreign_calibration(
        models: Path, site_scans: list[Path], calibration: Path, tmp_path: Path, cache: Path,
        capsys: pytest.CaptureFixture, how: str, message: str) -> None:
    bad = _damage(calibration, tmp_path, how)
    code, table = _predict(tmp_path, models, site_scans[:1], "--site-calibration", str(bad),
                           cache=cache)
    err = capsys.readouterr().err
    assert code == 2 and table is None
    assert message in err and str(bad) in err


def test_site_calibration_of_one_head_folder(models: Path, site_scans: list[Path],
                                             calibration: Path, tmp_path: Path,
                                             cache: Path) -> None:
    """A head's own folder reads the head's entry of a calibration of the whole folder."""
    code, table = _predict(tmp_path, models / "l1", site_scans[:1], "--site-calibration",
                           str(calibration), cache=cache)
    assert code == 0 and table["head"].tolist() == ["l1"]
    assert table["calibration"].tolist() == ["site:HH"]


def test_calibrate_site_function_returns_what_it_wrote(models: Path, site_scans: list[Path],
                                                       site: dict, tmp_path: Path,
                                                       cache: Path) -> None:
    result = calibrate_site(site_scans, models, tmp_path / "x.json", site="HH",
                            ages=list(site["ages"]), cache=cache)
    assert json.loads((tmp_path / "x.json").read_text()) == json.loads(json.dumps(result))


# --- batch shift verdict --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ood_models(models: Path, site_scans: list[Path], cache: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models`` with an OOD reference per head: the twelve site scans' features (rate 0.2,
    so that twelve calibration scans suffice), bound to each checkpoint."""
    from brainage.analysis.uncertainty import FeatureOOD
    from brainage.inference.predict import iter_predictions

    root = tmp_path_factory.mktemp("ood") / "models"
    shutil.copytree(models, root)
    features: dict = {}
    list(iter_predictions(site_scans, root, cache=cache, features_out=features))
    for head, found in features.items():
        matrix = np.array([found[i] for i in sorted(found)])  # (12, D)
        ood = FeatureOOD.fit(matrix, matrix, rate=0.2, k=3)
        model_folder.save_ood(root / head, ood, model_folder.checkpoint_digest(root / head))
    return root


def _noisy_scans(folder: Path, n: int) -> list[Path]:
    """``n`` scans of another 'scanner': the template under heavy noise (seeded)."""
    template_4mm = _template_4mm()
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        data = template_4mm * 500.0 + rng.normal(0.0, 150.0, template_4mm.shape)
        path = folder / f"n{i}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), template_grid(SCAN_MM)[1]), path)
        paths.append(path)
    return paths


def test_batch_verdict_fires_on_shifted_scans_only(ood_models: Path, site_scans: list[Path],
                                                   site: dict, tmp_path: Path, cache: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    ages = [str(a) for a in site["ages"]]
    code, _ = _predict(tmp_path / "same", ood_models, site_scans, "--age", *ages, cache=cache)
    printed = capsys.readouterr().out
    verdict = json.loads((tmp_path / "same" / "pred_batch.json").read_text())
    assert code == 0 and set(verdict["heads"]) == {"rnc", "l1"}
    for entry in verdict["heads"].values():
        assert entry["features"]["n_batch"] == N_SCANS and entry["features"]["p_value"] > 0.05
        assert entry["gap"]["n"] == N_SCANS and "do not differ detectably" in entry["line"]
    assert printed.count("batch: ") == 2
    noisy = _noisy_scans(tmp_path / "noisy", 6)
    code, _ = _predict(tmp_path / "noisy_out", ood_models, noisy, cache=cache)
    printed = capsys.readouterr().out
    verdict = json.loads((tmp_path / "noisy_out" / "pred_batch.json").read_text())
    for entry in verdict["heads"].values():
        assert entry["features"]["p_value"] <= 0.05 and entry["gap"] is None
        assert "these 6 scans differ from the training scans" in entry["line"]
    assert "calibrate with `brainage calibrate`" in printed


def test_batch_verdict_needs_five_scans_and_keeps_an_old_verdict(
        ood_models: Path, site_scans: list[Path], tmp_path: Path, cache: Path,
        capsys: pytest.CaptureFixture) -> None:
    code, _ = _predict(tmp_path, ood_models, site_scans[:4], cache=cache)
    assert code == 0 and not (tmp_path / "pred_batch.json").exists()
    assert "batch: " not in capsys.readouterr().out
    (tmp_path / "pred.csv").unlink()
    (tmp_path / "pred_batch.json").write_text("an earlier verdict")
    code, table = _predict(tmp_path, ood_models, site_scans[:5], cache=cache)
    assert code == 2 and table is None and "pred_batch.json" in capsys.readouterr().err
    assert (tmp_path / "pred_batch.json").read_text() == "an earlier verdict"


def test_bids_app_takes_the_site_calibration(models: Path, site_scans: list[Path], site: dict,
                                             calibration: Path, tmp_path: Path, cache: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    bids = _bids(tmp_path / "raw", site_scans[:2], site["ages"][:2], ["HC", "HC"])
    bad = _damage(calibration, tmp_path, "other_checkpoint")
    out = tmp_path / "derivative"
    argv = ["-q", "bids", str(bids), str(out), "participant", "--model", str(models),
            "--cache", str(cache), "--no-qc", "--site-calibration"]
    assert main([*argv, str(bad)]) == 2
    assert "calibrated for another checkpoint" in capsys.readouterr().err
    assert not list(out.glob("sub-*/anat/*.tsv"))
    assert main([*argv, str(calibration)]) == 0
    tables = sorted(out.glob("sub-*/anat/*.tsv"))
    assert len(tables) == 2
    for path in tables:
        table = pd.read_csv(path, sep="\t")
        assert (table["calibration"] == "site:HH").all()
        assert (table["bias_correction"] == "site").all()


def test_verdict_line_says_what_to_do() -> None:
    """The line advises calibrating when the batch differs, and not when a site calibration
    is in use or the batch does not differ; it names the gap it tested."""
    from brainage.analysis.shift import BatchShift, GapTest, MMDTest
    from brainage.inference.trust import verdict_line

    gap = GapTest(40, -26.6, -28.0, -25.2, 0.95, -30.0, 1e-20)
    shifted = BatchShift(MMDTest(40, 180, 0.3, 0.001, 999, 2.0), gap, 0)
    line = verdict_line("rnc", shifted, "corrected gap")
    assert "these 40 scans differ" in line and "p <= 0.001" in line
    assert "mean corrected gap is -26.6 y [-28.0, -25.2]" in line
    assert "calibrate with `brainage calibrate`" in line
    line = verdict_line("rnc", shifted, site="HH")
    assert "site calibration HH" in line and "brainage calibrate" not in line
    same = BatchShift(MMDTest(40, 180, 0.0, 0.4, 999, 2.0), None, 0)
    line = verdict_line("l1", same)
    assert "do not differ detectably" in line and "p = 0.4" in line and "gap" not in line


# --- the batch verdict of brainage bids ... group -------------------------------------------


def _bids_group(tmp_path: Path, models: Path, bids: Path, cache: Path,
                *group_args: str) -> tuple[int, Path]:
    out = tmp_path / f"derivative_{bids.name}"
    assert main(["-q", "bids", str(bids), str(out), "participant", "--model", str(models),
                 "--cache", str(cache), "--no-qc"]) == 0
    return main(["-q", "bids", str(bids), str(out), "group", *group_args]), out


def test_bids_group_tests_the_batch(ood_models: Path, site_scans: list[Path], site: dict,
                                    tmp_path: Path, cache: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    """The group level with --model tests the participant level's scans as predict does:
    scans like the training scans pass, scans of another 'scanner' are flagged; the gap test
    reads the healthy controls only; without --model it says how to get the test."""
    groups = ["HC"] * 5 + ["AD"]
    same = _bids(tmp_path / "same", site_scans[:6], site["ages"][:6], groups)
    code, out = _bids_group(tmp_path, ood_models, same, cache, "--model", str(ood_models))
    printed = capsys.readouterr().out
    verdict = json.loads((out / "group_desc-brainage_batch.json").read_text())
    assert code == 0 and set(verdict["heads"]) == {"rnc", "l1"}
    assert verdict["n_without_features"] == 0
    for head, entry in verdict["heads"].items():
        assert entry["features"]["n_batch"] == 6 and entry["features"]["p_value"] > 0.05
        # the AD scan's gap is not a control's; the tables hold the reported head's gaps only
        # (one row per scan, rnc; --all-heads adds l1's), so l1 gets the feature test alone
        assert (entry["gap"]["n"] == 5) if head == "rnc" else entry["gap"] is None
        assert "do not differ detectably" in entry["line"]
    assert printed.count("batch: ") == 2 and "group_desc-brainage_batch.json" in printed
    assert len(list(out.glob("sub-*/anat/*_desc-brainageFeatures_T1w.json"))) == 6
    noisy = _bids(tmp_path / "noisy", _noisy_scans(tmp_path / "noisy_scans", 6),
                  np.full(6, 50.0), ["HC"] * 6)
    code, out = _bids_group(tmp_path, ood_models, noisy, cache, "--model", str(ood_models))
    printed = capsys.readouterr().out
    verdict = json.loads((out / "group_desc-brainage_batch.json").read_text())
    for entry in verdict["heads"].values():
        assert entry["features"]["p_value"] <= 0.05
        assert "these 6 scans differ from the training scans" in entry["line"]
    assert code == 0 and "calibrate with `brainage calibrate`" in printed
    (out / "group_desc-brainage_batch.json").unlink()
    assert main(["-q", "bids", str(noisy), str(out), "group"]) == 0
    assert "give --model" in capsys.readouterr().out
    assert not (out / "group_desc-brainage_batch.json").exists()


def test_bids_group_refuses_another_model_and_skips_scans_without_features(
        ood_models: Path, models: Path, site_scans: list[Path], site: dict, tmp_path: Path,
        cache: Path, capsys: pytest.CaptureFixture) -> None:
    bids = _bids(tmp_path / "raw", site_scans[:6], site["ages"][:6], ["HC"] * 6)
    other = tmp_path / "other"
    shutil.copytree(models, other)
    for head in ("rnc", "l1"):  # other weights: the card's checksums differ
        path = other / head / model_folder.CHECKPOINT_FILE
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["age_scale"] *= 2.0
        torch.save(checkpoint, path)
    model_folder.write_model_card(other, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                                     "skull_stripped": True,
                                                     "crop_to_brain": True},
                                  saliency_layer="encoder.layer2", profile="test")
    code, out = _bids_group(tmp_path, ood_models, bids, cache, "--model", str(other))
    err = capsys.readouterr().err
    assert code == 2 and "is not the model of OUTPUT_DIR" in err
    assert not (out / "group_desc-brainage_batch.json").exists()
    features = sorted(out.glob("sub-*/anat/*_desc-brainageFeatures_T1w.json"))
    features[0].write_text("not json")  # damaged: that scan is left out, five remain
    features[1].unlink()
    assert main(["-q", "bids", str(bids), str(out), "group", "--model", str(ood_models)]) == 0
    assert "fewer than 5 scans with stored features" in capsys.readouterr().out
    assert not (out / "group_desc-brainage_batch.json").exists()  # 4 < 5 scans with features
    assert (out / "group_desc-brainage_T1w.tsv").is_file()  # the group table all the same


# --- several site calibrations: each scan takes its site's -----------------------------------


@pytest.fixture(scope="module")
def second_site(models: Path, site_scans: list[Path], site: dict, cache: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibration of site ``GU``, fitted on the same scans with ages 10 years older."""
    out = tmp_path_factory.mktemp("gu") / "gu.json"
    calibrate_site(site_scans, models, out, site="GU", ages=list(site["ages"] + 10.0),
                   cache=cache)
    return out


def _sites_bids(root: Path, scans: list[Path], ages: np.ndarray, sites: list[str]) -> Path:
    bids = _bids(root, scans, ages, ["HC"] * len(scans))
    table = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    table["site"] = sites
    table.to_csv(bids / "participants.tsv", sep="\t", index=False)
    return bids


def test_each_scan_takes_its_sites_calibration(models: Path, site_scans: list[Path],
                                               site: dict, calibration: Path,
                                               second_site: Path, tmp_path: Path,
                                               cache: Path) -> None:
    """participants.tsv's site picks the calibration of each row (files given one by one or
    as a folder, in predict and the BIDS App); a site without one, or an unknown site among
    several calibrations, keeps the training calibration."""
    from brainage.inference.sites import load_site_calibrations

    sites = ["HH", "GU", "XX", "n/a"]
    bids = _sites_bids(tmp_path / "raw", site_scans[:4], site["ages"][:4], sites)
    expected = ["site:HH", "site:GU", "training", "training"]
    code, table = _predict(tmp_path / "files", models, [bids], "--site-calibration",
                           str(calibration), "--site-calibration", str(second_site), "--all-heads",
                           cache=cache)
    assert code == 0
    folder = tmp_path / "calibrations"
    folder.mkdir()
    shutil.copy(calibration, folder / "hh.json")
    shutil.copy(second_site, folder / "gu.json")
    code, from_folder = _predict(tmp_path / "folder", models, [bids], "--site-calibration",
                                 str(folder), "--all-heads", cache=cache)
    assert code == 0
    loaded = load_site_calibrations([folder], model_folder.load_model_folder(models))
    for result in (table, from_folder):
        for head, rows in result.groupby("head"):
            assert rows["calibration"].tolist() == expected
            assert rows["bias_correction"].tolist()[:2] == ["site", "site"]
            for k, name in enumerate(("HH", "GU")):
                corrected, lower, _ = loaded[name].heads[head].predict(
                    rows["brain_age"].to_numpy()[k:k + 1])
                # the CSV's ages are rounded to 0.1 y (and so is the brain age fed in here)
                assert rows["brain_age_corrected"].iloc[k] == pytest.approx(corrected[0], abs=0.2)
                assert rows["brain_age_lower"].iloc[k] == pytest.approx(lower[0], abs=0.2)
    # GU's ages are 10 years older: its corrected ages of the same scans are about 10 higher
    hh, gu = loaded["HH"].heads["rnc"], loaded["GU"].heads["rnc"]
    p = table.loc[table["head"] == "rnc", "brain_age"].to_numpy()
    assert np.mean(gu.predict(p)[0] - hh.predict(p)[0]) == pytest.approx(10.0, abs=1.5)
    out = tmp_path / "derivative"
    assert main(["-q", "bids", str(bids), str(out), "participant", "--model", str(models),
                 "--cache", str(cache), "--no-qc", "--site-calibration", str(folder),
                 "--all-heads"]) == 0
    used = [pd.read_csv(p, sep="\t")["calibration"].tolist()
            for p in sorted(out.glob("sub-*/anat/*_desc-brainage_T1w.tsv"))]
    assert used == [[e, e] for e in expected]


def test_several_calibrations_of_one_site_or_none_are_refused(
        models: Path, site_scans: list[Path], calibration: Path, tmp_path: Path, cache: Path,
        capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "copy.json"
    shutil.copy(calibration, copy)
    code, table = _predict(tmp_path, models, site_scans[:1], "--site-calibration",
                           str(calibration), "--site-calibration", str(copy), cache=cache)
    err = capsys.readouterr().err
    assert code == 2 and table is None
    assert "both calibrate site 'HH'" in err and str(copy) in err
    empty = tmp_path / "none"
    empty.mkdir()
    code, table = _predict(tmp_path, models, site_scans[:1], "--site-calibration", str(empty),
                           cache=cache)
    assert code == 2 and table is None
    assert "a folder without a site calibration file" in capsys.readouterr().err
