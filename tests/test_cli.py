from __future__ import annotations

import subprocess
import sys

import pytest

from brainage.cli import main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("build", "profiles", "simulate", "preprocess", "fetch", "predict"):
        assert command in out


def test_predict_help_explains_the_trust_columns(capsys):
    from brainage._utils import TRUST_VALUES

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for column in TRUST_VALUES:
        assert column in out.replace("- ", "-")
    assert "split-conformal interval" in out.replace("- ", "-")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "usage: brainage" in capsys.readouterr().out


def test_profiles_lists_the_repository_profiles(repo_root, capsys):
    assert main(["profiles", "--root", str(repo_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ixi", "openbhb", "paper", "quick", "tiny"]


def test_unknown_profile_is_a_clear_error(repo_root, capsys):
    assert main(["-q", "build", "--root", str(repo_root), "--profile", "quik"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'quik'" in err and "did you mean 'quick'" in err


def test_simulate_writes_a_bids_cohort(tmp_path):
    assert main(["-q", "simulate", str(tmp_path / "c"), "--n-healthy", "2", "--resolution-mm", "4"]) == 0
    assert (tmp_path / "c" / "participants.tsv").read_text().count("sub-") == 2


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "brainage.cli", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("brainage ")


def test_package_is_lazy_and_lists_its_subpackages():
    # building the whole parser (what `brainage --help` does) imports no numerical library
    code = ("import sys, brainage; assert 'torch' not in sys.modules; "
            "print(sorted(brainage._SUBPACKAGES)); import brainage.cli; "
            "brainage.cli.build_parser(); heavy = {'torch', 'nilearn', 'ants', 'pandas', "
            "'numpy', 'nibabel', 'monai'} & set(sys.modules); assert not heavy, heavy; "
            "assert brainage.models.losses.RnCLoss")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["analysis", "cli", "data", "exceptions", "imaging",
                                         "models", "study"])
