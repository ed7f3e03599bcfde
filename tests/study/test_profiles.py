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


# --- bad profiles: refused before anything is written, quickly, with the file named ---------

_BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


@pytest.mark.parametrize(
    ("text", "message"),
    [("run_dir: 5\n", r"run_dir must be a folder path \(text\), got 5 \(int\)"),
     ("run_dir: ''\n", "run_dir must be a folder path"),
     ("seed: !!binary aGVsbG8=\n", r"parameter 'seed' is a bytes .*no !!binary"),
     ("when: 2020-01-02\n", "parameter 'when' is a date"),
     ("grid: {1: a}\n", "parameter 'grid' has the key 1"),
     ("a: &a [1]\nb: !!set {x}\n", "parameter 'b' is a set"),
     ("l0: &l0 [1, 2]\n" + _BOMB, "parameter 'l9' expands to more than 100000 values"),
     ("a: &a [*a]\n", "expands to more than 100000 values or 50 levels"),
     ("a: " + "[" * 60 + "]" * 60 + "\n", "parameter 'a' expands to more than"),
     ("a: " + "[" * 20000 + "]" * 20000 + "\n", "not valid YAML"),
     ("a: \xff\n", "not valid YAML")],
    ids=["run_dir int", "run_dir empty", "binary", "date", "int key", "set", "anchor bomb",
         "self-reference", "deep", "very deep", "not utf-8"])
def test_profile_with_values_that_are_not_plain_is_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ProfileError, match=message) as err:
        load_profile(path)
    assert str(path) in str(err.value)


def test_anchor_bomb_is_refused_quickly(tmp_path):
    """9 levels of 9 aliases: 9^9 (3.9e8) values; refused after at most 1e5 steps."""
    import time

    path = _write(tmp_path / "bomb.yaml", "l0: &l0 [1, 2]\n" + _BOMB)
    start = time.perf_counter()
    with pytest.raises(ProfileError, match="YAML anchors and aliases"):
        load_profile(path)
    assert time.perf_counter() - start < 30  # a bound on a hang, not a benchmark


def test_anchors_within_the_limit_are_plain_values(tmp_path):
    path = _write(tmp_path / "ok.yaml", "a: &a [1, 2.5, x, null, true]\nb: *a\nc: {d: *a}\n")
    assert load_profile(path).params == {"a": [1, 2.5, "x", None, True], "b": [1, 2.5, "x", None, True],
                                         "c": {"d": [1, 2.5, "x", None, True]}}


def test_oversized_profile_is_refused_unread(tmp_path):
    from brainage.study.profiles import MAX_PROFILE_BYTES

    path = _write(tmp_path / "big.yaml", "a: " + "1" * MAX_PROFILE_BYTES + "\n")
    with pytest.raises(ProfileError, match=f"big.yaml: {MAX_PROFILE_BYTES + 4} bytes"):
        load_profile(path)
