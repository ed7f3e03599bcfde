"""Commands a newcomer meets first: ``brainage profiles`` (inside and outside a clone) and
``brainage preprocess --model DIR`` (the model's grid instead of the 2 mm default)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.cli import main
from brainage.imaging.registration import template_grid
from brainage.study.profiles import list_profiles, profile_description
from tests.conftest import REPO_ROOT
from tests.inference.test_predict import GRID_MM, SCAN_MM, _mni_scan, template_4mm

__all__ = ["template_4mm"]  # fixtures, imported for this module's tests


def test_profiles_inside_a_clone_lists_names_with_descriptions(monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert main(["profiles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list_profiles(REPO_ROOT / "notebooks" / "params")
    assert [line.split()[0] for line in lines] == names
    for name, line in zip(names, lines, strict=True):
        description = line[len(name):].strip()
        assert len(description) > 20 and "\n" not in description
        assert description == profile_description(REPO_ROOT / "notebooks" / "params"
                                                  / f"{name}.yaml")
    assert "quick" in names


def test_profiles_outside_a_clone_says_clone_or_root(tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["profiles"]) == 2
    err = capsys.readouterr().err
    assert "clone the repository" in err and "--root" in err
    assert main(["profiles", "--root", str(REPO_ROOT)]) == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("# One sentence. Another one.\nkey: 1\n", "One sentence."),
    ("# Smith et al. 2022 made it: a test.\n# More.\n", "Smith et al. 2022 made it: a test."),
    ("# " + "word " * 40 + "\n", ("word " * 19).strip() + " ..."),  # 99 characters
    ("key: 1\n# late comment\n", ""),
])
def test_profile_description_is_the_first_sentence(tmp_path: Path, text: str,
                                                   expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert profile_description(path) == expected


def test_preprocess_with_model_writes_the_models_grid(model_dir: Path, template_4mm,
                                                      tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    scan = _mni_scan(tmp_path / "in" / "s.nii.gz", template_4mm, 400.0, rng)
    out = tmp_path / "out.nii.gz"
    code = main(["-q", "preprocess", str(scan), str(out), "--model", str(model_dir),
                 "--space", "MNI152NLin2009cSym", "--skull-stripped"])
    assert code == 0, capsys.readouterr()
    shape, affine = template_grid(GRID_MM, crop_to_brain=True)  # the model's, not 2 mm
    written = nib.load(out)
    assert written.shape == shape and np.allclose(written.affine, affine, atol=1e-4)
    assert SCAN_MM != GRID_MM  # the scan's own grid is another one
    default = tmp_path / "default.nii.gz"
    assert main(["-q", "preprocess", str(scan), str(default), "--space", "MNI152NLin2009cSym",
                 "--skull-stripped"]) == 0
    assert nib.load(default).shape == template_grid(2.0)[0]


@pytest.mark.parametrize("extra", [["--grid-mm", "4"], ["--crop-to-brain"],
                                   ["--brain-extraction", "template"]])
def test_preprocess_model_and_grid_options_conflict(model_dir: Path, tmp_path: Path, extra,
                                                    capsys) -> None:
    out = tmp_path / "out.nii.gz"
    assert main(["-q", "preprocess", str(tmp_path / "x.nii.gz"), str(out), "--model",
                 str(model_dir), *extra]) == 2
    assert f"drop {extra[0]}" in capsys.readouterr().err
    assert not out.exists()


def test_preprocess_with_a_missing_model_folder(tmp_path: Path, capsys) -> None:
    assert main(["-q", "preprocess", str(tmp_path / "x.nii.gz"), str(tmp_path / "o.nii.gz"),
                 "--model", str(tmp_path / "nomodel")]) == 2
    assert "nomodel does not exist or is not a folder" in capsys.readouterr().err


def test_starter_profile_is_listed_and_its_settings_validate(monkeypatch, capsys,
                                                             tmp_path: Path) -> None:
    """The README's five-minute path trains ``--profile starter``: `brainage profiles` lists it
    with what it is, every key is a notebook parameter, its network and schedule build, and it
    is lighter than quick (fewer subjects, fewer epochs) with the same network (predict runs as
    fast) and enough validation scans for the OOD threshold and the intervals."""
    import papermill

    from brainage.models.network import ModelConfig
    from brainage.models.train import TrainConfig
    from brainage.study.book import convert_notebook, discover_notebooks
    from brainage.study.profiles import load_profile

    monkeypatch.chdir(REPO_ROOT)
    assert main(["profiles"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.split()[0] == "starter")
    assert "starter model" in line and "brainage train --profile starter" in line
    params_dir = REPO_ROOT / "notebooks" / "params"
    starter, quick = (load_profile(n, params_dir).params for n in ("starter", "quick"))
    declared = {src.stem: list(papermill.inspect_notebook(str(convert_notebook(
        src, tmp_path / f"{src.stem}.ipynb")))) for src in discover_notebooks(
        REPO_ROOT / "notebooks")}
    load_profile("starter", params_dir).check_used(declared)
    network = {k: starter[k] for k in ("model_depth", "model_widths", "conv1_stride", "grid_mm",
                                       "crop_to_brain")}
    assert network == {k: quick[k] for k in network}
    ModelConfig(depth=starter["model_depth"], widths=tuple(starter["model_widths"]),
                conv1_stride=starter["conv1_stride"])
    for epochs, head_epochs in ((starter["epochs"], starter["head_epochs"]),
                                (starter["l1_epochs"], 0)):
        TrainConfig(epochs=epochs, head_epochs=head_epochs, batch_size=starter["batch_size"],
                    lr=starter["lr"], probe_every=starter["probe_every"], device="cpu")
    subjects = sum(starter[f"sim_n_{g}"] for g in ("healthy", "ad", "pd"))
    assert subjects < sum(quick[f"sim_n_{g}"] for g in ("healthy", "ad", "pd"))
    assert starter["epochs"] < quick["epochs"] and starter["l1_epochs"] < quick["l1_epochs"]
    n_val = starter["sim_n_healthy"] * starter["split_fractions"][1]
    assert n_val >= 1 / starter["ood_rate"] - 1  # else notebook 02 writes no OOD reference
    assert n_val / starter["interval_bins"] >= 1 / (1 - starter["interval_level"])
    assert "starter model" in starter["model_note"]
    assert starter["real_scans_check"] is False and starter["rescan_controls"] == 0
