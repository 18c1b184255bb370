"""When to ask the scheduler next: one status query per interval for all jobs.

A status query costs the scheduler's controller work for every user of the
cluster, so the interval grows by half while nothing changes (up to the
longest wait) and falls back to the shortest as soon as something does or a
job is submitted.
"""

from __future__ import annotations

import time

__all__ = ["PollClock"]

_BACK_OFF = 1.5


class PollClock:
    """The time of the next status query. Not thread-safe: the backend's
    control-loop thread owns it."""

    def __init__(self, shortest_s: float, longest_s: float) -> None:
        self._shortest = shortest_s
        self._longest = max(longest_s, shortest_s)
        self._interval = shortest_s
        self._next = 0.0
        #: Monotonic time of the last query that answered (0: none yet).
        self.last_answer = 0.0

    def soon(self) -> None:
        """Something was submitted: query within the shortest interval."""
        self._interval = self._shortest
        self._next = min(self._next or float("inf"), time.monotonic() + self._interval)

    def seconds_left(self) -> float:
        """Seconds until the next query is due (0 when due now)."""
        return max(0.0, self._next - time.monotonic())

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def polled(self, at: float, answered: bool, changed: bool) -> None:
        """Record a query made at *at* (monotonic): back off unless it changed something."""
        if answered:
            self.last_answer = at
        if changed:
            self._interval = self._shortest
        else:
            self._interval = min(self._interval * _BACK_OFF, self._longest)
        self._next = at + self._interval
