"""File descriptors 0, 1 and 2 of corral's own processes: open, whatever the driver had.

A driver started with its stdout or stderr closed (``python driver.py >&-``)
starts its workers, its reaper and its journal writer with that descriptor
closed too. The first file such a process then opens takes the number, and
whatever later treats fd 1 or 2 as its output hits that file instead: a
worker's guard pidfd became fd 1, the worker's spool was then put over it,
and the guard, watching a regular file, killed the worker at once: 1 to 4 of
30 jobs were lost as "exited with code 1" (attack review). And the other way
round, a pipe the driver opened while fd 1 was free got that number, and a
child given it at that number had its stdin or spool put over it.

So each of these processes fills the free ones of 0, 1 and 2 with /dev/null
(:func:`open_standard_fds`) before it opens anything, and a descriptor
handed to a child is lifted above them first (:func:`above_standard`).
"""

from __future__ import annotations

import fcntl
import os
import sys

__all__ = ["open_standard_fds", "above_standard"]

_STANDARD = (0, 1, 2)


def open_standard_fds() -> None:
    """Point each of fds 0, 1 and 2 that is closed at /dev/null, and give
    Python a ``sys.stdin``, ``sys.stdout`` or ``sys.stderr`` where it had none
    (a print to a missing ``sys.stderr`` goes to ``sys.stdout``, which in the
    journal writer is its answer pipe to the driver). Only for the fds it
    filled: one a program opened a file on since (a driver) is the program's,
    and a print must not go into that file (diff review)."""
    filled = []
    for fd in _STANDARD:
        if _is_open(fd):
            continue
        filled.append(fd)
        null = os.open(os.devnull, os.O_RDWR)  # (the lowest free: *fd*, those below are open)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        else:
            os.set_inheritable(fd, True)  # (os.open's are not: a child must find it there too)
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if fd in filled and getattr(sys, name) is None:
            stream = open(fd, "r" if fd == 0 else "w", buffering=1 if fd else -1,  # noqa: SIM115
                          closefd=False, errors="backslashreplace")
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)


def above_standard(fd: int) -> int:
    """*fd*, or, where it is 0, 1 or 2, a duplicate of it above them (the
    original closed): a child handed it at that number would find it replaced
    by its stdin, stdout or stderr. The duplicate is close-on-exec, as the
    pipes corral makes are."""
    if fd not in _STANDARD:
        return fd
    lifted = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, len(_STANDARD))
    os.close(fd)
    return lifted


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
