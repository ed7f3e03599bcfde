"""``brainage bids``'s reading of its input dataset: the validation summary printed before any
work, ``--bids-filter-file`` (fMRIPrep's format), and the BIDS-App option spellings
(``--version``, ``--nprocs``/``--n_cpus``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.cli import build_parser, main
from brainage.data.simulate import simulate_cohort
from brainage.inference import bids_input


def _write_filter(tmp_path: Path, payload: object, name: str = "filter.json") -> Path:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def _scan(path: Path, rng: np.random.Generator) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(rng.random((7, 8, 9)).astype(np.float32), np.eye(4)), path)
    return path


# --- --bids-filter-file ---------------------------------------------------------------------


def test_read_filter_keeps_t1w_entities_and_ignores_other_queries(tmp_path: Path) -> None:
    path = _write_filter(tmp_path, {
        "t1w": {"datatype": "anat", "suffix": "T1w", "session": "01",
                "acquisition": ["mprage", None], "run": 1, "reconstruction": None},
        "bold": {"datatype": "func", "task": "rest"}})
    assert bids_input.read_bids_filter(path) == {
        "session": ["01"], "acquisition": ["mprage", None], "run": ["1"],
        "reconstruction": [None]}


def test_filter_without_t1w_query_selects_everything(tmp_path: Path, caplog) -> None:
    path = _write_filter(tmp_path, {"bold": {"task": "rest"}})
    with caplog.at_level(logging.WARNING):
        assert bids_input.read_bids_filter(path) == {}
    assert "has no 't1w' query" in caplog.text


@pytest.mark.parametrize(("payload", "message"), [
    ("{not json", "not valid JSON"),
    ([1, 2], "expected a JSON object of queries"),
    ({"t1": {"session": "01"}}, r"unknown query 't1' \(did you mean 't1w'"),
    ({"t1w": ["session"]}, "'t1w' must be an object"),
    ({"t1w": {"sesion": "01"}}, r"t1w.sesion: unknown entity \(did you mean 'session'"),
    ({"t1w": {"suffix": "T2w"}}, "t1w.suffix is 'T2w'; brainage reads suffix 'T1w' only"),
    ({"t1w": {"datatype": "func"}}, "reads datatype 'anat' only"),
    ({"t1w": {"run": 1.5}}, "t1w.run: a value must be text, a whole number, null"),
    ({"t1w": {"session": True}}, "t1w.session: a value must be text"),
])
def test_bad_filter_files_name_the_file_and_the_problem(tmp_path: Path, payload: object,
                                                        message: str) -> None:
    path = _write_filter(tmp_path, payload)
    with pytest.raises(bids_input.BidsFilterError, match=message) as err:
        bids_input.read_bids_filter(path)
    assert str(path) in str(err.value)


def test_missing_filter_file(tmp_path: Path) -> None:
    with pytest.raises(bids_input.BidsFilterError, match="does not exist or is not a file"):
        bids_input.read_bids_filter(tmp_path / "absent.json")
    with pytest.raises(bids_input.BidsFilterError, match="does not exist or is not a file"):
        bids_input.read_bids_filter(tmp_path)


NAMES = ["sub-01_ses-01_acq-mprage_run-01_T1w.nii.gz", "sub-01_ses-01_acq-mprage_run-02_T1w.nii.gz",
         "sub-01_ses-02_T1w.nii.gz", "sub-02_ses-01_rec-norm_T1w.nii.gz", "sub-03_T1w.nii"]


@pytest.mark.parametrize(("filters", "kept"), [
    ({}, NAMES),
    ({"session": ["01"]}, NAMES[:2] + NAMES[3:4]),
    ({"session": ["ses-02"]}, NAMES[2:3]),  # the prefix may be given
    ({"session": [None]}, NAMES[4:]),
    ({"acquisition": ["mprage"], "run": ["2"]}, NAMES[1:2]),  # run-02 is run 2
    ({"acquisition": [None]}, NAMES[2:]),
    ({"reconstruction": [None, "norm"], "session": ["01", "02"]}, NAMES[:4]),
    ({"run": ["03"]}, []),
])
def test_apply_filter_to_file_names(filters: dict, kept: list[str]) -> None:
    scans = pd.DataFrame({"path": [f"/data/x/{name}" for name in NAMES]})
    result = bids_input.apply_bids_filter(scans, filters)
    assert [Path(p).name for p in result["path"]] == kept


# --- the validation summary -----------------------------------------------------------------


def test_summary_counts_and_problems(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "bids"
    _scan(root / "sub-01/ses-a/anat/sub-01_ses-a_T1w.nii.gz", rng)
    _scan(root / "sub-01/ses-b/anat/sub-01_ses-b_T1w.nii.gz", rng)
    _scan(root / "sub-02/anat/sub-02_T1w.nii.gz", rng)
    (root / "sub-03/anat").mkdir(parents=True)  # no T1w scan
    _scan(root / "sub-05/anat/sub-05_T1w.nii.gz", rng)  # not in participants.tsv
    (root / "participants.tsv").write_text(
        "participant_id\tage\nsub-01\t40\nsub-02\tn/a\nsub-03\t50\nsub-04\t60\n")
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    summary = bids_input.summarise_dataset(root)
    assert (summary.n_subjects, summary.n_sessions, summary.n_t1w, summary.n_with_age) == (
        4, 2, 4, 2)
    text = "\n".join(summary.lines())
    assert text.startswith(f"input {root.absolute()}: 4 subject(s), 2 session label(s), 4 T1w "
                           f"scan(s) found (2 with an age), 4 problem(s)")
    for expected in ("1 subject(s) without a T1w scan: sub-03",
                     "participants.tsv: 1 row(s) without a sub- folder: sub-04",
                     "participants.tsv: 1 sub- folder(s) without a row: sub-05",
                     "2 T1w scan(s) without an age in participants.tsv"):
        assert expected in text


def test_summary_of_a_bare_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "bids"
    _scan(root / "sub-01/anat/sub-01_T1w.nii.gz", rng)
    summary = bids_input.summarise_dataset(root)
    assert (summary.n_subjects, summary.n_sessions, summary.n_t1w, summary.n_with_age) == (
        1, 0, 1, 0)
    text = "\n".join(summary.lines())
    assert "no sessions" in text
    assert f"{root.absolute() / 'dataset_description.json'} is missing" in text
    assert f"{root.absolute() / 'participants.tsv'} is missing: no ages" in text


def test_summary_of_a_table_without_ages(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "bids"
    _scan(root / "sub-01/anat/sub-01_T1w.nii.gz", rng)
    (root / "participants.tsv").write_text("participant_id\tsex\nsub-01\tF\n")
    problems = bids_input.summarise_dataset(root).problems
    assert any("participants.tsv" in p and "age" in p for p in problems), problems


# --- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "bids"
    simulate_cohort(root, n_healthy=2, n_ad=0, seed=3, resolution_mm=4.0)
    return root


def test_bids_prints_the_summary_and_applies_the_filter(small_bids: Path, model_dir: Path,
                                                        tmp_path: Path, capsys) -> None:
    first = sorted(p.name for p in small_bids.glob("sub-*"))[0]
    keep = _write_filter(tmp_path, {"t1w": {"session": None, "acquisition": None}})
    out = tmp_path / "out"
    code = main(["-q", "bids", str(small_bids), str(out), "participant", "--model",
                 str(model_dir), "--cache", str(tmp_path / "cache"), "--no-qc",
                 "--participant-label", first.removeprefix("sub-"),
                 "--bids-filter-file", str(keep)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"input {small_bids}: 2 subject(s), no sessions, 2 T1w scan(s) found (2 with an " \
           f"age), 0 problem(s)" in printed
    assert printed.index("input ") < printed.index("scan(s) written")
    assert [p.name for p in out.glob("sub-*")] == [first]


def test_a_filter_that_keeps_nothing_is_refused_before_any_work(
        small_bids: Path, model_dir: Path, tmp_path: Path, capsys) -> None:
    none = _write_filter(tmp_path, {"t1w": {"session": "01"}})
    out = tmp_path / "out"
    code = main(["-q", "bids", str(small_bids), str(out), "participant", "--model",
                 str(model_dir), "--bids-filter-file", str(none)])
    assert code == 2
    assert "--bids-filter-file keeps none of the 2 T1w scan(s)" in capsys.readouterr().err
    assert not list(out.glob("sub-*"))


def test_a_bad_filter_file_is_refused_before_any_output(small_bids: Path, model_dir: Path,
                                                        tmp_path: Path, capsys) -> None:
    bad = _write_filter(tmp_path, {"t1w": {"subject": "01"}})
    out = tmp_path / "out"
    code = main(["-q", "bids", str(small_bids), str(out), "participant", "--model",
                 str(model_dir), "--bids-filter-file", str(bad)])
    assert code == 2
    assert f"{bad}: t1w.subject: unknown entity" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("spelling", ["--jobs", "--nprocs", "--n_cpus", "--n-cpus"])
def test_nprocs_and_n_cpus_are_jobs(spelling: str) -> None:
    args = build_parser().parse_args(["bids", "in", "out", "participant", spelling, "3"])
    assert args.jobs == 3


def test_bids_version(capsys) -> None:
    from brainage._utils import VERSION

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["bids", "--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"brainage {VERSION}"


@pytest.mark.parametrize("command", [["predict", "x.nii", "--model", "m"],
                                     ["calibrate", "m", "x.nii", "--out", "s.json"],
                                     ["bids", "in", "out", "participant"],
                                     ["train", "--out", "run"]])
def test_device_is_auto_everywhere(command: list[str]) -> None:
    assert build_parser().parse_args(command).device == "auto"
