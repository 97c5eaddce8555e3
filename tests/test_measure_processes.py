"""Measurements in processes started together: each waits at the barrier, and one failing frees the others."""

import os
import threading
from pathlib import Path

import pytest

from bench.measure.throughput import in_fresh_processes_at_once


def _pid_once_all_ready(start_together) -> int:
    start_together.wait()  # the call hangs here unless all processes run at once
    return os.getpid()


def _first_fails_the_rest_wait(flag: str, start_together) -> int:
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL)  # exactly one process gets to create it
    except FileExistsError:
        start_together.wait()  # never passes on its own: the other process never waits here
        return os.getpid()
    os.close(fd)
    raise ValueError("this process fails before its timed part")


def _within(seconds: float, call):
    """``call()``'s result or exception, or None if it has not returned in ``seconds`` (shorter than the
    barrier's own 90 s limit, which then frees the processes, so a hang fails the test and the suite ends)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the test as it is
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome or None


def test_processes_wait_for_each_other_and_each_returns_its_result():
    outcome = _within(60, lambda: in_fresh_processes_at_once(_pid_once_all_ready, 2, timeout_s=90))
    assert outcome is not None, "the processes did not all reach the barrier"
    pids = outcome["result"]
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids


def test_one_process_failing_breaks_the_barrier_for_the_others(tmp_path: Path):
    flag = str(tmp_path / "first")
    outcome = _within(30, lambda: in_fresh_processes_at_once(_first_fails_the_rest_wait, 2, flag, timeout_s=90))
    assert outcome is not None, "a process still waits for one that failed"
    with pytest.raises(ValueError, match="fails before its timed part"):
        raise outcome["error"]
