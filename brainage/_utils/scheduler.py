"""Where per-scan work runs: in this process, a local process pool, or a Dask cluster.

:func:`run_tasks` calls one function on many argument tuples and returns the outcomes in the
order of the tuples, whatever order they finish in, with a tqdm bar either way. It runs them

- in this process (``n_jobs=1``, no scheduler);
- on a local pool of ``n_jobs`` spawned processes (``concurrent.futures``; spawn, because ITK
  and torch thread pools do not survive ``fork`` reliably);
- on a ``dask.distributed`` cluster (``scheduler``): ``"local:N"`` starts a ``LocalCluster`` of
  N single-threaded worker processes on 127.0.0.1 for the call and closes it after; an address
  (``tcp://host:8786``, ``host:8786``, ``tls://...``) or a scheduler file (``*.json``, written by
  ``dask scheduler --scheduler-file``) connects to a running cluster (dask-jobqueue's
  ``SLURMCluster``, ``dask scheduler`` plus ``dask worker`` in a batch job ...); a
  ``distributed.Client`` is used as it is and left open.

Nothing waits forever: an address must answer within :data:`CONNECT_TIMEOUT_S`; a scheduler
file must lie in an existing folder and appear within :data:`SCHEDULER_FILE_WAIT_S` (Dask
itself would wait for it forever); a file that exists must hold a scheduler's address; and
``inproc://`` (this process only) and ``ucx://`` without UCX installed are refused by name.

A task that raises is an outcome with its error; the others complete. On a Dask cluster a
worker that dies mid-task (killed, out of memory, node lost) has its tasks rescheduled on the
other workers by the scheduler (``distributed.scheduler.allowed-failures`` times, 3 by default;
then the task fails with ``KilledWorker``, an outcome like any other error). The functions must
therefore be safe to run twice on the same input: the preprocessing cache writes every entry
to a temporary file renamed into place, so a killed attempt leaves at most a stray temporary
file, never a partial entry.

The results do not depend on where the calls ran: the preprocessing cache a Dask run writes
is the same, byte for byte, as a local run's (``tests/imaging/test_dask.py``). Dask is imported
only when a scheduler is used: ``brainage --help`` and local runs never load it.

Workers import the functions they run by name: brainage must be installed (the same version)
where the workers run, and the paths the tasks receive must be valid there (a file system
every worker sees, for a cluster of several machines).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# CONNECT_TIMEOUT_S and SCHEDULER_FILE_WAIT_S are module settings read at call time (patch
# them here, on this module); a re-exported copy in brainage._utils would not change them, so
# they are left out of __all__.
__all__ = ["TaskOutcome", "check_scheduler", "dask_client", "progress_bar", "run_tasks",
           "scheduler_address", "set_progress", "worker_count"]

logger = logging.getLogger(__name__)

#: ``local:N``: a LocalCluster of N single-threaded worker processes.
_LOCAL = re.compile(r"^local:(\d+)$")
#: A scheduler address: ``protocol://host[:port]`` or ``host:port``.
_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://\S+$|^[^\s/:]+:\d+$")
#: Seconds to wait for a scheduler to answer, and for a scheduler file to appear (Dask itself
#: waits for the file forever).
CONNECT_TIMEOUT_S = 30
SCHEDULER_FILE_WAIT_S = 60
_MAX_SCHEDULER_FILE_BYTES = 100_000
#: Python modules that give distributed its ucx:// transport.
_UCX_MODULES = ("ucxx", "ucp")


def check_scheduler(value: object) -> Any:
    """``value`` if it names a scheduler (see the module docstring); else ``ValueError``.

    Parameters
    ----------
    value : None, str or distributed.Client
        ``None`` (no Dask), ``"local:N"`` (N >= 1), a scheduler address, a scheduler file
        (``*.json``) or a Client.
    """
    if value is None or type(value).__name__ == "Client":
        return value
    if not isinstance(value, str):
        raise TypeError(f"scheduler (--scheduler) must be 'local:N', a scheduler address or "
                        f"file, or a distributed.Client; got {type(value).__name__} {value!r}")
    text = value.strip()
    local = _LOCAL.match(text)
    if local:
        if int(local.group(1)) < 1:
            raise ValueError(f"scheduler (--scheduler) {value!r}: local:N needs N >= 1 workers")
        return text
    if text.startswith("local"):
        raise ValueError(f"scheduler (--scheduler) {value!r}: write local:N, N the number of "
                         f"worker processes (e.g. local:2)")
    if text.endswith(".json"):
        _check_scheduler_file(text)
        return text
    if _ADDRESS.match(text):
        _check_protocol(text, f"scheduler (--scheduler) {value!r}")
        return text
    raise ValueError(f"scheduler (--scheduler) must be local:N (a local Dask cluster of N "
                     f"workers), a scheduler address such as tcp://10.0.0.5:8786, or a "
                     f"scheduler file (*.json); got {value!r}")


def _check_protocol(address: str, what: str) -> None:
    """Refuse the protocols this process cannot use, before distributed fails obscurely."""
    protocol = address.split("://", 1)[0] if "://" in address else "tcp"
    if protocol == "inproc":
        raise ValueError(f"{what}: an inproc:// address reaches a scheduler inside this same "
                         f"Python process only; from Python pass its distributed.Client, from "
                         f"the command line use the scheduler's tcp:// address")
    if protocol == "ucx" and not any(importlib.util.find_spec(name) for name in _UCX_MODULES):
        raise ValueError(f"{what}: ucx:// needs UCX for Dask (the ucxx or ucx-py package), "
                         f"which is not installed here; use the scheduler's tcp:// address")


def _check_scheduler_file(text: str) -> None:
    """A scheduler file that exists must hold a scheduler's address; one that does not yet
    exist must at least have its folder (a scheduler starting in a batch job writes it)."""
    path = Path(text).expanduser()
    if not path.exists():
        if not path.parent.is_dir():
            raise ValueError(f"scheduler file {text}: neither the file nor its folder "
                             f"{path.parent} exists; start the scheduler with "
                             f"'dask scheduler --scheduler-file {text}' first")
        return  # waited for, for SCHEDULER_FILE_WAIT_S at most, by dask_client
    scheduler_address(path)


def scheduler_address(path: str | os.PathLike) -> str:
    """The address in a Dask scheduler file (``dask scheduler --scheduler-file``); a
    ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    problem = None
    try:
        if not path.is_file():
            problem = "is not a file"
        elif path.stat().st_size > _MAX_SCHEDULER_FILE_BYTES:
            problem = f"has {path.stat().st_size} bytes (a scheduler file has a few hundred)"
        else:
            info = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(info, dict) or not isinstance(info.get("address"), str):
                problem = "holds no 'address' entry"
            elif not _ADDRESS.match(info["address"]):
                problem = f"holds the address {info['address']!r}, which is not one"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        problem = f"cannot be read as JSON ({' '.join(str(err).split())[:120]})"
    if problem:
        raise ValueError(f"scheduler file {path} {problem}: expected the JSON file that "
                         f"'dask scheduler --scheduler-file {path}' writes")
    _check_protocol(info["address"], f"scheduler file {path}")
    return info["address"]


def _wait_for_scheduler_file(path: Path) -> None:
    if path.exists():
        return
    logger.warning("waiting up to %d s for the scheduler file %s", SCHEDULER_FILE_WAIT_S, path)
    deadline = time.monotonic() + SCHEDULER_FILE_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise ConnectionError(
                f"scheduler file {path} did not appear within {SCHEDULER_FILE_WAIT_S} s: is "
                f"the scheduler running ('dask scheduler --scheduler-file {path}')?")
        time.sleep(0.5)


@contextmanager
def dask_client(scheduler: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` while the block runs (None for None).

    ``"local:N"`` starts a LocalCluster (N worker processes, one thread each, on 127.0.0.1) and
    closes it after; an address or a scheduler file connects, and the client
    (not the cluster) is closed after; a Client passed in is yielded and left open.
    """
    scheduler = check_scheduler(scheduler)
    if scheduler is None or not isinstance(scheduler, str):
        yield scheduler
        return
    from distributed import Client, LocalCluster

    # distributed logs every connection and worker start at INFO level: keep that out of
    # brainage's progress log unless brainage itself logs at DEBUG level.
    chatter = logging.getLogger("distributed")
    if not logger.isEnabledFor(logging.DEBUG) and chatter.getEffectiveLevel() < logging.WARNING:
        chatter.setLevel(logging.WARNING)
    local = _LOCAL.match(scheduler)
    if local:
        n = int(local.group(1))
        logger.info("starting a local Dask cluster: %d worker process(es), 1 thread each", n)
        # the scheduler's HTTP server (the dashboard, with bokeh) on a free port of 127.0.0.1
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            logger.info("Dask dashboard (with bokeh): %s", client.dashboard_link)
            yield client
        return
    if scheduler.endswith(".json"):
        _wait_for_scheduler_file(Path(scheduler).expanduser())
        address = scheduler_address(Path(scheduler).expanduser())
        where = f"{address} (from the scheduler file {scheduler})"
    else:
        address = where = scheduler
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as err:
        raise ConnectionError(f"cannot reach the Dask scheduler at {where} within "
                              f"{CONNECT_TIMEOUT_S} s ({' '.join(str(err).split())[:160]}): "
                              f"is it running, and is the address right?") from err
    with client:
        logger.info("connected to the Dask scheduler %s (%d worker thread(s))",
                    client.scheduler.address, worker_count(client))
        yield client


def worker_count(client: Any) -> int:
    """The worker threads of a Dask cluster now (at least 1)."""
    return max(1, sum(client.nthreads().values()))


@dataclass(frozen=True)
class TaskOutcome:
    """What one call of :func:`run_tasks` gave: its value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the call returned."""
        return self.error is None


#: Whether :func:`progress_bar` draws (``brainage -q`` turns the bars off: :func:`set_progress`).
_PROGRESS = {"enabled": True}


def set_progress(enabled: bool) -> None:
    """Draw progress bars (:func:`progress_bar`, :func:`run_tasks`) or not, for this process
    (``brainage -q`` turns them off)."""
    _PROGRESS["enabled"] = bool(enabled)


def progress_bar(total: int, desc: str | None = None, unit: str = "scan",
                 enabled: bool = True) -> Any:
    """A tqdm bar, drawn unless ``enabled`` is False or bars are off (:func:`set_progress`).

    One bar per command: a caller that loops over :func:`run_tasks` calls (``brainage
    predict`` runs one per group of scans) draws its own bar over the whole run and passes
    ``progress=False`` to them, so that a run does not print one bar per scan.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit,
                disable=not (enabled and _PROGRESS["enabled"]))


def run_tasks(func: Callable[..., Any], tasks: Sequence[tuple], *, n_jobs: int = 1,
              scheduler: Any = None, desc: str | None = None,
              unit: str = "scan", progress: bool = True) -> list[TaskOutcome]:
    """``func(*args)`` for each ``args`` of ``tasks``; the outcomes in the order of ``tasks``.

    Parameters
    ----------
    func : callable
        A module-level function (pickled by name for worker processes).
    tasks : sequence of tuple
        The positional arguments of each call.
    n_jobs : int, default=1
        Local worker processes when no scheduler is given (1: in this process).
    scheduler : None, str or distributed.Client, default=None
        A Dask cluster to run on instead (see :func:`check_scheduler`); ``n_jobs`` is then
        ignored.
    desc, unit : str
        The tqdm bar's label and unit.
    progress : bool, default=True
        Draw the bar (:func:`progress_bar`; never when bars are off).

    Returns
    -------
    list of TaskOutcome
        One per task: its return value, or the exception it raised (``Exception`` subclasses;
        ``KeyboardInterrupt`` stops the run, cancelling the calls not yet done; a local pool's
        worker processes are ended within seconds, their running calls abandoned).
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int; got {n_jobs!r}")
    scheduler = check_scheduler(scheduler)
    outcomes: dict[int, TaskOutcome] = {}
    with progress_bar(len(tasks), desc, unit, progress) as bar:
        if scheduler is not None:
            with dask_client(scheduler) as client:
                _on_dask(client, func, tasks, outcomes, bar)
        elif n_jobs == 1 or len(tasks) <= 1:
            for i, args in enumerate(tasks):
                outcomes[i] = _call(func, args)
                bar.update()
        else:
            _on_pool(n_jobs, func, tasks, outcomes, bar)
    return [outcomes[i] for i in range(len(tasks))]


def _call(func: Callable[..., Any], args: tuple) -> TaskOutcome:
    try:
        return TaskOutcome(func(*args))
    except Exception as err:  # one failed task must not stop the others: report it
        return TaskOutcome(error=err)


def _on_pool(n_jobs: int, func: Callable[..., Any], tasks: Sequence[tuple],
             outcomes: dict[int, TaskOutcome], progress: Any) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    pool = ProcessPoolExecutor(min(n_jobs, len(tasks)), mp_context=get_context("spawn"))
    try:
        futures = {pool.submit(func, *args): i for i, args in enumerate(tasks)}
        for future in as_completed(futures):
            error = future.exception()
            outcomes[futures[future]] = TaskOutcome(None if error else future.result(), error)
            progress.update()
    except BaseException:  # Ctrl-C, SIGTERM raised as KeyboardInterrupt: stop at once
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool: Any, grace_s: float = 2.0) -> None:
    """Cancel a pool's queued calls and end its worker processes now, not after their calls.

    ``ProcessPoolExecutor.shutdown`` waits for the running calls (a scan takes seconds to
    minutes), and a worker keeps running after its parent exits; Python 3.14's
    ``terminate_workers`` does this, earlier versions need the pool's process table.
    """
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM
    for process in processes:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join(grace_s)
    pool.shutdown(wait=True)  # the pool's thread sees its workers gone and closes its queues


def _on_dask(client: Any, func: Callable[..., Any], tasks: Sequence[tuple],
             outcomes: dict[int, TaskOutcome], progress: Any) -> None:
    from distributed import as_completed

    # pure=False: every call is its own task, even for equal arguments (a scan listed twice)
    futures = {client.submit(func, *args, pure=False): i for i, args in enumerate(tasks)}
    try:
        for future in as_completed(list(futures)):
            i = futures[future]
            try:
                outcomes[i] = TaskOutcome(future.result())
            except Exception as err:  # the task's own exception, re-raised here; KilledWorker
                outcomes[i] = TaskOutcome(error=err)
            progress.update()
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise
