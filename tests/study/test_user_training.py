"""``brainage train``: the study's notebooks 01-03 on a user's BIDS folder with a profile of
their choice, into a run folder whose model folder ``brainage predict`` takes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainage.cli import main
from brainage.data.simulate import simulate_cohort
from brainage.study import user_training
from tests.conftest import REPO_ROOT, copy_project_into
from tests.dask_cluster import tree_bytes

MNI = "MNI152NLin2009cSym"


def _tiny_profile(folder: Path) -> Path:
    """The tiny profile with one seed: the smallest schedule that trains both heads."""
    params = yaml.safe_load((REPO_ROOT / "notebooks" / "params" / "tiny.yaml").read_text())
    params.update(n_seeds=1, profile="mytiny")
    path = folder / "mytiny.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def train_user_run(folder: Path) -> dict:
    """``brainage train`` on a user's BIDS folder (26 healthy controls and 2 AD patients,
    template space, 4 mm) with the one-seed tiny profile, in a copy of the project: its exit
    code, what it printed, the folders, and the BIDS folder's bytes before. Computed in the
    background process of tests/conftest.py."""
    user_bids = folder / "user" / "bids"
    simulate_cohort(user_bids, n_healthy=26, n_ad=2, seed=5, resolution_mm=4.0)
    root = copy_project_into(REPO_ROOT, folder / "clone")
    profile = _tiny_profile(folder)
    run = folder / "myrun"
    before = tree_bytes(user_bids)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["-q", "train", "--profile", str(profile), "--bids", str(user_bids),
                     "--space", MNI, "--skull-stripped", "--out", str(run), "--root", str(root)])
    return {"bids": user_bids, "root": root, "profile": profile, "run": run, "code": code,
            "printed": printed.getvalue(), "before": before}


@pytest.fixture(scope="module")
def user_run(background) -> dict:
    return background.result("user_run")


@pytest.mark.slow
def test_train_on_a_bids_folder_gives_a_model_that_predict_takes(
        user_run: dict, tmp_path: Path, capsys) -> None:
    user_bids, root, profile, run = (user_run[k] for k in ("bids", "root", "profile", "run"))
    code, printed = user_run["code"], user_run["printed"]
    assert code == 0, printed
    assert f"model folder: {run / 'models'}" in printed
    for stem in user_training.TRAIN_NOTEBOOKS:
        assert (run / "notebooks" / f"{stem}.ipynb").is_file()
    assert not (run / "notebooks" / "05_clinical.ipynb").exists()
    assert not (root / "book" / "_build").exists() and not (root / "runs").exists()
    assert tree_bytes(user_bids) == user_run["before"]  # the user's folder is read, never written
    manifest = yaml.safe_load((run / user_training.TRAIN_MANIFEST).read_text())
    assert manifest["datasets"][0]["root"] == str(user_bids)
    # patients never train: the splits hold controls only
    splits = pd.read_csv(run / "splits.csv")
    cohort = pd.read_csv(run / "cohort.csv")
    trained = cohort[cohort["participant_id"].isin(splits["participant_id"])]
    assert set(trained["group"]) == {"HC"}
    # the model folder predicts a scan of the folder
    scan = sorted(user_bids.glob("sub-*/anat/*_T1w.nii.gz"))[0]
    out = tmp_path / "ages.csv"
    assert main(["-q", "predict", str(scan), "--model", str(run / "models"), "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--all-heads"]) == 0
    table = pd.read_csv(out)
    assert set(table["head"]) == {"rnc", "l1"} and table["brain_age"].notna().all()
    # a finished run is refused, not overwritten
    assert main(["-q", "train", "--profile", str(profile), "--bids", str(user_bids),
                 "--out", str(run), "--root", str(root)]) == 2
    assert "holds a trained model already" in capsys.readouterr().err


@pytest.mark.parametrize(("table", "message"), [
    (None, "participants.tsv is missing"),
    ("participant_id\tsex\nsub-01\tF\n", r"column\(s\) age missing"),
])
def test_train_refuses_a_bids_folder_without_ages(tmp_path: Path, table: str | None,
                                                  message: str) -> None:
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    if table is not None:
        (bids / "participants.tsv").write_text(table)
    with pytest.raises(user_training.TrainError, match=message):
        user_training.user_manifest(bids, tmp_path / "m.yaml")
    assert not (tmp_path / "m.yaml").exists()


def test_user_manifest_maps_the_columns_it_finds(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tage\tsite\tgroup\n"
                                           "sub-01\t40\tA\tCN\nsub-02\t70\tA\tAD\n")
    path = user_training.user_manifest(bids, tmp_path / "m.yaml", space="native")
    entry = yaml.safe_load(path.read_text())["datasets"][0]
    assert entry["columns"] == {"participant_id": "participant_id", "age": "age",
                                "site": "site", "group": "group"}
    assert "CN" in entry["groups"]["HC"] and entry["space"] == "native"
    assert [e["participant_id"] for e in entry["exclude"]] == ["sub-02"]
    assert "group 'AD' is not a control label" in entry["exclude"][0]["reason"]
    from brainage.data.manifest import load_manifest

    assert load_manifest(path).dataset("user").root == bids.absolute()


def test_train_outside_a_clone_says_what_to_do(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "train", "--out", str(tmp_path / "run")]) == 2
    assert "clone the repository" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_refuses_space_without_bids(tmp_path: Path, capsys) -> None:
    assert main(["-q", "train", "--out", str(tmp_path / "run"), "--skull-stripped"]) == 2
    assert "describe --bids scans" in capsys.readouterr().err
