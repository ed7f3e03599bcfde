"""Download a public dataset into the study's BIDS layout: ``brainage fetch ixi DEST``.

IXI [1]_ (about 580 healthy adults aged 20-86 from three London sites, CC BY-SA 3.0) is
distributed as one tarball of raw T1-weighted NIfTI files named like
``IXI002-Guys-0828-T1.nii.gz`` (site Guys, HH or IOP) and a demographics sheet ``IXI.xls``.
:func:`fetch_ixi` downloads both into ``DEST/sourcedata/`` (resuming an interrupted download),
unpacks the scans safely and writes a BIDS folder [2]_ that :func:`brainage.data.cohort.load_cohort`
reads through a manifest entry (``space: native``, ``skull_stripped: false``)::

    DEST/
      dataset_description.json   licence, acknowledgement, source URLs and their sha256
      participants.tsv           participant_id  age  sex  site  ixi_id
      participants.json          what each column means
      excluded.tsv               participant_id  ixi_id  reason: every subject left out
      sub-IXI002/anat/sub-IXI002_T1w.nii.gz
      sourcedata/IXI-T1.tar, IXI.xls, excluded/*.nii.gz (scans of excluded subjects)

Choices:

* The scan's subject number is matched to the sheet's integer ``IXI_ID``. Age is the sheet's
  ``AGE`` (years; the age at the scan). An empty, zero or non-numeric ``AGE`` is no age.
* The sheet lists some ``IXI_ID`` twice. Rows whose ages agree within ``AGE_TOLERANCE`` (or
  where only one row has an age) collapse to one; rows whose ages differ leave the subject out.
  Sex comes from ``SEX_ID`` (1 = male, 2 = female; the real header reads
  ``SEX_ID (1=m, 2=f)``); another code, or rows that disagree, give ``n/a``.
* Left out, with a reason in ``excluded.tsv``: a scan without a sheet row, a sheet row without
  a scan, a subject without an age, conflicting ages, two scans of one subject. Their scans are
  kept under ``sourcedata/excluded/``, outside ``sub-*``, so that the BIDS folder holds only
  usable subjects. Archive members that are not ``IXI*-T1.nii.gz`` files are not extracted and
  are listed in :attr:`FetchReport.problems` and ``sourcedata/archive_problems.tsv``.
* A download already at its place is not downloaded again: put a copy of ``IXI-T1.tar`` at
  ``DEST/sourcedata/IXI-T1.tar`` to skip the 4.5 GB download. A sheet that cannot be read is
  moved to ``IXI.xls.bad`` (a rerun downloads it again).
* IXI's server refuses direct downloads at times (HTTP 403; keymorph issue 18, FLamby issue
  253). The error then says so in one line and what to do: download ``IXI-T1.tar`` and
  ``IXI.xls`` by hand and pass them (``--t1-archive PATH --demographics PATH``,
  :attr:`IXISettings.t1_archive`, :attr:`IXISettings.demographics`; used where they are,
  never moved) or put them in ``DEST/sourcedata/``. The BIDS folder is then built offline,
  with the same checks, and is the same as after a download.
* Archive members with absolute paths, ``..`` leaving the unpacking folder, links or devices are
  refused and reported; nothing outside DEST is read, moved or written.

References
----------
.. [1] IXI dataset, Imperial College London. https://brain-development.org/ixi-dataset/
.. [2] Gorgolewski KJ et al. The brain imaging data structure, a format for organizing and
   describing outputs of neuroimaging experiments. Sci Data 3, 160044 (2016).
"""

from __future__ import annotations

import difflib
import http.client
import json
import logging
import math
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pandas as pd

from brainage._utils import sha256_file
from brainage._utils.constants import VERSION as __version__
from brainage.exceptions import BrainageError

logger = logging.getLogger(__name__)

__all__ = [
    "AGE_TOLERANCE",
    "DATASETS",
    "EXCLUDED_COLUMNS",
    "IXI_DEMOGRAPHICS_URL",
    "IXI_SITES",
    "IXI_T1_URL",
    "PARTICIPANT_COLUMNS",
    "DownloadSettings",
    "FetchError",
    "FetchReport",
    "IXISettings",
    "download",
    "fetch",
    "fetch_ixi",
    "read_ixi_demographics",
    "unpack_ixi_t1",
]

#: The IXI T1 tarball (about 4.5 GB, 581 scans).
IXI_T1_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T1.tar"
#: The IXI demographics sheet (BIFF .xls).
IXI_DEMOGRAPHICS_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI.xls"
#: Acquisition sites of IXI, as spelled in its file names.
IXI_SITES = ("Guys", "HH", "IOP")
#: Ages of duplicate sheet rows that differ by at most this many years are the same age.
AGE_TOLERANCE = 0.01
#: Columns of the written ``participants.tsv`` (the layout of ``../shared/data/ixi10``).
PARTICIPANT_COLUMNS = ("participant_id", "age", "sex", "site", "ixi_id")
#: Columns of the written ``excluded.tsv``.
EXCLUDED_COLUMNS = ("participant_id", "ixi_id", "reason")
_T1_NAME = re.compile(r"^IXI(?P<number>\d+)-(?P<site>Guys|HH|IOP)-(?P<scan>\d+)-T1\.nii\.gz$")
_SEX_CODES = {1: "M", 2: "F"}
_LICENCE = "CC BY-SA 3.0"
_ACKNOWLEDGEMENT = ("IXI dataset, Imperial College London (Guy's Hospital, Hammersmith Hospital, "
                    "Institute of Psychiatry). https://brain-development.org/ixi-dataset/")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class FetchError(BrainageError, RuntimeError):
    """A download, an archive or a sheet cannot be used; the message names the URL or file."""


class _UnusableSheet(FetchError):
    """The demographics sheet is corrupt or is not IXI's sheet (a download to discard)."""


class _Refused(FetchError):
    """The server answered a client error (4xx): another attempt will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """A transfer failed in a way that another attempt may fix (early end, timeout, 5xx)."""


@dataclass(frozen=True)
class DownloadSettings:
    """How :func:`download` talks to the server.

    Parameters
    ----------
    timeout_s : float, default=60.0
        Seconds to wait for the connection and for each read before the attempt fails.
    retries : int, default=3
        Further attempts after a transient failure (early end, timeout, HTTP 5xx); each one
        resumes where the last stopped. HTTP 4xx errors are not retried.
    backoff_s : float, default=5.0
        Wait before the first retry; doubled before each further one.
    chunk_bytes : int, default=1048576
        Bytes read and written at a time (memory stays bounded).
    log_every_s : float, default=30.0
        Seconds between progress log lines.
    """

    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 5.0
    chunk_bytes: int = 1 << 20
    log_every_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "chunk_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)!r}")
        for name in ("retries", "backoff_s", "log_every_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be zero or positive; got {getattr(self, name)!r}")


@dataclass(frozen=True)
class IXISettings:
    """Where :func:`fetch_ixi` downloads from and what it keeps.

    Parameters
    ----------
    t1_url : str, default=IXI_T1_URL
        The tarball of T1 scans (``http`` or ``https``).
    demographics_url : str, default=IXI_DEMOGRAPHICS_URL
        The demographics sheet: ``.xls``/``.xlsx``, or ``.csv`` with the same columns.
    t1_sha256, demographics_sha256 : str or None, default=None
        Expected sha256 digests (64 hexadecimal characters); ``None`` skips the check.
    keep_archive : bool, default=True
        Keep the tarball under ``DEST/sourcedata/`` (a rerun then needs no download). A
        ``t1_archive`` of the user's is never removed.
    download : DownloadSettings, default=DownloadSettings()
        Timeouts and retries.
    t1_archive, demographics : str or Path or None, default=None
        Files obtained by hand (when IXI's server refuses downloads): the T1 tarball and the
        sheet, used where they are (read only, never moved or changed) instead of
        downloading ``t1_url`` and ``demographics_url``, with the same checks (sha256 when
        given, the sheet's columns, the archive's members).
    """

    t1_url: str = IXI_T1_URL
    demographics_url: str = IXI_DEMOGRAPHICS_URL
    t1_sha256: str | None = None
    demographics_sha256: str | None = None
    keep_archive: bool = True
    download: DownloadSettings = field(default_factory=DownloadSettings)
    t1_archive: Path | None = None
    demographics: Path | None = None

    def __post_init__(self) -> None:
        for name in ("t1_url", "demographics_url"):
            _check_url(getattr(self, name), name)
        for name in ("t1_sha256", "demographics_sha256"):
            object.__setattr__(self, name, _check_digest(getattr(self, name), name))
        for name in ("t1_archive", "demographics"):
            object.__setattr__(self, name, _check_local_file(getattr(self, name), name))
        if not isinstance(self.keep_archive, bool):
            raise TypeError(f"keep_archive must be a bool; got {self.keep_archive!r}")


@dataclass(frozen=True)
class FetchReport:
    """What :func:`fetch_ixi` wrote.

    Parameters
    ----------
    root : Path
        The BIDS folder.
    participants, excluded : Path
        ``participants.tsv`` and ``excluded.tsv``.
    n_scans : int
        Scans written under ``sub-*/anat``.
    n_excluded : int
        Subjects left out (rows of ``excluded.tsv``).
    problems : tuple of str
        Archive members not extracted and sheet rows not readable (also logged as warnings).
    sources : tuple of Path
        The downloaded files under ``sourcedata/`` (a removed archive is not listed).
    bytes_downloaded : int
        Bytes transferred by this call (0 when everything was already downloaded).
    seconds : float
        Wall time of the call.
    """

    root: Path
    participants: Path
    excluded: Path
    n_scans: int
    n_excluded: int
    problems: tuple[str, ...]
    sources: tuple[Path, ...]
    bytes_downloaded: int
    seconds: float


@dataclass(frozen=True)
class _Downloaded:
    path: Path
    url: str
    sha256: str
    size: int
    received: int


@dataclass
class _Progress:
    """Bytes received by one :func:`download` call; logs at most every ``every_s`` seconds."""

    name: str
    every_s: float
    received: int = 0
    have: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    logged: float = field(default_factory=time.monotonic)

    def add(self, n: int) -> None:
        self.received += n
        self.have += n
        now = time.monotonic()
        if now - self.logged >= self.every_s:
            self.logged = now
            rate = self.received / max(now - self.started, 1e-9) / 1e6
            share = f" ({100 * self.have / self.total:.0f} %)" if self.total else ""
            logger.info("%s: %s of %s%s, %.1f MB/s", self.name, _mb(self.have),
                        _mb(self.total), share, rate)


def _mb(n: int | None) -> str:
    return "an unknown size" if n is None else f"{n / 1e6:.1f} MB"


def _check_url(url: object, name: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{name} must be an http(s) URL; got {url!r}")
    return url


def _check_local_file(path: object, name: str) -> Path | None:
    """A file the user obtained by hand: an existing regular file (not a folder or a FIFO)."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{name} must be a path; got {path!r}")
    path = Path(os.path.abspath(Path(path).expanduser()))
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise FetchError(f"{name} {path} cannot be read: {err.strerror}") from err
    if not stat.S_ISREG(mode):
        raise FetchError(f"{name} {path} is not a regular file")
    return path


def _check_digest(digest: object, name: str) -> str | None:
    if digest is None:
        return None
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ValueError(f"{name} must be a sha256 digest (64 hexadecimal characters); "
                         f"got {digest!r}")
    return digest.lower()


def download(
    url: str, dest: str | Path, *, expected_size: int | None = None, sha256: str | None = None,
    settings: DownloadSettings | None = None,
) -> Path:
    """Download a URL to a file, resuming an interrupted download, and verify it.

    Bytes go to ``dest`` + ``.part``; an existing ``.part`` is resumed with an HTTP
    ``Range: bytes=N-`` request (a server that answers 200 instead of 206 sends the whole file
    again, which restarts from byte 0). The file is renamed to ``dest`` only when complete and
    verified. A ``dest`` already present that passes the checks is not downloaded again.
    Written with the standard library (:mod:`urllib`): resumable, verified downloads are all
    that is needed, and no field library offers them.

    Parameters
    ----------
    url : str
        An ``http`` or ``https`` URL.
    dest : str or Path
        The file to write (its folder is created).
    expected_size : int or None, default=None
        Expected size in bytes; otherwise the server's Content-Length/Content-Range is checked.
    sha256 : str or None, default=None
        Expected sha256 digest (hexadecimal).
    settings : DownloadSettings or None, default=None
        Timeouts, retries, chunk size; ``None`` uses the defaults.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    FetchError
        HTTP errors (the URL and status); a transfer that ended early after every retry (the
        URL, bytes received and expected; the ``.part`` is kept and a rerun resumes); a size or
        sha256 mismatch (the file, expected and actual values; the file is kept as ``.bad``).
    """
    _check_url(url, "url")
    sha256 = _check_digest(sha256, "sha256")
    return _download(url, Path(dest), expected_size, sha256, settings or DownloadSettings()).path


def _download(url: str, dest: Path, expected_size: int | None, sha256: str | None,
              settings: DownloadSettings) -> _Downloaded:
    """:func:`download`, also returning the digest and the bytes this call received."""
    if dest.is_file():
        digest = _verify(dest, dest, url, expected_size, sha256)
        logger.info("%s is already downloaded (%s); not downloading it again", dest,
                    _mb(dest.stat().st_size))
        return _Downloaded(dest, url, digest, dest.stat().st_size, 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    progress = _Progress(dest.name, settings.log_every_s)
    logger.info("downloading %s to %s", url, dest)
    failure = ""
    for attempt in range(settings.retries + 1):
        if attempt:
            wait = settings.backoff_s * 2 ** (attempt - 1)
            logger.warning("%s; retry %d of %d in %g s", failure, attempt, settings.retries, wait)
            time.sleep(wait)
        try:
            _transfer(url, part, expected_size, settings, progress)
            break
        except _Retryable as err:
            failure = str(err)
        except (TimeoutError, ConnectionError, http.client.HTTPException,
                urllib.error.URLError) as err:
            reason = getattr(err, "reason", None) or err
            failure = f"download of {url} failed ({type(err).__name__}: {reason})"
    else:
        raise FetchError(_give_up_message(failure, part, progress, settings.retries))
    digest = _verify(part, dest, url, expected_size, sha256)
    os.replace(part, dest)
    size = dest.stat().st_size
    logger.info("downloaded %s (%s, sha256 %s)", dest, _mb(size), digest)
    return _Downloaded(dest, url, digest, size, progress.received)


def _give_up_message(failure: str, part: Path, progress: _Progress, retries: int) -> str:
    have = part.stat().st_size if part.is_file() else 0
    of = f" of {progress.total}" if progress.total is not None else ""
    kept = (f"; the {have}{of} bytes received are kept in {part} and rerunning resumes the "
            f"download (nothing downloaded is lost)" if have else "")
    return f"{failure} (gave up after {retries + 1} attempt(s)){kept}"


def _transfer(url: str, part: Path, expected_size: int | None, settings: DownloadSettings,
              progress: _Progress) -> None:
    """One HTTP request: append to ``part`` (206) or rewrite it (200); raise if it ends early."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"brainage/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=settings.timeout_s)
    except urllib.error.HTTPError as err:
        err.close()  # release the connection; the status and headers stay readable
        if err.code == 416 and offset:
            _range_not_satisfiable(err, url, part, offset)
            return
        message = f"HTTP {err.code} {err.reason} for {url}"
        if err.code in _RETRY_STATUS:
            raise _Retryable(message) from err
        raise _Refused(message, err.code) from err
    with response:
        offset, total = _resume_point(response, url, part, offset)
        if expected_size is not None and total is not None and total != expected_size:
            raise FetchError(f"{url}: the server announces {total} bytes, but expected_size "
                             f"is {expected_size}")
        progress.have, progress.total = offset, total
        with open(part, "ab" if offset else "wb") as handle:
            while chunk := response.read(settings.chunk_bytes):
                handle.write(chunk)
                progress.add(len(chunk))
    have = part.stat().st_size
    if total is not None and have < total:
        raise _Retryable(f"download of {url} ended early: received {have} of {total} bytes")


def _resume_point(response: http.client.HTTPResponse, url: str, part: Path,
                  offset: int) -> tuple[int, int | None]:
    """Byte at which the body starts (``offset`` for a 206, 0 otherwise) and the total size."""
    length = response.headers.get("Content-Length")
    if offset and response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)",
                             response.headers.get("Content-Range", "").strip())
        if match and int(match[1]) == offset:
            return offset, None if match[3] == "*" else int(match[3])
        part.unlink()
        raise _Retryable(f"{url}: the server answered the request for bytes {offset}- with "
                         f"Content-Range {response.headers.get('Content-Range')!r}; "
                         f"starting again from byte 0")
    if offset:
        logger.warning("%s: the server ignored the Range request (HTTP %d); downloading the "
                       "whole file again", url, response.status)
    return 0, int(length) if length and length.isdigit() else None


def _range_not_satisfiable(err: urllib.error.HTTPError, url: str, part: Path,
                           offset: int) -> None:
    """HTTP 416 to ``bytes=N-``: the ``.part`` is complete if the file has N bytes."""
    match = re.fullmatch(r"bytes \*/(\d+)", (err.headers.get("Content-Range") or "").strip())
    if match and int(match[1]) == offset:
        return  # the .part already holds the whole file
    part.unlink()
    raise _Retryable(f"{url}: the server cannot send bytes {offset}- (HTTP 416: the file "
                     f"changed or is shorter); starting again from byte 0") from err


def _verify(path: Path, dest: Path, url: str, expected_size: int | None,
            sha256: str | None) -> str:
    """Check size and digest; a file that fails is kept as ``dest.bad``. Returns the digest."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        bad = _set_aside(path, dest)
        raise FetchError(f"{dest.name} from {url} has {size} bytes, expected {expected_size}; "
                         f"the file is kept as {bad}; rerunning downloads it again")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        bad = _set_aside(path, dest)
        raise FetchError(f"sha256 mismatch for {dest.name} from {url}: expected {sha256}, got "
                         f"{digest}; the file is kept as {bad}; rerunning downloads it again")
    return digest


def _set_aside(path: Path, dest: Path) -> Path:
    bad = dest.with_suffix(dest.suffix + ".bad")
    os.replace(path, bad)
    return bad


def unpack_ixi_t1(archive: str | Path, folder: str | Path) -> tuple[list[Path], list[str]]:
    """Extract the ``IXI*-T1.nii.gz`` files of a tarball, safely.

    Only regular files named ``IXI<number>-<site>-<scan>-T1.nii.gz`` (site Guys, HH or IOP)
    with a relative path are extracted, with :mod:`tarfile`'s ``data`` filter (no paths leaving
    ``folder``, no links, devices or special permissions). Other members (absolute paths,
    ``..`` leaving ``folder``, symbolic or hard links, devices) are not extracted and are
    reported (folders are skipped silently). The files listed are the paths the filter wrote,
    each checked to be a regular file inside ``folder``, never the members' raw names: nothing
    outside ``folder`` is read or written.

    Parameters
    ----------
    archive : str or Path
        The tarball (uncompressed or gzip/bzip2/xz-compressed).
    folder : str or Path
        Where to extract (the members' relative paths are kept).

    Returns
    -------
    files : list of Path
        The extracted files, in archive order, all inside ``folder``.
    problems : list of str
        One message per member not extracted.

    Raises
    ------
    FetchError
        The archive is corrupt or truncated (the message names it and says to delete it to
        download it again), or a file cannot be written (e.g. the disk is full).
    """
    archive, folder = Path(archive), Path(folder)
    if not hasattr(tarfile, "data_filter"):  # added in Python 3.11.4
        raise FetchError("unpacking safely needs tarfile's data filter: Python >= 3.11.4")
    files: list[Path] = []
    problems: list[str] = []
    seen: set[str] = set()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                written, problem = None, _member_problem(member, seen)
                if problem is None:
                    written, problem = _extract(tar, member, folder)
                if written is not None:
                    files.append(written)
                    seen.add(written.name)
                elif problem:
                    problems.append(f"{archive.name}: member {member.name!r} {problem}; "
                                    f"not extracted")
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise FetchError(f"archive {archive} is corrupt or truncated ({type(err).__name__}: "
                         f"{err}); it is kept: delete it and rerun to download it again") from err
    except OSError as err:
        raise FetchError(f"cannot unpack {archive} into {folder}: {err}") from err
    for problem in problems:
        logger.warning(problem)
    logger.info("unpacked %d T1 scans from %s", len(files), archive)
    return files, problems


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo,
             folder: Path) -> tuple[Path | None, str | None]:
    """Extract one member with the ``data`` filter: the file written, or why there is none.

    The listed path is the one the filter wrote (it rewrites names), resolved and checked to
    be a regular file inside ``folder``; the member's raw name is never used as a path.
    """
    # ``sub/../x`` made lexically ``x`` first: tarfile would create ``sub/..`` and fail
    normal = member.replace(name=posixpath.normpath(member.name), deep=False)
    try:
        safe = tarfile.data_filter(normal, str(folder))
    except tarfile.FilterError as err:  # a TarError, but about this member, not the archive
        return None, f"is unsafe to extract ({type(err).__name__}: {err})"
    tar.extract(safe, folder, filter="data")  # filtering a filtered member changes nothing
    inside = Path(os.path.realpath(folder))
    written = Path(os.path.realpath(folder / safe.name))
    if written == inside or not written.is_relative_to(inside):
        return None, f"resolves to {written}, outside {folder}"
    path = folder / written.relative_to(inside)
    if not _is_regular_file(path):
        return None, f"is not a regular file at {path} after extraction"
    return path, None


def _is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file itself (not a link to one, not a folder or device)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _member_problem(member: tarfile.TarInfo, seen: set[str]) -> str | None:
    """Why a member is not extracted: None to extract it, ``""`` to skip it silently."""
    name = PurePosixPath(member.name).name
    if member.isdir():
        return ""
    if member.name.startswith(("/", os.sep)) or os.path.isabs(member.name):
        return "has an absolute path (an archive to unpack holds relative paths only)"
    if not _T1_NAME.match(name):
        return (f"is not named IXI<number>-<site>-<scan>-T1.nii.gz with site "
                f"{', '.join(IXI_SITES)}")
    if not member.isfile():
        return "is not a regular file (a link, device or special file)"
    if name in seen:
        return "repeats a file name already extracted"
    return None


def read_ixi_demographics(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Age and sex per IXI subject from ``IXI.xls`` (or a ``.csv`` of the same columns).

    Needs the columns ``IXI_ID`` and ``AGE``; ``SEX_ID`` (or ``SEX_ID (1=m, 2=f)``, the real
    header) is optional. Column names are matched case-insensitively. Duplicate ``IXI_ID`` rows
    collapse when their ages agree within :data:`AGE_TOLERANCE` (rows without an age do not
    disagree); otherwise the subject gets a ``reason`` and no age.

    Parameters
    ----------
    path : str or Path
        ``.xls``/``.xlsx`` (read with the ``calamine`` engine, package ``python-calamine``; the
        sheet holding ``IXI_ID`` is used) or ``.csv``.

    Returns
    -------
    table : pandas.DataFrame
        One row per ``IXI_ID``, sorted: ``ixi_number`` (int), ``age`` (float, NaN when left
        out), ``sex`` (``M``, ``F`` or NA), ``rows`` (sheet rows, header = row 1), ``reason``
        (why the subject is left out, ``""`` when usable).
    problems : list of str
        Rows whose ``IXI_ID`` is missing or not an integer (not subjects), sex disagreements.

    Raises
    ------
    FetchError
        The file cannot be read or lacks a required column (the message lists its columns).
    """
    path = Path(path)
    raw = _read_sheet(path).dropna(how="all")  # blank rows; the index keeps row numbers
    columns = {str(c).strip().upper(): c for c in raw.columns}
    sex_col = next((c for key, c in columns.items() if key.startswith("SEX_ID")), None)
    missing = [name for name in ("IXI_ID", "AGE") if name not in columns]
    if missing:
        raise _UnusableSheet(f"demographics sheet {path} lacks the column(s) "
                             f"{', '.join(missing)}; its columns: "
                             f"{', '.join(map(str, raw.columns))}")
    ids = pd.to_numeric(raw[columns["IXI_ID"]], errors="coerce")
    ages = pd.to_numeric(raw[columns["AGE"]], errors="coerce")
    sexes = (pd.to_numeric(raw[sex_col], errors="coerce") if sex_col is not None
             else pd.Series(math.nan, index=raw.index))
    problems = []
    rows = []
    for index, number in ids.items():
        row = int(index) + 2  # the header is row 1
        if not (pd.notna(number) and float(number).is_integer()):
            problems.append(f"{path.name} row {row}: IXI_ID {raw.at[index, columns['IXI_ID']]!r}"
                            f" is not an integer; the row is ignored")
            continue
        age = ages[index] if pd.notna(ages[index]) and 0 < ages[index] <= 120 else math.nan
        rows.append({"ixi_number": int(number), "row": row, "age": age,
                     "age_text": raw.at[index, columns["AGE"]],
                     "sex": _SEX_CODES.get(sexes[index], pd.NA)})
    table = pd.DataFrame(rows, columns=["ixi_number", "row", "age", "age_text", "sex"])
    subjects = [_collapse(number, group, path.name, problems)
                for number, group in table.groupby("ixi_number", sort=True)]
    for problem in problems:
        logger.warning(problem)
    return pd.DataFrame(subjects, columns=["ixi_number", "age", "sex", "rows", "reason"]), problems


def _read_sheet(path: Path) -> pd.DataFrame:
    """The sheet with an ``IXI_ID`` column of an Excel file, or a CSV file, as read by pandas."""
    suffix = path.suffix.lower()
    if suffix not in (".xls", ".xlsx", ".csv"):
        raise FetchError(f"demographics sheet {path}: expected a .xls, .xlsx or .csv file; "
                         f"got {suffix or 'no suffix'}")
    try:
        # calamine, not xlrd: pandas >= 3 deprecates its xlrd engine for .xls files
        sheets = ({path.name: pd.read_csv(path)} if suffix == ".csv"
                  else pd.read_excel(path, sheet_name=None, engine="calamine"))
    except ImportError as err:
        raise FetchError(f"reading {path} needs the package python-calamine "
                         f"(pip install python-calamine): {err}") from err
    except Exception as err:  # readers raise many types (OSError, ValueError, CalamineError...)
        raise _UnusableSheet(f"cannot read the demographics sheet {path}, it is corrupt or "
                             f"not a spreadsheet: {' '.join(str(err).split())}") from err
    for sheet in sheets.values():
        if any(str(c).strip().upper() == "IXI_ID" for c in sheet.columns):
            return sheet
    found = "; ".join(f"{name}: {', '.join(map(str, s.columns))}" for name, s in sheets.items())
    raise _UnusableSheet(f"demographics sheet {path}: no sheet has an IXI_ID column ({found})")


def _collapse(number: int, group: pd.DataFrame, name: str, problems: list[str]) -> dict:
    """One subject from its sheet rows: agreeing ages collapse, conflicting ones are a reason."""
    rows = ", ".join(map(str, group["row"]))
    ages = group["age"].dropna()
    age, reason = math.nan, ""
    if ages.empty:
        given = ", ".join("empty" if pd.isna(t) else repr(t) for t in group["age_text"])
        reason = f"no age in {name} (AGE {given} on row(s) {rows})"
    elif ages.max() - ages.min() > AGE_TOLERANCE + 1e-9:
        listed = ", ".join(f"{a:.2f}" for a in ages)
        reason = (f"conflicting ages in {name}: rows {rows} give {listed} years (they differ "
                  f"by more than {AGE_TOLERANCE} y)")
    else:
        age = float(ages.iloc[0])
    sexes = set(group["sex"].dropna())
    if len(sexes) > 1:
        problems.append(f"{name} rows {rows}: IXI_ID {number} has sexes {sorted(sexes)}; "
                        f"sex set to n/a")
    sex = sexes.pop() if len(sexes) == 1 else pd.NA
    return {"ixi_number": number, "age": age, "sex": sex, "rows": rows, "reason": reason}


@dataclass(frozen=True)
class _Scan:
    path: Path
    number: str  # digits of the file name, e.g. "002"
    site: str
    stem: str  # e.g. IXI002-Guys-0828

    @property
    def participant_id(self) -> str:
        return f"sub-IXI{self.number}"


def _scan(path: Path) -> _Scan:
    match = _T1_NAME.match(path.name)
    assert match is not None  # unpack_ixi_t1 extracts matching names only
    return _Scan(path, match["number"], match["site"], path.name[: -len("-T1.nii.gz")])


def _assemble(scans: Sequence[_Scan], people: pd.DataFrame,
              sheet: str) -> tuple[list[dict], list[dict], list[_Scan]]:
    """Participants rows, excluded rows and the scans to write under ``sub-*``."""
    by_number: dict[int, list[_Scan]] = {}
    for scan in scans:
        by_number.setdefault(int(scan.number), []).append(scan)
    info = {int(row.ixi_number): row for row in people.itertuples(index=False)}
    participants, excluded, keep = [], [], []
    for number in sorted(set(by_number) | set(info)):
        found, row = by_number.get(number, []), info.get(number)
        pid = found[0].participant_id if found else f"sub-IXI{number:03d}"
        reasons = []
        if not found:
            reasons.append(f"{sheet} row(s) {row.rows} but no T1 scan in the archive")
        elif len(found) > 1:
            reasons.append(f"{len(found)} T1 scans in the archive "
                           f"({', '.join(s.stem for s in found)})")
        if row is None:
            reasons.append(f"no row for IXI_ID {number} in {sheet} (no age)")
        elif row.reason:
            reasons.append(row.reason)
        stems = ", ".join(s.stem for s in found) or "n/a"
        if reasons:
            excluded.append({"participant_id": pid, "ixi_id": stems, "reason": "; ".join(reasons)})
            continue
        scan = found[0]
        participants.append({"participant_id": pid, "age": f"{row.age:.2f}",
                             "sex": "n/a" if pd.isna(row.sex) else row.sex,
                             "site": scan.site, "ixi_id": scan.stem})
        keep.append(scan)
    return participants, excluded, keep


def _place(root: Path, staging: Path, scans: Sequence[_Scan], keep: Sequence[_Scan]) -> None:
    """Move kept scans to ``sub-*/anat`` and the others to ``sourcedata/excluded`` (no copy).

    Every move is checked before the first one, and a move that fails undoes those before it
    (files of an earlier run that were replaced are put back), so that an error leaves DEST
    as it was: never a half-built folder.
    """
    moves, stale = _planned_moves(root, staging, scans, keep)
    journal: list[tuple[Path, Path]] = []  # (from, to) of every rename made, for the undo
    replaced = staging / ".replaced"  # files of an earlier run, until every move succeeded
    try:
        for source, target in moves:
            if os.path.lexists(target):  # a file of an earlier run (checked above)
                _rename(target, replaced / str(len(journal)), journal)
            _rename(source, target, journal)
        for number, bids in enumerate(stale):  # written by an earlier run, excluded now
            _rename(bids, replaced / f"stale{number}", journal)
    except OSError as err:
        _undo(journal)
        raise FetchError(f"cannot move the unpacked scans into {root} ({err}); the moves made "
                         f"were undone, so {root} is as it was before this run") from err
    for bids in stale:
        _remove_empty_parents(bids)


def _planned_moves(root: Path, staging: Path, scans: Sequence[_Scan],
                   keep: Sequence[_Scan]) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """The (scan, target) moves and the stale ``sub-*`` scans to remove, checked beforehand."""
    kept = {scan.path for scan in keep}
    inside = Path(os.path.realpath(staging))
    moves, stale = [], []
    for scan in scans:
        if not (_is_regular_file(scan.path)
                and Path(os.path.realpath(scan.path)).is_relative_to(inside)):
            raise FetchError(f"unpacked scan {scan.path} is missing or not a regular file "
                             f"inside {staging}; nothing was moved into {root}")
        bids = root / scan.participant_id / "anat" / f"{scan.participant_id}_T1w.nii.gz"
        target = bids if scan.path in kept else root / "sourcedata" / "excluded" / scan.path.name
        if os.path.lexists(target) and not _is_regular_file(target):
            raise FetchError(f"cannot write the scan {target}: a folder, link or another "
                             f"non-file is in its place; move it away and rerun (nothing was "
                             f"moved into {root})")
        moves.append((scan.path, target))
        if scan.path not in kept and _is_regular_file(bids):
            stale.append(bids)
    return moves, stale


def _rename(source: Path, target: Path, journal: list[tuple[Path, Path]]) -> None:
    """``os.replace`` within one file system, recorded in ``journal`` for :func:`_undo`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        _remove_empty_parents(target)
        raise
    journal.append((source, target))


def _undo(journal: Sequence[tuple[Path, Path]]) -> None:
    """Reverse the renames of ``journal``, last first, and remove the folders left empty."""
    for source, target in reversed(journal):
        source.parent.mkdir(parents=True, exist_ok=True)
        os.replace(target, source)
    for _, target in journal:
        _remove_empty_parents(target)


def _remove_empty_parents(path: Path) -> None:
    """Remove the folder of ``path`` and the one above if empty (``sub-*/anat``, ``sub-*``)."""
    for folder in (path.parent, path.parent.parent):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _write_tsv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """A BIDS TSV: tab-separated, ``\\n`` line ends, rows sorted by their first column."""
    ordered = sorted(rows, key=lambda r: str(r[columns[0]]))
    lines = ["\t".join(columns), *("\t".join(str(r[c]) for c in columns) for r in ordered)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _source_path(path: Path, root: Path) -> str:
    """Where a source file is: relative to DEST inside it; a file obtained by hand elsewhere
    by its name only (the machine's folders mean nothing to a reader; its sha256 identifies it)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return f"(obtained by hand) {path.name}"


def _write_metadata(root: Path, sources: Sequence[_Downloaded]) -> None:
    """``dataset_description.json`` (licence, sources, digests) and ``participants.json``."""
    description = {
        "Name": "IXI (T1w)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": _LICENCE,
        "Acknowledgements": _ACKNOWLEDGEMENT,
        "HowToAcknowledge": "Cite the IXI dataset (https://brain-development.org/ixi-dataset/). "
                            "Share-alike (CC BY-SA 3.0) applies to derived images.",
        "SourceDatasets": [{"URL": s.url} for s in sources],
        "SourceFiles": [{"URL": s.url, "Path": _source_path(s.path, root),
                         "Bytes": s.size, "sha256": s.sha256} for s in sources],
        "GeneratedBy": [{"Name": "brainage fetch ixi", "Version": __version__,
                         "Description": "IXI T1 scans reorganised as BIDS; subjects left out "
                                        "are listed in excluded.tsv"}],
    }
    columns = {
        "age": {"Description": "age at the scan (IXI.xls AGE), rounded to 0.01",
                "Units": "year"},
        "sex": {"Description": "IXI.xls SEX_ID", "Levels": {"M": "male", "F": "female"}},
        "site": {"Description": "acquisition site, from the file name",
                 "Levels": {"Guys": "Guy's Hospital (Philips 1.5T)",
                            "HH": "Hammersmith Hospital (Philips 3T)",
                            "IOP": "Institute of Psychiatry (GE 1.5T)"}},
        "ixi_id": {"Description": "IXI file stem: IXI<number>-<site>-<scan>"},
    }
    (root / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n",
                                                   encoding="utf-8")
    (root / "participants.json").write_text(json.dumps(columns, indent=2) + "\n",
                                            encoding="utf-8")


def _unpack_and_place(root: Path, archive: Path, people: pd.DataFrame,
                      sheet: str) -> tuple[list[dict], list[dict], list[_Scan], list[str]]:
    """Unpack into ``sourcedata/.unpacking``, match scans with the sheet, move them in place."""
    staging = root / "sourcedata" / ".unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files, problems = unpack_ixi_t1(archive, staging)
        if not files:
            raise FetchError(f"archive {archive} holds no IXI*-T1.nii.gz file")
        scans = [_scan(path) for path in files]
        participants, excluded, keep = _assemble(scans, people, sheet)
        _place(root, staging, scans, keep)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return participants, excluded, keep, problems


def _local_source(path: Path, url: str, sha256: str | None) -> _Downloaded:
    """A file the user obtained by hand, checked like a download but never moved."""
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise FetchError(f"sha256 mismatch for {path}: expected {sha256}, got {digest}; is it "
                         f"the file of {url}?")
    logger.info("using %s (%s, sha256 %s) instead of downloading %s", path,
                _mb(path.stat().st_size), digest, url)
    return _Downloaded(path, url, digest, path.stat().st_size, 0)


def _obtain(url: str, local: Path | None, dest: Path, sha256: str | None,
            settings: IXISettings) -> _Downloaded:
    """``local`` (a file the user obtained by hand), else ``url`` downloaded to ``dest``
    (which a file already there replaces); a refusal says how to get the files by hand."""
    if local is not None:
        return _local_source(local, url, sha256)
    try:
        return _download(url, dest, None, sha256, settings.download)
    except _Refused as err:
        source = dest.parent
        raise FetchError(
            f"{err}: the server refuses to send {dest.name} (IXI's server does so at times). "
            f"Download IXI-T1.tar and IXI.xls by hand (web browser, "
            f"https://brain-development.org/ixi-dataset/), then run 'brainage fetch ixi "
            f"{source.parent} --t1-archive PATH/IXI-T1.tar --demographics PATH/IXI.xls', or "
            f"put both files in {source}/ and run the same command again") from err


def _read_downloaded_sheet(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """:func:`read_ixi_demographics`; a corrupt sheet is set aside so that a rerun downloads it."""
    try:
        return read_ixi_demographics(path)
    except _UnusableSheet as err:
        bad = _set_aside(path, path)
        raise FetchError(f"{err}; the file was moved to {bad}, so rerunning downloads it "
                         f"again") from err


def _file_name(url: str, default: str) -> str:
    return PurePosixPath(urlsplit(url).path).name or default


def fetch_ixi(dest: str | Path, settings: IXISettings | None = None) -> FetchReport:
    """Download IXI's T1 scans and demographics and write them as a BIDS folder.

    See the module docstring for the layout and for who is left out and why.

    Parameters
    ----------
    dest : str or Path
        The BIDS folder to write (created). Downloads are kept under ``dest/sourcedata/``.
    settings : IXISettings or None, default=None
        URLs, digests, ``keep_archive`` and download settings; ``None`` uses the defaults.

    Returns
    -------
    FetchReport

    Raises
    ------
    FetchError
        A download, the archive or the sheet cannot be used; the message names the URL or file
        and what to do. A sheet that cannot be read (or lacks ``IXI_ID``/``AGE``) is moved to
        ``IXI.xls.bad``, so that a rerun downloads it again. Scans are moved into ``dest`` only
        once every move is checked, and an error during the moves undoes them: ``dest`` is
        never left half-built.
    """
    started = time.monotonic()
    settings = settings or IXISettings()
    root = Path(os.path.abspath(Path(dest).expanduser()))
    if root.exists() and not root.is_dir():
        raise FetchError(f"DEST {root} is a file, not a folder")
    source = root / "sourcedata"
    fetched = [_obtain(settings.demographics_url, settings.demographics,
                       source / _file_name(settings.demographics_url, "IXI.xls"),
                       settings.demographics_sha256, settings)]
    # fails before the 4.5 GB; a user's own sheet is never moved aside
    people, problems = (read_ixi_demographics(settings.demographics) if settings.demographics
                        else _read_downloaded_sheet(fetched[0].path))
    fetched.append(_obtain(settings.t1_url, settings.t1_archive,
                           source / _file_name(settings.t1_url, "IXI-T1.tar"),
                           settings.t1_sha256, settings))
    participants, excluded, keep, archive_problems = _unpack_and_place(
        root, fetched[1].path, people, fetched[0].path.name)
    tables = (_write_tsv(root / "participants.tsv", PARTICIPANT_COLUMNS, participants),
              _write_tsv(root / "excluded.tsv", EXCLUDED_COLUMNS, excluded))
    _write_tsv(source / "archive_problems.tsv", ("problem",),
               ({"problem": p} for p in archive_problems))
    _write_metadata(root, fetched)
    kept = [d.path for d in fetched]
    if not settings.keep_archive and settings.t1_archive is None:
        fetched[1].path.unlink()
        kept.pop()
        logger.info("removed the archive %s (keep_archive=False)", fetched[1].path)
    report = FetchReport(
        root=root, participants=tables[0], excluded=tables[1], n_scans=len(keep),
        n_excluded=len(excluded), problems=tuple(problems + archive_problems),
        sources=tuple(kept), bytes_downloaded=sum(d.received for d in fetched),
        seconds=time.monotonic() - started)
    logger.info("IXI: %d scans written to %s, %d subjects excluded (%s)", report.n_scans, root,
                report.n_excluded, tables[1])
    return report


#: Fetchers by dataset name.
_FETCHERS: dict[str, Callable[..., FetchReport]] = {"ixi": fetch_ixi}
#: Datasets ``brainage fetch`` knows.
DATASETS = tuple(_FETCHERS)


def fetch(name: str, dest: str | Path, settings: IXISettings | None = None) -> FetchReport:
    """Fetch the dataset called ``name`` into ``dest`` (see :data:`DATASETS`).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones and the closest.
    """
    if name not in _FETCHERS:
        close = difflib.get_close_matches(str(name).lower(), DATASETS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}; brainage fetch knows: "
                         f"{', '.join(DATASETS)}{hint}")
    return _FETCHERS[name](dest, settings)
