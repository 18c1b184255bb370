"""Which processes a test started still run."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import psutil

__all__ = ["pids_alive", "SESSION_PROCESSES", "outside_session_processes", "plain_mask_line",
           "signal_and_collect"]

#: Processes a session-wide fixture started on purpose (a Dask cluster), which
#: the check that no test leaves a process behind must not count, nor their
#: descendants (a Dask worker's processes belong to the cluster).
SESSION_PROCESSES: set[int] = set()


def pids_alive(pids: list[int]) -> list[int]:
    """Those of *pids* that still run (a zombie, dead but not yet reaped, does not)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def outside_session_processes(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of *processes* that are not, nor descend from, a :data:`SESSION_PROCESSES`."""
    if not SESSION_PROCESSES:
        return processes
    kept = []
    for process in processes:
        try:
            lineage = {process.pid, *(parent.pid for parent in process.parents())}
        except psutil.Error:
            continue
        if not lineage & SESSION_PROCESSES:
            kept.append(process)
    return kept


def plain_mask_line() -> str:
    """The ``SigBlk`` line of a process the main thread starts: what a program's
    own processes get, and so what one started from corral's threads must get.
    Not all zeros under every tool (``perf record`` blocks SIGWINCH in what it
    runs), but never with Ctrl-C or SIGTERM blocked, which is what corral's
    threads block for themselves."""
    assert threading.current_thread() is threading.main_thread()
    line = subprocess.run(["grep", "SigBlk", "/proc/self/status"], capture_output=True,
                          text=True, check=True).stdout
    mask = int(line.split()[1], 16)
    assert not mask & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGTERM - 1)), line
    return line


def signal_and_collect(process: subprocess.Popen, signum: int,
                       ready: Callable[[], bool] | None = None,
                       what: str = "the process to be ready") -> tuple[Any, Any]:
    """Send *signum* to *process* (once *ready* says it is, if given) and
    return what it printed by its end; killed if it is not over in 30 s, or
    if waiting for *ready* failed."""
    from support.waiting import wait_until

    try:
        if ready is not None:
            wait_until(ready, 30, what)
        process.send_signal(signum)
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
