"""Which ready jobs start now: priorities, capacity, queues, tokens and backfill.

Ready jobs wait in one heap ordered by (higher priority, earlier submission).
A pass pops jobs while there is room:

* a job whose named queue is full is *parked* in that queue's own heap and
  comes back when the queue frees a slot (so a long queue of io jobs does not
  get rescanned on every pass);
* the first job that does not fit for lack of cores, memory, GPUs or tokens
  becomes the *head*; smaller jobs behind it may backfill around it, but only
  while that cannot starve it: a job whose walltime ends before the head
  could start anyway always may, any other job only until the head has been
  passed over ``MAX_BYPASS`` times. After that the head's share of what is
  free now is held for it, and a job passes only in what is free beyond that
  share: a head waiting for a token or for memory keeps its own cores, not
  every free core, and jobs that need neither go on starting (attack review: the
  whole pass stopped there, and three of four cores idled for as long as a
  licence job ran).

Every job a pass looks at and leaves waiting is told why (``on_waiting``):
the resource it lacks, its full queue, the head it must not pass, or, for the
next job in line when the pass stops early, all cores busy or ``max_jobs``
reached. The callback fires only when that reason changes, so a job waiting
through a thousand passes for the same cores is one journal update, not a
thousand; jobs deeper in the heap that no pass looked at keep their reason.
A job that no pass looked at has one all the same: after the pass that
follows its queueing, each newcomer still waiting is told once
(:meth:`Packer.tell_newcomers`), so ``corral status`` says why every queued
job waits, not only the first in line's.

A backend whose workers take jobs ahead (``queues_ahead``) is handed, once
every core is busy, jobs to run after a running one (:meth:`Packer.select_ahead`):
only the job first in line, and only behind a running job that asks for the
very same room (cores, memory, tokens, queue; no GPUs). Such a job takes no
room of its own; when the job before it ends it inherits that job's room.
So no job passes one that waits for room, priorities keep their order, and
the packing is the same as if the job had started a moment later.

Only the control-loop thread uses a :class:`Packer`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from corral.status import JobStatus
from corral.units import format_memory

if TYPE_CHECKING:
    from corral.backends.base import Capacity
    from corral.core.record import JobRecord

__all__ = ["Packer", "MAX_BYPASS", "BACKFILL_DEPTH"]

MAX_BYPASS = 32
"""How many later jobs may start ahead of a blocked job before its room is held."""

BACKFILL_DEPTH = 256
"""How far behind a blocked job one pass looks for jobs that fit."""

_Entry = tuple[int, int, "JobRecord"]


class Packer:
    """Tracks free resources and decides what starts. See the module docstring."""

    def __init__(self, capacity: Capacity, max_jobs: int | None,
                 queues: Mapping[str, int], tokens: int) -> None:
        self.free_cores = math.inf if capacity.cores is None else capacity.cores
        self.free_memory = math.inf if capacity.memory_mb is None else capacity.memory_mb
        self.free_gpus = math.inf if capacity.gpus is None else capacity.gpus
        self.free_tokens = tokens
        self.max_jobs = math.inf if max_jobs is None else max_jobs
        self.queue_limits = dict(queues)
        self.queue_running = {name: 0 for name in queues}
        self._parked: dict[str, list[_Entry]] = {name: [] for name in queues}
        self._ready: list[_Entry] = []
        self._sequence = itertools.count(1)  # (0: a job never placed, see push)
        self.running: dict[int, JobRecord] = {}  # by id(job): what holds resources now
        #: Jobs handed ahead: by id(job), the line it is in: a running job
        #: first, then those queued behind it, each taking the room next.
        self._line_of: dict[int, deque[JobRecord]] = {}
        self.pushes = 0  # jobs pushed so far: tells the engine something new is ready
        #: Bumped whenever room is taken or given back or a line grows; with the
        #: job first in line and its status (cancelled?), it says when select_ahead
        #: found nothing and nothing has changed since (the loop asks at every turn).
        self._changes = 0
        self._nothing_ahead: tuple[int, int, JobStatus] | None = None
        #: Called as ``on_waiting(job, reason)`` when a QUEUED job's reason for
        #: waiting changes (see the module docstring); set by the engine.
        self.on_waiting: Callable[[JobRecord, str], object] | None = None
        #: Jobs pushed since :meth:`tell_newcomers` last ran.
        self._newcomers: list[JobRecord] = []

    def __len__(self) -> int:
        return len(self._ready) + sum(len(parked) for parked in self._parked.values())

    def has_waiting(self) -> bool:
        """Whether any job waits here, or any is still to be told why: when
        none does, a pass would do nothing (most passes of the control loop,
        which wakes for every update)."""
        return bool(self._ready or self._newcomers) or any(self._parked.values())

    def hold_place(self, job: JobRecord) -> None:
        """Give *job*, which waits for its dependencies, its place in line now:
        pushed once they complete (with *keep_place*), it goes ahead of the jobs
        submitted after it, as Dask and a cluster's age priority order them
        (cold review: a pipeline's next step waited behind a whole map
        submitted after it)."""
        job.place = next(self._sequence)

    def push(self, job: JobRecord, keep_place: bool = False) -> None:
        """Make a QUEUED job a candidate; *keep_place*: where it was in line
        before (a job given back unstarted, a retry), else behind every job
        queued so far."""
        self.pushes += 1
        self._changes += 1
        if not keep_place or not job.place:  # (one never placed here: taken up from a
            # cluster after a driver died; a tie of places would compare the jobs themselves)
            job.place = next(self._sequence)
        heapq.heappush(self._ready, (-job.spec.priority, job.place, job))
        self._newcomers.append(job)

    def select(self, now: float) -> list[JobRecord]:
        """Take resources for the jobs that start now and return them in order."""
        started: list[JobRecord] = []
        put_back: list[_Entry] = []
        head: JobRecord | None = None
        shadow: list[float | None] = []  # computed at most once per pass
        looked_past_head = 0
        ready = self._ready
        self._unpark()
        while ready and len(self.running) < self.max_jobs and self.free_cores >= 1:
            entry = heapq.heappop(ready)
            job = entry[2]
            if job.status is not JobStatus.QUEUED:
                continue  # cancelled or removed while it waited
            queue = job.spec.queue
            if queue is not None and self.queue_running[queue] >= self.queue_limits[queue]:
                self._tell(job, f"queue {queue!r} is full ({self.queue_limits[queue]} running)")
                heapq.heappush(self._parked[queue], entry)
                continue
            if self._fits(job):
                if head is None or self._may_pass(job, head, now, shadow):
                    self._take(job, now)
                    started.append(job)
                else:
                    self._tell(job, f"behind job {head.id}, which waits for room first")
                    put_back.append(entry)
            else:
                self._tell(job, self._shortfall(job))
                head = head or job
                put_back.append(entry)
            if head is not None:
                looked_past_head += 1
                if looked_past_head >= BACKFILL_DEPTH or (
                        head.bypassed >= MAX_BYPASS and self._nothing_may_pass(head, now, shadow)):
                    break
        for entry in put_back:
            heapq.heappush(ready, entry)
        self._tell_next_in_line()
        return started

    def _tell(self, job: JobRecord, reason: str) -> None:
        if self.on_waiting is not None and job.reason != reason:
            self.on_waiting(job, reason)

    def _tell_next_in_line(self) -> None:
        """A pass that stopped for want of any core or job slot looked at no
        one: the job first in line still learns why it waits (one job, O(1))."""
        if not self._ready or self.on_waiting is None:
            return
        job = self._ready[0][2]
        if job.status is not JobStatus.QUEUED:
            return
        if len(self.running) >= self.max_jobs:
            self._tell(job, f"waiting for a job slot (max_jobs={self.max_jobs})")
        elif self.free_cores < 1:
            self._tell(job, self._shortfall(job))

    def tell_newcomers(self) -> None:
        """Tell each job queued since the last call that still waits, without a
        reason yet, why it waits: once, O(1) a job (the engine calls this after
        a pass and the jobs it handed ahead, which are not waiting)."""
        newcomers, self._newcomers = self._newcomers, []
        if self.on_waiting is None:
            return
        for job in newcomers:
            if job.status is JobStatus.QUEUED and job.reason is None:
                self._tell(job, self._why_waiting(job))

    def _why_waiting(self, job: JobRecord) -> str:
        queue = job.spec.queue
        if queue is not None and self.queue_running[queue] >= self.queue_limits[queue]:
            return f"queue {queue!r} is full ({self.queue_limits[queue]} running)"
        if len(self.running) >= self.max_jobs:
            return f"waiting for a job slot (max_jobs={self.max_jobs})"
        if not self._fits(job):
            return self._shortfall(job)
        return "waiting for the jobs ahead of it to start"

    def _shortfall(self, job: JobRecord) -> str:
        """What *job* lacks to start now, for its QUEUED reason. Free amounts
        are left out on purpose: they change with every job that ends, and
        each change of a reason is a journal update."""
        need = job.spec.resources
        if need.cores > self.free_cores:
            return f"waiting for {_count(need.cores, 'free core')}"
        if (need.memory_mb or 0) > self.free_memory:
            return f"waiting for {format_memory(need.memory_mb or 0)} of free memory"
        if need.gpus > self.free_gpus:
            return f"waiting for {_count(need.gpus, 'free GPU')}"
        if job.spec.tokens > self.free_tokens:
            return f"waiting for {_count(job.spec.tokens, 'free token')}"
        return "waiting for room"

    def select_ahead(self, depth: Callable[[JobRecord], int],
                     ends_soon: Callable[[JobRecord], bool]) -> list[tuple[JobRecord, JobRecord]]:
        """Jobs to queue behind running ones, as ``(job, the job it runs after)``
        in order (see the module docstring): at most ``depth(job)`` behind each
        running job that ``ends_soon``."""
        chosen: list[tuple[JobRecord, JobRecord]] = []
        ready = self._ready
        if not ready or self._nothing_ahead == (self._changes, id(ready[0][2]),
                                                ready[0][2].status):
            return chosen  # (time only makes running jobs less likely to end soon)
        shortest: dict[tuple, list[tuple[int, int, JobRecord]]] = {}  # room -> heap of lines
        while ready:
            job = ready[0][2]
            if job.status is not JobStatus.QUEUED:
                heapq.heappop(ready)  # cancelled or removed while it waited
                continue
            limit = depth(job)
            room = _room(job)
            if limit <= 0 or room is None:
                break
            heap = shortest.get(room)
            if heap is None:
                # Only lines down to half their length are filled (up to the
                # full length): lines refilled in bulk, not by one job after
                # every job that ends, make one pass and one message to a
                # worker carry many jobs.
                low = limit // 2
                heap = shortest[room] = [
                    (queued, index, holder)
                    for index, holder in enumerate(self.running.values())
                    if (queued := len(self._line_of.get(id(holder), "x")) - 1) <= low
                    and _room(holder) == room and ends_soon(holder)]
                heapq.heapify(heap)
            if not heap or heap[0][0] >= limit:
                break
            queued, index, holder = heap[0]
            heapq.heapreplace(heap, (queued + 1, index, holder))
            heapq.heappop(ready)
            line = self._line_of.get(id(holder))
            if line is None:
                line = self._line_of[id(holder)] = deque((holder,))
            chosen.append((job, line[-1]))
            line.append(job)
            self._line_of[id(job)] = line
        if chosen:
            self._changes += 1
        elif ready:
            self._nothing_ahead = (self._changes, id(ready[0][2]), ready[0][2].status)
        return chosen

    def lines_of_running(self) -> list[deque[JobRecord] | None]:
        """Each running job's line (it first, then the jobs queued in its
        worker behind it), None for one with nothing queued behind it."""
        line_of = self._line_of
        return [line_of.get(key) for key in self.running]

    def release(self, job: JobRecord) -> None:
        """Give back what *job* held; a parked job of its queue becomes a candidate.
        A job queued behind it takes its room instead (see :meth:`select_ahead`)."""
        self._changes += 1
        line = self._line_of.pop(id(job), None)
        if line is not None and line[0] is not job:  # queued, it held nothing: leave the line
            line.remove(job)
            return
        if self.running.pop(id(job), None) is None:
            return
        if line is not None:
            line.popleft()
            if line:  # the next job of the line starts in its room
                successor = line[0]
                successor.taken_at = time.monotonic()
                self.running[id(successor)] = successor
                return
        resources = job.spec.resources
        self.free_cores += resources.cores
        self.free_memory += resources.memory_mb or 0
        self.free_gpus += resources.gpus
        self.free_tokens += job.spec.tokens
        if job.spec.queue is not None:
            self.queue_running[job.spec.queue] -= 1

    def _unpark(self) -> None:
        """Move parked jobs back, as many per queue as it has free slots."""
        for queue, parked in self._parked.items():
            room = self.queue_limits[queue] - self.queue_running[queue]
            while parked and room > 0:
                entry = heapq.heappop(parked)
                if entry[2].status is JobStatus.QUEUED:  # skip cancelled or removed ones
                    heapq.heappush(self._ready, entry)
                    room -= 1

    def _fits(self, job: JobRecord, beside: JobRecord | None = None) -> bool:
        """Whether *job* fits in what is free now; *beside* a head whose room
        is held, in what is free beyond the head's share of it."""
        resources = job.spec.resources
        if beside is None:
            return (resources.cores <= self.free_cores
                    and (resources.memory_mb or 0) <= self.free_memory
                    and resources.gpus <= self.free_gpus
                    and job.spec.tokens <= self.free_tokens)
        held = beside.spec.resources
        return (resources.cores <= self.free_cores - min(self.free_cores, held.cores)
                and (resources.memory_mb or 0)
                <= self.free_memory - min(self.free_memory, held.memory_mb or 0)
                and resources.gpus <= self.free_gpus - min(self.free_gpus, held.gpus)
                and job.spec.tokens
                <= self.free_tokens - min(self.free_tokens, beside.spec.tokens))

    def take_running(self, job: JobRecord, now: float) -> None:
        """Hold the room of *job*, which runs already whether or not there is
        room (one an earlier driver left in a cluster, followed again)."""
        self._take(job, now)

    def _take(self, job: JobRecord, now: float) -> None:
        resources = job.spec.resources
        self.free_cores -= resources.cores
        self.free_memory -= resources.memory_mb or 0
        self.free_gpus -= resources.gpus
        self.free_tokens -= job.spec.tokens
        if job.spec.queue is not None:
            self.queue_running[job.spec.queue] += 1
        job.taken_at = now
        self.running[id(job)] = job
        self._changes += 1

    def _may_pass(self, job: JobRecord, head: JobRecord, now: float,
                  shadow: list[float | None]) -> bool:
        if not shadow:
            shadow.append(self._head_start_estimate(head))
        limit = job.spec.kill_after_s
        if limit is not None and shadow[0] is not None and now + limit <= shadow[0]:
            return True  # it ends before the head could start: it delays nobody
        if head.bypassed < MAX_BYPASS:
            head.bypassed += 1
            return True
        return self._fits(job, beside=head)

    def _nothing_may_pass(self, head: JobRecord, now: float,
                          shadow: list[float | None]) -> bool:
        """Whether no job can pass a head whose room is held now: no core is
        free beyond its share, and no job can end before it could start (or
        that is not known). Ends a pass that would only look on for nothing."""
        if self.free_cores - min(self.free_cores, head.spec.resources.cores) >= 1:
            return False
        if not shadow:
            shadow.append(self._head_start_estimate(head))
        return shadow[0] is None or shadow[0] <= now

    def _head_start_estimate(self, head: JobRecord) -> float | None:
        """When enough running jobs will have ended for *head* to fit, if every
        running job has a time limit; None when that cannot be known."""
        ends = []
        for job in self.running.values():
            limit = job.spec.kill_after_s
            if limit is None:
                return None
            ends.append((job.taken_at + limit, job))
        need = head.spec.resources
        cores, memory, gpus, tokens = (self.free_cores, self.free_memory,
                                       self.free_gpus, self.free_tokens)
        for end, job in sorted(ends, key=lambda pair: pair[0]):
            held = job.spec.resources
            cores += held.cores
            memory += held.memory_mb or 0
            gpus += held.gpus
            tokens += job.spec.tokens
            if (need.cores <= cores and (need.memory_mb or 0) <= memory
                    and need.gpus <= gpus and head.spec.tokens <= tokens):
                return end
        return None



def _room(job: JobRecord) -> tuple | None:
    """What a job holds while it runs, to match jobs queued behind it; None for
    a job that never queues behind another (GPUs are handed out per job)."""
    spec = job.spec
    if spec.resources.gpus:
        return None
    return (spec.resources.cores, spec.resources.memory_mb, spec.tokens, spec.queue)


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"
