from __future__ import annotations

import logging
import subprocess
import sys
import warnings

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
    from brainage._utils import OUTPUT_COLUMNS, OUTPUT_NAMES, RECOMMENDED_HEAD_REASON, TRUST_VALUES

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    for column in TRUST_VALUES:
        assert OUTPUT_NAMES.get(column, column) in out
    assert ", ".join(OUTPUT_COLUMNS) in out  # every column of the CSV, in order
    assert "split-conformal interval" in out
    assert "holds only for scans exchangeable with the calibration scans" in out
    # the default head and why, stated once, from its one source
    assert out.count(" ".join(RECOMMENDED_HEAD_REASON.split())) == 1
    assert "--all-heads" in out and "brain.predicted_age" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "usage: brainage" in capsys.readouterr().out


def test_profiles_lists_the_repository_profiles(repo_root, capsys):
    assert main(["profiles", "--root", str(repo_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ixi", "openbhb", "paper", "quick", "starter", "tiny"]


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


# --- the terminal (issue 30) ----------------------------------------------------------------


@pytest.mark.parametrize(("argv", "verbose", "level", "bars"), [
    (["-q", "profiles"], 0, logging.WARNING, False),
    (["profiles", "-q"], 0, logging.WARNING, False),
    (["profiles", "--quiet"], 0, logging.WARNING, False),
    (["profiles"], 1, logging.INFO, True),
    (["profiles", "-v"], 2, logging.DEBUG, True),
    (["-v", "profiles"], 2, logging.DEBUG, True),
])
def test_verbosity_before_or_after_the_subcommand(monkeypatch, argv, verbose, level, bars):
    from brainage import cli
    from brainage._utils import scheduler

    seen = []

    def fake(args):
        seen.append((args.verbose, logging.getLogger().level, scheduler._PROGRESS["enabled"]))
        return 0

    monkeypatch.setattr(cli, "_run_profiles", fake)
    assert main(argv) == 0
    assert seen == [(verbose, level, bars)]
    assert scheduler._PROGRESS["enabled"]  # restored after the command


def test_a_bad_verbosity_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["profiles", "--quiet=3"])
    assert info.value.code == 2
    assert "--quiet: ignored explicit argument '3'" in capsys.readouterr().err


_WARN_SCRIPT = """
import sys, warnings
from brainage import cli

def fake(args):
    warnings.warn("the model was trained on\\n   simulated data", UserWarning)
    return 0

cli._run_profiles = fake
code = cli.main(["profiles", "-q"])
warnings.warn("outside the command", UserWarning)  # Python's own format again
sys.exit(code)
"""


def test_warnings_print_as_one_line_without_the_source(repo_root):
    """In a process of its own: under pytest, warnings are recorded, never printed."""
    done = subprocess.run([sys.executable, "-c", _WARN_SCRIPT], capture_output=True, text=True,
                          cwd=repo_root, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(repo_root)})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "warning: the model was trained on simulated data (UserWarning)"
    assert ".py" not in lines[0]
    # outside the command, Python's format (with the source) is untouched
    assert "UserWarning: outside the command" in done.stderr and "<string>" in done.stderr


def test_warnings_are_still_recorded_inside_the_command(monkeypatch, capsys):
    from brainage import cli

    def fake(args):
        warnings.warn("simulated data", UserWarning, stacklevel=1)
        return 0

    before = warnings.formatwarning
    monkeypatch.setattr(cli, "_run_profiles", fake)
    with pytest.warns(UserWarning, match="simulated data"):  # recorded, not printed
        assert main(["profiles", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert warnings.formatwarning is before
    assert cli._format_warning("a\n  b", UserWarning, "x.py", 3) == (
        "warning: a b (UserWarning)\n")
    import io

    from tqdm import tqdm

    with tqdm(total=2, file=io.StringIO()):  # a bar being drawn (not a terminal here)
        assert cli._format_warning("a", UserWarning, "x.py", 3) == (
            "\nwarning: a (UserWarning)\n")  # on a line of its own, not after the bar


def _output(**columns):
    import pandas as pd

    return pd.DataFrame(columns)


def test_predict_summary_line():
    from brainage.cli import predict_summary

    nan = float("nan")
    one_head = _output(path=["a", "b", "c"], head="rnc", brain_age=[29.4, nan, 36.6],
                       error=["", "scan b: cannot be read", ""],
                       domain=["sim2real", "", "sim2real"])
    assert predict_summary(one_head) == (
        "summary: 2 predicted, 1 refused; brain age 29.4-36.6 y (rnc); domain: 2 of 2 "
        "sim2real (a model trained on simulated brains, real scans: ages not validated, "
        "intervals do not hold; calibrate on local controls or train on your data)")
    both = _output(path=["a", "b", "a", "b"], head=["rnc", "rnc", "l1", "l1"],
                   brain_age=[40.0, 50.5, 38.2, 61.0], error="", domain=["ok", "ood"] * 2)
    assert predict_summary(both) == ("summary: 2 predicted, 0 refused; brain age 40.0-50.5 y "
                                     "(rnc); brain age 38.2-61.0 y (l1); domain: 1 of 2 ood "
                                     "(unlike the training scans)")
    ok = both.assign(domain="ok")
    assert predict_summary(ok).endswith("; domain: ok (2 of 2)")


def test_predict_summary_when_every_scan_was_refused():
    from brainage.cli import predict_summary

    refused = _output(path=["a"], head="rnc", brain_age=[float("nan")],
                      error=["scan a: missing"], domain=[""])
    assert predict_summary(refused) == "summary: 0 predicted, 1 refused; domain: n/a"


def test_interval_conditions_say_when_the_intervals_hold():
    from brainage.inference.model_folder import INTERVAL_CONDITIONS
    from brainage.inference.trust import interval_conditions

    nan = float("nan")
    training = _output(interval_level=[0.9, nan], calibration=["training", nan])
    line = interval_conditions(training)
    assert line == (f"calibration: training (the model folder's validation scans): "
                    f"{INTERVAL_CONDITIONS}; on a new scanner, run brainage calibrate on its "
                    f"healthy controls first")
    assert "exchangeable with the calibration scans" in line
    site = _output(interval_level=[0.9, 0.9, nan], calibration=["site:HH", "training", "n/a"])
    assert interval_conditions(site) == (f"calibration: site:HH, training (the model folder's "
                                         f"validation scans): {INTERVAL_CONDITIONS}")
    # no interval anywhere (no conformal.json, or every scan failed): nothing to qualify
    assert interval_conditions(_output(interval_level=[nan], calibration=["training"])) == ""
    assert interval_conditions(_output(brain_age=[40.0])) == ""
