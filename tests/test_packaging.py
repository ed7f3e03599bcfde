"""The declared dependencies agree between pyproject.toml and environment.yml."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_and_environment_agree(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pip = {r for r in pip if not r.startswith("-e")}
    # The same requirement strings, versions included, except the tools only conda users need.
    assert declared == conda_pip - {r for r in conda_pip if _name(r) == "nox"}


def test_torch_is_pinned_to_the_cpu_wheel_release(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


@pytest.mark.parametrize("package", ["data", "imaging", "models", "analysis", "study"])
def test_every_public_name_of_a_subpackage_resolves(package):
    import importlib

    module = importlib.import_module(f"brainage.{package}")
    missing = [name for name in module.__all__ if not _resolves(module, name)]
    assert not missing, f"brainage.{package} lists names that do not exist: {missing}"


def _resolves(module, name: str) -> bool:
    try:
        getattr(module, name)
    except AttributeError:
        return False
    return True
