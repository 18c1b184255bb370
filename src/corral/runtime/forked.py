"""A child process a job forked that comes back into corral's code ends there.

A Python call that calls ``os.fork()`` and whose child then returns, raises or
calls ``sys.exit`` (where ``os._exit`` was meant) would otherwise carry on as
the worker: it reported its own outcome as the job's, then served the
worker's next jobs, while the job itself ran on in the real worker, neither
watched nor timed out (attack review). Such a child ends here instead, as
:mod:`multiprocessing` ends its own, with the status a plain script's exit
would have had.
"""

from __future__ import annotations

import os
import sys
import traceback

__all__ = ["FORKED", "watch_for_forks", "end_if_forked"]

#: ``[True]`` in a child forked since :func:`watch_for_forks` (a flag, not the
#: pid compared: ``getpid`` is a system call; and a list that a chunk's loop
#: holds and reads after each of its calls at the cost of an index).
FORKED = [False]


def _note_child() -> None:
    FORKED[0] = True


os.register_at_fork(after_in_child=_note_child)


def watch_for_forks() -> None:
    """From now on, :func:`end_if_forked` ends a child this process forks (this
    process itself may be one forked before, a pool's worker: it runs on)."""
    FORKED[0] = False


def end_if_forked(error: BaseException | None = None) -> None:
    """Return in the process that called :func:`watch_for_forks`; in a child
    it forked since, print *error* as Python prints an uncaught one, flush,
    and exit with the status it means: 0 after a return, ``SystemExit``'s
    code, else 1."""
    if not FORKED[0]:
        return
    status = 0
    if isinstance(error, SystemExit):
        if isinstance(error.code, int):
            status = error.code
        elif error.code is not None:  # sys.exit("message"), as Python says it
            print(error.code, file=sys.stderr)
            status = 1
    elif error is not None:
        traceback.print_exception(error)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # (a closed or broken stream: nothing left to save)
            pass
    os._exit(status & 0xFF)
