"""Stop a running Python call by raising :class:`~corral.errors.JobStopped` in it.

A call runs in its worker's main thread. To stop it (its timeout ran out, or
it was cancelled), the thread that reads the driver's messages marks the call
with :func:`stop` and sends the main thread :data:`STOP_SIGNAL`; the handler
raises ``JobStopped`` where the call is, so that its ``finally`` and ``with``
blocks run, as a command's shell gets SIGTERM before it is killed. Killing the
worker at once, as corral did before, ran none of them: a lock file, a
half-written output or a temporary directory stayed behind. The driver still
kills the worker if the call has not ended within its grace (C code that holds
the GIL, or a call that catches ``JobStopped`` and goes on).

The signal may arrive after the call ended, while the worker's own code runs:
the handler raises only in the call it was sent for, and only once.
:func:`corral.runtime.execute.run_call` marks the call with plain attribute
stores on :data:`NOW`, which never run a signal handler between them.
"""

from __future__ import annotations

import signal
import threading

from corral.errors import JobStopped

__all__ = ["STOP_SIGNAL", "NOW", "listen", "stop", "forget"]

#: A real-time signal, which no job is likely to take for its own use.
STOP_SIGNAL = int(signal.SIGRTMIN) + 2


class _Now:
    """Which call runs in the main thread, and which one is to be stopped."""

    __slots__ = ("calling", "stopping")

    def __init__(self) -> None:
        self.calling: object = None
        self.stopping: object = None


NOW = _Now()


def _on_stop_signal(signum: int, frame: object) -> None:
    if NOW.stopping is not None and NOW.stopping == NOW.calling:
        NOW.stopping = None  # once: a second raise could land in its finally blocks
        raise JobStopped("corral stopped this call: its timeout ran out, or it was cancelled")


def listen() -> None:
    """Make :data:`STOP_SIGNAL` stop the marked call (the worker's main thread calls it)."""
    signal.signal(STOP_SIGNAL, _on_stop_signal)


def stop(job_id: object) -> None:
    """Stop the call of *job_id*, now if it runs, or as it starts (from any thread)."""
    NOW.stopping = job_id
    signal.pthread_kill(threading.main_thread().ident or 0, STOP_SIGNAL)


def forget() -> None:
    """A new job begins: a stop meant for the one before (it may have ended as
    the stop came, and a retry runs under the same id) is not its own."""
    NOW.stopping = None
