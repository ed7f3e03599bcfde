"""Sessions of the brainage study.

``nox -s build`` executes the five notebooks with the quick profile and renders the book;
``nox -s build -- --profile paper`` chooses another profile (``notebooks/params/<name>.yaml``).
``nox -s tests`` runs the test suite; ``nox -s lint`` runs ruff and the import-rule test. The
sessions create their own virtual environment and install the package with its pinned
dependencies (torch 2.13.0, the CPU wheel on this project's machines; see
README for a CUDA build).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
#: The ruff release the lint rules were checked with (its defaults change between releases).
RUFF = "ruff==0.17.6"


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
    session.install("-e", ".[test]")
    _ensure_chromium(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and notebooks, and the package's import rules."""
    session.install(RUFF, "pytest>=8")
    session.run("ruff", "check", "brainage", "tests", "benchmarks", "notebooks", "noxfile.py")
    # The import rules are read from the source alone: no conftest, no brainage install.
    session.run("python", "-m", "pytest", "--noconftest", "-p", "no:cacheprovider", "-q",
                "tests/test_imports.py")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Execute the notebooks of a profile (default: quick); render book/_build/html."""
    session.install("-e", ".")
    args = session.posargs or ["--profile", "quick"]
    session.run("brainage", "build", *args)
