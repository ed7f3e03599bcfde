"""brainage._utils.scheduler without a cluster: scheduler names, outcomes in input order
(in this process and on a local pool), errors as outcomes, and no Dask import at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from brainage._utils import check_scheduler, dask_client, run_tasks
from brainage._utils import scheduler as sched
from brainage.cli import main


def square_or_fail(x: int) -> int:
    """A task: x squared; raises for negative x (module level: picklable by name)."""
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x


@pytest.mark.parametrize("value", ["local:1", "local:16", "tcp://127.0.0.1:8786",
                                   "tls://[::1]:8786", "10.0.0.5:8786", None])
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


# --- scheduler files and addresses that cannot work: a message, never a hang or a traceback --

def test_scheduler_file_is_read_for_its_address(tmp_path) -> None:
    path = tmp_path / "sched.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": "tcp://10.0.0.5:8786"}))
    assert check_scheduler(str(path)) == str(path)
    assert sched.scheduler_address(path) == "tcp://10.0.0.5:8786"
    assert check_scheduler(str(tmp_path / "not_yet.json")) == str(tmp_path / "not_yet.json")


@pytest.mark.parametrize(("content", "message"), [
    (b"not json {", "cannot be read as JSON"),
    (b"\xff\xfe", "cannot be read as JSON"),
    (b"[1, 2]", "holds no 'address' entry"),
    (b'{"address": 5}', "holds no 'address' entry"),
    (b'{"address": "banana"}', "holds the address 'banana', which is not one"),
    (b'{"address": "inproc://x"}', "inproc:// address reaches a scheduler inside this same"),
    (b"[" * 100_000 + b"]" * 100_000, "has 200000 bytes"),
], ids=["junk", "binary", "list", "int", "bad address", "inproc", "huge"])
def test_scheduler_file_that_is_not_one(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "sched.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        check_scheduler(str(path))
    assert f"scheduler file {path}" in str(err.value)


@pytest.mark.parametrize(("value", "message"), [
    ("/nonexistent/sched.json", "neither the file nor its folder /nonexistent exists"),
    ("ucx://127.0.0.1:1", "ucx:// needs UCX for Dask"),
    ("inproc://nothing", "inproc:// address reaches a scheduler inside this same Python"),
])
def test_scheduler_that_cannot_work_is_refused_at_once(value: str, message: str) -> None:
    if value.startswith("ucx") and any(map(sched.importlib.util.find_spec, sched._UCX_MODULES)):
        pytest.skip("UCX for Dask is installed here")
    with pytest.raises(ValueError, match=message):
        check_scheduler(value)


@pytest.mark.parametrize("value", ["/nonexistent/sched.json", "inproc://nothing", "GARBAGE"])
def test_cli_names_the_scheduler_problem(tmp_path, capsys, value: str) -> None:
    if value == "GARBAGE":
        value = str(tmp_path / "sched.json")
        (tmp_path / "sched.json").write_text("garbage")
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main(["predict", str(tmp_path), "--model", str(tmp_path), "--scheduler", value])
    assert info.value.code == 2 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert value in err and "Traceback" not in err


def test_scheduler_file_that_never_appears_times_out(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sched, "SCHEDULER_FILE_WAIT_S", 1)
    path = tmp_path / "sched.json"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"scheduler file {path} did not appear within 1 s"):
        with dask_client(str(path)):
            pass
    assert time.monotonic() - start < 10


@pytest.mark.timeout(60)
def test_unreachable_scheduler_times_out_with_a_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sched, "CONNECT_TIMEOUT_S", 2)
    path = tmp_path / "sched.json"
    path.write_text(json.dumps({"address": "tcp://127.0.0.1:1"}))
    for value, where in [("tcp://127.0.0.1:1", "at tcp://127.0.0.1:1 within 2 s"),
                         (str(path), f"(from the scheduler file {path}) within 2 s")]:
        with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler") as err:
            with dask_client(value):
                pass
        assert where in str(err.value)
