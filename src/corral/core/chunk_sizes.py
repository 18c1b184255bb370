"""``map(..., chunksize="auto")``: chunk sizes learnt from how long calls take.

A job per call costs the driver tens of microseconds, which for calls of a
few microseconds is most of the run; a fixed chunk size asks the user to know
how long their calls take. With ``"auto"`` the map starts with a call per job
and sizes each next chunk so that it runs about the backend's
:attr:`~corral.backends.base.Capabilities.chunk_seconds` (5 ms on the local
backend): tiny calls end up thousands to a job, calls that take longer than
that keep a job each (and so their own status, output and journal row).

The size follows the calls (:class:`ChunkSizer`): it grows at most eightfold
from one chunk seen to the next (one fast call cannot make a chunk of a
thousand slow ones), and falls as soon as chunks run longer. A chunk that runs
past four times its time while calls remain stops after the call that runs
(:class:`corral.runtime.chunks.ChunkRunner`), and :class:`AutoChunks` hands
the calls it left to new chunks, sized from that chunk alone, which any
worker takes: calls that turn slow do not queue behind each other on one
worker, nor chunks behind a slow one (its worker gives those back, see
:mod:`corral.core.ahead`).

A journaled rerun recognises a chunk by its key: its function, its calls,
the place of its first, and, among maps of one function that began with the
same call, which of them it belongs to (see
:func:`corral.core.identity.map_signature`). So it makes each chunk as the
earlier run made one of the same calls, whatever sizes that run chose, and
finds those that completed (see :func:`auto_chunks`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from corral.core.job import Job
from corral.runtime.chunks import PLAIN_TYPES, ChunkFailed, ChunkRunner, PlainCalls
from corral.units import format_span

__all__ = ["AutoChunks", "ChunkSizer", "EarlierChunks", "LARGEST_AUTO_CHUNK", "auto_chunks",
           "as_chunk"]

#: The most calls an automatic chunk holds: enough that a chunk of no-op calls
#: costs the driver under 1 % of its run; few enough that the driver holds a
#: map's unfinished calls in modest memory.
LARGEST_AUTO_CHUNK = 4096
#: The most a chunk size grows from one batch of chunks to the next.
_GROWTH = 8


class ChunkSizer:
    """The size of the next chunk of an automatic map, learnt from the chunks
    that ended (the feeder thread learns; the thread making chunks asks).

    The time a call takes is the time of the chunks seen so far over their
    calls, the older ones weighing half as much with each new chunk: a
    chunk's own start-up makes a chunk of one call look slow, and one chunk
    that a pause of the machine held up must not shrink the next ones much.
    """

    def __init__(self, seconds: float, largest: int = LARGEST_AUTO_CHUNK) -> None:
        #: How long a chunk should run.
        self.seconds = seconds
        self.largest = largest
        #: The size of the chunks made from now on (a power of two).
        self.size = 1
        self._calls = 0.0  # seen, weighed
        self._took = 0.0  # seconds, weighed alike
        self._lock = threading.Lock()

    def learn(self, calls: int, seconds: float, afresh: bool = False) -> None:
        """Size the next chunks knowing that a chunk of *calls* calls ran
        *seconds*; *afresh*: forgetting the chunks before (it ran past its
        budget: the calls are no longer what they were)."""
        if calls <= 0:
            return
        with self._lock:
            if afresh:
                self._calls = self._took = 0.0
            self._calls = self._calls / 2 + calls
            self._took = self._took / 2 + max(0.0, seconds)
            per_call = self._took / self._calls
            wanted = self.largest if per_call <= 0 else int(self.seconds / per_call)
            self.size = _power_of_two_at_most(max(1, min(wanted, self.size * _GROWTH,
                                                         self.largest)))


def _power_of_two_at_most(number: int) -> int:
    return 1 << (number.bit_length() - 1)


def as_chunk(calls: list[tuple]) -> list[tuple]:
    """*calls* as a chunk's first argument: marked :class:`PlainCalls` when every
    argument is a plain value (no Job to look for, no set to put in order)."""
    if all(type(argument) in PLAIN_TYPES for arguments in calls for argument in arguments):
        return PlainCalls(calls)
    return calls


class EarlierChunks(NamedTuple):
    """What a journaled rerun knows of the chunks an earlier run made of the
    same map (see :func:`auto_chunks`)."""

    #: The sizes of the chunks made at the map's call N, largest first (of
    #: every map of the same function).
    sizes_at: Callable[[int], list[int]]
    #: Whether an earlier run made a chunk of these very calls, starting at the
    #: map's call N, and whether it completed (and so would be restored).
    found: Callable[[list[tuple], int], tuple[bool, bool]]
    #: Where the first chunk made after the map's call N began (None: none).
    next_start: Callable[[int], int | None]


def auto_chunks(calls: Iterator[tuple], sizer: ChunkSizer, earlier: EarlierChunks | None = None,
                first: int = 0, begin: Callable[[tuple], object] | None = None
                ) -> Iterator[tuple[list[tuple], int]]:
    """The argument tuples of *calls* in chunks sized by *sizer*, each with the
    map's number of its first call (a ChunkRunner job's arguments).

    In a journaled rerun (*earlier*), where an earlier run completed a chunk
    of the same calls, the chunk is made as that one was, and so restored.
    Any other chunk ends no later than where the earlier run began its next
    one (of this function), so that the chunks after it start where the
    earlier run's did: after a chunk that failed, one that stopped short, or
    calls that changed. No more of the input is read than the next chunk
    holds. An error the input raises comes after the chunks of the calls read
    before it. *first* is the map's number of the first of *calls*; *begin* is
    told the arguments of the first call before any chunk is made.
    """
    ahead: list[tuple] = []
    failure: Exception | None = None
    while True:
        sizes = earlier.sizes_at(first) if earlier is not None else []
        wanted = max(sizer.size, *sizes) if sizes else sizer.size
        if failure is None and len(ahead) < wanted:
            try:
                ahead.extend(itertools.islice(calls, wanted - len(ahead)))
            except Exception as error:  # the input's: raised after what was read before it
                failure = error
        if not ahead:
            if failure is not None:
                raise failure
            return
        if begin is not None:
            begin(ahead[0])
            begin = None
            sizes = earlier.sizes_at(first) if earlier is not None else []
        size = _earlier_size(earlier, sizes, ahead, first) if earlier is not None else None
        if size is None:
            size = min(sizer.size, len(ahead))
        chunk, ahead = ahead[:size], ahead[size:]
        yield as_chunk(chunk), first
        first += len(chunk)


def _earlier_size(earlier: EarlierChunks, sizes: list[int], ahead: list[tuple],
                  first: int) -> int | None:
    """The size of the chunk to make at *first* in a rerun: that of a chunk of
    these calls an earlier run completed; else that of one it made of them
    (failed, cancelled), cut where the earlier run's next chunk began; else
    only that cut (None: no earlier chunk began after *first*)."""
    made = None
    for size in sizes:
        if size > len(ahead):
            continue
        found, restorable = earlier.found(ahead[:size], first)
        if restorable:
            return size
        if found and made is None:
            made = size
    following = earlier.next_start(first)
    if following is None:
        return made
    return min(made or len(ahead), following - first)


class AutoChunks:
    """The chunks of one automatic map (a :class:`corral.core.mapping.FollowUp`):
    sized as the calls before them ran; a chunk that ran past its budget (see
    :class:`corral.runtime.chunks.ChunkRunner`) is followed by chunks for the
    calls it left, sized from what it learnt, which run in parallel."""

    def __init__(self, sizer: ChunkSizer, make: Callable[[tuple], Job],
                 earlier: EarlierChunks | None, note: Callable[[Job, str], object],
                 begin: Callable[[tuple], object]) -> None:
        self.sizer = sizer
        self._make = make
        self._earlier = earlier
        #: Gives a job a reason without a change of status (its row names every
        #: call it was given: the reason says which it ran).
        self._note = note
        #: Told the first call's arguments, before any chunk is made (and keyed).
        self._begin = begin

    def chunks(self, calls: Iterator[tuple]) -> Iterator[tuple[list[tuple], int]]:
        """The arguments of the chunk jobs of a map of *calls*."""
        return auto_chunks(calls, self.sizer, self._earlier, begin=self._begin)

    def learn(self, job: Job) -> None:
        ran = _calls_run(job)
        if ran and job.started is not None and job.ended is not None:
            self.sizer.learn(ran, job.ended - job.started, afresh=ran < len(_chunk_of(job)[0]))

    def rest(self, job: Job) -> list[Job]:
        calls, first = _chunk_of(job)
        ran = _calls_run(job)
        if ran is None or ran >= len(calls):
            return []
        if job.exception(0) is None and job.reason is None:  # (a failure's names its call;
            # a restored chunk's says so)
            runner: ChunkRunner = job._record.spec.task.fn  # type: ignore[union-attr,assignment]
            self._note(job, f"stopped after call {first + ran - 1}, past its "
                            f"{_span(runner.budget_s or 0.0)}; calls {first + ran}-"
                            f"{first + len(calls) - 1} went to other jobs")
        return [self._make(arguments) for arguments in auto_chunks(
            iter(calls[ran:]), self.sizer, self._earlier, first + ran)]

    def stops_short(self, job: Job, value: Any) -> bool:
        return len(value) < len(_chunk_of(job)[0])


def _span(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else format_span(seconds)


def _chunk_of(job: Job) -> tuple[list[tuple], int]:
    """A chunk job's calls and the map's number of the first."""
    return job._record.spec.task.args  # type: ignore[union-attr]


def _calls_run(job: Job) -> int | None:
    """How many calls an ended chunk job ran (those before a stop, an abort);
    None if it did not run them (cancelled, killed, lost)."""
    try:
        error = job.exception(0)
    except BaseException:  # cancelled
        return None
    if error is None:
        return len(job.result(0))
    return len(error.values) if isinstance(error, ChunkFailed) else None
