"""The files users look for beside the code: LICENSE (the licence pyproject declares),
CITATION.cff (this software and the reference study), CHANGELOG.md (this version)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from brainage._utils import VERSION
from tests.conftest import REPO_ROOT


def test_license_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO_ROOT / "LICENSE").read_text()
    assert declared == {"text": "MIT"}
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


@pytest.fixture(scope="module")
def citation() -> dict:
    return yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_describes_this_software(citation: dict) -> None:
    # the keys CFF 1.2.0 requires, and the values that must agree with the package
    for key in ("cff-version", "message", "title", "authors"):
        assert citation.get(key), key
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == VERSION
    assert citation["license"] == "MIT"
    assert all("name" in a or "family-names" in a for a in citation["authors"])


def test_citation_references_the_reference_study(citation: dict) -> None:
    refs = {r["title"]: r for r in citation["references"]}
    study = [r for r in refs.values() if any(i["value"] == "arXiv:2511.22102"
                                             for i in r.get("identifiers", []))]
    assert len(study) == 1
    assert [a["family-names"] for a in study[0]["authors"]] == ["Crête", "Kersten-Oertel",
                                                                "Xiao"]
    for ref in citation["references"]:
        assert {"type", "title", "authors", "year"} <= set(ref)


def test_changelog_names_this_version_and_has_no_internal_history() -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog") and VERSION in text
    assert re.search(r"^## Unreleased$", text, re.MULTILINE)
    assert not re.search(r"\bissue \d+", text, re.IGNORECASE)


def test_readme_mentions_the_conda_path_and_the_project_files() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "conda env create -f environment.yml" in text
    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md"):
        assert f"]({name})" in text and (REPO_ROOT / name).is_file()


def test_readme_and_docs_carry_no_internal_history() -> None:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    for page in pages:
        found = re.findall(r"\bissues? \d+", page.read_text(encoding="utf-8"), re.IGNORECASE)
        assert not found, (page.name, found)
