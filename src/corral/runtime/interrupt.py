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
ends itself after a stopped call that it cannot trust to have left it clean
(see :func:`must_end`).

The signal may arrive after the call ended, while the worker's own code runs:
the handler raises only in the call it was sent for, and only once per stop
(a second stop of the same call, a cancel after its timeout, is not sent: it
landed in the call's ``finally`` blocks). Python drops what is raised in a
``__del__``, a weakref or gc callback or a generator's finalizer: the handler
does not raise inside a ``__del__``, and one dropped elsewhere is taken up by
the worker's :func:`sys.unraisablehook`, said nowhere, and armed again. Until
it is raised where it counts, the signal comes every :data:`_AGAIN_S`.
:func:`corral.runtime.execute.run_call` marks the call with plain attribute
stores on :data:`NOW`, which never run a signal handler between them.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from corral.errors import JobStopped

__all__ = ["STOP_SIGNAL", "NOW", "listen", "stop", "forget", "call_begins", "must_end",
           "asked_to_stop", "took_the_stop", "CAUGHT_AND_RETURNED"]

#: The error of a call that caught JobStopped and returned (see took_the_stop).
CAUGHT_AND_RETURNED = ("it caught JobStopped and returned; what it returned may be partial, "
                       "and is not kept")
#: A real-time signal, which no job is likely to take for its own use.
STOP_SIGNAL = int(signal.SIGRTMIN) + 2
#: How often the signal is sent again while the call has not taken it, and for how long.
_AGAIN_S = 0.1
_AGAIN_FOR_S = 3.0


class _Now:
    """Which call runs in the main thread, which one is to be stopped, which
    one was asked to stop (kept until the next job begins), and the threads
    there were as the call began."""

    __slots__ = ("calling", "stopping", "asked", "taken", "threads_before", "import_cut")

    def __init__(self) -> None:
        self.calling: object = None
        self.stopping: object = None
        self.asked: object = None
        #: The call JobStopped was raised in (kept until the next job begins).
        self.taken: object = None
        self.threads_before: tuple[int, dict[int, Any]] = (0, {})
        self.import_cut = False


NOW = _Now()


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if NOW.stopping is None or NOW.stopping != NOW.calling or _in_a_finalizer(frame):
        return  # (in a __del__: it would be dropped there; the signal comes again)
    NOW.stopping = None  # once: a second raise could land in its finally blocks
    NOW.taken = NOW.calling
    NOW.import_cut = NOW.import_cut or _importing(frame)
    raise JobStopped("corral stopped this call: its timeout ran out, or it was cancelled")


def _in_a_finalizer(frame: FrameType | None) -> bool:
    """Whether *frame* runs inside a ``__del__``, which drops what is raised in it."""
    return _some_frame(frame, lambda code: code.co_name == "__del__")


def _importing(frame: FrameType | None) -> bool:
    """Whether *frame* runs in an import: JobStopped raised there leaves modules
    half made in ``sys.modules``, or an extension half set up (one that refuses
    to load twice, as numpy's does, then fails every later job of the worker).
    (Seen here: the traceback loses the import machinery's frames.)"""
    return _some_frame(frame, lambda code: code.co_filename.startswith("<frozen importlib"))


def _some_frame(frame: FrameType | None, test: Callable[[CodeType], bool]) -> bool:
    """Whether the code of *frame*, or of a frame it was called from, passes *test*."""
    while frame is not None:
        if test(frame.f_code):
            return True
        frame = frame.f_back
    return False


def _unraisable(hook: Any) -> Any:
    """A :func:`sys.unraisablehook` that sends again a JobStopped Python dropped
    (raised in a finalizer or callback) and says nothing of it; it hands
    everything else to *hook*."""
    def unraisable(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, JobStopped):
            # Not taken: a call that returns before it comes again did not catch
            # it (re-attack review: a generator's finalizer dropped it, and the
            # call's whole value was called partial and thrown away).
            NOW.taken = None
            if NOW.asked is not None and NOW.asked == NOW.calling:
                # Armed again and sent a moment later, from the sender's thread: armed
                # here, a signal on its way was raised in this hook and lost again.
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {STOP_SIGNAL})
                try:
                    _send(NOW.asked, at_once=False)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            return
        hook(unraisable)
    return unraisable


def listen() -> None:
    """Make :data:`STOP_SIGNAL` stop the marked call (the worker's main thread calls it)."""
    signal.signal(STOP_SIGNAL, _on_stop_signal)
    sys.unraisablehook = _unraisable(sys.unraisablehook)


def stop(job_id: object) -> None:
    """Stop the call of *job_id*, now if it runs, or as it starts (from any
    thread); the signal is sent again until the call has taken it. A second
    stop of the same call is not sent (see the module's docstring)."""
    if NOW.asked == job_id:
        return
    NOW.stopping = NOW.asked = job_id
    _send(job_id)


def _send(job_id: object, at_once: bool = True) -> None:
    """Send the signal (now, or armed again a moment later) and again until taken."""
    main = threading.main_thread().ident or 0
    if at_once:
        signal.pthread_kill(main, STOP_SIGNAL)
    threading.Thread(target=_send_again, args=(job_id, main, not at_once), daemon=True,
                     name="corral-stop").start()


def _send_again(job_id: object, main: int, arm: bool) -> None:
    deadline = time.monotonic() + _AGAIN_FOR_S
    while time.monotonic() < deadline:
        # (at random moments: a call that spends most of its time where the signal
        # is dropped, in a loop, met it there at every same-phased try)
        time.sleep(_AGAIN_S * (0.5 + time.perf_counter_ns() % 1009 / 1009))
        if arm:
            arm = False
            if NOW.asked == job_id and NOW.calling == job_id:
                NOW.stopping = job_id
        if NOW.stopping != job_id:
            return  # taken, or the call ended and the next job began
        try:
            signal.pthread_kill(main, STOP_SIGNAL)
        except OSError:  # (the process is ending)
            return


def forget() -> None:
    """A new job begins: a stop meant for the one before (it may have ended as
    the stop came, and a retry runs under the same id) is not its own."""
    NOW.stopping = NOW.asked = NOW.taken = None
    NOW.import_cut = False


def asked_to_stop(job_id: object) -> bool:
    """Whether the call of *job_id*, now ended, was asked to stop."""
    return NOW.asked == job_id


def took_the_stop(job_id: object) -> bool:
    """Whether JobStopped was raised in the call of *job_id*, now ended: one
    that returned all the same caught it, and what it returned may be partial."""
    return NOW.taken == job_id


def call_begins() -> None:
    """Note the threads there are as a call begins (see :func:`must_end`)."""
    NOW.threads_before = (_thread._count(), threading._active.copy())  # type: ignore[attr-defined]


#: The threads of the worker's own a call may see start: by name, not by a
#: "corral-" prefix, which a Scheduler made in the call shares (re-attack review:
#: a stopped call's own Scheduler ran its jobs on beside the next job).
_WORKERS_OWN = frozenset({"corral-stop", "corral-lookout", "corral-doorbell", "corral-guard"})


def must_end(job_id: object) -> bool:
    """Whether the worker must end rather than run another job after the call
    of *job_id*, asked to stop: it left threads of its own running, where its
    work goes on (a main thread that waited on ``join()`` took JobStopped, the
    thread did not: attack review), or JobStopped cut an import short."""
    if NOW.asked != job_id:
        return False
    if NOW.import_cut:
        return True
    count_before, before = NOW.threads_before
    now = threading._active.copy()  # type: ignore[attr-defined]
    if any(ident not in before and thread.name not in _WORKERS_OWN
           for ident, thread in now.items()):
        return True
    # Threads started with _thread alone are counted but not listed.
    listed_since = sum(1 for ident in now if ident not in before) - sum(
        1 for ident in before if ident not in now)
    return _thread._count() - count_before > listed_since
