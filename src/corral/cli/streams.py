"""The command's standard streams, made safe to write to whatever they are.

Three ways a shell hands a command streams that a plain ``print`` fails on
(attack review), each of which ended a command with a traceback or exit 1,
which says "a job failed":

- closed (``corral status >&-``, ``corral wait 2>&-``): Python then has no
  ``sys.stdout``. The descriptor is filled with /dev/null, as if the shell had
  said ``>/dev/null``: what is written is lost, the exit status is the command's.
  (Filled before the command opens anything, so that no journal or socket gets
  descriptor 1 or 2 and takes what is printed.)
- a terminal whose encoding cannot write every name (``latin-1``, ``ascii``):
  what it cannot encode is written escaped (``\\u2603``), not a crash.
- a pipe whose reader went away (``corral status --all | head -1``): the
  command stops, quietly, as ``ls | head -1`` does, and exits as ls's shell
  says it did (:data:`~corral.cli.exits.EXIT_BROKEN_PIPE`).
"""

from __future__ import annotations

import errno
import os
import select
import sys

from corral.runtime.stdfds import open_standard_fds

__all__ = ["guard_standard_streams", "ReaderGone", "reader_gone", "drop_unwritten_output",
           "flush_output"]


class ReaderGone(Exception):
    """The reader of the command's output went away (not an ``OSError``: click
    makes a broken pipe exit 1, which says a job failed)."""


def guard_standard_streams() -> None:
    """Fill closed descriptors 0-2 with /dev/null and give Python a stdout and
    a stderr that escape what their encoding cannot write. Call it first."""
    open_standard_fds()  # (as corral's own processes do)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def reader_gone(error: OSError) -> bool:
    """Whether *error* is that of a write to stdout or stderr whose reader went
    away (not that of a socket to a daemon that died, which is worth a line)."""
    if error.errno != errno.EPIPE:
        return False
    poller = select.poll()
    for fd in (1, 2):
        poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def drop_unwritten_output(*fds: int) -> None:
    """Point descriptors *fds* (stdout, stderr) at /dev/null, leaving behind
    what was not written to them: it would fail again as Python exits, which
    then exits 120."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in fds:
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def flush_output() -> None:
    """Write what the command left in Python's buffers now, where a failure can
    still be said (at exit Python says it with a traceback of its own).

    Raises:
        ReaderGone: the reader of stdout or stderr went away.
        OSError: another failure to write (a full disk).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError as error:
            if reader_gone(error):
                raise ReaderGone from None
            raise
