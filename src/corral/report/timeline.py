"""A run's attempts rebuilt from its journal's state changes, and laid out in lanes.

The journal keeps one row per state change of every job (``events``), not one
per attempt: an attempt is what lies between the job starting (RUNNING; or, for a
short job a cluster reported ended without having seen it run, its SUBMITTED) and
the change that ends it — a final state, or QUEUED again (a retry, or a job given
back). A job SUBMITTED and not running waits in its backend's queue: no bar yet.
The job's own row remembers only its last attempt, so the timeline reads the events.

Lanes stand for the slots jobs ran in: each attempt goes to the lowest-numbered
lane free when it starts, so a lane never holds two attempts at once and a
two-core machine that ran two jobs at a time draws two lanes. (The journal does
not say which worker ran a job; packing by time draws the same picture.)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from corral.status import JobStatus

__all__ = ["Attempt", "Outcome", "attempts_from_events", "assign_lanes", "waiting_since",
           "waits_that_ended_unstarted"]


class Outcome:
    """How an attempt ended; the names the page colours by."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    #: It failed and the job was queued again for another try.
    RETRIED = "retried"
    #: The backend gave it back before it ended (a pause, a lost node).
    REQUEUED = "requeued"
    #: Still going when the journal was read.
    RUNNING = "running"
    #: Shown as running, but no driver runs the run and its backend's jobs die with
    #: the driver: it ended when the driver did, at a moment nobody recorded.
    UNKNOWN = "unknown"

    ALL = (COMPLETED, FAILED, TIMED_OUT, CANCELLED, RETRIED, REQUEUED, RUNNING, UNKNOWN)


_ENDINGS = {JobStatus.COMPLETED.value: Outcome.COMPLETED,
            JobStatus.FAILED.value: Outcome.FAILED,
            JobStatus.TIMED_OUT.value: Outcome.TIMED_OUT,
            JobStatus.CANCELLED.value: Outcome.CANCELLED}


@dataclass(slots=True)
class Attempt:
    """One try of one job: from its start to its end (None while it runs)."""

    job: str
    number: int
    #: When it became ready to start (QUEUED), so the wait before *start* shows.
    queued: float | None
    start: float
    end: float | None
    outcome: str
    reason: str | None
    lane: int = 0

    @property
    def duration(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


@dataclass(slots=True)
class _JobTrack:
    """What is known of a job's current attempt while its events are read."""

    queued: float | None = None
    submitted: float | None = None
    running: float | None = None
    count: int = 0


def attempts_from_events(
        events: Iterable[tuple[str, float, str | None, str, str | None]]) -> list[Attempt]:
    """Every attempt of every job, from ``(job id, time, old, new, reason)`` rows
    oldest first (as :meth:`corral.Run.events` gives them). An attempt whose end
    is not recorded yet ends None (outcome RUNNING)."""
    tracks: dict[str, _JobTrack] = {}
    attempts: list[Attempt] = []
    for job_id, time, old, new, reason in events:
        job = str(job_id)
        track = tracks.get(job)
        if track is None:
            track = tracks[job] = _JobTrack()
        if new == JobStatus.QUEUED.value:
            retried = (reason or "").startswith("retry")
            if old == JobStatus.RUNNING.value or (old == JobStatus.SUBMITTED.value and retried):
                _close(attempts, job, track, time,
                       Outcome.RETRIED if retried else Outcome.REQUEUED, reason)
            # (given back before it ran, or a finished job asked to run again: no new bar)
            track.queued = time
            track.submitted = track.running = None
        elif new == JobStatus.SUBMITTED.value:
            track.submitted = time
        elif new == JobStatus.RUNNING.value:
            track.running = time
        elif new in _ENDINGS:
            # A job that ended from SUBMITTED ran too briefly for a RUNNING stamp (a
            # fast call, a short cluster job) - unless it was cancelled: then it was
            # still waiting in its backend's queue, and never ran.
            if old == JobStatus.RUNNING.value or (
                    old == JobStatus.SUBMITTED.value and new != JobStatus.CANCELLED.value):
                _close(attempts, job, track, time, _ENDINGS[new], reason)
            track.queued = track.submitted = track.running = None
    for job, track in tracks.items():
        if track.running is not None:  # only SUBMITTED: it waits in its backend's queue
            track.count += 1
            attempts.append(Attempt(job, track.count, track.queued, track.running, None,
                                    Outcome.RUNNING, None))
    return attempts


def waits_that_ended_unstarted(events: Iterable[tuple[str, float, str | None, str, str | None]]
                               ) -> list[tuple[str, float, float]]:
    """``(job id, from, to)`` for each wait that ended without the job starting
    (cancelled while queued, or its driver ended first and a later session took
    it up): no bar holds them, yet jobs were waiting then."""
    since: dict[str, float] = {}
    ended: list[tuple[str, float, float]] = []
    for job_id, time, old, new, _reason in events:
        job = str(job_id)
        if new == JobStatus.QUEUED.value:
            since[job] = time
        elif new == JobStatus.RUNNING.value:
            since.pop(job, None)
        elif new in _ENDINGS:
            began = since.pop(job, None)
            unstarted = old == JobStatus.QUEUED.value or (
                old == JobStatus.SUBMITTED.value and new == JobStatus.CANCELLED.value)
            if began is not None and unstarted and time > began:
                ended.append((job, began, time))
    return ended


def waiting_since(events: Iterable[tuple[str, float, str | None, str, str | None]]
                  ) -> dict[str, float]:
    """The jobs ready to start but not started yet (QUEUED, or SUBMITTED to a
    backend that has not started them), each with when it became ready."""
    since: dict[str, float] = {}
    for job_id, time, _old, new, _reason in events:
        job = str(job_id)
        if new == JobStatus.QUEUED.value:
            since[job] = time
        elif new != JobStatus.SUBMITTED.value:
            since.pop(job, None)
    return since


def _close(attempts: list[Attempt], job: str, track: _JobTrack, time: float, outcome: str,
           reason: str | None) -> None:
    begun = track.running if track.running is not None else track.submitted
    if begun is None:  # a journal that lost the start: the attempt cannot be placed
        begun = time
    track.count += 1
    attempts.append(Attempt(job, track.count, track.queued, begun, max(time, begun), outcome,
                            reason))
    track.queued = track.submitted = track.running = None


def assign_lanes(attempts: list[Attempt]) -> int:
    """Give each attempt the lowest lane free at its start; return how many lanes.
    Attempts that touch (one ends as the next starts) share a lane."""
    free: list[int] = []
    busy: list[tuple[float, int]] = []
    lanes = 0
    for attempt in sorted(attempts, key=lambda a: (a.start, a.job, a.number)):
        while busy and busy[0][0] <= attempt.start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, lanes = lanes, lanes + 1
        attempt.lane = lane
        heapq.heappush(busy, (math.inf if attempt.end is None else attempt.end, lane))
    return lanes
