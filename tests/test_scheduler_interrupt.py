"""Interrupting a local worker pool (issue 26, defect 6): Ctrl-C or SIGTERM (raised as
``KeyboardInterrupt`` by ``brainage predict``) must stop :func:`run_tasks` within seconds, not
after the running calls, and leave no worker process behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from brainage._utils.scheduler import run_tasks


class _Terminated(KeyboardInterrupt):
    """What ``brainage predict`` raises on SIGTERM."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_the_pool_within_seconds(signum: int) -> None:
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # Ctrl-C's own handler, also where the suite was started with SIGINT ignored (a background
    # job of a non-interactive shell, e.g. `nohup ... &`, starts Python so)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent: list[float] = []
    before = set(multiprocessing.active_children())  # children of earlier tests are not ours

    def interrupt() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signum)

    timer = threading.Timer(4.0, interrupt)  # the two workers have started their calls
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_tasks(time.sleep, [(120.0,)] * 4, n_jobs=2)  # each call would take 2 minutes
        stopped = time.monotonic()
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    assert sent and stopped - sent[0] < 10.0  # not 120 s: the running calls were abandoned
    left = set(multiprocessing.active_children()) - before
    deadline = time.monotonic() + 5.0  # a worker killed on a loaded machine may take a moment
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = set(multiprocessing.active_children()) - before
    assert not left, f"workers left behind: {left}"  # no worker of this pool left running


def test_pool_without_interrupt_returns_every_outcome() -> None:
    outcomes = run_tasks(divmod, [(7, 2), (1, 0), (9, 4)], n_jobs=2)
    assert [o.value for o in outcomes] == [(3, 1), None, (2, 1)]
    assert isinstance(outcomes[1].error, ZeroDivisionError)
