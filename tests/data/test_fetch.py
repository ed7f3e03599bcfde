"""Tests of brainage.data.fetch against a local HTTP server (no network is touched)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import socket
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage._utils import sha256_file
from brainage.cli import main
from brainage.data.cohort import load_cohort
from brainage.data.fetch import (
    DATASETS,
    DownloadSettings,
    FetchError,
    IXISettings,
    download,
    fetch,
    fetch_ixi,
    read_ixi_demographics,
    unpack_ixi_t1,
)
from brainage.data.manifest import load_manifest
from tests.conftest import IXI10

from .fetch_server import FileServer

#: no waiting in tests: short timeouts, no retries unless a test asks, no backoff
FAST = DownloadSettings(timeout_s=5.0, retries=0, backoff_s=0.0, chunk_bytes=1024)
#: T1 scans in the synthetic archive
STEMS = ("IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212", "IXI014-IOP-0890",
         "IXI035-IOP-0873", "IXI040-HH-1300", "IXI100-Guys-0912")
#: archive members that are not T1 scans
STRAYS = ("IXI002-Guys-0828-T2.nii.gz", "notes.txt")
#: the synthetic IXI.xls: IXI_ID, SEX_ID, AGE (None: empty cell)
SHEET = [
    (2, 1, 35.8),        # usable
    (12, 2, 38.7816),    # duplicate rows whose ages agree within 0.01 y: collapse
    (12, 2, 38.785),
    (13, 1, 46.71),      # duplicate rows whose ages conflict: excluded
    (13, 1, 50.02),
    (14, 2, None),       # no age: excluded
    (35, 2, 61.4567),    # usable
    (40, 0, 29.999),     # usable, sex code 0: n/a
    (50, 1, 70.1),       # a row without a scan: excluded
]                        # IXI100 has a scan but no row: excluded
EXPECTED_PARTICIPANTS = (
    "participant_id\tage\tsex\tsite\tixi_id\n"
    "sub-IXI002\t35.80\tM\tGuys\tIXI002-Guys-0828\n"
    "sub-IXI012\t38.78\tF\tHH\tIXI012-HH-1211\n"
    "sub-IXI035\t61.46\tF\tIOP\tIXI035-IOP-0873\n"
    "sub-IXI040\t30.00\tn/a\tHH\tIXI040-HH-1300\n"
)
#: excluded subject -> (ixi_id, words its reason must contain)
EXPECTED_EXCLUDED = {
    "sub-IXI013": ("IXI013-HH-1212", ["conflicting ages", "rows 5, 6", "46.71", "50.02"]),
    "sub-IXI014": ("IXI014-IOP-0890", ["no age", "row(s) 7"]),
    "sub-IXI050": ("n/a", ["row(s) 10", "no T1 scan in the archive"]),
    "sub-IXI100": ("IXI100-Guys-0912", ["no row for IXI_ID 100", "IXI.xls"]),
}


def _nifti_bytes(rng: np.random.Generator) -> bytes:
    # (13, 14, 15) voxels of 8 mm: tiny, unequal sides, and a field of view (104-120 mm) that
    # passes brainage.data.cohort.check_image's default limits
    data = rng.integers(1, 255, size=(13, 14, 15), dtype=np.uint8)
    image = nib.Nifti1Image(data, np.diag([8.0, 8.0, 8.0, 1.0]))
    return gzip.compress(image.to_bytes(), mtime=0)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), 1_200_000_000, 0o644
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def _xls(rows: list[tuple[int, int, float | None]]) -> bytes:
    """A BIFF8 .xls like IXI.xls (sheet 'Table', dates as Excel dates), written with xlwt."""
    xlwt = pytest.importorskip("xlwt", reason="xlwt writes the synthetic IXI.xls")
    book = xlwt.Workbook()
    sheet = book.add_sheet("Table")
    header = ["IXI_ID", "SEX_ID (1=m, 2=f)", "HEIGHT", "DOB", "STUDY_DATE", "AGE"]
    date = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for col, name in enumerate(header):
        sheet.write(0, col, name)
    for r, (number, sex, age) in enumerate(rows, start=1):
        sheet.write(r, 0, number)
        sheet.write(r, 1, sex)
        sheet.write(r, 2, 170)
        sheet.write(r, 3, dt.date(1950, 1, 1) + dt.timedelta(days=97 * r), date)
        sheet.write(r, 4, dt.date(2005, 6, 1), date)
        if age is not None:
            sheet.write(r, 5, age)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _csv(rows: list[tuple[int, int, float | None]]) -> bytes:
    frame = pd.DataFrame(rows, columns=["IXI_ID", "SEX_ID (1=m, 2=f)", "AGE"])
    return frame.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def source() -> dict[str, bytes]:
    """The synthetic downloads and the scans inside the archive."""
    rng = np.random.default_rng(0)
    scans = {f"{stem}-T1.nii.gz": _nifti_bytes(rng) for stem in STEMS}
    members = {**scans, STRAYS[0]: _nifti_bytes(rng), STRAYS[1]: b"not a scan\n"}
    return {"/IXI-T1.tar": _tar(members), "/IXI.xls": _xls(SHEET), "/IXI.csv": _csv(SHEET),
            **{f"/scan/{name}": body for name, body in scans.items()}}


@pytest.fixture
def server(source: dict[str, bytes]):
    """A fresh local server per test (its request log and misbehaviour start empty)."""
    files = FileServer()
    files.state.files.update(source)
    files.start()
    yield files
    files.stop()


def _settings(server: FileServer, **kwargs) -> IXISettings:
    return IXISettings(t1_url=server.url("/IXI-T1.tar"), demographics_url=server.url("/IXI.xls"),
                       download=kwargs.pop("download", FAST), **kwargs)


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


# ----------------------------------------------------------------------------- end to end
def test_fetch_ixi_writes_bids(server: FileServer, source: dict, tmp_path: Path) -> None:
    root = tmp_path / "ixi"
    report = fetch_ixi(root, _settings(server))
    assert (root / "participants.tsv").read_text() == EXPECTED_PARTICIPANTS
    excluded = _read_tsv(root / "excluded.tsv").set_index("participant_id")
    assert list(excluded.columns) == ["ixi_id", "reason"]
    assert sorted(excluded.index) == sorted(EXPECTED_EXCLUDED)
    for pid, (ixi_id, words) in EXPECTED_EXCLUDED.items():
        assert excluded.at[pid, "ixi_id"] == ixi_id
        for word in words:
            assert word in excluded.at[pid, "reason"], (pid, word)
    assert (report.n_scans, report.n_excluded) == (4, 4)
    assert report.bytes_downloaded == len(source["/IXI-T1.tar"]) + len(source["/IXI.xls"])
    # each scan moved once: 4 under sub-*, 3 excluded ones under sourcedata, no other copy
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.nii.gz"))
    assert written == [
        "sourcedata/excluded/IXI013-HH-1212-T1.nii.gz",
        "sourcedata/excluded/IXI014-IOP-0890-T1.nii.gz",
        "sourcedata/excluded/IXI100-Guys-0912-T1.nii.gz",
        *(f"sub-IXI{n}/anat/sub-IXI{n}_T1w.nii.gz" for n in ("002", "012", "035", "040")),
    ]
    scan = root / "sub-IXI035" / "anat" / "sub-IXI035_T1w.nii.gz"
    assert scan.read_bytes() == source["/scan/IXI035-IOP-0873-T1.nii.gz"]
    assert not (root / "sourcedata" / ".unpacking").exists()
    assert sorted(p.name for p in report.sources) == ["IXI-T1.tar", "IXI.xls"]
    problems = " ".join(report.problems)
    assert all(stray in problems for stray in STRAYS)
    listed = _read_tsv(root / "sourcedata" / "archive_problems.tsv")["problem"]
    assert len(listed) == 2 and all(s in " ".join(listed) for s in STRAYS)


def test_dataset_description(server: FileServer, source: dict, tmp_path: Path) -> None:
    fetch_ixi(tmp_path, _settings(server))
    description = json.loads((tmp_path / "dataset_description.json").read_text())
    assert description["License"] == "CC BY-SA 3.0"
    assert "IXI" in description["Acknowledgements"] and description["BIDSVersion"]
    files = {f["URL"]: f for f in description["SourceFiles"]}
    for path in ("/IXI-T1.tar", "/IXI.xls"):
        entry = files[server.url(path)]
        assert entry["sha256"] == hashlib.sha256(source[path]).hexdigest()
        assert entry["Bytes"] == len(source[path])
        assert (tmp_path / entry["Path"]).is_file()
    assert {s["URL"] for s in description["SourceDatasets"]} == set(files)


def test_fetched_folder_loads_as_cohort(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data" / "ixi"
    fetch_ixi(root, _settings(server))
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(
        "version: 1\ndatasets:\n  - name: ixi\n    format: bids\n    root: data/ixi\n"
        "    space: native\n    skull_stripped: false\n"
        "    columns: {participant_id: participant_id, age: age, sex: sex, site: site}\n")
    result = load_cohort(load_manifest(manifest, dataset="ixi").dataset("ixi"))
    assert result.errors.empty, result.errors["message"].tolist()
    assert result.problems.empty, result.problems["message"].tolist()
    table = result.table.set_index("participant_id")
    assert table["age"].to_dict() == {"sub-IXI002": 35.80, "sub-IXI012": 38.78,
                                      "sub-IXI035": 61.46, "sub-IXI040": 30.00}
    assert table["site"].tolist() == ["Guys", "HH", "IOP", "HH"]
    assert pd.isna(table.at["sub-IXI040", "sex"]) and table.at["sub-IXI002", "sex"] == "M"
    assert not table["skull_stripped"].any() and set(table["space"]) == {"native"}


def test_rerun_downloads_nothing_and_writes_the_same(server: FileServer, tmp_path: Path) -> None:
    fetch_ixi(tmp_path, _settings(server))
    first = (tmp_path / "participants.tsv").read_text()
    requests = len(server.state.requests)
    report = fetch_ixi(tmp_path, _settings(server))
    assert len(server.state.requests) == requests and report.bytes_downloaded == 0
    assert (tmp_path / "participants.tsv").read_text() == first
    assert len(list(tmp_path.rglob("*.nii.gz"))) == len(STEMS)


def test_no_keep_archive_removes_the_tarball(server: FileServer, tmp_path: Path) -> None:
    report = fetch_ixi(tmp_path, _settings(server, keep_archive=False))
    assert not (tmp_path / "sourcedata" / "IXI-T1.tar").exists()
    assert [p.name for p in report.sources] == ["IXI.xls"] and report.n_scans == 4


def test_ixi10_participants_format(server: FileServer, tmp_path: Path) -> None:
    """The ten real scans, packed as IXI packs them, give ixi10's participants.tsv exactly."""
    if not (IXI10 / "participants.tsv").exists():
        pytest.skip(f"real IXI scans not available: {IXI10} is absent (it lives in ../shared/data)")
    people = _read_tsv(IXI10 / "participants.tsv")
    members = {f"{row.ixi_id}-T1.nii.gz":
               (IXI10 / row.participant_id / "anat" / f"{row.participant_id}_T1w.nii.gz")
               .read_bytes() for row in people.itertuples()}
    rows = [(int(row.ixi_id[3:6]), {"M": 1, "F": 2}[row.sex], float(row.age))
            for row in people.itertuples()]
    server.state.files.update({"/real/IXI-T1.tar": _tar(members), "/real/IXI.csv": _csv(rows)})
    settings = IXISettings(t1_url=server.url("/real/IXI-T1.tar"),
                           demographics_url=server.url("/real/IXI.csv"), download=FAST)
    report = fetch_ixi(tmp_path, settings)
    assert (tmp_path / "participants.tsv").read_bytes() == \
        (IXI10 / "participants.tsv").read_bytes()
    assert (report.n_scans, report.n_excluded, report.problems) == (10, 0, ())
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(
        f"version: 1\ndatasets:\n  - name: ixi\n    format: bids\n    root: {tmp_path}\n"
        "    space: native\n    skull_stripped: false\n"
        "    columns: {participant_id: participant_id, age: age, sex: sex, site: site}\n")
    result = load_cohort(load_manifest(manifest).dataset("ixi"))  # real images checked too
    assert result.problems.empty and len(result.table) == 10


# ----------------------------------------------------------------------------- download
def test_truncated_download_resumes(server: FileServer, source: dict, tmp_path: Path) -> None:
    body = source["/IXI-T1.tar"]
    half, url, dest = len(body) // 2, server.url("/IXI-T1.tar"), tmp_path / "IXI-T1.tar"
    server.state.truncate["/IXI-T1.tar"] = 1
    with pytest.raises(FetchError) as info:
        download(url, dest, settings=FAST)
    message = str(info.value)
    assert url in message and f"received {half} of {len(body)} bytes" in message
    assert "rerunning resumes" in message
    part = tmp_path / "IXI-T1.tar.part"
    assert part.stat().st_size == half and not dest.exists()
    digest = hashlib.sha256(body).hexdigest()
    assert download(url, dest, sha256=digest, settings=FAST) == dest
    assert server.state.requests == [("/IXI-T1.tar", None), ("/IXI-T1.tar", f"bytes={half}-")]
    assert sha256_file(dest) == digest and not part.exists()


def test_retry_resumes_within_one_call(server: FileServer, source: dict, tmp_path: Path) -> None:
    body = source["/IXI-T1.tar"]
    server.state.truncate["/IXI-T1.tar"] = 1
    settings = DownloadSettings(timeout_s=5.0, retries=1, backoff_s=0.0)
    dest = download(server.url("/IXI-T1.tar"), tmp_path / "a.tar", settings=settings)
    assert dest.read_bytes() == body
    assert [r[1] for r in server.state.requests] == [None, f"bytes={len(body) // 2}-"]


@pytest.mark.parametrize("kept", ["garbage", "everything"])
def test_partial_file_without_range(server: FileServer, source: dict, tmp_path: Path,
                                    kept: str) -> None:
    """A server ignoring Range (200) restarts from zero; HTTP 416 on a full .part completes."""
    body = source["/IXI-T1.tar"]
    server.state.honour_range = kept == "everything"
    part = tmp_path / "a.tar.part"
    part.write_bytes(b"x" * 100 if kept == "garbage" else body)
    offset = part.stat().st_size
    dest = download(server.url("/IXI-T1.tar"), tmp_path / "a.tar",
                    sha256=hashlib.sha256(body).hexdigest(), settings=FAST)
    assert dest.read_bytes() == body and not part.exists()
    assert [r[1] for r in server.state.requests] == [f"bytes={offset}-"]


def test_sha256_mismatch_keeps_the_file(server: FileServer, source: dict, tmp_path: Path) -> None:
    dest = tmp_path / "IXI-T1.tar"
    with pytest.raises(FetchError) as info:
        download(server.url("/IXI-T1.tar"), dest, sha256="0" * 64, settings=FAST)
    actual = hashlib.sha256(source["/IXI-T1.tar"]).hexdigest()
    message = str(info.value)
    assert "sha256 mismatch" in message and "IXI-T1.tar" in message
    assert "0" * 64 in message and actual in message
    bad = tmp_path / "IXI-T1.tar.bad"
    assert not dest.exists() and bad.read_bytes() == source["/IXI-T1.tar"]
    assert str(bad) in message


def test_finished_file_is_not_downloaded_again(server: FileServer, source: dict,
                                               tmp_path: Path) -> None:
    digest = hashlib.sha256(source["/IXI.xls"]).hexdigest()
    dest = download(server.url("/IXI.xls"), tmp_path / "IXI.xls", sha256=digest, settings=FAST)
    download(server.url("/IXI.xls"), dest, sha256=digest, expected_size=dest.stat().st_size,
             settings=FAST)
    assert len(server.state.requests) == 1
    with pytest.raises(FetchError, match="has .* bytes, expected 5"):
        download(server.url("/IXI.xls"), dest, expected_size=5, settings=FAST)
    assert len(server.state.requests) == 1 and (tmp_path / "IXI.xls.bad").is_file()


def test_announced_size_differs_from_expected(server: FileServer, tmp_path: Path) -> None:
    url = server.url("/IXI.xls")
    with pytest.raises(FetchError, match=r"announces \d+ bytes, but expected_size is 7") as info:
        download(url, tmp_path / "IXI.xls", expected_size=7, settings=FAST)
    assert url in str(info.value)


def test_http_404(server: FileServer, tmp_path: Path) -> None:
    url = server.url("/nothing.tar")
    settings = DownloadSettings(timeout_s=5.0, retries=2, backoff_s=0.0)
    with pytest.raises(FetchError, match="HTTP 404") as info:
        download(url, tmp_path / "nothing.tar", settings=settings)
    assert url in str(info.value)
    assert len(server.state.requests) == 1  # a 404 is not retried
    assert not list(tmp_path.iterdir())


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/IXI-T1.tar"
    with pytest.raises(FetchError, match="gave up after 2 attempt") as info:
        download(url, tmp_path / "a.tar", settings=DownloadSettings(5.0, 1, 0.0))
    assert url in str(info.value)


@pytest.mark.parametrize(("name", "value", "match"), [
    ("url", "ftp://host/IXI-T1.tar", "url must be an http"),
    ("sha256", "abc", "sha256 must be a sha256 digest"),
])
def test_download_bad_arguments(tmp_path: Path, name: str, value: str, match: str) -> None:
    arguments = {"url": "http://127.0.0.1:1/a", "sha256": None, name: value}
    with pytest.raises(ValueError, match=match) as info:
        download(arguments["url"], tmp_path / "a", sha256=arguments["sha256"])
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("timeout_s", 0), ("retries", -1),
                                             ("chunk_bytes", 0)])
def test_download_settings_bad_values(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        DownloadSettings(**{name: value})


# ----------------------------------------------------------------------------- archive
def _cut_inside_third_member(tar_bytes: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        third = tar.getmembers()[2]
    return tar_bytes[: third.offset_data + third.size // 2]


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_archive(server: FileServer, source: dict, tmp_path: Path, kind: str) -> None:
    bad = (np.random.default_rng(0).bytes(8192) if kind == "garbage"
           else _cut_inside_third_member(source["/IXI-T1.tar"]))
    server.state.files["/IXI-T1.tar"] = bad
    with pytest.raises(FetchError) as info:
        fetch_ixi(tmp_path, _settings(server))
    archive = tmp_path / "sourcedata" / "IXI-T1.tar"
    message = str(info.value)
    assert str(archive) in message and "corrupt or truncated" in message
    assert "delete it" in message
    assert archive.read_bytes() == bad  # kept
    assert not list(tmp_path.glob("sub-*")) and not (tmp_path / "participants.tsv").exists()
    assert not (tmp_path / "sourcedata" / ".unpacking").exists()


def test_archive_without_scans(server: FileServer, tmp_path: Path) -> None:
    server.state.files["/IXI-T1.tar"] = _tar({"README": b"empty\n"})
    with pytest.raises(FetchError, match="holds no IXI\\*-T1.nii.gz file"):
        fetch_ixi(tmp_path, _settings(server))


def test_unpack_refuses_unsafe_members(source: dict, tmp_path: Path) -> None:
    scan = source["/scan/IXI002-Guys-0828-T1.nii.gz"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("../IXI077-HH-1000-T1.nii.gz", "IXI002-Guys-0828-T1.nii.gz"):
            info = tarfile.TarInfo(name)
            info.size = len(scan)
            tar.addfile(info, io.BytesIO(scan))
        link = tarfile.TarInfo("IXI078-HH-1001-T1.nii.gz")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    archive = tmp_path / "a.tar"
    archive.write_bytes(buffer.getvalue())
    folder = tmp_path / "out" / "inner"
    files, problems = unpack_ixi_t1(archive, folder)
    assert files == [folder / "IXI002-Guys-0828-T1.nii.gz"]
    assert len(problems) == 2
    assert "'../IXI077-HH-1000-T1.nii.gz' is unsafe" in problems[0]
    assert "'IXI078-HH-1001-T1.nii.gz' is not a regular file" in problems[1]
    assert not (tmp_path / "out" / "IXI077-HH-1000-T1.nii.gz").exists()


# ----------------------------------------------------------------------------- demographics
@pytest.mark.parametrize("suffix", [".xls", ".csv"])
def test_read_demographics(source: dict, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"IXI{suffix}"
    path.write_bytes(source[f"/IXI{suffix}"])
    table, problems = read_ixi_demographics(path)
    assert problems == []
    table = table.set_index("ixi_number")
    assert table.index.tolist() == [2, 12, 13, 14, 35, 40, 50]
    assert table.at[12, "age"] == pytest.approx(38.7816) and table.at[12, "rows"] == "3, 4"
    assert table.at[2, "sex"] == "M" and table.at[35, "sex"] == "F"
    assert pd.isna(table.at[40, "sex"]) and table.at[40, "age"] == pytest.approx(29.999)
    assert np.isnan(table.at[13, "age"]) and "conflicting ages" in table.at[13, "reason"]
    assert np.isnan(table.at[14, "age"]) and "no age" in table.at[14, "reason"]
    usable = table[table["reason"] == ""].index.tolist()
    assert usable == [2, 12, 35, 40, 50]


def test_read_demographics_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "IXI.csv"
    path.write_text("IXI_ID,SEX_ID,AGE\n2,1,30\nabc,1,40\n7,1,0\n9,1,20\n9,2,20.005\n,,\n")
    table, problems = read_ixi_demographics(path)
    assert any("row 3: IXI_ID 'abc' is not an integer" in p for p in problems)
    assert len(problems) == 2  # the blank last row is no problem
    assert any("IXI_ID 9 has sexes ['F', 'M']" in p for p in problems)
    table = table.set_index("ixi_number")
    assert table.index.tolist() == [2, 7, 9]
    assert "no age in IXI.csv (AGE 0.0 on row(s) 4)" in table.at[7, "reason"]  # 0 is no age
    assert table.at[9, "reason"] == "" and pd.isna(table.at[9, "sex"])


@pytest.mark.parametrize(("name", "text", "match"), [
    ("IXI.csv", "IXI_ID,SEX_ID,YEARS\n2,1,30\n",
     r"lacks the column\(s\) AGE; its columns: IXI_ID, SEX_ID, YEARS"),
    ("IXI.txt", "IXI_ID,AGE\n", "expected a .xls, .xlsx or .csv file; got .txt"),
    ("IXI.xls", "this is not a workbook", "cannot read the demographics sheet"),
])
def test_read_demographics_bad_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FetchError, match=match) as info:
        read_ixi_demographics(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- command line
def run_fetch(argv: list[str]) -> int:
    return main(["-q", "fetch", *argv])


def test_run_fetch(server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["ixi", str(tmp_path / "ixi"), "--t1-url", server.url("/IXI-T1.tar"),
            "--demographics-url", server.url("/IXI.xls"), "--retries", "0", "--no-keep-archive"]
    assert run_fetch(args) == 0
    out = capsys.readouterr().out
    assert "4 scans written" in out and "4 subjects excluded" in out and "notes.txt" in out
    assert not (tmp_path / "ixi" / "sourcedata" / "IXI-T1.tar").exists()


@pytest.mark.parametrize(("argv", "words"), [
    (["ixy", "DEST"], ["unknown dataset 'ixy'", "ixi", "did you mean 'ixi'"]),
    (["ixi", "DEST", "--t1-sha256", "abc"], ["t1_sha256", "64 hexadecimal", "'abc'"]),
    (["ixi", "DEST", "--t1-url", "URL404", "--retries", "0"], ["HTTP 404", "/missing.tar"]),
])
def test_run_fetch_errors(server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture,
                          argv: list[str], words: list[str]) -> None:
    argv = [str(tmp_path) if a == "DEST" else server.url("/missing.tar") if a == "URL404" else a
            for a in argv]
    argv += ["--demographics-url", server.url("/IXI.xls")]
    assert run_fetch(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("brainage fetch: error: ")
    for word in words:
        assert word in err


def test_fetch_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'oasis'; brainage fetch knows: ixi"):
        fetch("oasis", tmp_path)
    assert DATASETS == ("ixi",)


# ------------------------------------------- when IXI's server says no: files obtained by hand
def _by_hand(source: dict, folder: Path) -> tuple[Path, Path]:
    """IXI-T1.tar and IXI.xls as a user saves them from a web browser, outside DEST."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "IXI-T1.tar").write_bytes(source["/IXI-T1.tar"])
    (folder / "IXI.xls").write_bytes(source["/IXI.xls"])
    return folder / "IXI-T1.tar", folder / "IXI.xls"


def _bids_files(root: Path) -> dict[str, bytes]:
    """The BIDS folder's files (not sourcedata, not the description that names the sources)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.parts[len(root.parts)] != "sourcedata"
            and p.name != "dataset_description.json"}


@pytest.mark.parametrize("refused", [("/IXI.xls", "/IXI-T1.tar"), ("/IXI-T1.tar",)],
                         ids=["both", "archive"])
def test_http_403_says_in_one_line_what_to_do(server: FileServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture, refused) -> None:
    server.state.refuse.update({path: 403 for path in refused})
    dest = tmp_path / "ixi"
    argv = ["ixi", str(dest), "--t1-url", server.url("/IXI-T1.tar"),
            "--demographics-url", server.url("/IXI.xls"), "--retries", "2"]
    assert run_fetch(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("brainage fetch: error: HTTP 403 ")
    name = refused[0].lstrip("/")
    for words in (server.url(refused[0]), f"the server refuses to send {name}",
                  "Download IXI-T1.tar and IXI.xls by hand",
                  f"brainage fetch ixi {dest} --t1-archive PATH/IXI-T1.tar --demographics "
                  f"PATH/IXI.xls", f"put both files in {dest / 'sourcedata'}/"):
        assert words in err, words
    assert [path for path, _ in server.state.requests].count(refused[0]) == 1  # not retried
    assert not list(dest.glob("sub-*")) and not (dest / "participants.tsv").exists()


def test_files_obtained_by_hand_build_the_same_folder(server: FileServer, source: dict,
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    downloaded = tmp_path / "downloaded"
    fetch_ixi(downloaded, _settings(server))
    server.state.refuse.update({"/IXI.xls": 403, "/IXI-T1.tar": 403})
    server.state.requests.clear()
    archive, sheet = _by_hand(source, tmp_path / "Downloads")
    offline = tmp_path / "offline"
    assert run_fetch(["ixi", str(offline), "--t1-archive", str(archive), "--demographics",
                      str(sheet), "--no-keep-archive"]) == 0
    assert "4 scans written" in capsys.readouterr().out
    assert server.state.requests == []  # and the default URLs were not asked either (offline)
    assert _bids_files(offline) == _bids_files(downloaded)
    assert len(list(offline.glob("sub-*/anat/*_T1w.nii.gz"))) == 4  # the scans, not nothing
    # the user's files are read where they are: not moved, not changed, not removed
    assert archive.read_bytes() == source["/IXI-T1.tar"] and sheet.read_bytes() == source[
        "/IXI.xls"]
    assert not (offline / "sourcedata" / "IXI-T1.tar").exists()
    description = json.loads((offline / "dataset_description.json").read_text())
    files = {f["Path"]: f for f in description["SourceFiles"]}
    assert files["(obtained by hand) IXI-T1.tar"]["sha256"] == hashlib.sha256(
        source["/IXI-T1.tar"]).hexdigest()
    assert str(tmp_path) not in json.dumps(description)


def test_files_already_in_sourcedata_need_no_server(server: FileServer, source: dict,
                                                    tmp_path: Path) -> None:
    downloaded = tmp_path / "downloaded"
    fetch_ixi(downloaded, _settings(server))
    server.state.refuse.update({"/IXI.xls": 403, "/IXI-T1.tar": 403})
    server.state.requests.clear()
    offline = tmp_path / "offline"
    _by_hand(source, offline / "sourcedata")
    report = fetch_ixi(offline, _settings(server))
    assert server.state.requests == [] and report.bytes_downloaded == 0
    assert _bids_files(offline) == _bids_files(downloaded)


def test_files_obtained_by_hand_get_the_same_checks(source: dict, tmp_path: Path) -> None:
    archive, sheet = _by_hand(source, tmp_path / "Downloads")
    with pytest.raises(FetchError, match=f"sha256 mismatch for {archive}: expected 0000"):
        fetch_ixi(tmp_path / "a", IXISettings(t1_archive=archive, demographics=sheet,
                                              t1_sha256="0" * 64))
    broken = tmp_path / "Downloads" / "broken.xls"
    broken.write_bytes(b"not a spreadsheet")
    with pytest.raises(FetchError, match=f"cannot read the demographics sheet {broken}"):
        fetch_ixi(tmp_path / "b", IXISettings(t1_archive=archive, demographics=broken))
    assert broken.read_bytes() == b"not a spreadsheet"  # a user's sheet is never set aside
    empty = tmp_path / "Downloads" / "empty.tar"
    empty.write_bytes(_tar({"notes.txt": b"x"}))
    with pytest.raises(FetchError, match=f"archive {empty} holds no IXI"):
        fetch_ixi(tmp_path / "c", IXISettings(t1_archive=empty, demographics=sheet))
    assert archive.read_bytes() == source["/IXI-T1.tar"]
    assert not list((tmp_path / "c").glob("sub-*"))


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: d / "absent.tar", ["t1_archive", "absent.tar", "cannot be read"]),
    (lambda d: d, ["t1_archive", "is not a regular file"]),
    (lambda d: (os.mkfifo(d / "fifo.tar"), d / "fifo.tar")[1], ["is not a regular file"]),
])
def test_run_fetch_refuses_a_bad_local_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            make, words: list[str]) -> None:
    path = make(tmp_path)
    assert run_fetch(["ixi", str(tmp_path / "ixi"), "--t1-archive", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(word in err for word in words), err
    assert not (tmp_path / "ixi").exists()


def test_run_fetch_refuses_a_url_and_a_file_for_one_source(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    assert run_fetch(["ixi", str(tmp_path), "--t1-url", "http://127.0.0.1:1/IXI-T1.tar",
                      "--t1-archive", str(tmp_path / "IXI-T1.tar")]) == 2
    assert "give --t1-url or --t1-archive, not both" in capsys.readouterr().err
