"""Bad inputs of the cohort reader and of preprocessing (issue 13): each test builds the bad
input itself, checks that the message names the file and the problem, and that the good inputs
of the same run still went through."""

from __future__ import annotations

import builtins
import gzip
import json
import os
import re
import time
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.cli import main
from brainage.data.cohort import (
    CohortError,
    check_image,
    load_cohort,
    parse_age,
    read_participant_ages,
)
from brainage.imaging.preprocess import (
    PreprocessCache,
    PreprocessError,
    load_scan,
    preprocess_cohort,
)
from tests.data.test_cohort import HEADER, ROWS, TINY, make_bids, make_spec

# --- read_participant_ages / parse_age ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30.5", (30.5, None)), (" 0 ", (0.0, None)), ("120", (120.0, None)),
     ("n/a", (None, "missing")), ("", (None, "missing")), ("forty", (None, "not a number")),
     ("nan", (None, "not a number")), ("inf", (None, "not a number")),
     ("-inf", (None, "not a number")), ("1_0", (None, "not a number")),
     ("-1", (None, "outside 0-120 years")), ("130", (None, "outside 0-120 years"))],
)
def test_parse_age(text, expected):
    assert parse_age(text) == expected


def test_read_participant_ages_checks_as_the_cohort_reader(tmp_path):
    table = tmp_path / "bids" / "participants.tsv"
    table.parent.mkdir()
    table.write_text("participant_id\tage\n01\t30\nsub-02\tNaN\nsub-03\t130\nsub-04\tn/a\n"
                     "sub-05\t40\nsub-05\t41\n\t50\nsub-06\t7.5\n")
    ages, problems = read_participant_ages(table)
    assert ages == {"sub-01": 30.0, "sub-02": None, "sub-03": None, "sub-04": None,
                    "sub-05": None, "sub-06": 7.5}
    assert len(problems) == 5, problems
    for expected in (f"sub-02, {table} line 3: age 'NaN' is not a number",
                     f"sub-03, {table} line 4: age '130' is outside 0-120 years",
                     f"sub-04, {table} line 5: age 'n/a' is missing",
                     f"sub-05, {table}: the participant id appears on lines 6, 7",
                     f"{table}: line 8 has no participant id"):
        assert sum(expected in p for p in problems) == 1, (expected, problems)


def test_read_participant_ages_unreadable_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="participants table does not exist"):
        read_participant_ages(tmp_path / "participants.tsv")
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\tAge\nsub-01\t30\n")
    with pytest.raises(CohortError, match=r"participants\.tsv: the table lacks the column 'age'; "
                                          r"its columns: participant_id, Age \(did you mean"):
        read_participant_ages(table)
    table.write_bytes(b"participant_id\tage\nsub-01\t\xff\xfe30\n")
    with pytest.raises(CohortError, match="cannot read the participants table"):
        read_participant_ages(table)


# --- participants.tsv through load_cohort (11c, 11d) --------------------------------------


def _messages(result, check: str, severity: str) -> list[str]:
    rows = result.problems[(result.problems["check"] == check)
                           & (result.problems["severity"] == severity)]
    return rows["message"].tolist()


def test_nan_and_inf_ages_are_not_a_number(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\tNaN\tM\tB\tCN\t28\n",
                         "sub-03": "sub-03\t-inf\tM\tA\tAlzheimer\t21\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    table = root / "participants.tsv"
    assert _messages(result, "age", "error") == [
        f"dataset 'toy', sub-02, {table} line 3: age 'NaN' is not a number",
        f"dataset 'toy', sub-03, {table} line 4: age '-inf' is not a number"]
    assert sorted(result.table["participant_id"]) == ["sub-01", "sub-04"]  # the good rows


def test_stray_trailing_tabs_warn_and_the_table_is_read(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tmale\tB\tCN\tn/a\t\n",
                         "sub-04": "sub-04\t65\tn/a\tB\tParkinson\t\t \t\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows, header=HEADER.replace("\n", "\t\n"))
    table = root / "participants.tsv"
    result = load_cohort(make_spec(root), limits=TINY)
    assert result.errors.empty, result.errors["message"].tolist()
    warnings = _messages(result, "fields", "warning")
    assert len(warnings) == 3, warnings
    assert f"{table}: the header (line 1) ends with an empty column name" in warnings[0]
    assert f"{table}: line 3 ends with 1 empty field(s) more than the header's 6" in warnings[1]
    assert f"{table}: line 5 ends with 2 empty field(s)" in warnings[2]
    assert len(result.table) == 5  # every scan of the run
    assert result.table.set_index("participant_id")["age"].to_dict()["sub-04"] == 65.0
    ages, problems = read_participant_ages(table)
    assert ages == {"sub-01": 30.5, "sub-02": 41.0, "sub-03": 72.0, "sub-04": 65.0}
    assert len(problems) == 3 and "line 5 ends with 2 empty field(s)" in problems[2]


def test_extra_values_are_an_error_naming_the_line(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tmale\tB\tCN\tn/a\tleft-handed\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    table = root / "participants.tsv"
    result = load_cohort(make_spec(root), limits=TINY)
    assert _messages(result, "fields", "error") == [(
        f"dataset 'toy', {table}: line 3 has 7 fields but the header has 6 (extra values "
        f"'left-handed'): cannot tell which value belongs to which column; the row is left out")]
    assert len(result.errors) == 1  # its scan is not reported again as an image without a row
    assert sorted(result.table["participant_id"]) == ["sub-01", "sub-03", "sub-03", "sub-04"]
    ages, problems = read_participant_ages(table)
    assert ages["sub-02"] is None and ages["sub-01"] == 30.5 and "line 3 has 7" in problems[0]


def test_blank_lines_keep_line_numbers(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "\nsub-02\tforty\tM\tB\tCN\t28\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    assert _messages(result, "age", "error") == [(
        f"dataset 'toy', sub-02, {root / 'participants.tsv'} line 4: age 'forty' is not a "
        f"number")]
    assert len(result.table) == 4


# --- brainage preprocess: OUT inside IN, existing outputs (2) ------------------------------

MNI = "MNI152NLin2009cSym"
FAST = ["--space", MNI, "--grid-mm", "8", "--skull-stripped"]  # resampling only: fast


def _mni_scan(path: Path, rng: np.random.Generator) -> Path:
    """A tiny template-space scan, (7, 8, 9) voxels of 15 mm, inside the MNI152 grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([15.0, 15.0, 15.0, 1.0])
    affine[:3, 3] = [-50.0, -60.0, -60.0]
    nib.save(nib.Nifti1Image(rng.uniform(50, 100, (7, 8, 9)).astype(np.float32), affine),
             str(path))
    return path


@pytest.fixture
def raw_scans(tmp_path, rng) -> Path:
    """IN folder: two good scans."""
    for name in ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii"):
        _mni_scan(tmp_path / "raw" / name, rng)
    return tmp_path / "raw"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["same folder", "inside", "via symlink"])
def test_preprocess_refuses_an_out_folder_in_in(raw_scans, tmp_path, capsys, where):
    before = _snapshot(raw_scans)
    out = {"same folder": raw_scans, "inside": raw_scans / "derivatives",
           "via symlink": tmp_path / "link"}[where]
    if where == "via symlink":
        out.symlink_to(raw_scans / "sub-01", target_is_directory=True)
    assert main(["preprocess", str(raw_scans), str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"brainage preprocess: error: OUT {out} is IN {raw_scans} or lies inside it" in err
    assert _snapshot(raw_scans) == before  # no scan touched, no cache written into IN


def test_preprocess_refuses_out_equal_to_in_file(raw_scans, capsys):
    scan = raw_scans / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    before = scan.read_bytes()
    for out in (scan, scan.parent):  # the file itself, or its folder (OUT/IN's name)
        assert main(["preprocess", str(scan), str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert f"the output {scan} is the input scan {scan}" in err, err
    link = raw_scans / "link.nii.gz"
    link.symlink_to(scan)
    assert main(["preprocess", str(scan), str(link), *FAST, "--overwrite"]) == 2
    assert "is the input scan" in capsys.readouterr().err  # --overwrite never allows it
    assert scan.read_bytes() == before


def test_preprocess_never_overwrites_without_the_flag(raw_scans, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["preprocess", str(raw_scans), str(out), *FAST]) == 0  # the good run
    written = out / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    assert written.is_file() and (out / "sub-02" / "anat" / "sub-02_T1w.nii").is_file()
    capsys.readouterr()
    written.write_bytes(b"my edits")
    assert main(["preprocess", str(raw_scans), str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"2 of the 2 output file(s) exist already ({written}, " in err
    assert "pass --overwrite to replace them" in err
    assert written.read_bytes() == b"my edits"
    assert main(["preprocess", str(raw_scans), str(out), *FAST, "--overwrite"]) == 0
    assert nib.load(written).shape == (25, 30, 24)


# --- the preprocessing cache: unreadable entries (4) ---------------------------------------


def _entry_files(cache: PreprocessCache, scan: Path, params) -> tuple[Path, Path]:
    target = cache.path_for(scan, params)
    return target, target.with_suffix("").with_suffix(".json")


@pytest.mark.parametrize("damage", ["truncated image", "garbage image", "empty image",
                                    "broken json", "json not an object"])
def test_unreadable_cache_entry_is_recomputed(tmp_path, rng, damage):
    scans = [_mni_scan(tmp_path / f"s{i}.nii.gz", rng) for i in range(2)]
    params = {"space": MNI, "grid_mm": 8.0, "skull_stripped": True}
    cache = PreprocessCache(tmp_path / "cache")
    first = [item.image.get_fdata() for item in preprocess_cohort(scans, params, cache)]
    target, sidecar = _entry_files(cache, scans[0], params)
    if damage == "truncated image":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage image":
        target.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif damage == "empty image":
        target.write_bytes(b"")
    elif damage == "broken json":
        sidecar.write_text('{"alignment": 0.')
    else:
        sidecar.write_text("[1, 2]")
    damaged = target if damage.endswith("image") else sidecar
    with pytest.warns(RuntimeWarning, match=re.escape(f"preprocessing cache entry {damaged} "
                                                      f"cannot be read (")) as record:
        items = preprocess_cohort(scans, params, cache)
    assert len(record) == 1, [str(r.message) for r in record]
    assert f"the entry ({target.name} and its sidecar) is discarded and recomputed" in str(
        record[0].message)
    assert all(item.ok for item in items), [item.error for item in items]
    for item, expected in zip(items, first):  # the damaged one recomputed, the other read
        np.testing.assert_array_equal(item.image.get_fdata(), expected)
    assert json.loads(sidecar.read_text())["registration_misfit_mm"] == pytest.approx(
        items[0].alignment)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next run reads it silently
        assert cache.get_or_compute(scans[0], params).shape == (25, 30, 24)


# --- load_scan: what is wrong with the path (5) --------------------------------------------


def _bad_paths(folder: Path, rng) -> dict[str, tuple[Path, type, str]]:
    """name -> (path, exception load_scan raises, what its message says)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dir_T1w.nii.gz").mkdir()
    loop = folder / "loop_T1w.nii.gz"
    loop.symlink_to(folder / "loop2.nii.gz")
    (folder / "loop2.nii.gz").symlink_to(loop)
    (folder / "broken_T1w.nii.gz").symlink_to(folder / "gone.nii.gz")
    return {
        "directory": (folder / "dir_T1w.nii.gz", PreprocessError, "is a directory, not a file"),
        "loop": (loop, PreprocessError, "is a symlink loop"),
        "broken": (folder / "broken_T1w.nii.gz", FileNotFoundError,
                   f"is a broken symlink (its target '{folder / 'gone.nii.gz'}' does not exist)"),
        "missing": (folder / "absent_T1w.nii.gz", FileNotFoundError, "does not exist"),
    }


@pytest.mark.parametrize("case", ["directory", "loop", "broken", "missing"])
def test_load_scan_says_what_is_wrong_with_the_path(tmp_path, rng, case):
    path, error, what = _bad_paths(tmp_path / "scans", rng)[case]
    with pytest.raises(error) as info:
        load_scan(path)
    assert str(info.value).startswith(f"scan {path}: cannot read the image: the path {what}"), \
        str(info.value)


def test_load_scan_permission_denied(tmp_path, rng, monkeypatch):
    scan = _mni_scan(tmp_path / "locked.nii.gz", rng)
    if os.geteuid() != 0:
        scan.chmod(0)
    else:  # root reads any file: deny the open of this one file instead
        real_open = builtins.open

        def deny(file, *args, **kwargs):
            if str(file) == str(scan):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(PreprocessError, match=re.escape(f"scan {scan}: cannot read the image: "
                                                        f"the path cannot be read: "
                                                        f"permission denied")):
        load_scan(scan)


def test_bad_paths_in_a_cohort_run(tmp_path, rng):
    bad = _bad_paths(tmp_path / "scans", rng)
    good = _mni_scan(tmp_path / "scans" / "good_T1w.nii.gz", rng)
    paths = [good, *(path for path, _, _ in bad.values())]
    items = preprocess_cohort(paths, {"space": MNI, "grid_mm": 8.0, "skull_stripped": True},
                              PreprocessCache(tmp_path / "cache"))
    assert items[0].ok and items[0].image.shape == (25, 30, 24)
    for item, (path, error, what) in zip(items[1:], bad.values()):
        assert item.error.startswith(f"{error.__name__}: scan {path}: cannot read the image: "
                                     f"the path {what}"), item.error
    # the audit reports the same reasons (a directory or a link named like a scan)
    root = make_bids(tmp_path / "bids", rng)
    anat = root / "sub-02" / "anat"
    (anat / "sub-02_T1w.nii.gz").unlink()
    (anat / "sub-02_T1w.nii.gz").symlink_to(anat / "sub-02_T1w.nii.gz")  # a loop of one link
    result = load_cohort(make_spec(root), limits=TINY)
    assert _messages(result, "image", "error") == [(
        f"dataset 'toy', sub-02, {anat / 'sub-02_T1w.nii.gz'}: cannot read the image: the path "
        f"is a symlink loop (its links lead back to themselves)")]
    assert len(result.table) == 4  # the other scans


# --- headers that declare huge images (7) -------------------------------------------------


def _declaring(path: Path, shape: tuple[int, ...], rng) -> Path:
    """A small NIfTI (a few KB) whose header is rewritten to declare ``shape`` (int16)."""
    data = rng.integers(1, 100, (7, 8, 9)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_data_shape(shape)
    img.header["vox_offset"] = 352
    raw = img.header.binaryblock + b"\0" * 4 + data.tobytes()  # vox_offset 352
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    assert path.stat().st_size < 4096 and nib.load(path).shape == shape
    return path


def _peak_bytes(call) -> tuple[object, int]:
    """``call()``'s result (or the exception it raised) and its peak traced allocation."""
    tracemalloc.start()
    try:
        result = call()
    except Exception as err:  # returned for the test to inspect
        result = err
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak


HUGE = [((1200, 1200, 1200), ("1200 x 1200 x 1200 voxels (1,728,000,000 in all, 3.46 GB of "
                              "int16)")),
        ((10000, 10000, 10000), ("10000 x 10000 x 10000 voxels (1,000,000,000,000 in all, 2 TB "
                                 "of int16)"))]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(("shape", "declared"), HUGE)
def test_huge_declared_image_fails_fast_in_check_image_and_load_scan(tmp_path, rng, shape,
                                                                     declared, suffix):
    path = _declaring(tmp_path / f"huge{suffix}", shape, rng)
    load_scan(_mni_scan(tmp_path / "warm.nii.gz", rng))  # imports and caches: not measured
    start = time.perf_counter()
    problems, peak = _peak_bytes(lambda: check_image(path))
    assert peak < 10e6, f"check_image allocated {peak / 1e6:.0f} MB at its peak"
    assert problems == [(f"the header declares {declared}, more than the 134,217,728 a "
                         f"brain MRI may have (ImageLimits.max_voxels): a corrupt header or "
                         f"not a brain scan; the data was not read"),
                        (f"field of view {shape[0]} x {shape[1]} x {shape[2]} mm (shape {shape} x "
                         f"voxel size) is outside 100-400 mm per axis: cannot be a brain scan")]
    error, peak = _peak_bytes(lambda: load_scan(path))
    assert peak < 10e6, f"load_scan allocated {peak / 1e6:.0f} MB at its peak"
    assert isinstance(error, PreprocessError), repr(error)
    assert str(error).startswith(f"scan {path}: the header declares {declared}"), str(error)
    assert time.perf_counter() - start < 5


def test_truncated_uncompressed_scan_is_caught_from_its_header(tmp_path, rng):
    path = _declaring(tmp_path / "short.nii", (64, 64, 64), rng)  # 512 KB declared, 1 KB held
    expected = (f"the file holds {path.stat().st_size:,} bytes, but its header declares "
                f"64 x 64 x 64 voxels of int16 from byte 352, 524,640 bytes: the file is "
                f"truncated or its header is wrong; the data was not read")
    assert expected in check_image(path)
    with pytest.raises(PreprocessError, match=re.escape(f"scan {path}: {expected}")):
        load_scan(path)


def test_huge_declared_image_in_the_audit_and_a_cohort_run(tmp_path, rng):
    root = make_bids(tmp_path / "bids", rng)
    huge = _declaring(root / "sub-02" / "anat" / "sub-02_T1w.nii.gz", (1200, 1200, 1200), rng)
    result, peak = _peak_bytes(lambda: load_cohort(make_spec(root), limits=TINY))
    assert peak < 50e6, f"load_cohort allocated {peak / 1e6:.0f} MB at its peak"
    messages = _messages(result, "image", "error")
    assert any(m.startswith(f"dataset 'toy', sub-02, {huge}: the header declares 1200 x 1200 x "
                            f"1200 voxels") for m in messages), messages
    assert "sub-02" not in set(result.table["participant_id"]) and len(result.table) == 4
    good = _mni_scan(tmp_path / "good.nii.gz", rng)
    items = preprocess_cohort([huge, good], {"space": MNI, "grid_mm": 8.0,
                                             "skull_stripped": True},
                              PreprocessCache(tmp_path / "cache"))
    assert not items[0].ok and "the header declares 1200 x 1200 x 1200 voxels" in items[0].error
    assert items[1].ok


def test_npy_header_declaring_a_huge_array_fails_fast(tmp_path):
    from brainage.data.openbhb import AFFINE, load_openbhb_array

    path = tmp_path / "sub-1_preproc-quasiraw_T1w.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "<f4", "fortran_order": False,
                                                    "shape": (1, 10000, 10000, 10000)})
        file.write(b"\0" * 1000)
    expected = (f"OpenBHB array {path} holds {path.stat().st_size:,} bytes, but its header "
                f"declares shape (1, 10000, 10000, 10000) of float32, 4,000,000,000,128 bytes")
    error, peak = _peak_bytes(lambda: load_openbhb_array(path, AFFINE))
    assert peak < 10e6 and isinstance(error, ValueError) and str(error).startswith(expected)
    assert check_image(path) == [(f"cannot read the array ({expected}: the file is truncated "
                                  f"or its header is wrong)")]
    with pytest.raises(PreprocessError, match=re.escape(expected)):
        load_scan(path)
