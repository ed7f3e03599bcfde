"""brainage._utils.scheduler without a cluster: scheduler names, outcomes in input order
(in this process and on a local pool), errors as outcomes, and no Dask import at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brainage._utils import check_scheduler, run_tasks
from brainage.cli import main


def square_or_fail(x: int) -> int:
    """A task: x squared; raises for negative x (module level: picklable by name)."""
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x


@pytest.mark.parametrize("value", ["local:1", "local:16", "tcp://127.0.0.1:8786",
                                   "tls://[::1]:8786", "10.0.0.5:8786", "/shared/scheduler.json",
                                   None])
def test_scheduler_names(value) -> None:
    assert check_scheduler(value) == value


@pytest.mark.parametrize(("value", "message"), [
    ("local:0", "needs N >= 1"),
    ("local", "write local:N"),
    ("local:two", "write local:N"),
    ("banana", "must be local:N .* got 'banana'"),
    ("http://host:8786/x y", "must be local:N"),
])
def test_bad_scheduler_names(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_scheduler(value)


def test_scheduler_of_a_wrong_type() -> None:
    with pytest.raises(TypeError, match="got int 2"):
        check_scheduler(2)


def test_in_process_outcomes_in_order_with_errors() -> None:
    outcomes = run_tasks(square_or_fail, [(3,), (-1,), (2,)])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert [o.value for o in outcomes] == [9, None, 4]
    assert isinstance(outcomes[1].error, ValueError) and "negative input -1" in str(
        outcomes[1].error)


@pytest.mark.timeout(120)
def test_local_pool_outcomes_in_order() -> None:
    outcomes = run_tasks(square_or_fail, [(k,) for k in (5, -2, 0, 7)], n_jobs=2)
    assert [o.value for o in outcomes] == [25, None, 0, 49]
    assert "negative input -2" in str(outcomes[1].error)


@pytest.mark.parametrize("n_jobs", [0, True, 1.5])
def test_bad_n_jobs(n_jobs) -> None:
    with pytest.raises(ValueError, match="n_jobs must be a positive int"):
        run_tasks(square_or_fail, [(1,)], n_jobs=n_jobs)


@pytest.mark.parametrize("command", ["preprocess", "predict", "bids"])
def test_cli_refuses_a_bad_scheduler_before_any_work(command: str, tmp_path, capsys) -> None:
    argv = {"preprocess": ["preprocess", str(tmp_path), str(tmp_path / "out")],
            "predict": ["predict", str(tmp_path), "--model", str(tmp_path)],
            "bids": ["bids", str(tmp_path), str(tmp_path / "out"), "participant"]}[command]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--scheduler", "local:0"])
    assert info.value.code == 2
    assert "local:N needs N >= 1 workers" in capsys.readouterr().err


def test_parser_does_not_import_dask() -> None:
    code = ("import sys, brainage.cli; brainage.cli.build_parser(); "
            "found = {'dask', 'distributed'} & set(sys.modules); assert not found, found")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
