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

Long stretches in which nothing ran (a run killed at night and run again in the
morning, a daemon idle between submissions) are drawn narrow, as *breaks* in the
time axis (:func:`idle_breaks`, :class:`ShownTime`): drawn to scale, a night
left the two sessions' bars a few pixels wide at either end of the picture.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral.status import JobStatus

__all__ = ["Attempt", "Outcome", "attempts_from_events", "assign_lanes", "waiting_since",
           "waits_that_ended_unstarted", "Break", "idle_breaks", "ShownTime"]

Span = tuple[float, float]

#: An idle stretch is drawn narrow when it lasts at least this long, and at least
#: this share of the time in which something happened: a pause of a few seconds
#: between two bursts reads well to scale; a night does not.
BREAK_LEAST_SECONDS = 30.0
BREAK_LEAST_SHARE = 0.25
#: What the breaks take of the drawn axis: each at most this share of the time in
#: which something happened, all together at most that share.
BREAK_SHOWN_SHARE = 0.04
BREAKS_SHOWN_SHARE = 0.15
#: The longest this many idle stretches are drawn narrow; shorter ones, to scale.
MOST_BREAKS = 50


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


@dataclass(frozen=True, slots=True)
class Break:
    """A long stretch in which nothing ran, drawn *shown* seconds wide."""

    start: float
    end: float
    shown: float
    #: Seconds of it in which no driver ran the run (the page says why nothing ran).
    undriven: float


def idle_breaks(running: Iterable[Span], waiting: Iterable[Span], driven: Sequence[Span],
                first: float, last: float) -> list[Break]:
    """The long stretches of *first* to *last* in which no attempt ran (*running*)
    and no job waited for a driver that was there to start it (*waiting* while
    *driven*): a wait with no driver is the driver's absence, not a queue's.

    A stretch is long when it lasts :data:`BREAK_LEAST_SECONDS` and a quarter of
    the time in which something happened; each is drawn a few percent of that time
    wide, so that the bars on either side keep the picture."""
    stalled = _intersection(_union(waiting), _union(driven))
    idle = _gaps(_union([*running, *stalled]), first, last)
    active = (last - first) - sum(end - start for start, end in idle)
    if active <= 0:
        return []
    least = max(BREAK_LEAST_SECONDS, BREAK_LEAST_SHARE * active)
    long = sorted((span for span in idle if span[1] - span[0] >= least),
                  key=lambda span: span[0] - span[1])[:MOST_BREAKS]
    if not long:
        return []
    shown = active * min(BREAK_SHOWN_SHARE, BREAKS_SHOWN_SHARE / len(long))
    driven_spans = _union(driven)
    return [Break(start, end, min(end - start, shown),
                  (end - start) - _overlap((start, end), driven_spans))
            for start, end in sorted(long)]


class ShownTime:
    """Where a moment is drawn on an axis with breaks: seconds from *origin*,
    less what the breaks before it were narrowed by (the page's ``toShown``)."""

    def __init__(self, breaks: Sequence[Break], origin: float) -> None:
        self._starts = [item.start - origin for item in breaks]
        self._breaks = [(item.start - origin, item.end - origin, item.shown) for item in breaks]
        self._cut: list[float] = []  # narrowed by the breaks before each
        cut = 0.0
        for start, end, shown in self._breaks:
            self._cut.append(cut)
            cut += (end - start) - shown

    def __call__(self, seconds: float) -> float:
        """*seconds* from the origin, as drawn (in seconds from the origin too)."""
        found = bisect.bisect_right(self._starts, seconds) - 1
        if found < 0:
            return seconds
        start, end, shown = self._breaks[found]
        if seconds >= end:
            return seconds - self._cut[found] - ((end - start) - shown)
        return start - self._cut[found] + (seconds - start) * shown / (end - start)

    def segments(self, end: float) -> list[Span]:
        """The stretches up to *end* drawn to scale (from, to in seconds from the origin)."""
        bounds = [-math.inf, *(value for start, stop, _ in self._breaks
                               for value in (start, stop)), math.inf]
        pairs = zip(bounds[::2], bounds[1::2], strict=True)
        return [(max(0.0, low), min(end, high)) for low, high in pairs
                if min(end, high) >= max(0.0, low)]


def _union(spans: Iterable[Span]) -> list[Span]:
    """*spans* merged where they touch or overlap, in order (an instant stays a point)."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if end < start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersection(ones: list[Span], others: list[Span]) -> list[Span]:
    """Where two sorted unions of spans overlap."""
    found: list[Span] = []
    i = j = 0
    while i < len(ones) and j < len(others):
        start, end = max(ones[i][0], others[j][0]), min(ones[i][1], others[j][1])
        if start < end:
            found.append((start, end))
        if ones[i][1] < others[j][1]:
            i += 1
        else:
            j += 1
    return found


def _gaps(spans: list[Span], first: float, last: float) -> list[Span]:
    """The stretches of *first* to *last* that the sorted union *spans* leaves out."""
    gaps: list[Span] = []
    reach = first
    for start, end in spans:
        if start > reach:
            gaps.append((reach, min(start, last)))
        reach = max(reach, end)
        if reach >= last:
            break
    if reach < last:
        gaps.append((reach, last))
    return [(start, end) for start, end in gaps if end > start]


def _overlap(span: Span, spans: list[Span]) -> float:
    """How long *span* and the sorted union *spans* overlap."""
    return sum(max(0.0, min(span[1], end) - max(span[0], start)) for start, end in spans)
