"""corral's own threads leave SIGINT, SIGTERM and SIGHUP to the main thread.

Python runs signal handlers only in the main thread. A signal the kernel hands
to another thread still sets the flag, but a main thread blocked in a lock wait
(``job.result()``, ``wait()``) is woken only by a signal delivered to that
thread itself. The kernel usually picks the main thread, but not always: a
Ctrl-C that landed on the control loop's thread waited for the awaited job to
end, or for ever behind a ``sleep 1000``. So every long-lived thread corral
starts in the driver blocks both signals (:func:`start_thread`), which leaves
the main thread as the only one the kernel can hand them to.

A process inherits its parent thread's blocked mask across ``exec``. So
corral's own child processes (workers, the reaper, the journal writer) unblock
both signals first thing (:func:`allow_signals`), and an outside program
started from such a thread (``sbatch``, a probe) is started with them allowed
for the moment of its start (:func:`signals_allowed`): ``abort()`` and a
scheduler's cancel end them with SIGTERM, which must not wait in a mask.

The program's own code that corral runs on these threads (``on_event`` and
``on_finish`` callbacks, a Job's done callbacks, a map's input) runs with both
signals allowed too (:func:`signals_allowed`): what it starts (an uploader, a
notifier) must end on Ctrl-C and ``terminate()`` as it would anywhere else. A
signal that lands on the thread in such a moment is handled once the main
thread runs again: its waits for jobs last at most a quarter of a second at a
stretch (:func:`wait_in_slices`).
"""

from __future__ import annotations

import contextlib
import numbers
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from corral.runtime.signal_mask import BLOCKED as _BLOCKED
from corral.runtime.signal_mask import DRIVER_SIGNALS, allow_signals
from corral.safe_repr import safe_repr

__all__ = ["no_thread_left", "DRIVER_SIGNALS", "SLICE_S", "plain_timeout", "start_thread",
           "quiet_thread", "start_quietly", "allow_signals", "signals_allowed",
           "in_program_code_for", "wait_in_slices"]

#: The threads :func:`start_thread` started.
_quiet_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def start_thread(target: Callable[..., Any], *, name: str, args: tuple[Any, ...] = (),
                 daemon: bool = True) -> threading.Thread:
    """Start a thread that never receives SIGINT, SIGTERM or SIGHUP, and return it.

    A new thread starts with its creator's mask: the signals are blocked here
    for the moment of the start, then restored. One that arrives meanwhile
    waits, and is delivered to this thread as the mask is restored.
    """
    thread = quiet_thread(target, name=name, args=args, daemon=daemon)
    start_quietly(thread)
    return thread


def quiet_thread(target: Callable[..., Any], *, name: str, args: tuple[Any, ...] = (),
                 daemon: bool = True) -> threading.Thread:
    """A thread for :func:`start_quietly`, not started: for a caller that
    must hold it before it starts (a signal's exception may come as it starts)."""
    thread = threading.Thread(target=target, name=name, args=args, daemon=daemon)
    _quiet_threads.add(thread)
    return thread


def start_quietly(thread: threading.Thread) -> None:
    """Start *thread* (see :func:`start_thread`)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def signals_allowed() -> Iterator[None]:
    """Allow SIGINT, SIGTERM and SIGHUP in the calling thread while the block runs: around
    the start of an outside program, which would otherwise inherit them blocked.
    The window is the start's few milliseconds. In a thread :func:`start_thread`
    did not start it changes nothing: a mask the program set is the program's."""
    thread = threading.current_thread()
    if thread not in _quiet_threads:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
    entered = thread not in _in_program_code
    if entered:
        _in_program_code[thread] = time.monotonic()
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if entered:
            _in_program_code.pop(thread, None)


#: Since when (monotonic) each of corral's threads runs the program's own code,
#: a callback (see :func:`signals_allowed`, which surrounds every such call).
_in_program_code: dict[threading.Thread, float] = {}


def in_program_code_for(thread: threading.Thread) -> float:
    """How many seconds *thread* has been running the program's own code (a
    callback) at a stretch; 0 when it is not: a driver told to end does not
    wait for ever for a control loop that a callback holds."""
    since = _in_program_code.get(thread)
    return 0.0 if since is None else time.monotonic() - since


#: The longest the main thread waits at a stretch (see :func:`wait_in_slices`).
SLICE_S = 0.25


def plain_timeout(timeout: float | None) -> float | None:
    """*timeout* as every wait of corral's reads it: NaN waits not at all (as
    ``concurrent.futures`` reads it), and one too long for the platform
    (``inf``, ``1e300``) waits without limit, where a lock would raise
    OverflowError. Anything but a number of seconds is refused by name here,
    not by a comparison deep inside a lock."""
    if timeout is None:
        return None
    if not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__} {safe_repr(timeout)}")
    if timeout != timeout:  # NaN
        return 0.0
    return None if timeout >= threading.TIMEOUT_MAX else timeout


def wait_in_slices(wait: Callable[[float | None], bool], timeout: float | None) -> bool:
    """Call *wait* (an ``Event.wait``: it returns True once what it waits for has
    happened) until it returns True or *timeout* seconds have passed; return its
    last answer.

    In the main thread it waits at most :data:`SLICE_S` at a time. A signal
    the kernel handed to another thread (a thread of the program's, or one of
    corral's while it runs the program's callbacks) does not wake a waiting
    main thread, but Python runs its handler as soon as the main thread runs
    again: between two slices, so a Ctrl-C is late by at most that much,
    instead of waiting for the job to end.

    A *timeout* of NaN waits not at all (as ``concurrent.futures`` reads it);
    one too long for the platform (``inf``, ``1e300``) waits without limit, in
    every thread alike (a lock would raise OverflowError in all but the main one).
    """
    timeout = plain_timeout(timeout)
    if threading.current_thread() is not threading.main_thread():
        return wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SLICE_S if deadline is None else min(SLICE_S, deadline - time.monotonic())
        if wait(max(left, 0.0)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def no_thread_left(error: BaseException) -> bool:
    """Whether *error* is Python's for a thread it could not start (a limit
    on processes or memory): a shortage that a job's end may end."""
    return isinstance(error, RuntimeError) and "can't start new thread" in str(error)


def logged_and_passed(error: BaseException) -> bool:
    """Whether *error*, raised by a program's callback (a Future's done
    callback, ``on_finish``, an event listener), is logged and the caller goes
    on: any but a Ctrl-C of the main thread. (Race review: a callback's
    ``sys.exit()`` or KeyboardInterrupt, caught as no Exception, stopped the
    control loop and failed every job of the run.)"""
    return not (isinstance(error, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread())
