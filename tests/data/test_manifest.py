from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import pytest
import yaml

from brainage._utils import sha256_file
from brainage.data.manifest import (
    MANIFEST_SCHEMA,
    Atlas,
    DatasetSpec,
    Manifest,
    ManifestError,
    Problem,
    load_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "ab" * 32


def _good_entry() -> dict:
    """A complete manifest entry for the BIDS folder ``bids`` next to the manifest."""
    return {
        "name": "mine",
        "format": "bids",
        "root": "bids",
        "space": "native",
        "skull_stripped": False,
        "participants": "participants.tsv",
        "columns": {"participant_id": "participant_id", "age": "age", "sex": "sex",
                    "site": "site", "group": "dx"},
        "scores": {"mmse": "MMSE"},
        "groups": {"HC": ["control", "CN"], "AD": "alzheimer"},
        "sha256": {"sub-01/anat/sub-01_T1w.nii.gz": DIGEST.upper()},
        "exclude": [{"participant_id": "02", "reason": "motion"}],
        "atlas": {"image": "atlas/labels.nii.gz", "labels": "atlas/labels.tsv"},
    }


def _write_manifest(folder: Path, data: dict | list | str, *, make_paths: bool = True) -> Path:
    """Write ``data`` (YAML text or a structure) as ``folder/manifest.yaml`` with its files."""
    if make_paths:
        (folder / "bids").mkdir(exist_ok=True)
        (folder / "bids" / "participants.tsv").write_text("participant_id\tage\n")
        (folder / "atlas").mkdir(exist_ok=True)
        (folder / "atlas" / "labels.nii.gz").write_bytes(b"")
        (folder / "atlas" / "labels.tsv").write_text("index\tname\n")
    path = folder / "manifest.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _manifest(*entries: dict) -> dict:
    return {"version": 1, "datasets": list(entries)}


def test_repository_manifest_loads():
    manifest = load_manifest(REPO_ROOT / "data_manifest.yaml", profile="tiny", dataset="simulated")
    spec = manifest.dataset("simulated")
    assert spec.simulated is True
    assert spec.root == REPO_ROOT / "data" / "simulated" / "tiny"
    assert spec.participants == spec.root / "participants.tsv"
    assert spec.space == "MNI152NLin2009cSym"
    assert set(spec.scores) == {"mmse", "cdr_sb", "updrs3", "hoehn_yahr"}


def test_good_manifest_resolves_everything(tmp_path):
    path = _write_manifest(tmp_path, _manifest(_good_entry()))
    manifest = load_manifest(path)
    assert isinstance(manifest, Manifest)
    assert manifest.path == path and manifest.names == ["mine"]
    spec = manifest.dataset("mine")
    assert isinstance(spec, DatasetSpec)
    assert spec.root == tmp_path / "bids"
    assert spec.participants == tmp_path / "bids" / "participants.tsv"
    assert spec.simulated is False
    assert spec.columns["group"] == "dx"
    assert spec.groups == {"HC": ("control", "CN"), "AD": ("alzheimer",)}
    assert spec.group_of("CN") == "HC" and spec.group_of("PD") is None
    assert spec.sha256 == {"sub-01/anat/sub-01_T1w.nii.gz": DIGEST}  # lower-cased
    assert spec.exclude == {"sub-02": "motion"}  # BIDS prefix added
    assert spec.atlas == Atlas(tmp_path / "atlas" / "labels.nii.gz",
                               tmp_path / "atlas" / "labels.tsv")


def test_openbhb_entry(tmp_path):
    (tmp_path / "openbhb").mkdir()
    (tmp_path / "openbhb" / "participants.tsv").write_text("participant_id\tsplit\tage\n")
    entry = {"name": "openbhb", "format": "openbhb", "root": "openbhb", "space": "MNI152Lin",
             "skull_stripped": True,
             "columns": {"participant_id": "participant_id", "age": "age", "site": "siteXacq"}}
    path = _write_manifest(tmp_path, _manifest(entry), make_paths=False)
    spec = load_manifest(path).dataset("openbhb")
    assert spec.format == "openbhb" and spec.space == "MNI152Lin" and spec.skull_stripped
    assert spec.participants == tmp_path / "openbhb" / "participants.tsv"  # the default
    assert spec.columns["site"] == "siteXacq"


def test_defaults_and_profile_substitution(tmp_path):
    (tmp_path / "data" / "paper").mkdir(parents=True)
    (tmp_path / "data" / "paper" / "participants.tsv").write_text("participant_id\tage\n")
    entry = {"name": "d", "format": "bids", "root": "data/{profile}", "space": "native",
             "skull_stripped": True, "columns": {"participant_id": "id", "age": "age"}}
    path = _write_manifest(tmp_path, _manifest(entry), make_paths=False)
    spec = load_manifest(path, profile="paper").dataset("d")
    assert spec.root == tmp_path / "data" / "paper"
    assert spec.participants == spec.root / "participants.tsv"
    assert spec.simulated is False and spec.atlas is None
    assert spec.groups == {"HC": ("HC",), "AD": ("AD",), "PD": ("PD",)}
    assert spec.scores == {} and spec.sha256 == {} and spec.exclude == {}
    with pytest.raises(ManifestError, match=r"datasets\[0\]\.root: dataset root .*data/quick "
                                            r"does not exist"):
        load_manifest(path)  # default profile "quick" has no folder


def test_absolute_root_is_kept(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "participants.tsv").write_text("participant_id\tage\n")
    entry = _good_entry() | {"root": str(tmp_path / "elsewhere")}
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "atlas").mkdir()
    for name in ("labels.nii.gz", "labels.tsv"):
        (sub / "atlas" / name).write_text("")
    path = _write_manifest(sub, _manifest(entry), make_paths=False)
    assert load_manifest(path).dataset("mine").root == tmp_path / "elsewhere"


def _set(keys: str, value):
    """Mutation setting ``entry[k1][k2]...`` (dotted path inside dataset 0)."""
    def mutate(doc: dict) -> None:
        *parents, last = keys.split(".")
        node = doc["datasets"][0]
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


def _drop(keys: str):
    def mutate(doc: dict) -> None:
        *parents, last = keys.split(".")
        node = doc["datasets"][0]
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


def _top(key: str, value=None, delete: bool = False):
    def mutate(doc: dict) -> None:
        if delete:
            del doc[key]
        else:
            doc[key] = value
    return mutate


def _duplicate(doc: dict) -> None:
    doc["datasets"].append(copy.deepcopy(doc["datasets"][0]))


# (mutation, field path, message pattern): one bad manifest per schema or path problem
BAD_CASES = {
    "version": (_top("version", 2), "version", r"must be 1; got 2"),
    "no datasets": (_top("datasets", delete=True), "datasets",
                    r"required key 'datasets' is missing"),
    "empty datasets": (_top("datasets", []), "datasets", r"must not be empty; got \[\]"),
    "unknown top key": (_top("dataset", []), "dataset",
                        r"unknown key 'dataset'.*did you mean 'datasets'"),
    "unknown dataset key": (_set("colums", {}), r"datasets[0].colums",
                            r"unknown key 'colums'; allowed keys: .*columns.*"
                            r"did you mean 'columns'"),
    "missing age column": (_drop("columns.age"), "datasets[0].columns.age",
                           r"required key 'age' is missing"),
    "unknown column key": (_set("columns.aeg", "age"), "datasets[0].columns.aeg",
                           r"unknown key 'aeg'; allowed keys: age, group, participant_id, sex, "
                           r"site \(did you mean 'age'\?\)"),
    "column not a string": (_set("columns.age", 3), "datasets[0].columns.age",
                            r"must be a string; got int 3"),
    "unquoted brace": (_set("root", {"profile": None}), "datasets[0].root",
                       r"must be a string; got dict .*quote it"),
    "bad space": (_set("space", "nativ"), "datasets[0].space",
                  r"must be one of 'native', 'MNI152NLin2009cSym', 'MNI152Lin'; got 'nativ' "
                  r"\(did you mean 'native'\?\)"),
    "bad format": (_set("format", "BIDS"), "datasets[0].format",
                   r"must be one of 'bids', 'openbhb'; got 'BIDS' \(did you mean 'bids'\?\)"),
    "openbhb in native space": (_set("format", "openbhb"), "datasets[0].space",
                                (r"format 'openbhb' holds skull-stripped scans aligned to MNI152 "
                                 r"on FSL's 1 mm grid: space must be 'MNI152Lin'; got 'native'")),
    "openbhb not skull-stripped": (_set("format", "openbhb"), "datasets[0].skull_stripped",
                                   r"format 'openbhb' .*: skull_stripped must be True; got False"),
    "official_split score name": (_set("scores", {"official_split": "x"}),
                                  "datasets[0].scores.official_split",
                                  r"score name 'official_split' clashes with a Cohort column"),
    "simulated not bool": (_set("simulated", "maybe"), "datasets[0].simulated",
                           r"must be true or false; got str 'maybe'"),
    "missing skull_stripped": (_drop("skull_stripped"), "datasets[0].skull_stripped",
                               r"required key 'skull_stripped' is missing"),
    "bad name": (_set("name", "my data"), "datasets[0].name",
                 r"must match .* \(letters, digits.*\); got 'my data'"),
    "empty participants": (_set("participants", ""), "datasets[0].participants",
                           r"must not be empty; got ''"),
    "unknown group": (_set("groups.CN", "CN"), "datasets[0].groups.CN",
                      r"unknown key 'CN'; allowed keys: AD, HC, PD"),
    "empty label list": (_set("groups.AD", []), "datasets[0].groups.AD",
                         r"must be a raw label or a non-empty list of raw labels; got \[\]"),
    "bad digest": (_set("sha256", {"a.nii": "123"}), "datasets[0].sha256.a.nii",
                   r"must match .*64 hexadecimal characters\); got '123'"),
    "exclude without reason": (_set("exclude", [{"participant_id": "sub-3"}]),
                               "datasets[0].exclude[0].reason",
                               r"required key 'reason' is missing"),
    "atlas without labels": (_drop("atlas.labels"), "datasets[0].atlas.labels",
                             r"required key 'labels' is missing"),
    "bad score name": (_set("scores", {"1st": "x"}), "datasets[0].scores.1st",
                       r"invalid key '1st': must match"),
    "reserved score name": (_set("scores", {"age": "x"}), "datasets[0].scores.age",
                            r"score name 'age' clashes with a Cohort column"),
    "label in two groups": (_set("groups.PD", "CN"), "datasets[0].groups.PD",
                            r"raw label 'CN' is listed under both HC and PD"),
    "patients without group column": (_drop("columns.group"), "datasets[0].groups",
                                      r"patient groups are listed but columns.group is not set"),
    "excluded twice": (_set("exclude", [{"participant_id": "sub-3", "reason": "a"},
                                        {"participant_id": "3", "reason": "b"}]),
                       "datasets[0].exclude[1].participant_id",
                       r"'sub-3' is excluded more than once"),
    "duplicate name": (_duplicate, "datasets[1].name",
                       r"duplicate dataset name 'mine'; datasets\[0\] has the same name"),
    "missing root": (_set("root", "nowhere"), "datasets[0].root",
                     r"dataset root .*nowhere does not exist"),
    "root is a file": (_set("root", "manifest.yaml"), "datasets[0].root",
                       r"dataset root .*manifest.yaml is not a folder"),
    "missing participants": (_set("participants", "people.tsv"), "datasets[0].participants",
                             r"participants file .*bids/people.tsv does not exist"),
    "missing atlas image": (_set("atlas.image", "atlas/none.nii.gz"), "datasets[0].atlas.image",
                            r"atlas image file .*atlas/none.nii.gz does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_manifest_names_file_field_and_problem(tmp_path, case):
    mutate, field, pattern = BAD_CASES[case]
    doc = _manifest(_good_entry())
    mutate(doc)
    path = _write_manifest(tmp_path, doc)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    matching = [p for p in info.value.problems if p.field == field]
    assert matching, f"no problem at {field}: {info.value}"
    assert any(re.search(pattern, p.message) for p in matching), str(info.value)
    assert all(p.file == path for p in info.value.problems)
    assert re.search(re.escape(f"{path}: {field}: ") + pattern, str(info.value))


def test_several_problems_are_reported_together(tmp_path):
    doc = _manifest(_good_entry(), _good_entry())  # duplicate name
    doc["version"] = 3
    first, second = doc["datasets"]
    first["space"] = "mni"
    del first["columns"]["age"]
    first["root"] = "missing"
    second["colums"] = second.pop("columns")
    second["atlas"]["image"] = "none.nii.gz"
    path = _write_manifest(tmp_path, doc)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    fields = {p.field for p in info.value.problems}
    assert fields == {
        "version", "datasets[0].space", "datasets[0].columns.age", "datasets[0].root",
        "datasets[1].colums", "datasets[1].columns", "datasets[1].name", "datasets[1].atlas.image",
    }
    assert str(info.value).startswith(f"8 problem(s) in manifest {path}:")


def test_check_paths_false_skips_existence(tmp_path):
    entry = _good_entry() | {"root": "nowhere", "atlas": {"image": "a.nii", "labels": "b.tsv"}}
    path = _write_manifest(tmp_path, _manifest(entry), make_paths=False)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(path)
    spec = load_manifest(path, check_paths=False).dataset("mine")
    assert spec.root == tmp_path / "nowhere"


def test_dataset_restricts_path_checks_to_the_build_dataset(tmp_path):
    """A manifest may list datasets on disks absent here; only the selected one is checked."""
    elsewhere = _good_entry() | {"name": "elsewhere", "root": "/absent/disk/bids"}
    path = _write_manifest(tmp_path, _manifest(_good_entry(), elsewhere))
    with pytest.raises(ManifestError, match=r"datasets\[1\]\.root: dataset root /absent/disk/bids "
                                            r"does not exist"):
        load_manifest(path)
    assert load_manifest(path, dataset="mine").dataset("mine").root == tmp_path / "bids"
    with pytest.raises(ManifestError, match=r"datasets\[1\]\.root"):
        load_manifest(path, dataset="elsewhere")
    with pytest.raises(ManifestError, match=r"no dataset named 'mien'.*did you mean 'mine'"):
        load_manifest(path, dataset="mien")
    broken = _good_entry() | {"name": "elsewhere", "space": "talairach"}
    with pytest.raises(ManifestError, match=r"datasets\[1\]\.space"):  # schema: all entries
        load_manifest(_write_manifest(tmp_path, _manifest(_good_entry(), broken)), dataset="mine")


def test_simulated_root_need_not_exist_but_atlas_must(tmp_path):
    entry = _good_entry() | {"simulated": True, "root": "generated/{profile}"}
    path = _write_manifest(tmp_path, _manifest(entry))
    assert load_manifest(path).dataset("mine").root == tmp_path / "generated" / "quick"
    (tmp_path / "atlas" / "labels.tsv").unlink()
    with pytest.raises(ManifestError, match=r"datasets\[0\]\.atlas\.labels: atlas labels file"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("text", "field", "pattern"),
    [
        ("version: 1\ndatasets: [\n", "line 3, column 1", r"not valid YAML"),
        ("version: 1\n  datasets: x\n", "line 2, column 11", r"not valid YAML"),
        ("- 1\n- 2\n", "(top level)", r"must be a mapping; got list"),
        ("", "(top level)", r"must be a mapping; got NoneType"),
    ],
)
def test_unreadable_manifest(tmp_path, text, field, pattern):
    path = _write_manifest(tmp_path, text, make_paths=False)
    with pytest.raises(ManifestError, match=re.escape(f"{path}: {field}: ") + pattern):
        load_manifest(path)


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match=r"absent\.yaml: \(file\): the manifest file does "
                                            r"not exist"):
        load_manifest(tmp_path / "absent.yaml")
    with pytest.raises(ManifestError, match="is a folder, not a file"):
        load_manifest(tmp_path)


def test_unknown_dataset_name_lists_available(tmp_path):
    manifest = load_manifest(_write_manifest(tmp_path, _manifest(_good_entry())))
    with pytest.raises(ManifestError, match=r"no dataset named 'mien'; available: mine "
                                            r"\(did you mean 'mine'\?\)"):
        manifest.dataset("mien")
    with pytest.raises(ManifestError, match=r"no dataset named 'ixi'; available: mine$"):
        manifest.dataset("ixi")


def test_problem_and_error_text(tmp_path):
    problem = Problem(tmp_path / "m.yaml", "datasets[0].age", "must be a string")
    assert str(problem) == f"{tmp_path / 'm.yaml'}: datasets[0].age: must be a string"
    error = ManifestError([problem, problem])
    assert isinstance(error, ValueError) and error.problems == [problem, problem]
    assert str(error).count("must be a string") == 2


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(MANIFEST_SCHEMA)
    assert MANIFEST_SCHEMA["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize(
    ("content", "digest"),
    [
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ],
)
def test_sha256_file_known_digests(tmp_path, content, digest):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    assert sha256_file(path) == digest


def test_sha256_file_chunks_agree(tmp_path, rng):
    content = rng.integers(0, 256, size=10_000, dtype="uint8").tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(content).hexdigest()
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent.bin")
