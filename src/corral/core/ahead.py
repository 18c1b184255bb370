"""How many jobs to queue behind a running one, where workers take jobs ahead.

A worker that gets its next job only after the driver has read its last
reply idles for a round trip per job: for calls of a few microseconds that
round trip *is* the run time. So a backend that queues ahead
(:attr:`corral.backends.base.Capabilities.queues_ahead`) is handed, per
running job, a line of jobs to run after it, in one message; this module
sizes the line.

The size adapts to how long jobs of the same kind (same function, script or
program) took so far, as joblib sizes its batches: enough queued work per
worker to cover the driver's round trip (:data:`QUEUED_WORK_S`). Nothing is
queued before a job of the kind has ended (its length is unknown), none for
jobs long enough that a round trip does not matter (:data:`LONG_S`), and none
behind a job that is not known to be short or has already run that long. A
job that turns out slow does not hold up the line behind it: its worker
gives the line back after :data:`corral.runtime.worker.PATIENCE_S`, and the
engine hands it to a worker that is free. Each queued job keeps its own
status, result, output and journal rows: only the hand-over is shared.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections import deque

    from corral.core.record import JobRecord

__all__ = ["AheadPolicy", "QUEUED_WORK_S", "LONG_S", "MAX_DEPTH", "REPLY_WAIT_S"]

#: Work to keep queued per running job: a few turns of the driver's loop. (2 ms
#: gave commands of about 1 ms lines of one, a message and a wake-up each;
#: with 5 ms, 200 `true` commands ran 1.10x faster.)
QUEUED_WORK_S = 0.005
#: Jobs that typically take this long get nothing queued behind them: a round
#: trip is under 3 % of their time, and a line would wait behind them.
LONG_S = 0.01
#: The longest line behind one running job.
MAX_DEPTH = 64
#: The longest the control loop leaves workers' replies unread while every
#: running job has work queued behind it (see :meth:`AheadPolicy.reply_wait`).
REPLY_WAIT_S = 0.002
#: A shorter wait than this saves too little to be worth a system call (and
#: the wait is in whole milliseconds: see LocalBackend.hold_replies).
_SHORTEST_REPLY_WAIT_S = 0.001
#: Weight of the newest duration in a kind's running mean.
_WEIGHT = 0.2
#: Kinds remembered at most (a run with ever new names must not grow this).
_KINDS_KEPT = 1024


class AheadPolicy:
    """Keeps a running mean of job durations per kind and sizes lines from it.

    Used by the control loop only.
    """

    def __init__(self) -> None:
        self._typical: dict[tuple, float] = {}
        self._depth: dict[tuple, int] = {}  # what depth() answers, made when learnt

    def depth(self, job: JobRecord) -> int:
        """How many jobs like *job* may wait behind one running job."""
        return self._depth.get(_kind(job), 0)

    def ends_soon(self, running: JobRecord) -> bool:
        """Whether jobs may queue behind *running*: it is not of a kind that runs
        long, and has not run long itself (its worker would give them back)."""
        if time.monotonic() - running.taken_at >= LONG_S:
            return False
        typical = self._typical.get(_kind(running))
        return typical is not None and typical < LONG_S

    def reply_wait(self, lines: list[deque[JobRecord] | None]) -> float:
        """How long the control loop may leave replies unread, given the
        running jobs' *lines* (see :meth:`corral.core.packing.Packer.lines_of_running`):
        0 unless every running job has jobs queued behind it, else half the
        work queued in the shortest line, at most :data:`REPLY_WAIT_S`.

        Why: each time the loop wakes for a reply costs it about as much CPU
        as the jobs it then handles, for its code and data have left the
        processor's caches meanwhile. Woken for every reply of short commands,
        the driver spent 200 µs of CPU a `true` command; reading the replies
        a few at a time, 110 (see benchmarks/RESULTS.md). No worker idles
        meanwhile: each has at least the other half of its line's work to do,
        and a reply read later changes nothing that the job itself reports
        (its start and end are the worker's times).
        """
        if not lines:
            return 0.0
        shortest = REPLY_WAIT_S * 2
        for line in lines:
            if line is None or len(line) < 2:
                return 0.0
            typical = self._typical.get(_kind(line[-1]))
            if typical is None:
                return 0.0
            shortest = min(shortest, (len(line) - 1) * typical)
        wait = shortest / 2
        return wait if wait >= _SHORTEST_REPLY_WAIT_S else 0.0

    def observe(self, job: JobRecord, seconds: float) -> None:
        """Learn from an attempt of *job* that ran *seconds*."""
        kind = _kind(job)
        typical = self._typical.get(kind)
        if typical is None:
            if len(self._typical) >= _KINDS_KEPT:
                self._typical.clear()
                self._depth.clear()
            typical = max(seconds, 0.0)
        else:
            typical += _WEIGHT * (max(seconds, 0.0) - typical)
        self._typical[kind] = typical
        self._depth[kind] = (0 if typical >= LONG_S
                             else max(1, min(MAX_DEPTH, int(QUEUED_WORK_S / max(typical, 1e-6)))))


def _kind(job: JobRecord) -> tuple:
    """Which jobs are alike: the same task type and label (asked several times
    per job, so kept on the record)."""
    kind = job.kind
    if kind is None:
        task = job.spec.task
        kind = job.kind = (type(task), task.label)
    return kind
