"""Know when a worker is loading a job's code, so that a Scheduler made by
that code's import can be refused.

A worker imports the module of the function it runs. A module that makes a
Scheduler and submits jobs when it is imported (no ``if __name__ ==
"__main__":`` around it) would then, in every worker, start workers that
import it again: processes without end, until the machine stalls. Python's
multiprocessing refuses a pool made during a child's start for the same
reason. A Scheduler made while the job *runs* (a job that runs jobs of its
own) is fine: only the loading is watched.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["loading_job_code", "refuse_while_loading"]


class _Depth(threading.local):
    """How deep this thread is in loading a job's code. Per thread: a Dask
    worker loads one job while a job in a thread beside it may make a Scheduler."""

    depth = 0


_state = _Depth()


class _Loading:
    """``with loading_job_code:`` marks this thread as importing or unpickling
    a job's function and arguments. (A class, not a generator: it is on every
    call's way in the worker.)"""

    def __enter__(self) -> None:
        _state.depth += 1

    def __exit__(self, *exc_info: Any) -> None:
        _state.depth -= 1


loading_job_code = _Loading()


def refuse_while_loading(what: str) -> None:
    """Raise if this thread is loading a job's code.

    Raises:
        RuntimeError: naming the module whose import makes *what*.
    """
    if not _state.depth:
        return
    module = _importing_module()
    where = f"module {module!r} makes" if module else "the job's code makes"
    raise RuntimeError(
        f"{what} was made while a corral worker was loading a job's function: {where} it "
        "when it is imported, and each worker imports it again to load its job, which "
        "would start workers without end. Make it only where the module runs as the "
        "program (under `if __name__ == \"__main__\":`) or inside a function")


def _importing_module() -> str | None:
    """The name of the module whose top level runs in this thread now (the
    innermost one: the module that makes the Scheduler, not what imported it)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            return name if isinstance(name, str) else None
        frame = frame.f_back
    return None
