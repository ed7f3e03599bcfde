"""The README and docs/ agree with the code: every ``brainage`` command and option they show
exists in the command line's parser, the test command is ``nox -s tests`` (CI runs it), and the
README's Python quick-start runs as written on a tiny model folder."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.cli import build_parser
from tests.conftest import REPO_ROOT
from tests.inference.test_predict import SCAN_MM, _mni_scan, template_4mm

__all__ = ["template_4mm"]  # fixtures, imported for this module's tests

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`(brainage [^`]+)`(?!`)")


def _code_blocks(text: str, languages: tuple[str, ...] | None = None) -> list[str]:
    return [body for lang, body in FENCE.findall(text)
            if languages is None or lang in languages]


def _commands(text: str) -> list[str]:
    """``brainage ...`` command lines of the fenced blocks (a line that starts with it, after
    joining continuations and dropping a ``$ `` prompt, or a quoted one such as
    ``--wrap "brainage ..."``) and of inline code spans."""
    found = []
    for block in _code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("brainage "):
                found.append(line)
            found += re.findall(r"[\"'](brainage\s[^\"']*)[\"']", line)
    found += INLINE.findall(text)
    return [c.strip() for c in found]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _check(command: str) -> list[str]:
    """What of ``command`` the parser does not know (empty: everything exists)."""
    parser = build_parser()
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    words = [w.strip("[]") for w in words[1:]]  # [--optional] placeholders
    top = _options(parser)
    while words and words[0].startswith("-"):
        if words[0] not in top:
            return [f"global option {words[0]}"]
        words = words[1:]
    if not words or words[0] in ("...",):
        return []
    commands = _subparsers(parser)
    if words[0] not in commands:
        return [f"command {words[0]!r}"]
    known = _options(commands[words[0]])
    unknown = []
    for word in words[1:]:
        if word.startswith("-") and not re.fullmatch(r"-\d.*", word):
            option = word.split("=", 1)[0]
            if option not in known:
                unknown.append(f"{words[0]} {option}")
    return unknown


def test_pages_show_commands() -> None:
    shown = {page.name: _commands(page.read_text(encoding="utf-8")) for page in PAGES}
    assert len(shown["README.md"]) >= 8, shown["README.md"]
    everything = " ".join(c for cs in shown.values() for c in cs)
    for command in ("predict", "train", "calibrate", "bids", "profiles", "build", "fetch",
                    "simulate", "preprocess"):
        assert f"brainage {command}" in everything


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_and_option_shown_exists(page: Path) -> None:
    problems = {c: _check(c) for c in _commands(page.read_text(encoding="utf-8"))}
    assert not {c: p for c, p in problems.items() if p}


@pytest.mark.parametrize(("command", "problem"), [
    ("brainage predict x.nii --model m --no-such-option", ["predict --no-such-option"]),
    ("brainage trian --out x", ["command 'trian'"]),
    ("brainage --loud predict x", ["global option --loud"]),
    ("brainage bids in out participant --nprocs 2 --bids-filter-file f.json", []),
    ("brainage predict x.nii --age -1 --model m", []),  # a negative number is a value
])
def test_the_check_catches_unknown_commands_and_options(command: str, problem: list) -> None:
    assert _check(command) == problem


def test_the_test_command_is_nox_tests() -> None:
    blocks = _code_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"), ("bash",))
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert "nox -s tests" in lines


def _quickstart() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in _code_blocks(text, ("python",)) if "predict_scans" in b]
    assert len(blocks) == 1, "the README shows one Python quick-start"
    return blocks[0]


def test_quickstart_is_three_lines() -> None:
    assert len([line for line in _quickstart().splitlines() if line.strip()]) == 3


def test_readme_python_quickstart_runs(model_dir: Path, template_4mm: np.ndarray,
                                       tmp_path: Path, monkeypatch) -> None:
    """The block exactly as the README shows it, in a folder where its paths exist: the
    suite's tiny model folder at runs/quick/models and two template-space scans."""
    (tmp_path / "runs" / "quick").mkdir(parents=True)
    (tmp_path / "runs" / "quick" / "models").symlink_to(model_dir, target_is_directory=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(("scan1.nii.gz", "scan2.nii.gz")):
        _mni_scan(tmp_path / name, template_4mm, 300.0 * (i + 1), rng)
    assert nib.load(tmp_path / "scan1.nii.gz").header.get_zooms()[:3] == (SCAN_MM,) * 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not the user's cache
    namespace: dict = {}
    exec(compile(_quickstart(), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert isinstance(table, pd.DataFrame)
    assert sorted(set(table["path"].map(lambda p: Path(p).name))) == ["scan1.nii.gz",
                                                                      "scan2.nii.gz"]
    assert table["predicted"].notna().all() and (table["error"].fillna("") == "").all()
    assert sorted(table["age"].unique()) == [63.0, 71.0]


LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_files(page: Path) -> None:
    targets = [m[0] for m in LINK.findall(page.read_text(encoding="utf-8"))
               if not re.match(r"[a-z]+:", m[0])]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing


def test_every_docs_page_is_in_the_book() -> None:
    toc = (REPO_ROOT / "book" / "_toc.yml").read_text(encoding="utf-8")
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):
        stub = REPO_ROOT / "book" / "guide" / page.name
        assert f"guide/{page.stem}\n" in toc and stub.is_file(), page.name
        assert f"../../docs/{page.name}" in stub.read_text(encoding="utf-8")


def test_every_profile_the_pages_name_exists() -> None:
    """A ``--profile NAME`` shown anywhere (the README's starter path included) is a profile
    of notebooks/params that `brainage profiles` lists."""
    from brainage.study.profiles import list_profiles

    names = set(list_profiles(REPO_ROOT / "notebooks" / "params"))
    shown = [m for page in PAGES for c in _commands(page.read_text(encoding="utf-8"))
             for m in re.findall(r"--profile[ =]([\w.-]+)", c)]
    assert "starter" in shown
    assert not [name for name in shown if name not in names and not name.endswith(".yaml")
                and name.upper() != name]  # NAME placeholders are upper case


def test_the_five_minute_path_is_the_first_block_of_the_users_section() -> None:
    """The README's "Brain age of your scans" opens with install, the starter model and a
    prediction with it, and the caveat on the starter model follows at once."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Brain age of your scans", 1)[1].split("\n## ", 1)[0]
    first = _code_blocks(section)[0]
    lines = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert lines[0] == "pip install -e ."
    assert lines[1] == "brainage train --profile starter --out runs/starter"
    assert lines[2].startswith("brainage predict ") and "--model runs/starter/models" in lines[2]
    caveat = section.split("```", 3)[2].strip().split("\n\n")[0]
    for words in ("simulated", "MAE", "too young", "calibrate", "train"):
        assert words in caveat, words


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_show_no_machine_paths(page: Path) -> None:
    # the book renders docs/ as its appendix, whose page check refuses absolute machine paths
    # (a /tmp/... of one developer's measurement); caught here in a second, not after the build
    text = page.read_text(encoding="utf-8")
    assert not re.findall(r"(?<![\w.])/(?:tmp|home|root|work)/\S*", text)
