"""The BIDS App (``brainage bids``): participant and group levels end to end on a small
simulated BIDS folder (files, sidecars, labels, sessions, failures, re-runs, parallel jobs,
a Dask cluster) and on two real IXI participants (slow, skipped without ../shared/data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage._utils import PREDICTION_VALUES
from brainage._utils.columns import (
    BIDS_COLUMNS,
    BIDS_OUTPUT_COLUMNS,
    COLUMN_DESCRIPTIONS,
    PREDICTION_COLUMNS,
    describe_columns,
)
from brainage.cli import main
from brainage.data.simulate import simulate_cohort
from brainage.imaging.preprocess import PreprocessCache, PreprocessParams, preprocess_cohort
from brainage.imaging.registration import registration_passes, template_grid
from brainage.inference import bids_app
from brainage.inference.model_folder import load_model_folder
from brainage.inference.predict import predict_scans
from tests.conftest import REPO_ROOT
from tests.dask_cluster import dask_client, tree_bytes

__all__ = ["dask_client"]  # fixtures of this module's tests

SPACE = "space-MNI152NLin2009cSym"
ANAT = "sub-{0}/anat/sub-{0}_"


@pytest.fixture(scope="module")
def sim_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three healthy controls and one AD patient, template space, 4 mm."""
    root = tmp_path_factory.mktemp("raw") / "bids"
    simulate_cohort(root, n_healthy=3, n_ad=1, seed=1, resolution_mm=4.0)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def derivative(sim_bids: Path, model_dir: Path, cache: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, bytes]]:
    """The participant level run once on every participant, with integrated-gradients maps;
    the raw folder's bytes before."""
    raw_before = tree_bytes(sim_bids)
    out = tmp_path_factory.mktemp("derivatives") / "brainage"
    code = main(["-q", "bids", str(sim_bids), str(out), "participant", "--model",
                 str(model_dir), "--cache", str(cache), "--saliency"])
    return out, code, raw_before


def _labels(bids: Path) -> list[str]:
    return sorted(p.name.removeprefix("sub-") for p in bids.glob("sub-*"))


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"])


# --- participant level ----------------------------------------------------------------------


def test_participant_level_writes_a_bids_derivative(derivative, sim_bids: Path,
                                                    model_dir: Path) -> None:
    out, code, _ = derivative
    assert code == 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "brainage"
    assert description["DatasetLinks"]["raw"] == sim_bids.absolute().as_uri()
    heads = ["rnc"]  # the recommended head; both maps are written (--saliency)
    for label in _labels(sim_bids):
        stem = out / ANAT.format(label)
        for name in (f"{SPACE}_desc-preproc_T1w.nii.gz", f"{SPACE}_desc-preproc_T1w.json",
                     f"{SPACE}_desc-brain_mask.nii.gz", f"{SPACE}_desc-brain_mask.json",
                     f"{SPACE}_desc-qc_T1w.png", f"{SPACE}_desc-igRnc_T1w.nii.gz",
                     f"{SPACE}_desc-igL1_T1w.nii.gz", "desc-brainage_T1w.json"):
            assert Path(f"{stem}{name}").is_file(), name
        table = _read_tsv(Path(f"{stem}desc-brainage_T1w.tsv"))
        assert list(table.columns) == list(BIDS_OUTPUT_COLUMNS)
        assert table["head"].tolist() == heads
        # a simulated cohort, a model card without a simulated domain: no sim2real
        assert table["domain"].isin(["ok", "ood"]).all()
        assert (table["participant_id"] == f"sub-{label}").all()
        assert table["session"].isna().all() and table["error"].isna().all()
        assert (table["path"] == f"bids:raw:sub-{label}/anat/sub-{label}_T1w.nii.gz").all()
        assert table["saliency"].tolist() == [
            f"bids::sub-{label}/anat/sub-{label}_{SPACE}_desc-ig{h.title()}_T1w.nii.gz"
            for h in heads]
        sidecar = json.loads(Path(f"{stem}desc-brainage_T1w.json").read_text())
        assert list(sidecar) == list(table.columns)
        assert all(entry["Description"] for entry in sidecar.values())
        assert sidecar["brain_age"]["Units"] == "year"
        assert "brain.predicted_age" in sidecar["brain_age"]["Description"]
    assert not list(out.glob(".work-*")), "the work folder is removed"


def test_predictions_and_volumes_are_brainage_predicts(derivative, sim_bids: Path,
                                                       model_dir: Path, cache: Path) -> None:
    """The table's predictions are those of brainage predict on the same scans; the
    preprocessed scan is the cache's; the mask is binary and the scan is 0 outside it."""
    out, _, _ = derivative
    scans = sorted(sim_bids.glob("sub-*/anat/*_T1w.nii.gz"))
    folder = load_model_folder(model_dir)
    expected = predict_scans([str(s) for s in scans], folder, cache=cache)
    tables = pd.concat([_read_tsv(p) for p in sorted(out.glob("sub-*/anat/*_desc-brainage_T1w.tsv"))])
    assert tables["head"].unique().tolist() == ["rnc"]
    theirs = expected[expected["model"] == "rnc"]
    # rounded to what they carry: 0.1 y, 0.1 mm (NaN where not measured, in both)
    for ours, their in (("brain_age", "predicted"),
                        ("registration_misfit_mm", "registration_misfit_mm")):
        np.testing.assert_allclose(tables[ours].to_numpy(), theirs[their].to_numpy(),
                                   atol=0.05 + 1e-9)
    shape, affine = template_grid(folder.preprocess.grid_mm, crop_to_brain=True)
    params = folder.params_for("MNI152NLin2009cSym", False)
    for scan in scans:
        label = scan.parts[-3]
        preproc = out / label / "anat" / f"{label}_{SPACE}_desc-preproc_T1w.nii.gz"
        assert preproc.read_bytes() == PreprocessCache(cache).path_for(scan, params).read_bytes()
        mask = nib.load(out / label / "anat" / f"{label}_{SPACE}_desc-brain_mask.nii.gz")
        data = np.asarray(mask.dataobj)
        assert mask.shape == shape and np.allclose(mask.affine, affine)
        assert data.dtype == np.uint8 and set(np.unique(data)) == {0, 1}
        assert not np.asarray(nib.load(preproc).dataobj)[data == 0].any()


def test_nothing_is_written_inside_bids_dir(derivative, sim_bids: Path) -> None:
    _, _, raw_before = derivative
    assert tree_bytes(sim_bids) == raw_before


def test_rerun_is_a_no_op(derivative, sim_bids: Path, model_dir: Path, cache: Path,
                          capsys) -> None:
    out, _, _ = derivative
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["-q", "bids", str(sim_bids), str(out), "participant", "--model",
                 str(model_dir), "--cache", str(cache), "--saliency"]) == 0
    assert "0 scan(s) written, 4 done already, 0 failed, of 4" in capsys.readouterr().out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_output_of_other_settings_is_refused(derivative, sim_bids: Path, model_dir: Path,
                                             cache: Path, capsys) -> None:
    out, _, _ = derivative
    assert main(["-q", "bids", str(sim_bids), str(out), "participant", "--model",
                 str(model_dir / "rnc"), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "holds results made with other settings" in err and "heads" in err


# --- group level ----------------------------------------------------------------------------


def test_group_level_collects_every_participant(derivative, sim_bids: Path, capsys) -> None:
    out, _, _ = derivative
    capsys.readouterr()
    assert main(["-q", "bids", str(sim_bids), str(out), "group"]) == 0
    printed = capsys.readouterr().out
    assert "4 scan(s) of 4 participant(s)" in printed
    table = _read_tsv(out / "group_desc-brainage_T1w.tsv")
    assert len(table) == 4 and table["participant_id"].nunique() == 4
    assert list(table.columns[:len(BIDS_OUTPUT_COLUMNS)]) == list(BIDS_OUTPUT_COLUMNS)
    assert bids_app.domain_verdict(table) in printed.splitlines()  # then the batch line
    # this model folder stores no conformal calibration: no interval, so no condition printed
    assert table["interval_level"].isna().all() and "calibration:" not in printed
    sidecar_holds = json.loads((out / "group_desc-brainage_T1w.json").read_text())
    assert "exchangeable" in sidecar_holds["brain_age_lower"]["Description"]
    assert {"group", "sex", "site"} <= set(table.columns)
    assert sorted(table["group"].unique()) == ["AD", "HC"]
    sidecar = json.loads((out / "group_desc-brainage_T1w.json").read_text())
    assert list(sidecar) == list(table.columns)
    assert sidecar["group"]["Description"]  # from participants.json, or a default
    figure = out / "group_desc-brainage_T1w.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_level_without_participant_results(sim_bids: Path, tmp_path: Path,
                                                 capsys) -> None:
    assert main(["-q", "bids", str(sim_bids), str(tmp_path / "empty"), "group"]) == 2
    assert "holds no participant-level table" in capsys.readouterr().err


# --- arguments ------------------------------------------------------------------------------


def test_participant_labels_choose_participants(sim_bids: Path, model_dir: Path, cache: Path,
                                                tmp_path: Path) -> None:
    first, second = _labels(sim_bids)[:2]
    report = bids_app.run_participant_level(
        sim_bids, tmp_path / "out", model_dir,
        bids_app.ParticipantOptions(participant_labels=(first, f"sub-{second}"), cache=cache,
                                    qc=False))
    assert report.ok and report.n_scans == 2 and len(report.written) == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("sub-*")) == [f"sub-{first}",
                                                                        f"sub-{second}"]
    assert not list((tmp_path / "out").rglob("*_desc-qc_T1w.png"))


@pytest.mark.parametrize(("labels", "message"), [
    (["00001"], r"participant label\(s\) '00001' \(close: 0001"),
    (["9"], r"participant label\(s\) '9' not found in .*; it holds 0001, 0002, 0003, 0004"),
    (["a_b"], "'a_b' is not a BIDS label"),
])
def test_bad_participant_labels(sim_bids: Path, labels: list[str], message: str) -> None:
    with pytest.raises(bids_app.BidsAppError, match=message):
        bids_app.select_scans(sim_bids, labels)


def test_output_and_cache_inside_bids_dir_are_refused(sim_bids: Path, model_dir: Path,
                                                      capsys) -> None:
    assert main(["-q", "bids", str(sim_bids), str(sim_bids / "derivatives" / "brainage"),
                 "participant", "--model", str(model_dir)]) == 2
    assert "never writes into the raw dataset" in capsys.readouterr().err
    with pytest.raises(bids_app.BidsAppError, match="--cache .* lies inside BIDS_DIR"):
        bids_app.run_participant_level(sim_bids, sim_bids.parent / "out", model_dir,
                                       bids_app.ParticipantOptions(cache=sim_bids / ".cache"))
    assert not (sim_bids / "derivatives" / "brainage").exists()


def test_participant_level_needs_a_model(sim_bids: Path, tmp_path: Path, capsys) -> None:
    assert main(["-q", "bids", str(sim_bids), str(tmp_path / "out"), "participant"]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_every_table_column_is_described() -> None:
    assert set(PREDICTION_VALUES) <= set(COLUMN_DESCRIPTIONS)
    assert set(PREDICTION_COLUMNS) <= set(COLUMN_DESCRIPTIONS)
    assert list(describe_columns(BIDS_COLUMNS)) == list(BIDS_COLUMNS)
    assert list(describe_columns(BIDS_OUTPUT_COLUMNS)) == list(BIDS_OUTPUT_COLUMNS)
    with pytest.raises(ValueError, match=r"column\(s\) \['nonsense'\] have no description"):
        describe_columns(["predicted", "nonsense"])


def test_all_heads_and_a_run_that_reports_other_heads_is_refused(
        sim_bids: Path, model_dir: Path, cache: Path, tmp_path: Path) -> None:
    first = _labels(sim_bids)[0]
    out = tmp_path / "out"
    options = bids_app.ParticipantOptions(participant_labels=(first,), cache=cache, qc=False,
                                          all_heads=True)
    assert bids_app.run_participant_level(sim_bids, out, model_dir, options).ok
    table = _read_tsv(out / f"sub-{first}" / "anat" / f"sub-{first}_desc-brainage_T1w.tsv")
    assert table["head"].tolist() == ["rnc", "l1"]
    assert json.loads((out / bids_app.SETTINGS_FILE).read_text())["reported_heads"] == [
        "rnc", "l1"]
    # the default (one head) into the same derivative would mix tables of one and two rows
    with pytest.raises(bids_app.BidsAppError, match="differs in reported_heads"):
        bids_app.run_participant_level(sim_bids, out, model_dir, bids_app.ParticipantOptions(
            participant_labels=(first,), cache=cache, qc=False))


def test_domain_verdict_and_the_group_figure_mark_sim2real(tmp_path: Path) -> None:
    table = pd.DataFrame({"participant_id": ["sub-1", "sub-2", "sub-3"], "head": "rnc",
                          "age": [30.0, 50.0, 70.0], "brain_age": [25.0, 52.0, 61.0],
                          "brain_age_gap": [-5.0, 2.0, -9.0],
                          "brain_age_gap_corrected": [np.nan] * 3,
                          "domain": ["sim2real", "ok", "sim2real"], "group": "HC"})
    assert bids_app.domain_verdict(table) == "domain: 2 of 3 sim2real"
    assert bids_app.domain_verdict(table.assign(domain=["ok", "ood", "ok"])) == (
        "domain: 1 of 3 ood")
    assert bids_app.domain_verdict(table.assign(domain="ok")) == "domain: ok (3 of 3)"
    # no verdict to give: a table without the column, or only failed scans
    assert bids_app.domain_verdict(table.drop(columns="domain")) == "domain: n/a"
    assert bids_app.domain_verdict(table.assign(domain=np.nan)) == "domain: n/a"
    import matplotlib.pyplot as plt

    titles = []
    original = plt.Axes.set_title
    try:
        plt.Axes.set_title = lambda ax, text, *a, **k: titles.append(text) or original(
            ax, text, *a, **k)
        bids_app._summary_figure(table, tmp_path / "group.png")
    finally:
        plt.Axes.set_title = original
    assert (tmp_path / "group.png").read_bytes()[:4] == b"\x89PNG"
    assert len(titles) == 2 and all("domain: 2 of 3 sim2real" in t for t in titles)


# --- sessions and failures ------------------------------------------------------------------


def _session_bids(sim_bids: Path, root: Path) -> Path:
    """sub-01 with sessions 1 and 2, sub-02 with session 1, from the simulated scans."""
    scans = sorted(sim_bids.glob("sub-*/anat/*_T1w.nii.gz"))
    for scan, (sub, ses) in zip(scans, [("01", "1"), ("01", "2"), ("02", "1")]):
        anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(scan, anat / f"sub-{sub}_ses-{ses}_T1w.nii.gz")
    (root / "participants.tsv").write_text("participant_id\tage\tgroup\nsub-01\t50\tHC\n"
                                           "sub-02\t60\tHC\n")
    (root / "dataset_description.json").write_text('{"Name": "sessions", "BIDSVersion": '
                                                   '"1.9.0"}')
    return root


def test_session_labels(sim_bids: Path, model_dir: Path, cache: Path, tmp_path: Path) -> None:
    bids = _session_bids(sim_bids, tmp_path / "raw")
    options = bids_app.ParticipantOptions(session_labels=("ses-2",), cache=cache, qc=False)
    report = bids_app.run_participant_level(bids, tmp_path / "out", model_dir, options)
    assert report.ok and report.n_scans == 1
    table = _read_tsv(tmp_path / "out" / "sub-01" / "ses-2" / "anat" /
                      "sub-01_ses-2_desc-brainage_T1w.tsv")
    assert (table["session"] == "ses-2").all() and (table["age"] == 50).all()
    assert not (tmp_path / "out" / "sub-01" / "ses-1").exists()
    with pytest.raises(bids_app.BidsAppError, match=r"session label\(s\) '3' not found .* "
                                                    r"it holds 1, 2"):
        bids_app.select_scans(bids, None, ["3"])


def test_a_failed_participant_writes_its_error_and_the_others_go_on(
        sim_bids: Path, model_dir: Path, cache: Path, tmp_path: Path, capsys) -> None:
    bids = shutil.copytree(sim_bids, tmp_path / "raw", ignore=shutil.ignore_patterns(
        "derivatives"))
    bad = bids / "sub-9999" / "anat" / "sub-9999_T1w.nii.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00 not a NIfTI file")
    out = tmp_path / "out"
    argv = ["-q", "bids", str(bids), str(out), "participant", "--model", str(model_dir),
            "--cache", str(cache), "--no-qc", "--participant-label", "0001", "9999"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"FAILED {bad}" in err and "cannot read the image header" in err
    log = json.loads((out / "logs" / "sub-9999_error.json").read_text())
    assert log["participant_id"] == "sub-9999" and "cannot read the image header" in log["error"]
    assert log["source"] == "bids:raw:sub-9999/anat/sub-9999_T1w.nii.gz"
    assert (out / "sub-0001" / "anat" / "sub-0001_desc-brainage_T1w.tsv").is_file()
    assert not (out / "sub-9999").exists()
    assert main(["-q", "bids", str(bids), str(out), "group"]) == 0
    assert "failed at participant level: bids:raw:sub-9999" in capsys.readouterr().err
    shutil.copy(sim_bids / "sub-0002" / "anat" / "sub-0002_T1w.nii.gz", bad)  # fixed
    assert main(argv) == 0
    assert not (out / "logs" / "sub-9999_error.json").exists()


# --- many jobs, Dask, real scans ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_participant_jobs_in_parallel_share_one_output(sim_bids: Path, model_dir: Path,
                                                           tmp_path: Path) -> None:
    """What a SLURM array job does: one participant per task, all into one OUTPUT_DIR."""
    out, shared_cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    jobs = [subprocess.Popen([sys.executable, "-m", "brainage.cli", "-q", "bids", str(sim_bids),
                              str(out), "participant", "--participant-label", label,
                              "--model", str(model_dir), "--cache", str(shared_cache)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for label in _labels(sim_bids)[:2]]
    results = [job.communicate(timeout=500) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], results
    assert main(["-q", "bids", str(sim_bids), str(out), "group"]) == 0
    table = _read_tsv(out / "group_desc-brainage_T1w.tsv")
    assert sorted(table["participant_id"].unique()) == ["sub-0001", "sub-0002"]
    assert json.loads((out / "dataset_description.json").read_text())["GeneratedBy"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".work-")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dask_participant_level_equals_the_local_run(sim_bids: Path, model_dir: Path,
                                                     dask_client, tmp_path: Path) -> None:
    """Every output and the cache byte for byte: a 2-worker cluster against 2 local
    processes (the model sees the same batches: 4 scans per worker between writes)."""
    runs = {}
    for name, extra in (("local", {"n_jobs": 2}), ("dask", {"scheduler": dask_client})):
        options = bids_app.ParticipantOptions(cache=tmp_path / name / "cache", saliency=True,
                                              **extra)
        report = bids_app.run_participant_level(sim_bids, tmp_path / name / "out", model_dir,
                                                options)
        assert report.ok and len(report.written) == 4
        runs[name] = tree_bytes(tmp_path / name)
    assert runs["dask"] == runs["local"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ixi_participant_and_group_levels_on_dask(ixi10: Path, model_dir: Path, dask_client,
                                                  ixi10_model_cache: Path,
                                                  tmp_path: Path) -> None:
    """Two raw IXI participants (native space: N4 and registration on the cluster's two
    workers), then the group level; the cache entries equal a local run's (sub-IXI012's, in
    the session cache test_predict's native scan shares: one local registration for both)."""
    labels = ["IXI012", "IXI013"]
    out, cache = tmp_path / "out", tmp_path / "cache"
    report = bids_app.run_participant_level(
        ixi10, out, model_dir, bids_app.ParticipantOptions(participant_labels=tuple(labels),
                                                           cache=cache, scheduler=dask_client))
    assert report.ok, report.failed
    for label in labels:
        table = _read_tsv(out / f"sub-{label}" / "anat" / f"sub-{label}_desc-brainage_T1w.tsv")
        assert (table["space"] == "native").all()
        misfit = table["registration_misfit_mm"]
        assert misfit.map(registration_passes).all(), misfit.tolist()
        assert table["brain_age"].notna().all() and table["age"].notna().all()
    group = bids_app.run_group_level(ixi10, out)
    assert group.n_scans == 2 and group.figure.is_file()
    assert {"sex", "site"} <= set(_read_tsv(group.table).columns)
    scan = ixi10 / "sub-IXI012" / "anat" / "sub-IXI012_T1w.nii.gz"
    params = PreprocessParams(grid_mm=8.0, crop_to_brain=True)
    local = PreprocessCache(ixi10_model_cache)
    assert preprocess_cohort([scan], params, local)[0].ok
    for path in (local.path_for(scan, params), ):
        ours = PreprocessCache(cache).path_for(scan, params)
        assert ours.read_bytes() == path.read_bytes()
        assert ours.with_suffix("").with_suffix(".json").read_bytes() == path.with_suffix(
            "").with_suffix(".json").read_bytes()


def test_help_lists_bids_and_its_options(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "bids" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bids", "--help"])
    out = capsys.readouterr().out
    for option in ("--participant-label", "--session-label", "--model", "--saliency",
                   "--no-qc", "--cache", "--scheduler", "participant or group"):
        assert option in out


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()), "not UTF-8 text (byte 0xff at offset 0)"),
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_text(p.read_text().replace("\tregistration_misfit_mm\t",
                                                  "\tmy_column\t", 1)),
     "has column(s) ['my_column'] that the participant level never writes"),
    (lambda p: p.write_text("participant_id\thead\n"), "lacks the column(s) ['brain_age']"),
    (lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "has no rows"),
    (lambda p: p.write_text('a\t"b\n'), "cannot be read as a tab-separated table"),
], ids=["not utf-8", "empty", "unknown column", "no predicted", "no rows", "bad quoting"])
def test_group_level_skips_an_unreadable_table_and_names_it(derivative, sim_bids: Path,
                                                            tmp_path: Path, capsys, damage,
                                                            problem: str) -> None:
    """One bad participant table: named, left out; the others make the group table; exit 1."""
    out = tmp_path / "brainage"
    shutil.copytree(derivative[0], out)
    first = _labels(sim_bids)[0]
    bad = next((out / f"sub-{first}" / "anat").glob("*_desc-brainage_T1w.tsv"))
    damage(bad)
    capsys.readouterr()
    assert main(["-q", "bids", str(sim_bids), str(out), "group"]) == 1
    captured = capsys.readouterr()
    assert f"SKIPPED participant-level table {bad}: {problem}" in captured.err
    assert "1 participant-level table(s) left out" in captured.err
    assert "3 scan(s) of 3 participant(s)" in captured.out
    table = _read_tsv(out / "group_desc-brainage_T1w.tsv")
    assert len(table) == 3 and f"sub-{first}" not in set(table["participant_id"])


def test_group_level_with_no_readable_table(derivative, sim_bids: Path, tmp_path: Path,
                                            capsys) -> None:
    out = tmp_path / "brainage"
    shutil.copytree(derivative[0], out)
    group = out / "group_desc-brainage_T1w.tsv"
    group.write_text("an earlier group table\n")
    for table in out.glob("sub-*/anat/*_desc-brainage_T1w.tsv"):
        table.write_bytes(b"")
    assert main(["-q", "bids", str(sim_bids), str(out), "group"]) == 2
    err = capsys.readouterr().err
    assert "none of the 4 participant-level table(s)" in err and "the file is empty" in err
    assert group.read_text() == "an earlier group table\n"  # not replaced by nothing


def test_saliency_without_the_folders_reference_is_refused_before_writing(
        sim_bids: Path, model_dir: Path, tmp_path: Path) -> None:
    """A model folder from before issue 27 has no integrated-gradients reference: --saliency
    is refused, naming the file, and the output folder is not created."""
    models = shutil.copytree(model_dir, tmp_path / "models")
    (models / "ig_reference.nii.gz").unlink()
    with pytest.raises(bids_app.BidsAppError, match="has no ig_reference.nii.gz"):
        bids_app.run_participant_level(sim_bids, tmp_path / "out", models,
                                       bids_app.ParticipantOptions(cache=tmp_path / "cache",
                                                                   saliency=True))
    assert not (tmp_path / "out").exists()
