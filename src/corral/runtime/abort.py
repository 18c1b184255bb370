"""The cooperative abort flag a running job can poll.

``Scheduler.abort()`` asks running jobs to stop: a Python call in a local or
Dask worker gets a message naming it (the worker sets the flag only if that
job still runs, see :mod:`corral.runtime.worker`), one in a cluster job
SIGUSR1, a script or command SIGTERM. Each sets the flag read by
:func:`abort_requested`, so a long loop can save its state and return. A job
that does not stop within the scheduler's grace period is killed.
"""

from __future__ import annotations

import os
import signal

__all__ = ["abort_requested"]

_requested = False
_listening = False


def _on_abort_signal(signum: int, frame: object) -> None:
    global _requested
    _requested = True


def listen(signum: int) -> None:
    """Make *signum* set the abort flag in this process (called by the runtime)."""
    global _listening
    signal.signal(signum, _on_abort_signal)
    _listening = True


def reset() -> None:
    """Clear the flag before the next job runs in the same worker."""
    global _requested
    _requested = False


def request() -> None:
    """Set the flag: the job running in this process is asked to stop."""
    global _requested
    _requested = True


def abort_requested() -> bool:
    """True once corral has asked the job running in this process to stop.

    Poll it in long loops and return early when it turns True. Inside a corral
    script or command job, the first call also makes SIGTERM set the flag
    instead of killing the process, so a script that polls gets its grace
    period. Outside a corral job it is always False.
    """
    if not _listening and os.environ.get("CORRAL_JOB_ID"):
        listen(signal.SIGTERM)
    return _requested
