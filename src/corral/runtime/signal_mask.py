"""The signals corral's threads leave to the main thread, and their unblocking
in a child process (see :mod:`corral.runtime.threads` for why).

A module of its own, importing only :mod:`signal`, because the reaper, which
every local backend starts, needs nothing else of it: its start is the
interpreter's and these few lines.
"""

from __future__ import annotations

import signal

__all__ = ["DRIVER_SIGNALS", "BLOCKED", "allow_signals"]

#: The signals that end a driver, and that only its main thread should receive.
DRIVER_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
#: What corral's threads block: those, and SIGUSR1, which asks a worker's call to
#: stop (``abort()``). A worker these threads start inherits it blocked, so one
#: sent while the worker still starts waits until it listens for it, instead
#: of killing it (SIGUSR1's default).
BLOCKED = DRIVER_SIGNALS | {signal.SIGUSR1}


def allow_signals() -> None:
    """Unblock SIGINT, SIGTERM, SIGHUP and SIGUSR1 in this process's calling thread:
    the first act of a corral child process, which a thread of
    :func:`corral.runtime.threads.start_thread` may have started (a worker: once
    it listens for SIGUSR1)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
