"""Stop a running Python call by raising :class:`~corral.errors.JobStopped` in it.

A call runs in its worker's main thread. To stop it (its timeout ran out, or
it was cancelled), the thread that reads the driver's messages marks the call
with :func:`stop` and sends the main thread :data:`STOP_SIGNAL`; the handler
raises ``JobStopped`` where the call is, so that its ``finally`` and ``with``
blocks run, as a command's shell gets SIGTERM before it is killed. Killing the
worker at once, as corral did before, ran none of them: a lock file, a
half-written output or a temporary directory stayed behind. The driver still
kills the worker if the call has not ended within its grace (C code that holds
the GIL, or a call that catches ``JobStopped`` and goes on), and the worker
ends itself after a stopped call that left threads running (see
:func:`left_threads`).

The signal may arrive after the call ended, while the worker's own code runs:
the handler raises only in the call it was sent for, and only once, but not
inside a ``__del__``, where Python would print the exception and drop it (the
stop was then lost, and the call killed 2 s later without its ``finally``:
attack review). Until it has raised, the signal is sent again every
:data:`_AGAIN_S`. :func:`corral.runtime.execute.run_call` marks the call with
plain attribute stores on :data:`NOW`, which never run a signal handler
between them.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from corral.errors import JobStopped

__all__ = ["STOP_SIGNAL", "NOW", "listen", "stop", "forget", "left_threads"]

#: A real-time signal, which no job is likely to take for its own use.
STOP_SIGNAL = int(signal.SIGRTMIN) + 2
#: How often the signal is sent again while the call has not taken it, and for how long.
_AGAIN_S = 0.1
_AGAIN_FOR_S = 3.0


class _Now:
    """Which call runs in the main thread, which one is to be stopped, and
    which one was asked to stop (kept until the next job begins)."""

    __slots__ = ("calling", "stopping", "asked")

    def __init__(self) -> None:
        self.calling: object = None
        self.stopping: object = None
        self.asked: object = None


NOW = _Now()


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if NOW.stopping is None or NOW.stopping != NOW.calling or _in_a_finalizer(frame):
        return  # (in a finalizer: the signal comes again)
    NOW.stopping = None  # once: a second raise could land in its finally blocks
    raise JobStopped("corral stopped this call: its timeout ran out, or it was cancelled")


def _in_a_finalizer(frame: FrameType | None) -> bool:
    """Whether *frame* runs inside a ``__del__``, which swallows what is raised in it."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def listen() -> None:
    """Make :data:`STOP_SIGNAL` stop the marked call (the worker's main thread calls it)."""
    signal.signal(STOP_SIGNAL, _on_stop_signal)


def stop(job_id: object) -> None:
    """Stop the call of *job_id*, now if it runs, or as it starts (from any
    thread); the signal is sent again until the call has taken it."""
    NOW.stopping = NOW.asked = job_id
    main = threading.main_thread().ident or 0
    signal.pthread_kill(main, STOP_SIGNAL)
    threading.Thread(target=_send_again, args=(job_id, main), daemon=True,
                     name="corral-stop").start()


def _send_again(job_id: object, main: int) -> None:
    deadline = time.monotonic() + _AGAIN_FOR_S
    while time.monotonic() < deadline:
        time.sleep(_AGAIN_S)
        if NOW.stopping != job_id:
            return  # taken, or the call ended and the next job began
        try:
            signal.pthread_kill(main, STOP_SIGNAL)
        except OSError:  # (the process is ending)
            return


def forget() -> None:
    """A new job begins: a stop meant for the one before (it may have ended as
    the stop came, and a retry runs under the same id) is not its own."""
    NOW.stopping = NOW.asked = None


def left_threads(job_id: object) -> bool:
    """Whether the call of *job_id*, asked to stop, left threads of its own
    running: its work goes on there (a main thread that waited on a thread's
    ``join()`` took JobStopped, the thread did not), so the worker must end
    rather than run the next job beside it (attack review)."""
    if NOW.asked != job_id:
        return False
    return any(not thread.name.startswith("corral-") and thread is not threading.main_thread()
               for thread in threading.enumerate())
