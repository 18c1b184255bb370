"""Refuse jobs submitted by a module's import inside a corral worker.

A worker imports the module of the function it runs (and any module that
function imports as it runs). A module that submits jobs when it is imported
(no ``if __name__ == "__main__":`` around it) would then, in every worker
that imports it, submit them again, to workers that import it again:
processes without end, until the machine stalls. Python's multiprocessing
refuses a pool started during a child's start-up for the same reason.

So in a corral worker process (:func:`mark_worker_process`), a submission
is refused while a thread runs a module's top level (a ``<module>`` frame of
a module other than the worker's own ``__main__``: the submitting thread's,
or another's that started it and waits), or while the submitting thread
unpickles a job's function or arguments (:data:`loading_job_code`: a class's
``__setstate__``). Merely *making* a Scheduler there is fine (a module that
holds one for its ``@scheduler.job`` functions); so is a job that submits
jobs of its own as it runs; and so are the processes a job starts, which are
programs of their own.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["loading_job_code", "mark_worker_process", "refuse_submission_while_importing"]

#: Set in a corral worker (and a cluster job's runner): only there can a
#: submission at import start workers without end.
_in_worker = False


def mark_worker_process() -> None:
    """Say that this process runs jobs for corral (its main calls this first)."""
    global _in_worker
    _in_worker = True


#: How deep each thread (by ident) is in loading a job's code, while it is.
#: Per thread: a Dask worker loads one job while a job in a thread beside it
#: may submit jobs.
_loading_depth: dict[int, int] = {}


class _Loading:
    """``with loading_job_code:`` marks this thread as unpickling a job's
    function and arguments (or importing the module of a ``"module:function"``).
    A class, not a generator: it is on every call's way in the worker."""

    def __enter__(self) -> None:
        thread = threading.get_ident()
        _loading_depth[thread] = _loading_depth.get(thread, 0) + 1

    def __exit__(self, *exc_info: Any) -> None:
        thread = threading.get_ident()
        depth = _loading_depth.pop(thread) - 1
        if depth:
            _loading_depth[thread] = depth


loading_job_code = _Loading()


def refuse_submission_while_importing() -> None:
    """Raise if this is a corral worker whose thread imports a module or loads
    a job's code now: a submission there would be made again by every worker
    that loads it.

    Raises:
        RuntimeError: naming the module whose import submits.
    """
    if not _in_worker:
        return
    # Any thread's: a module's top level may start a thread that submits, and
    # join it (attack review).
    module = next(filter(None, map(_module_being_imported, sys._current_frames().values())),
                  None)
    if module is None and threading.get_ident() not in _loading_depth:
        return
    if module is not None:
        where = (f"importing module {module!r}, whose top level submits them, and each worker "
                 "that imports it would submit them again")
    else:
        where = ("loading a job's function or arguments, whose unpickling submits them, and "
                 "each worker that loads such a job would submit them again")
    raise RuntimeError(
        f"jobs were submitted while a corral worker was {where}: workers without end. Submit "
        "only where the module runs as the program (under `if __name__ == \"__main__\":`) or "
        "inside a function")


def _module_being_imported(frame: FrameType | None) -> str | None:
    """The name of the innermost module whose top level runs in the stack of
    *frame* (the module that submits, not what imported it), leaving out the
    worker's own ``__main__``; None if none does.

    A module's own code is compiled from its file: code run by ``exec()``,
    ``eval()`` or doctest in a module's namespace is named ``<module>`` too,
    but comes from a string (attack review: a job that exec'd a call that
    submits was refused)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            if (isinstance(name, str) and name not in ("__main__", "__mp_main__")
                    and code.co_filename == frame.f_globals.get("__file__")):
                return name
        frame = frame.f_back
    return None
