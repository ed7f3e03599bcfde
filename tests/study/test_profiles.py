from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brainage.study.profiles import (
    Profile,
    ProfileError,
    find_project_root,
    list_profiles,
    load_profile,
    resolve_path,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_profiles_load(repo_root):
    names = list_profiles(repo_root / "notebooks" / "params")
    assert {"quick", "paper", "tiny"} <= set(names)
    for name in names:
        profile = load_profile(name, repo_root / "notebooks" / "params")
        assert profile.name == name
        assert profile.params["profile"] == name
        assert profile.params["run_dir"] == f"runs/{name}"


def test_load_profile_by_path(tmp_path):
    path = _write(tmp_path / "mine.yaml", "profile: mine\nseed: 3\n")
    profile = load_profile(path)
    assert profile == Profile(name="mine", path=path.resolve(), params={"profile": "mine", "seed": 3})


def test_unknown_profile_suggests_closest(tmp_path):
    _write(tmp_path / "quick.yaml", "seed: 1\n")
    _write(tmp_path / "paper.yaml", "seed: 1\n")
    with pytest.raises(ProfileError, match=r"unknown profile 'quik' \(did you mean 'quick'\?\)"):
        load_profile("quik", tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("seed: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping.*got list")],
)
def test_bad_profile_file(tmp_path, text, message):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ProfileError, match=message) as err:
        load_profile(path)
    assert str(path) in str(err.value)


def test_for_notebook_and_unused_keys(tmp_path):
    profile = Profile("p", tmp_path / "p.yaml", {"seed": 1, "epochs": 2, "sede": 3})
    assert profile.for_notebook(["seed", "other"]) == {"seed": 1}
    with pytest.raises(ProfileError, match=r"'sede' \(did you mean 'seed'\?\)"):
        profile.check_used({"01": ["seed"], "02": ["epochs"]})
    Profile("p", tmp_path / "p.yaml", {"seed": 1}).check_used({"01": ["seed"]})


def test_every_profile_key_is_declared_by_a_notebook(repo_root, tmp_path):
    """A profile key no notebook declares would be silently ignored: the build refuses it."""
    import papermill

    from brainage.study.book import convert_notebook, discover_notebooks

    declared = {}
    for src in discover_notebooks(repo_root / "notebooks"):
        nb = convert_notebook(src, tmp_path / f"{src.stem}.ipynb")
        declared[src.stem] = list(papermill.inspect_notebook(str(nb)))
    for name in list_profiles(repo_root / "notebooks" / "params"):
        load_profile(name, repo_root / "notebooks" / "params").check_used(declared)


def test_every_profile_names_a_dataset_of_its_manifest(repo_root):
    from brainage.data.manifest import load_manifest

    for name in list_profiles(repo_root / "notebooks" / "params"):
        params = load_profile(name, repo_root / "notebooks" / "params").params
        manifest = load_manifest(resolve_path(params["manifest"], repo_root), profile=name,
                                 check_paths=False)
        assert params["dataset"] in manifest.names, name


def test_find_project_root(repo_root, tmp_path):
    assert find_project_root(repo_root / "notebooks") == repo_root
    with pytest.raises(FileNotFoundError, match="no brainage project above"):
        find_project_root(tmp_path)
    assert resolve_path("runs/x", repo_root) == repo_root / "runs" / "x"
    assert resolve_path(tmp_path, repo_root) == tmp_path


def test_profiles_are_plain_yaml(repo_root):
    for path in (repo_root / "notebooks" / "params").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert all(isinstance(v, (str, int, float, bool, list, dict, type(None))) for v in data.values())


def test_display_path_and_paths_hide_the_machine_folders(tmp_path):
    import pandas as pd

    from brainage.study.profiles import display_path, display_paths

    inside = tmp_path / "runs" / "quick"
    assert display_path(inside, tmp_path) == "runs/quick"
    assert display_path("/elsewhere/data", tmp_path) == "/elsewhere/data"
    assert display_path("runs/x", tmp_path) == "runs/x"
    table = pd.DataFrame({"path": [str(tmp_path / "data" / "a.nii.gz")],
                          "message": [f"dataset 'd', {tmp_path}/data/a.nii.gz: bad"], "n": [1]})
    shown = display_paths(table, ["path", "message", "absent"], tmp_path)
    assert shown["path"].tolist() == ["data/a.nii.gz"]
    assert shown["message"].tolist() == ["dataset 'd', data/a.nii.gz: bad"]
    assert str(tmp_path) in table["path"].iloc[0]  # the run's own table is left as it was
