"""How the ``corral`` command ends: its exit statuses, and the one-line error
that carries one.

Apart from the commands, so that the entry point (which must say a Ctrl-C that
comes while the commands are still being imported) and every module of the
command share them without importing each other.
"""

from __future__ import annotations

__all__ = ["EXIT_FAILED_JOB", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_TIMED_OUT",
           "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE", "EXIT_TERMINATED", "INTERRUPTED",
           "TERMINATED", "Terminated", "raise_terminated", "CommandError"]

#: A job listed failed, timed out or was cancelled (status, wait, logs --follow).
EXIT_FAILED_JOB = 1
#: A usage error or bad input.
EXIT_USAGE = 2
#: The run cannot be reached or controlled.
EXIT_UNREACHABLE = 3
#: ``wait --timeout`` ran out while the run still goes on: ``timeout(1)``'s own
#: status, apart from 3, so that a script tells "wait again" from "nothing
#: drives these jobs any more" (both were 3).
EXIT_TIMED_OUT = 124
#: A shell's own for a Ctrl-C.
EXIT_INTERRUPTED = 130
#: A shell's own for SIGTERM (a supervisor's, ``timeout``'s).
EXIT_TERMINATED = 143
#: A shell's own for a process a broken pipe ended (``ls | head -1``): the
#: reader of the output went away, which says nothing of the jobs.
EXIT_BROKEN_PIPE = 141

#: What a Ctrl-C of a command says: what it stopped is the command, not the run.
INTERRUPTED = "interrupted; the run and its jobs go on"
#: What a SIGTERM of a command says.
TERMINATED = "terminated (SIGTERM); the run and its jobs go on"


class Terminated(BaseException):
    """SIGTERM reached the command: raised, so that what it began is undone
    (a first submit's new run and daemon: ``timeout 0.3 corral submit`` left a
    run with no job and a daemon idling for five minutes; cold review)."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated

class CommandError(Exception):
    """A one-line error with its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status
