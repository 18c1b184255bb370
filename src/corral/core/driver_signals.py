"""SIGTERM and SIGINT end a driver the way an exception ends a ``with`` block.

Python's default SIGTERM action ends the process at once: no ``finally``, no
``__exit__``, so running jobs were never cancelled and temporary directories
stayed. While a scheduler lives, and only if the program left the default
handler in place, SIGTERM raises :class:`corral.errors.DriverTerminated` (a
``SystemExit`` with status 143, so an uncaught one ends the program quietly
with the status a shell expects); so does SIGHUP (the terminal closed, an ssh
session dropped: status 129; ``nohup`` ignores it, and then so do we). SIGINT
keeps raising KeyboardInterrupt.

Each also marks the process as *terminating*: a scheduler left open outside a
``with`` block then cancels its jobs at interpreter exit instead of waiting for
them, as it would after a normal end of the program. A program that caught the
exception and went on (a REPL, a notebook: every Ctrl-C is caught there) is
not ending: the mark goes when its main thread dispatches a job again (see
:func:`going_on`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from corral.errors import DriverTerminated

__all__ = ["install", "uninstall", "termination_reason", "reason_for", "unread_reason",
           "told_to_end_for", "ending_status"]

_terminated_by: str | None = None
#: When the last of them came (monotonic seconds): see :func:`unread_reason`.
_signalled_at = float("-inf")
_installed = False
_fork_hook_set = False


def install() -> None:
    """Install the handlers (main thread only; handlers the program set are kept)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    for signum in _ENDING:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_ending_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    global _fork_hook_set
    if not _fork_hook_set:
        _fork_hook_set = True
        os.register_at_fork(after_in_child=_restore_in_child)


def uninstall() -> None:
    """Give the program back Python's defaults once no scheduler is open (main
    thread only; a handler the program set since is left alone)."""
    global _installed
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = False
    _restore_in_child()


def _restore_in_child() -> None:
    """Python's default handlers where ours are installed. Also run in a
    child forked from the driver (a fork-based pool), which is no driver:
    SIGTERM must end it, as its parent's pool expects."""
    for signum in _ENDING:
        if signal.getsignal(signum) is _on_ending_signal:
            signal.signal(signum, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


#: The signals whose default action ends the process, raised as DriverTerminated.
_ENDING = (signal.SIGTERM, signal.SIGHUP)


def _on_ending_signal(signum: int, frame: object) -> None:
    _note(signal.Signals(signum).name)
    raise DriverTerminated(128 + signum)


def _on_sigint(signum: int, frame: object) -> None:
    _note("SIGINT")
    raise KeyboardInterrupt


def _note(name: str) -> None:
    global _terminated_by, _signalled_at, _ending_since
    _terminated_by = name
    _signalled_at = time.monotonic()
    if _ending_since is None:
        _ending_since = _signalled_at


#: When the first of them came (monotonic seconds): see :func:`told_to_end_for`.
_ending_since: float | None = None


def going_on() -> None:
    """The program goes on after a signal it caught (its main thread dispatches
    a job): it is not ending, and a scheduler left open waits for its jobs at
    exit again (cold review, a notebook user: one Ctrl-C, caught by the REPL,
    had every job submitted since cancelled at exit, "the driver was
    interrupted")."""
    global _terminated_by, _ending_since
    if _terminated_by is not None and threading.current_thread() is threading.main_thread():
        _terminated_by = _ending_since = None


def told_to_end_for() -> float | None:
    """Seconds since the first SIGTERM, SIGHUP or SIGINT reached the driver; None if none has."""
    return None if _ending_since is None else time.monotonic() - _ending_since


def ending_status() -> int:
    """The exit status of a driver that a signal ends: 143 (SIGTERM), 130
    (SIGINT), 129 (SIGHUP)."""
    return 128 + int(getattr(signal, _terminated_by or "SIGTERM"))


#: The reason of jobs cancelled by each signal. Ctrl-C interrupts: a program
#: (a REPL, a notebook) may catch it and go on, so it does not claim an end.
_SIGNAL_REASONS = {"SIGTERM": "the driver was terminated (SIGTERM)",
                   "SIGINT": "the driver was interrupted (Ctrl-C, SIGINT)",
                   "SIGHUP": "the driver's terminal was closed (SIGHUP)"}


def termination_reason() -> str | None:
    """Why unfinished jobs are cancelled if a signal ended the driver, else None."""
    return None if _terminated_by is None else _SIGNAL_REASONS[_terminated_by]


def reason_for(error: BaseException | None) -> str:
    """The reason given to jobs cancelled because *error* left a ``with`` block."""
    if isinstance(error, DriverTerminated):
        hung_up = error.code == 128 + signal.SIGHUP
        return _SIGNAL_REASONS["SIGHUP" if hung_up else "SIGTERM"]
    if isinstance(error, KeyboardInterrupt):
        # (one that no Ctrl-C raised: a job's own, re-raised by result(), is not said to be one)
        return (_SIGNAL_REASONS["SIGINT"] if _terminated_by == "SIGINT"
                else "interrupted: the with block raised KeyboardInterrupt")
    return f"interrupted: the with block raised {type(error).__name__}"


#: The reason of a map's calls cancelled because nobody reads their results.
UNREAD = "the map's results were no longer read"


#: Seconds after a signal within which a map left by an exception it cannot
#: see (GeneratorExit) is taken to have been left by the signal's.
_SIGNAL_JUST_NOW_S = 1.0


def unread_reason(left_by: BaseException | None, map_started: float) -> str:
    """The reason given to a map's unread calls, cancelled when the loop
    reading them ended; *left_by* is what ended it, as the map saw it: the
    exception raised while it waited for a result, GeneratorExit when the
    caller's loop was left (by a ``break`` or an exception of the caller's
    own, which the map cannot see), or None. A signal that ended the driver
    is named (the map's own cancel comes before the ``with`` block's): one
    raised in the caller's loop shows as GeneratorExit, and counts if it
    came since the map began (*map_started*, monotonic) and just now. A
    Ctrl-C that the program caught and went on from is not a later map's."""
    if isinstance(left_by, (DriverTerminated, KeyboardInterrupt)):
        return reason_for(left_by)
    terminated = termination_reason()
    if (terminated is not None and _signalled_at >= map_started
            and time.monotonic() - _signalled_at < _SIGNAL_JUST_NOW_S):
        return terminated
    if left_by is None or isinstance(left_by, GeneratorExit):
        return UNREAD
    # (An exception that stands for another, as a failed chunk for its call's, names that.)
    name = getattr(left_by, "stands_for", None) or type(left_by).__name__
    return f"{UNREAD}: the loop reading them ended with {name}"
