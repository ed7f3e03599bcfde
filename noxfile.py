"""Sessions of the brainage study.

``nox -s build`` executes the five notebooks with the quick profile and renders the book;
``nox -s build -- --profile paper`` chooses another profile (``notebooks/params/<name>.yaml``).
``nox -s tests`` runs the test suite; ``nox -s lint`` runs ruff and the import-rule test. The
sessions create their own virtual environment and install the package with its pinned
dependencies (torch 2.13.0, the CPU wheel on this project's machines; see
README for a CUDA build). Where uv is installed (``pip install nox uv``) the environments are
built with it, about eight times faster than pip; otherwise with venv and pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
# uv where it is installed, else venv + pip (`nox -db venv` forces pip)
nox.options.default_venv_backend = "uv|venv"

PYTHON = "3.11"
#: The ruff release the lint rules were checked with (its defaults change between releases).
RUFF = "ruff==0.17.6"


def _pip_find_links() -> list[str]:
    """The local wheel folders pip is configured with (``PIP_FIND_LINKS``, pip's config files).

    uv reads neither, so without them it would miss a wheel that lies on this disk (this
    project's machines keep the CPU build of torch there) and download another build: a CUDA
    torch of several GB where pip installs the local CPU one.
    """
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                                capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith(".find-links"):
            links += value.strip().strip("'\"").split()
    return [link for link in dict.fromkeys(links) if Path(link).is_dir()]


def _install(session: nox.Session, *args: str) -> None:
    """``session.install`` that, with the uv backend, also searches pip's local wheel folders."""
    if session.venv_backend == "uv":
        args = tuple(a for link in _pip_find_links() for a in ("--find-links", link)) + args
    session.install(*args)


def _ensure_chromium(session: nox.Session) -> None:
    """Install Debian's Chromium and its driver for the browser test, where we can (root, apt)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.warn("chromium/chromedriver missing and not root with apt-get: "
                     "browser tests will skip")
        return
    session.log("installing Debian chromium + chromium-driver for the offline browser test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        result = subprocess.run(cmd, env=env, check=False)
        if result.returncode != 0:
            session.warn(f"{' '.join(cmd)} failed ({result.returncode}): browser tests will skip")
            return


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the pytest suite: unit and real-scan tests, end-to-end build, offline browser test."""
    _install(session, "-e", ".[test]")
    _ensure_chromium(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and notebooks, and the package's import rules."""
    _install(session, RUFF, "pytest>=8")
    session.run("ruff", "check", "brainage", "tests", "benchmarks", "notebooks", "noxfile.py")
    # The import rules are read from the source alone: no conftest, no brainage install.
    session.run("python", "-m", "pytest", "--noconftest", "-p", "no:cacheprovider", "-q",
                "tests/test_imports.py")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Execute the notebooks of a profile (default: quick); render book/_build/html."""
    _install(session, "-e", ".")
    args = session.posargs or ["--profile", "quick"]
    session.run("brainage", "build", *args)
