"""Tie a worker, and every process its jobs start, to the life of the driver.

A worker is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): a process its
job starts stays its descendant even after that process's own parent exits
(a double fork, ``setsid`` and ``&``), so the worker can always find and kill
it. When the driver dies — SIGKILL included — a guard thread, woken by a
pidfd of the driver, kills the worker's whole tree and then the worker.

``PR_SET_PDEATHSIG`` alone is not enough: it kills the worker at once, and
the worker's children are then re-parented away from anything corral owns.
It stays as the fallback where pidfds are missing (Linux < 5.3), where only
the worker itself is sure to die.
"""

from __future__ import annotations

import os
import select
import signal
import threading

__all__ = ["bind_to_parent", "become_subreaper"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: the backend's kill path still works
        return False


def become_subreaper() -> None:
    """Adopt the orphans of this process's descendants."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def bind_to_parent(parent_pid: int) -> None:
    """Kill this process's tree and exit as soon as *parent_pid* (our parent) dies."""
    try:
        parent = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        parent = None
    if os.getppid() != parent_pid:  # it died before we could watch it
        os._exit(1)
    if parent is not None:
        threading.Thread(target=_die_with, args=(parent,), name="corral-guard",
                         daemon=True).start()


def _die_with(parent: int) -> None:
    select.select([parent], [], [])  # readable once the parent has exited
    try:
        from corral.runtime.proctree import kill_tree

        kill_tree(os.getpid(), include_root=False)
    finally:
        os._exit(1)
