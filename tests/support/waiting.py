"""Waiting in tests without sleeping for a guessed time: poll with a deadline,
or let the scheduler's control loop prove it went round."""

from __future__ import annotations

import time
from collections.abc import Callable

import corral

__all__ = ["wait_until", "loop_barrier"]


def wait_until(condition: Callable[[], object], timeout: float = 20.0, message: str = "") -> None:
    """Poll *condition* until it is true; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message or condition}")
        time.sleep(0.005)


def loop_barrier(scheduler: corral.Scheduler) -> None:
    """Return once the control loop has finished a whole iteration after now.

    A request is answered in the first step of an iteration; answering a
    second one proves the iteration that answered the first has finished
    (and so, for example, has started whatever it was going to start).
    """
    for _ in range(2):
        scheduler.qsize()
        scheduler._engine.call(lambda: None)
