from __future__ import annotations

import hashlib
import json
import re

import pytest

from brainage.study.provenance import (
    PROVENANCE_FILE,
    collect_environment,
    digest_files,
    read_provenance,
    update_provenance,
)


def test_update_merges_sections(tmp_path):
    assert read_provenance(tmp_path) == {}
    update_provenance(tmp_path, profile="tiny", notebooks={"01": {"seconds": 1.0}})
    record = update_provenance(tmp_path, notebooks={"02": {"seconds": 2.0}}, profile="quick")
    assert record["profile"] == "quick"
    assert record["notebooks"] == {"01": {"seconds": 1.0}, "02": {"seconds": 2.0}}
    assert json.loads((tmp_path / PROVENANCE_FILE).read_text()) == record


def test_digest_files_matches_hashlib_and_ignores_order(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"brain")
    b.write_bytes(b"age" * 100_000)
    one = digest_files([a, b], root=tmp_path)
    two = digest_files([b, a], root=tmp_path)
    assert one == two
    assert one["files"]["a.bin"] == hashlib.sha256(b"brain").hexdigest()
    assert one["n_files"] == 2
    b.write_bytes(b"changed")
    assert digest_files([a, b], root=tmp_path)["sha256"] != one["sha256"]


def test_environment_records_versions_and_commit(repo_root):
    env = collect_environment(repo_root)
    assert env["packages"]["torch"].startswith("2.")
    assert env["packages"]["brainage"]
    assert set(env["git"]) == {"commit", "dirty"}
    assert env["hardware"]["cpu_count"] >= 1
    assert "cpu_model" in env["hardware"] and "simd" in env["hardware"]


@pytest.mark.parametrize(("text", "model", "simd"), [
    ("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse4_2 avx avx2 fma "
     "avx512f avx512bw\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14\n",
     "AMD EPYC 9R14", "avx512f avx2 fma avx sse4_2"),
    ("model name\t: Intel(R) Xeon(R) CPU\nflags\t: fpu sse4_2 avx avx2 fma\n",
     "Intel(R) Xeon(R) CPU", "avx2 fma avx sse4_2"),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm\nCPU part\t: 0xd0c\n", None, "asimd"),
])
def test_cpu_description_names_the_model_and_its_vector_units(tmp_path, monkeypatch, text,
                                                              model, simd):
    """The record says which kernels produced the numbers (AVX-512 and AVX2 round apart)."""
    from brainage.study import provenance

    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert provenance.cpu_description(path) == {"cpu_model": model, "simd": simd}
    assert provenance.cpu_description(tmp_path / "absent") == {"cpu_model": None, "simd": None}


@pytest.mark.parametrize(
    ("profile", "message"),
    [("profile: typo\nrun_dir: runs/old\nepochz: 3\n", r"'epochz' \(did you mean 'epochs'\?\)"),
     ("profile: typo\nrun_dir: runs/old\nseed: !!binary aGVsbG8=\n", "parameter 'seed' is a bytes"),
     ("profile: typo\nrun_dir: runs/old\nl0: &l0 [1, 2]\n"
      + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)),
      "expands to more than")],
    ids=["unknown key", "binary value", "anchor bomb"])
def test_bad_profile_leaves_an_existing_run_as_it_was(copy_project, tmp_path, capsys, profile,
                                                      message):
    """Every check runs before the first write: the old run's record is not rewritten."""
    from brainage.cli import main

    root = copy_project(tmp_path / "project")
    run = root / "runs" / "old"
    update_provenance(run, profile="quick", parameters={"epochs": 12}, notebooks={"01": {"s": 1}})
    before = (run / PROVENANCE_FILE).read_bytes()
    typo = root / "typo.yaml"
    typo.write_text(profile, encoding="utf-8")
    assert main(["-q", "build", "--root", str(root), "--profile", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml" in err and re.search(message, err), err
    assert (run / PROVENANCE_FILE).read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [PROVENANCE_FILE]
    assert not (root / "book" / "results").exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "is not a provenance record \\(.*cannot be read as JSON: Expecting"),
    (b"\xff\xfe{}", "is not a provenance record \\(.*cannot be read as JSON: .*utf-8"),
    (b"[1, 2]", "a JSON object is expected, got list"),
    (b"[" * 100_000 + b"]" * 100_000, "is not a provenance record \\(.*nested too deeply"),
], ids=["junk", "not utf-8", "list", "deep"])
def test_a_record_that_is_not_one_is_named(tmp_path, content, message):
    (tmp_path / PROVENANCE_FILE).write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        update_provenance(tmp_path, book={"seconds": 1})
    assert str(tmp_path / PROVENANCE_FILE) in str(err.value)
    assert (tmp_path / PROVENANCE_FILE).read_bytes() == content  # not replaced
