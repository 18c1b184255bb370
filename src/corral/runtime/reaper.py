"""The last line of defence: kill every process of a driver's jobs once the driver is gone.

Each worker kills its own tree when the driver dies (see
:mod:`corral.runtime.guard`), but a worker cannot act while a job holds the
GIL in C code, or has stopped it with SIGSTOP, and the children of a worker
that died before the driver were re-parented away from corral. So every
local backend also starts this small process, which runs no job code: it
waits on a pidfd of the driver and on a pipe from it. When the driver dies it
kills every process carrying the driver's mark in its environment
(:func:`corral.runtime.proctree.kill_marked`). When the driver closes the pipe on a
clean shutdown, it just exits.
"""

from __future__ import annotations

import os
import select
import signal
import sys

from corral.runtime.stdfds import open_standard_fds
from corral.runtime.signal_mask import allow_signals

__all__ = ["main", "MARK_VARIABLE", "FAREWELL", "SWEEP_AND_GO"]

#: What the driver writes to the pipe when it shuts down cleanly; the second
#: also asks for a last sweep (a worker died under a job in this run).
FAREWELL = b"q"
SWEEP_AND_GO = b"s"

#: The environment variable that marks a worker and everything it starts:
#: ``<driver token>.<worker number>.``.
MARK_VARIABLE = "CORRAL_WORKER_MARK"


def main() -> None:
    open_standard_fds()  # (its pidfd must not be fd 1 or 2: see corral.runtime.stdfds)
    driver_pid, driver_token = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's
    allow_signals()  # SIGTERM ends us, whichever thread of the driver started us
    try:
        driver = os.pidfd_open(driver_pid)
    except OSError:  # no pidfds: the pipe's end is all there is to go by
        driver = None
    if os.getppid() != driver_pid:
        _reap(driver_token)
        return
    watched = [0] if driver is None else [driver, 0]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if driver is not None and driver in ready:
            _reap(driver_token)
            return
        said = os.read(0, 4096)
        if SWEEP_AND_GO in said:  # a clean shutdown after a worker died under its job:
            _reap(driver_token)   # sweep up what it may have left
            return
        if FAREWELL in said:  # a clean shutdown: the driver has stopped its workers itself
            return
        if not said:  # the pipe closed without a farewell: the driver died
            _reap(driver_token)
            return


def _reap(driver_token: str) -> None:
    from corral.runtime.proctree import kill_marked

    kill_marked(MARK_VARIABLE, driver_token + ".")
