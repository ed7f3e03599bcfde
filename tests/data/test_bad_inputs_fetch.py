"""Bad inputs to ``brainage fetch`` and to checkpoint loading (issue 13).

Each test builds its bad input itself: a tarball whose members point outside the staging folder,
a corrupt ``IXI.xls`` served by the local HTTP server, a move that fails half-way, a damaged
checkpoint. Nothing outside DEST may be read, moved or written, and an error leaves DEST as it
was.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from brainage.data.fetch import FetchError, IXISettings, fetch_ixi, unpack_ixi_t1

from .fetch_server import FileServer
from .test_fetch import FAST, SHEET, _nifti_bytes, _tar, _xls

#: good members of the hand-built archives (all have a usable row in SHEET)
GOOD = ("IXI012-HH-1211-T1.nii.gz", "IXI035-IOP-0873-T1.nii.gz", "IXI040-HH-1300-T1.nii.gz")
OUTSIDE_NAME = "IXI002-Guys-0828-T1.nii.gz"


def _snapshot(folder: Path, skip: Path | None = None) -> dict[str, bytes | str]:
    """Every entry under ``folder`` (except ``skip``): file bytes, link targets, folders."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        if skip is not None and path.is_relative_to(skip):
            continue
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[key] = "folder"
        else:
            found[key] = path.read_bytes()
    return found


def _archive(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A tarball of ``(name, body)`` files and hand-made ``TarInfo`` entries, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            info = tarfile.TarInfo(member[0])
            info.size, info.mode = len(member[1]), 0o644
            tar.addfile(info, io.BytesIO(member[1]))
    return buffer.getvalue()


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


@pytest.fixture
def scans() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    return {name: _nifti_bytes(rng) for name in GOOD}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A real file outside DEST, named like an IXI scan: the target of the attacks."""
    path = tmp_path / "outside" / OUTSIDE_NAME
    path.parent.mkdir()
    path.write_bytes(b"a file of the user, outside DEST\n")
    return path


@pytest.fixture
def server():
    files = FileServer()
    files.state.files["/IXI.xls"] = _xls(SHEET)
    files.start()
    yield files
    files.stop()


def _settings(server: FileServer) -> IXISettings:
    return IXISettings(t1_url=server.url("/IXI-T1.tar"), demographics_url=server.url("/IXI.xls"),
                       download=FAST)


# ----------------------------------------------------------------------------- archive members
def test_absolute_member_does_not_move_a_file_outside_dest(server: FileServer, tmp_path: Path,
                                                           outside: Path,
                                                           scans: dict[str, bytes]) -> None:
    """An absolute member naming a real outside file: the file stays, the member is reported."""
    server.state.files["/IXI-T1.tar"] = _archive(
        [(str(outside), b"the archive's bytes"), *scans.items()])
    root = tmp_path / "ixi"
    before = _snapshot(tmp_path)
    report = fetch_ixi(root, _settings(server))
    assert outside.read_bytes() == b"a file of the user, outside DEST\n"
    assert _snapshot(tmp_path, skip=root) == before  # nothing outside DEST changed
    problems = [p for p in report.problems if str(outside) in p]
    assert len(problems) == 1 and "IXI-T1.tar" in problems[0]
    assert "absolute path" in problems[0] and "not extracted" in problems[0]
    for name, body in scans.items():
        pid = f"sub-{name[:6]}"
        assert (root / pid / "anat" / f"{pid}_T1w.nii.gz").read_bytes() == body
    assert not (root / "sub-IXI002").exists() and report.n_scans == len(GOOD)
    assert all(outside.read_bytes() != p.read_bytes() for p in root.rglob("*.nii.gz"))


@pytest.mark.parametrize(("kind", "why"), [
    ("absolute", "has an absolute path"),
    ("climbing", "is unsafe to extract (OutsideDestinationError"),
    ("symlink", "is not a regular file"),
    ("hardlink", "is not a regular file"),
    ("device", "is not a regular file"),
    ("symlinked folder", "is not named IXI"),
])
def test_unpack_refuses_members_leaving_the_folder(tmp_path: Path, outside: Path,
                                                   scans: dict[str, bytes], kind: str,
                                                   why: str) -> None:
    name = "IXI077-HH-1000-T1.nii.gz"
    bad = {
        "absolute": [(str(outside), b"x")],
        "climbing": [(f"../../outside/{OUTSIDE_NAME}", b"x")],
        "symlink": [_special(name, tarfile.SYMTYPE, str(outside))],
        "hardlink": [_special(name, tarfile.LNKTYPE, str(outside))],
        "device": [_special(name, tarfile.CHRTYPE)],
        "symlinked folder": [_special("d", tarfile.SYMTYPE, str(outside.parent)),
                             (f"d/{OUTSIDE_NAME}", b"x")],
    }[kind]
    archive = tmp_path / "a.tar"
    archive.write_bytes(_archive([*bad, *scans.items()]))
    folder = tmp_path / "dest" / "staging"
    before = _snapshot(tmp_path, skip=tmp_path / "dest")
    files, problems = unpack_ixi_t1(archive, folder)
    assert outside.read_bytes() == b"a file of the user, outside DEST\n"
    assert _snapshot(tmp_path, skip=tmp_path / "dest") == before
    assert all(p.is_relative_to(folder) and not p.is_symlink() for p in files)
    good = [p for p in files if p.name in GOOD]
    assert [p.name for p in good] == list(GOOD)
    assert [p.read_bytes() for p in good] == list(scans.values())
    if kind == "symlinked folder":  # the link is refused; the file lands in a real folder
        assert files[0] == folder / "d" / OUTSIDE_NAME and files[0].read_bytes() == b"x"
        assert f"a.tar: member 'd' {why}" in problems[0]
    else:
        assert len(files) == len(GOOD) and len(problems) == 1
        assert problems[0].startswith("a.tar: member ")
        member = bad[0].name if isinstance(bad[0], tarfile.TarInfo) else bad[0][0]
        assert f"member {member!r} {why}" in problems[0] and "not extracted" in problems[0]


def test_unpack_lists_the_paths_written(tmp_path: Path, scans: dict[str, bytes]) -> None:
    """Names that the data filter normalises are listed as the files written, inside the folder."""
    first, second, third = GOOD
    archive = tmp_path / "a.tar"
    archive.write_bytes(_archive([(f"./{first}", scans[first]),
                                  (f"sub/../{second}", scans[second]),
                                  (f"sub/{third}", scans[third])]))
    folder = tmp_path / "staging"
    files, problems = unpack_ixi_t1(archive, folder)
    assert problems == []
    assert files == [folder / first, folder / second, folder / "sub" / third]
    assert [p.read_bytes() for p in files] == list(scans.values())


# ----------------------------------------------------------------------------- half-built DEST
def test_folder_in_a_scans_place_moves_nothing(server: FileServer, tmp_path: Path,
                                               scans: dict[str, bytes]) -> None:
    server.state.files["/IXI-T1.tar"] = _tar(scans)
    root = tmp_path / "ixi"
    blocker = root / "sub-IXI040" / "anat" / "sub-IXI040_T1w.nii.gz"
    blocker.mkdir(parents=True)
    with pytest.raises(FetchError) as info:
        fetch_ixi(root, _settings(server))
    message = str(info.value)
    assert str(blocker) in message and "a folder" in message and "nothing was moved" in message
    assert not [p for p in root.rglob("*.nii.gz") if p.is_file()]  # no scan was moved in
    assert not (root / "participants.tsv").exists()
    assert not (root / "sourcedata" / ".unpacking").exists()


@pytest.mark.parametrize("run", ["first", "rerun"])
def test_failed_move_leaves_dest_as_it_was(server: FileServer, tmp_path: Path,
                                           scans: dict[str, bytes],
                                           monkeypatch: pytest.MonkeyPatch, run: str) -> None:
    """A move that fails half-way (e.g. the disk fails) undoes the moves before it."""
    root = tmp_path / "ixi"
    server.state.files["/IXI-T1.tar"] = _tar(scans)
    if run == "rerun":  # an earlier complete run, then a new archive with other bytes
        fetch_ixi(root, _settings(server))
        (root / "sourcedata" / "IXI-T1.tar").unlink()
        rng = np.random.default_rng(2)
        server.state.files["/IXI-T1.tar"] = _tar({name: _nifti_bytes(rng) for name in GOOD})
    else:
        root.mkdir()
    before = _snapshot(root, skip=root / "sourcedata")
    replace = os.replace

    def failing_replace(source, target) -> None:
        if Path(source).name == GOOD[2] and Path(target).name == "sub-IXI040_T1w.nii.gz":
            raise OSError(28, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(FetchError) as info:
        fetch_ixi(root, _settings(server))
    message = str(info.value)
    assert str(root) in message and "No space left on device" in message
    assert "undone" in message
    assert _snapshot(root, skip=root / "sourcedata") == before
    assert not (root / "sourcedata" / ".unpacking").exists()


# ----------------------------------------------------------------------------- demographics
@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_sheet_is_set_aside_and_downloaded_again(server: FileServer, tmp_path: Path,
                                                         scans: dict[str, bytes],
                                                         kind: str) -> None:
    good = server.state.files["/IXI.xls"]
    bad = (np.random.default_rng(0).bytes(4096) if kind == "garbage"
           else good[: len(good) // 3])
    server.state.files.update({"/IXI.xls": bad, "/IXI-T1.tar": _tar(scans)})
    sheet = tmp_path / "sourcedata" / "IXI.xls"
    with pytest.raises(FetchError) as info:
        fetch_ixi(tmp_path, _settings(server))
    message = str(info.value)
    aside = tmp_path / "sourcedata" / "IXI.xls.bad"
    assert f"cannot read the demographics sheet {sheet}" in message and "corrupt" in message
    assert f"moved to {aside}" in message and "rerunning downloads it again" in message
    assert aside.read_bytes() == bad and not sheet.exists()
    assert [r[0] for r in server.state.requests] == ["/IXI.xls"]  # no tarball for a bad sheet

    server.state.files["/IXI.xls"] = good  # the rerun needs no cleanup by hand
    report = fetch_ixi(tmp_path, _settings(server))
    assert sheet.read_bytes() == good and report.n_scans == len(GOOD)
    assert [r[0] for r in server.state.requests] == ["/IXI.xls", "/IXI.xls", "/IXI-T1.tar"]
