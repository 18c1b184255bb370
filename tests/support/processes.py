"""Which processes a test started still run."""

from __future__ import annotations

import psutil

__all__ = ["pids_alive"]


def pids_alive(pids: list[int]) -> list[int]:
    """Those of *pids* that still run (a zombie, dead but not yet reaped, does not)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive
