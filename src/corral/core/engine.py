"""The control loop: the one thread that owns every job's scheduling state.

Other threads never touch that state; they post callables to the loop's inbox
(:meth:`Engine.post`, or :meth:`Engine.call` to wait for the answer) and wake
the backend. One iteration of the loop:

1. run what the inbox holds (new jobs, cancel, pause, abort, ...);
2. start the ready jobs that fit (see :mod:`corral.core.packing`);
3. wait in ``backend.updates()`` until something happens or a deadline is due;
4. apply the backend's updates: start timers, settle finished jobs (retry,
   ``on_finish``, resolve the Future), release or cancel dependents;
5. fire due deadlines: timeouts, and the end of an abort's grace period.

The loop works on the engine's own records of jobs
(:class:`corral.core.record.JobRecord`; named ``job`` in this module), never
on the users' :class:`~corral.Job` handles, which it only resolves (through
``record.future``) and hands to callbacks and events.

Every state change goes through :meth:`Engine._move` (and so through
:meth:`JobRecord.move`, which checks it against the table in
:mod:`corral.status`) and emits one event.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from corral.core.ahead import AheadPolicy
from corral.core.outcome import (EndingRules, decide_outcome, raised_traceback, stderr_tail)
from corral.core.submission import submission_for
from corral.core.record import COMPLETED_ALL_THE_SAME, DeadlineKind, JobRecord, KillIntent
from corral.core.resume import run_again
from corral.journal.kept_result import KEPT_RESULT
from corral.result import Result
from corral.errors import CorralError, DriverTerminated, JobFailed
from corral.backends import backend_info
from corral.backends.base import Update
from corral.events import Event
from corral.runtime.outcomes import outcomes_directory
from corral.runtime.payload import Upstream
from corral.runtime.spool import keep_earlier_attempt
from corral.core import driver_signals
from corral.runtime.threads import (in_program_code_for, logged_and_passed, quiet_thread,
                                    signals_allowed, start_quietly)
from corral.spec import Call, FunctionRef
from corral.status import ACTIVE, PENDING, JobStatus, retry_reason, upstream_reason
from corral.core.summary import RunTally
from corral.core.runlog import warn_user

if TYPE_CHECKING:
    from corral.backends.base import Backend, Capabilities, ClusterBackend, QueuingBackend
    from corral.core.job import Job
    from corral.core.notify import Notifier
    from corral.core.packing import Packer
    from corral.journal.store import Journal

__all__ = ["Engine", "LoopStuck", "STUCK_S"]

log = logging.getLogger("corral.engine")  # the name users filter on; kept when modules move

_S = JobStatus
#: The kill intents of a job abort() asked to stop: a timeout that fires then
#: keeps it aborted (it ends CANCELLED, not TIMED_OUT and retried).
_ABORTING = frozenset({KillIntent.ABORT, KillIntent.ABORT_KILLED, KillIntent.ABORT_TIMED_OUT})
#: Seconds a job handed to a worker still starting may wait for it, on top of
#: its timeout, before the timeout kills it anyway: the worker says when the
#: job really starts, and the timeout counts from then (see Update.starting);
#: one that never does (a start-up that hangs) is bounded all the same.
WORKER_START_ALLOWANCE_S = 30.0


#: Seconds a driver told to end waits for a control loop held in a callback.
STUCK_S = 5.0

#: A deadline due after the loop has not read the backend for this long (held by
#: a callback) is fired only once what the backend has for it is read: a job
#: that ended meanwhile keeps its outcome, not "timed out; killed".
READ_AGAIN_AFTER_S = 0.05


def _with_doubt(reason: str, job: JobRecord,
                doubts: Mapping[int | str, str] | None) -> str:
    """A cancelled job's *reason*, with what the backend doubts of its end (a
    cluster that refused to delete it: cold review)."""
    doubt = None if doubts is None else doubts.get(job.dispatched_id)
    return reason if doubt is None else f"{reason}; but {doubt}"


class LoopStuck(DriverTerminated):
    """The driver is ending and a callback of the program's holds its control
    loop (see :meth:`Engine.stuck`). A SystemExit, with the status the signal
    gives (143, 130): wherever it is raised, uncaught it ends the program quietly."""


class _Reply:
    """The answer to an :meth:`Engine.call`, filled in by the loop."""

    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


#: How long pause(), cancel() and remove() wait for a worker to give back the
#: jobs waiting in its queue: one whose job holds the GIL cannot answer. A
#: job cancelled or removed that is not back by then is settled CANCELLED all
#: the same (see Engine._settle_unanswered); a paused one stays SUBMITTED
#: until it is back, and does not start meanwhile.
TAKE_BACK_LIMIT_S = 1.0

#: After a cancel kills a running job, how long no other job starts. A program
#: that cancels its jobs one by one, in the order it submitted them, would
#: otherwise see each queued job started in the room the cancel before freed,
#: and killed by the next (1,000 such cancels took 21 s, each job begun).
CANCEL_SETTLE_S = 0.03
#: ... and at most this long from the first of cancels that follow each other
#: closely, after which cancels hold nothing back for as long: a program that
#: cancels a running job every few milliseconds for good does not stop most
#: starts.
CANCEL_SETTLE_MAX_S = 1.0


class Engine:
    """Owns scheduling state and runs the control loop on its own thread."""

    def __init__(self, backend: Backend, packer: Packer, run_dir: Path,
                 on_finish: Callable[[Job], Any] | None, abort_grace: float,
                 journal: Journal | None = None, notifier: Notifier | None = None,
                 capabilities: Capabilities | None = None) -> None:
        self.backend = backend
        self.backend_name = backend.name
        #: Why the control loop stopped for good, if it crashed: no job can run any more.
        self.crash: BaseException | None = None
        #: What the backend does, as registered (see corral.backends.base.Capabilities):
        #: the engine acts on these flags, never on the backend's name or class.
        self.capabilities = capabilities or backend_info(backend.name).capabilities
        self._chains = self.capabilities.chains_dependencies
        #: The same backend where it chains, holds or outlives its driver: it then
        #: answers ClusterBackend's calls (can_chain, hold/release, attach).
        caps = self.capabilities
        self._cluster: ClusterBackend | None = (
            cast("ClusterBackend", backend)
            if caps.chains_dependencies or caps.outlives_driver or caps.holds else None)
        self._cluster_walltime = self.capabilities.enforces_walltime
        #: A backend with a costly submit (one sbatch) collects jobs that become
        #: ready within this many seconds into one batch (one array).
        self._gather_s = float(getattr(backend, "gather_s", 0.0))
        self._gather_until: float | None = None
        #: Until when no job starts after a cancel killed a running one, and
        #: since when cancels have held starts back (see CANCEL_SETTLE_S).
        self._settle_until: float | None = None
        self._settling_since: float | None = None
        self._unsettled_until = 0.0  # (after the longest hold, none for as long)
        self._pushes_seen = 0
        #: How many jobs to queue behind a running one, where workers take them
        #: ahead (see corral.core.ahead); None where the backend does not.
        self._pace = AheadPolicy() if self.capabilities.queues_ahead else None
        self._said_restored = False  # (that the run resumes: said at the first job restored)
        self._said_run_again = False  # (that restored jobs run again after a parent: said once)
        self.packer = packer
        packer.on_waiting = self.note_reason  # why QUEUED jobs wait, for status
        self.run_dir = run_dir
        self._run_dir_text = os.path.join(run_dir, "")  # job directories: this + id
        self.on_finish = on_finish
        self.abort_grace = abort_grace
        self.journal = journal
        self.notifier = notifier
        #: The run directory is deleted at shutdown: messages must not point into it.
        self.files_are_temporary = False
        self.tally = RunTally()  # how finished jobs ended, for the run's closing line
        self._outcomes_dir = None if journal is None else outcomes_directory(journal.run_dir)
        self.listeners: list[Callable[[Event], Any]] = []
        #: Each listener that raised, by id(), and on how many events.
        self._listener_failures: dict[int, tuple[Callable[[Event], Any], int]] = {}
        #: Results of finished jobs that were handed over with dispatch(), for
        #: Scheduler.collect(); jobs from submit() and the like are not kept here.
        self.results: deque[Result] = deque()
        self.results_ready = threading.Condition()
        self.unfinished = 0
        self.uncollected = 0  # unfinished jobs whose Result will go to ``results``
        #: Told of every job made final (loop thread), e.g. the scheduler's registry.
        self.on_final: Callable[[JobRecord], Any] | None = None
        #: Called with the Job of each job removed by clear() (see cancel_pending).
        self.on_removed: Callable[[Job], Any] | None = None
        #: The Jobs of records clear() removes once a worker has given them back, by id().
        self._removing: dict[int, Job | None] = {}
        self.paused = False
        self._inbox: deque[tuple[Callable[..., Any], tuple, _Reply | None]] = deque()
        self._live: dict[int, JobRecord] = {}        # id(job) -> every job not yet final
        self._active: dict[int | str, JobRecord] = {}  # job.id -> handed to the backend, not ended
        #: (when, sequence, kind, job, attempt); the job held weakly, so that a
        #: long timeout does not keep a job that finished early alive.
        self._deadlines: list[tuple[float, int, DeadlineKind, weakref.ref[JobRecord], int]] = []
        self._to_resolve: list[tuple[JobRecord, BaseException | None]] = []
        self._sequence = itertools.count()
        self._closing = False
        #: Paused by a person (``corral pause`` of a script's run): such a pause
        #: holds through the script's end, which waits for a ``corral resume``.
        self.held_by_person = False
        self._finishing = False  # shutting down, the jobs given finish: no pause (set_paused)
        self._thread: threading.Thread | None = None
        self._said_stuck = False  # (see stuck_error)
        #: Since when the loop has been at work without waiting (monotonic;
        #: None while it waits): see :meth:`stuck`.
        self._busy_since: float | None = time.monotonic()
        self._read_at = time.monotonic()  # when the backend's updates were last read
        self._thread_lock = threading.Lock()
        self.stopped = threading.Event()    # the loop ended: no more calls are answered
        self._inbox_closed = threading.Event()  # ... and it answered those it had
        self.on_stopped: Callable[[], Any] | None = None  # cleanup, run after the loop
        self.finished = threading.Event()   # ... and after on_stopped
        #: Counts the loop's turns that applied the backend's updates, for the
        #: threads that wait for a job to come back (:meth:`wait_taken_back`);
        #: told only while one waits (``_progress_waiters``), so that a loop
        #: nobody watches takes no lock for it.
        self._progress = threading.Condition()
        self._progress_turns = 0
        self._progress_waiters = 0

    # -- talking to the loop from other threads ---------------------------------------

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop thread soon; do not wait. Once
        the loop has ended (or a loop never started was closed) nothing is run:
        a new loop on a closed backend would crash."""
        if self.stopped.is_set():
            log.debug("%s posted after the control loop ended: not run",
                      getattr(function, "__name__", function))
            self._fail_if_new_jobs(function, args)
            return
        self._inbox.append((function, args, None))
        self._ensure_thread()
        self.backend.wake()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` on the loop thread and return its result.

        Runs it directly when called from the loop thread itself (an event
        callback) or when no loop runs (nothing dispatched yet, or closed).
        """
        thread = self._thread
        if thread is None or thread is threading.current_thread() or self.stopped.is_set():
            value = function(*args)
            self._resolve_finished()
            return value
        reply = _Reply()
        request = (function, args, reply)
        self._inbox.append(request)
        self.backend.wake()
        while not reply.done.wait(0.5):
            if self.stopped.is_set():
                return self._answer_after_stop(request)
            if self.stuck():
                raise self.stuck_error()
        if reply.error is not None:
            raise reply.error
        return reply.value

    def _answer_after_stop(self, request: tuple[Callable[..., Any], tuple, _Reply]) -> Any:
        """Answer a call the loop ended without seeing: once the loop has
        answered its last calls it owns no state any more, so run it here, as
        :meth:`call` does for a loop that has stopped. (Not a join: the loop
        thread's last act, on_stopped, may wait for the calling thread.)"""
        function, args, reply = request
        self._inbox_closed.wait()
        if not reply.done.is_set():
            try:
                self._inbox.remove(request)
            except ValueError:  # the loop's last round answered it after all
                pass
            else:
                reply.value = function(*args)
                reply.done.set()
        reply.done.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is None or thread.ident is None:
            with self._thread_lock:
                if self._thread is None:
                    # Held before it starts: a SIGTERM's exception raised as it started
                    # left it running unknown, and close() closed the backend under it
                    # (attack review: "control loop crashed").
                    self._thread = quiet_thread(self._run, name="corral-control-loop")
                if self._thread.ident is None:  # (not started: the next post starts it)
                    start_quietly(self._thread)

    def close(self, wait: bool) -> None:
        """Let the loop end once every job is final, then close the backend."""
        with self._thread_lock:  # (never started: a signal came between the two)
            loop_runs = self._thread is not None and self._thread.ident is not None
        if not loop_runs:
            self._finishing = True  # (no pause from now on, as after a loop's close)
            self.paused = False  # (nothing was dispatched: nothing is held)
            self.backend.close()
            self.stopped.set()
            self._run_on_stopped()
            return
        self.post(self._begin_close)
        if wait:
            assert self._thread is not None
            self._thread.join()
            self.finished.wait()

    def set_paused(self, paused: bool, recorded: bool = True,
                   by_person: bool = False) -> list[int | str]:
        """Pause or resume; return the ids of the jobs asked back from the
        workers' queues (see :meth:`still_queued_ahead`). Not *recorded*: the
        journal does not keep it (a daemon's own hold, see corral.cli.daemon,
        must not leave the run paused if the daemon dies). *by_person*: a
        ``corral pause`` of a script's run, which holds even while the script
        waits for its jobs at its end (see :meth:`resume_to_finish`).

        Raises:
            RuntimeError: a pause of the program's own once the scheduler
                shuts down, finishing what was dispatched (nobody would
                resume it: it would wait for ever).
        """
        if paused and self._finishing and not by_person:
            raise RuntimeError("the scheduler was shut down: it finishes the jobs it was given, "
                               "and cannot be paused")
        if not paused and self.held_by_person and not by_person:
            # The program's own resume() lifts the program's pause only: a
            # person who paused the run from outside resumes it (cold review:
            # a script's pause()/resume() around a batch of submits started
            # jobs under an operator's corral pause, without a word).
            log.warning("resume() leaves the run paused: a person paused it (corral pause); "
                        "corral resume lifts that")
            return []
        self.held_by_person = paused and (by_person or self.held_by_person)
        was, self.paused = self.paused, paused
        if paused and not was and self._finishing:
            self._say_the_end_waits()
        self._gather_until = None  # paused, nothing is submitted: no window to wait for
        queued: list[int | str] = []
        if paused and self._pace is not None:  # what waits in a worker's queue comes back
            queued = self.queued_ahead_ids()
            if queued:
                cast("QueuingBackend", self.backend).give_back(queued)
        holds = self.capabilities.holds and self._cluster is not None
        if holds and was != paused:  # a cluster holds what it has not started
            # Release asks about running jobs too: a hold that reached a job as it
            # started may have stopped it running (LSF), and the backend knows which.
            asked = (_S.SUBMITTED,) if paused else (_S.SUBMITTED, _S.RUNNING)
            waiting = [job.dispatched_id for job in self._active.values()
                       if job.status in asked]
            if waiting:
                self._hold_in_cluster(paused, waiting)
        if self.journal is not None and recorded:
            self.journal.set_meta("paused", "1" if paused else "0")
        return queued

    def still_queued_ahead(self, job_ids: list[int | str]) -> list[int | str]:
        """Those of *job_ids* still waiting in a worker's queue: neither given
        back nor started."""
        return [job_id for job_id in job_ids
                if (job := self._active.get(job_id)) is not None and self._queued_ahead(job)]

    def _begin_close(self) -> None:
        self._closing = True
        self.resume_to_finish()

    def _say_the_end_waits(self) -> None:
        log.warning("paused by corral pause, the scheduler's end waits for its %d unfinished "
                    "jobs until corral --run %s resume (or cancel, clear)",
                    self.unfinished, self.run_dir)

    def queued_count(self) -> int:
        """How many jobs wait in the queue now (the packer's heap keeps a
        cancelled job until it comes up: its length would count those too)."""
        return sum(job.status is _S.QUEUED for job in self._live.values())

    def resume_to_finish(self) -> None:
        """Resume a paused scheduler that is shutting down, and refuse pauses
        from now on: closing means finishing what was dispatched (loop thread).
        A pause by a person (``corral pause``) holds: they resume it, or
        cancel what it holds, from where they paused it."""
        first, self._finishing = not self._finishing, True
        if self.paused and self.held_by_person and self.unfinished:
            if first:
                self._say_the_end_waits()
            return
        queued = self.queued_count()
        if self.paused and queued:
            log.warning("shutting down a paused scheduler: resuming to finish %d queued jobs",
                        queued)
        if self.paused and not self.unfinished:
            # Nothing to finish: the journal keeps the run paused, for the daemon
            # started after this one (a script starts unpaused whatever it says).
            self.paused = False
        elif self.paused:
            self.set_paused(False)

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._handle_inbox()
                if not self.paused:
                    self._start_ready()
                self._resolve_finished()
                if self._closing and not self._live and not self._active:
                    break
                if self.journal is not None:
                    self.journal.flush()  # sent every few milliseconds, not every iteration
                self._busy_since = None  # (waiting: it would answer a call at once)
                self._hold_replies()
                updates = self._read_updates(self._wait_time())
                self._busy_since = self._read_at
                self._apply_all(updates)
                self._fire_deadlines()
                if not self.paused:
                    self._start_ready()  # workers get their next job before anyone is woken
                self._resolve_finished()
        except BaseException as crash:  # a bug in corral: fail loudly, lose nothing silently
            log.exception("corral's control loop crashed")
            self._fail_everything(crash)
        finally:
            self._say_listener_failures()
            try:
                self.backend.close()
            finally:
                self._flush_journal()
                self.stopped.set()
                self._tell_progress()  # nothing will come back now
                self._answer_leftover_calls()
                self._run_on_stopped()

    def _run_on_stopped(self) -> None:
        # Once only, and let go of it: a Job the program keeps holds this
        # engine, and must not keep the Scheduler behind the callback alive.
        on_stopped, self.on_stopped = self.on_stopped, None
        try:
            if on_stopped is not None:
                on_stopped()
        except Exception:
            log.exception("cleanup after the control loop failed")
        finally:
            self.finished.set()

    def _flush_journal(self) -> None:
        if self.journal is not None:
            try:
                self.journal.flush(force=True)
            except Exception:
                log.exception("could not write the journal")

    def _handle_inbox(self) -> None:
        inbox = self._inbox
        while inbox:
            function, args, reply = inbox.popleft()
            try:
                value = function(*args)
                self._resolve_finished()
            except Exception as error:
                if reply is None:
                    log.exception("scheduler request %s failed",
                                  getattr(function, "__name__", function))
                    continue
                reply.error = error
            else:
                if reply is not None:
                    reply.value = value
            if reply is not None:
                reply.done.set()

    def _wait_time(self) -> float | None:
        if self._inbox:
            return 0
        wait = None
        if self._deadlines:
            wait = max(0.0, self._deadlines[0][0] - time.monotonic())
        for until in (self._gather_until, self._settle_until):
            if until is not None and not self.paused:
                left = max(0.0, until - time.monotonic())
                wait = left if wait is None else min(wait, left)
        if self.journal is not None:
            due = self.journal.due_in()
            if due is not None and (wait is None or due < wait):
                wait = due
        return wait

    # -- state changes -----------------------------------------------------------------

    def _move(self, job: JobRecord, new: JobStatus, reason: str | None = None,
              at: float | None = None) -> None:
        """Change *job*'s status, in the journal as made *at* (if not now)."""
        if new is _S.CANCELLED and job.status is _S.SUBMITTED and job.started is None:
            # Cancelled in Dask's or a cluster's queue: an attempt that never
            # began is none (cold review: a dependent cancelled upstream, which
            # never ran, showed TRIES 1 on Dask).
            job.attempts = max(job.attempts - 1, 0)
        old = job.move(new, reason)
        if self.journal is not None:
            self.journal.moved(job, old, new, reason, at)
        if self.listeners:
            self.emit("status", job, old, new, reason)

    def note_reason(self, job: JobRecord, reason: str) -> None:
        """Set *job*'s reason, in its row too, without a change of status (loop
        thread): why a QUEUED job waits (the packer says so only when it
        changes); what a chunk that stopped short left to others."""
        job.reason = reason
        if self.journal is not None:
            self.journal.touched(job)

    def emit(self, kind: str, job: JobRecord | Job, old: JobStatus | None = None,
             new: JobStatus | None = None, reason: str | None = None) -> None:
        """Tell the listeners; *job* is a record (whose Job they get) or the Job itself."""
        handle = _job_of(job) if isinstance(job, JobRecord) else job
        event = Event(kind, handle, old, new, reason, time.time())  # type: ignore[arg-type]
        with signals_allowed():  # the program's code: what it starts gets a plain mask
            for listener in list(self.listeners):
                try:
                    listener(event)
                except BaseException as raised:
                    if not logged_and_passed(raised):
                        raise
                    self._listener_raised(listener, event)

    def _listener_raised(self, listener: Callable[[Event], Any], event: Event) -> None:
        """Log a listener's exception: its first with the traceback, its later
        ones counted and said once the loop ends (one that raises on every
        event printed a traceback for each, 1,200 for 300 jobs)."""
        _, count = self._listener_failures.get(id(listener), (listener, 0))
        self._listener_failures[id(listener)] = (listener, count + 1)
        if not count:
            log.exception("event callback %r raised on %s (its later exceptions are only "
                          "counted)", listener, event)

    def _say_listener_failures(self) -> None:
        for listener, count in self._listener_failures.values():
            if count > 1:
                log.error("event callback %r raised on %d events in all", listener, count)

    # -- adding jobs ---------------------------------------------------------------------

    def add(self, jobs: list[JobRecord]) -> None:
        """Take in a batch in dependency order (loop thread)."""
        left_in_cluster: list[JobRecord] = []
        for job in jobs:  # ``unfinished`` was counted by dispatch(), in the caller's thread
            self._live[id(job)] = job
            if self.journal is not None:
                self.journal.added(job, *job.journal_entry)
            if self.listeners:
                self.emit("added", job)
            if job.recorded_first and not self._committed(job):
                continue
            cancelled_because = job.doomed
            unmet = 0
            for dep in () if cancelled_because else job.deps:
                if dep.final:
                    if dep.status is not _S.COMPLETED:
                        cancelled_because = _upstream_reason(dep)
                        break
                    continue
                dep.dependents.append(job)
                unmet += 1
            if job.restored is not None:
                if cancelled_because is None and not unmet and all(map(_restored, job.deps)):
                    self._restore(job)
                    continue
                self._not_restored(job, runs=cancelled_because is None)
            if cancelled_because is not None:
                self._move(job, _S.CANCELLED, cancelled_because)
                self._finalize(job)
                if job.reattach is not None:
                    self._delete_left_in_cluster(job)
                continue
            job.unmet = unmet
            if unmet and not self._may_go_early(job):
                self._move(job, _S.WAITING, _waiting_reason(job))
                self.packer.hold_place(job)
            elif job.reattach is not None:
                self._move(job, _S.QUEUED)
                left_in_cluster.append(job)
            else:
                self._move(job, _S.QUEUED)
                self.packer.push(job)
        if left_in_cluster:
            self._take_up_left(left_in_cluster)

    def _take_up_left(self, jobs: list[JobRecord]) -> None:
        """Follow at once the jobs an earlier driver left in the cluster: they are
        there already, so they take their room whatever is free, paused or held
        as this driver may be. (Taken up only when the loop started jobs, a
        daemon started paused by ``corral pause``, or held for a ``corral
        cancel``, kept them QUEUED here while they ran in the cluster: status
        said "paused", and a cancel or a stop said "cancelled" and sent the
        cluster no delete: helper review.)"""
        now = time.monotonic()
        for job in jobs:
            self.packer.take_running(job, now)
            job.attempts += 1
            self._active[job.dispatched_id] = job
            self._move(job, _S.SUBMITTED)
        self._attach(jobs)
        if self._chains:
            self._queue_chained(jobs)

    def _hold_in_cluster(self, hold: bool, job_ids: list[int | str]) -> None:
        """Hold (or release) *job_ids* in the cluster; a failure is logged."""
        assert self._cluster is not None
        try:
            getattr(self._cluster, "hold" if hold else "release")(job_ids)
        except Exception:
            log.exception("could not %s the jobs waiting in the %s backend",
                          "hold" if hold else "release", self.backend_name)

    def _committed(self, job: JobRecord) -> bool:
        """Whether the journal committed *job*'s row; else it is cancelled, and
        why is kept for its submitter. ``corral submit`` tells its command
        whether the submit failed, so its job may start only once it is on
        disk: one that ran after a failed submit ran behind the user's back,
        and twice when they submitted again."""
        assert self.journal is not None
        try:
            self.journal.flush(True)
        except CorralError as error:  # (the journal's JournalError)
            job.unrecorded = error
            self._move(job, _S.CANCELLED, "its submit failed: the journal could not record it")
            self._finalize(job)
            return False
        return True

    def _not_restored(self, job: JobRecord, runs: bool) -> None:
        """*job* completed in an earlier run, but a job it depends on runs
        (or ran) again in this one: its result may differ now (make's rule: a
        target is rebuilt when a prerequisite is), so it *runs* again too, or
        is cancelled if that job failed. Either way its tries go on counting
        and what it wrote is kept as that try's (``stdout.N``)."""
        stored = job.restored
        assert stored is not None
        job.restored, job.data = None, None
        run_again(job, stored)
        if runs and not self._said_run_again:
            self._said_run_again = True
            warn_user(f"job {job.id} {job.name!r} completed in an earlier run, but a job it "
                      "depends on runs again in this one: it runs again too (and so does "
                      "every such job)")

    def _restore(self, job: JobRecord) -> None:
        """Make a job final from a previous run's journal, without running it."""
        stored = job.restored
        assert stored is not None
        job.restored = None
        if not self._said_restored:  # (cold review, a notebook user: a rerun returned
            # every result in 0.1 s, and nothing said they were an earlier run's)
            self._said_restored = True
            warn_user(f"resuming the run at {self.run_dir}: what completed in an earlier run "
                      "is restored from its journal, not run again (see corral status)")
        job.exit_code, job.attempts = stored.exit_code, stored.attempts
        job.started, job.ended, job.native_id = stored.started, stored.ended, stored.native_id
        job.jobdir = f"{self._run_dir_text}{job.id}"
        # The row of its id holds the result: not written again (job.data was loaded
        # as the run planned it). Restored under another id, its row is new.
        job.result_blob = KEPT_RESULT if str(job.id) == str(stored.id) else stored.result
        if job.feeds_values:
            job.value_bytes = stored.result
        # NEW -> COMPLETED is legal only here: it ran before
        job.move(_S.COMPLETED, RESTORED_REASON, checked=False)
        if self.journal is not None:
            self.journal.moved(job, _S.NEW, _S.COMPLETED, job.reason)
        if self.listeners:
            self.emit("status", job, _S.NEW, _S.COMPLETED, job.reason)
        if self.on_finish is not None:  # it sees every finished job; running again is moot
            self._ask_on_finish(job, None)
        self._finalize(job, notify=False)  # its notice, if any, went out in its own run

    def _ask_on_finish(self, job: JobRecord, error: BaseException | None) -> bool:
        """Show the finished *job* to on_finish, whose True asks for it to run
        again. Its ``result()`` and ``exception()`` answer meanwhile, though
        its Future is set only once the outcome is final (attack review: they
        raised "not done", so on_finish could not judge a job by its outcome)."""
        job.judged = (error,)
        try:
            with signals_allowed():
                return self.on_finish(_job_of(job)) is True  # type: ignore[misc]
        except BaseException as raised:
            if not logged_and_passed(raised):
                raise
            log.exception("on_finish callback raised for %r", job.future)
            return False
        finally:
            job.judged = None

    # -- starting jobs -------------------------------------------------------------------

    def _start_ready(self) -> None:
        if self._gather_s and self._still_gathering():
            return
        if self._settle_until is not None and self._still_settling():
            return
        if not self.packer.has_waiting():  # (after those: they end their holds as time passes)
            return
        chosen = self.packer.select(time.monotonic())
        behind: dict[int, JobRecord] = {}  # id(job) -> the job it is queued after
        if self._pace is not None:
            for job, leader in self.packer.select_ahead(self._pace.depth,
                                                             self._pace.ends_soon):
                chosen.append(job)
                behind[id(job)] = leader
        for job in chosen:
            job.handed_ahead = id(job) in behind
        self.packer.tell_newcomers()
        if not chosen:
            return
        for job in chosen:
            job.attempts += 1
            job.kill_intent = None
            job.asked_to_abort = False
            job.bypassed = 0
            job.started = job.ended = job.exit_code = None
            job.result_blob = job.error_blob = None
            self._active[job.dispatched_id] = job
            ahead_of = behind.get(id(job))
            self._move(job, _S.SUBMITTED, None if ahead_of is None
                       else f"queued in a worker after job {ahead_of.id}")
        for job in [job for job in chosen if job.final]:  # an event callback cancelled it
            del self._active[job.dispatched_id]
            self.packer.release(job)
            chosen.remove(job)
        if not chosen:
            return
        # (A job an earlier driver left in the cluster never comes here: add() follows it.)
        submissions = [submission_for(job, self._run_dir_text, self._outcomes_dir,
                                      behind.get(id(job))) for job in chosen]
        try:
            native_ids = self.backend.submit(submissions)
        except Exception as error:
            log.exception("the %s backend could not start %d jobs", self.backend_name, len(chosen))
            for job in chosen:
                self._apply(Update(job.dispatched_id, _S.FAILED,
                                   reason=f"the backend could not start it: {error}"))
            return
        for job, native_id in zip(chosen, native_ids, strict=False):
            job.native_id = native_id or None
            if not native_id and self._pace is not None:
                # Kept by the local backend until it can start (short of descriptors or
                # processes, see LocalBackend._defer): as one in a worker's queue, a
                # pause gives it back, and it has not begun.
                job.handed_ahead = True
        # An event callback aborted a job as it became SUBMITTED, before it had a
        # worker to be told in (the abort went nowhere): tell it now.
        asked = [job.dispatched_id for job in chosen if job.kill_intent is KillIntent.ABORT]
        if asked:
            self.backend.terminate(asked)
        if self._chains:
            self._queue_chained(chosen)
        if self.journal is not None and self.capabilities.outlives_driver and chosen:
            # Its cluster ids go to the journal now, not within the next few
            # milliseconds: a driver killed meanwhile left jobs running in the
            # cluster that no journal row named, which `corral cancel` and the
            # next run could not find (a program may act on job.native_id at once).
            self.journal.flush(force=True)

    def _still_settling(self) -> bool:
        """Whether a cancel that killed a running job came just now: then the
        room it freed is not handed out yet, for the next cancel is likely on
        its way (see CANCEL_SETTLE_S)."""
        now = time.monotonic()
        until, since = self._settle_until, self._settling_since
        assert until is not None and since is not None, "set together"
        if now < until:
            return True
        if until - since >= CANCEL_SETTLE_MAX_S:  # held as long as may be: a pause from holding
            self._unsettled_until = now + CANCEL_SETTLE_MAX_S
        self._settle_until = self._settling_since = None
        return False

    def _hold_starts_after_cancel(self) -> None:
        now = time.monotonic()
        if now < self._unsettled_until:
            return
        if self._settling_since is None:
            self._settling_since = now
        self._settle_until = min(now + CANCEL_SETTLE_S, self._settling_since + CANCEL_SETTLE_MAX_S)

    def _still_gathering(self) -> bool:
        """Whether to wait a moment for more jobs before submitting: a script
        that submits in a loop then sends one array, not one job and then the rest."""
        now = time.monotonic()
        if self._gather_until is None:
            if self.packer.pushes == self._pushes_seen or self._closing:
                return False  # nothing new is ready
            self._gather_until = now + self._gather_s
            return True
        if now < self._gather_until:
            return True
        self._gather_until = None
        self._pushes_seen = self.packer.pushes
        return False

    def _delete_left_in_cluster(self, job: JobRecord) -> None:
        """Delete from the cluster a job an earlier driver left there, which
        this run cancels as it comes (its parent failed before it was submitted
        again). Else it stays there: held for ever behind its failed parent, or
        started, to fail, once that parent is deleted at the close (seen in CI
        on Grid Engine: the child ran and ended in error state, Eqw)."""
        assert self._cluster is not None and job.reattach is not None
        stored, job.reattach = job.reattach, None
        assert stored.native_id is not None
        self._cluster.attach(submission_for(job, self._run_dir_text, self._outcomes_dir),
                             stored.native_id)
        job.kill_intent = KillIntent.CANCEL
        self.backend.kill([job.dispatched_id])

    def _attach(self, jobs: list[JobRecord]) -> None:
        """Follow jobs an earlier driver left in the cluster's hands (by native id).

        Only jobs whose ``reattach`` is set come here, and the resumer sets it
        only for a backend whose jobs outlive their driver: a cluster.
        """
        cluster = self._cluster
        if cluster is None:
            raise RuntimeError(f"the {self.backend_name} backend cannot attach to jobs an "
                               "earlier driver left (a bug in corral)")
        pending = []  # those not seen running when the earlier driver left them
        for job in jobs:
            stored, job.reattach = job.reattach, None
            # The resumer attaches only to a stored job with a native id to find it by.
            assert stored is not None and stored.native_id is not None
            if stored.status is _S.SUBMITTED:
                pending.append(job.dispatched_id)
            job.native_id = stored.native_id
            job.attempts = max(job.attempts - 1, stored.attempts)
            # It started before this driver gave it room: its start is the cluster's,
            # not clamped to now (cold review: it began after it ended, showed 0.0s).
            job.taken_at = (0.0 if stored.started is None else
                            time.monotonic() - max(0.0, time.time() - stored.started))
            log.info("job %s %r: attached to native job %s left by an earlier driver",
                     job.id, job.name, stored.native_id)
            cluster.attach(submission_for(job, self._run_dir_text, self._outcomes_dir),
                           stored.native_id)
        if not self.paused and self.capabilities.holds:  # a driver killed while paused
            cluster.release([job.dispatched_id for job in jobs])
        elif self.paused and self.capabilities.holds and pending:
            # Held as a pause holds what the cluster has not started (only those: a
            # hold may stop a running job): a daemon started paused by corral pause
            # let those still pending start there.
            self._hold_in_cluster(True, pending)

    # -- dependencies the backend holds (a cluster's afterok) ---------------------------------

    def _may_go_early(self, job: JobRecord) -> bool:
        """Whether a job whose dependencies are unfinished may still be handed
        to the backend now, which then holds it until they complete: a job
        attached again after a restart (it is in the cluster already), or one
        whose unfinished dependencies the backend can chain (see
        :meth:`_chainable`)."""
        if job.reattach is not None:
            return True
        return self._chains and self._chainable(job)

    def _chainable(self, job: JobRecord) -> bool:
        """A cluster may hold *job* back on its unfinished dependencies itself
        when each runs there now, on its last try (a retry would be another
        cluster job), and no callback may run one again; a command whose words
        come from a dependency's result, and a job that takes a command's
        result, must wait for that result here."""
        cluster = self._cluster
        if cluster is None or self.on_finish is not None:
            return False
        if any(isinstance(word, Upstream) for word in job.argv_template):
            return False
        if any(not dep.final and dep.runs_a_command
               for dep in job.value_deps):  # its value is read here, from its result file
            return False
        for dep in job.deps:
            if dep.final:
                if dep.status is not _S.COMPLETED:
                    return False
                continue
            if not self._may_wait_in_cluster_on(dep, cluster):
                return False
        return True

    def _may_wait_in_cluster_on(self, dep: JobRecord, cluster: ClusterBackend) -> bool:
        """Whether a job may wait in *cluster* on *dep*, an unfinished dependency:
        it runs there now, with a native id, on its last try, and the cluster can chain on it."""
        return (self._active.get(dep.dispatched_id) is dep and bool(dep.native_id)
                and dep.failures >= dep.spec.retries and cluster.can_chain(dep.dispatched_id))

    def _queue_chained(self, submitted: list[JobRecord]) -> None:
        """After jobs went to the cluster, queue their waiting dependents that
        the cluster can now hold back itself."""
        for job in submitted:
            for dependent in job.dependents:
                if (dependent.status is _S.WAITING and not dependent.final
                        and self._chainable(dependent)):
                    # No reason of its own: the packer says why it waits, if it does
                    # (cold review: "held by the cluster until its dependencies
                    # complete" stood on jobs corral held for max_jobs), and once
                    # submitted the cluster says it holds it.
                    self._move(dependent, _S.QUEUED)
                    self.packer.push(dependent, keep_place=True)

    # -- what the backend reports ----------------------------------------------------------

    def _hold_replies(self) -> None:
        """While every worker has jobs queued, leave its replies a moment, so
        that one wake-up reads several (see AheadPolicy.reply_wait); never
        past a deadline, and never with a request waiting. The hold counts
        from the last read: a reply that came during this turn of the loop has
        waited already (attack review: results came up to 3.4 ms late, p99)."""
        if self._pace is None or self._inbox or self.paused or not self.packer.has_waiting():
            return
        wait = self._pace.reply_wait(self.packer.lines_of_running())
        if not wait:
            return
        now = time.monotonic()
        wait -= now - self._read_at
        if self._deadlines:
            wait = min(wait, self._deadlines[0][0] - now)
        if wait > 0:
            cast("QueuingBackend", self.backend).hold_replies(wait)

    def _read_updates(self, wait: float | None) -> list[Update]:
        """The backend's updates, waiting up to *wait* seconds; notes when."""
        updates = self.backend.updates(wait)
        self._read_at = time.monotonic()
        return updates

    def _apply_all(self, updates: list[Update]) -> None:
        """Apply the backend's updates. (A function of its own: a loop variable left
        in the loop would keep the last job's pickled result alive while it waits.)"""
        for update in updates:
            self._apply(update)
        if updates and self._progress_waiters:
            self._tell_progress()

    def _tell_progress(self) -> None:
        with self._progress:
            self._progress_turns += 1
            self._progress.notify_all()

    def _apply(self, update: Update) -> None:
        job = self._active.get(update.job_id)
        if job is None:
            log.debug("update for a job no longer active: %s", update)
            return
        state = update.state
        if state is _S.RUNNING:
            job.cancel_reason = None  # its worker started it before being asked back: it runs
            if job.status is _S.SUBMITTED:
                # (A job handed ahead may start before the packer gives it room.)
                job.started = _plausible_start(update.at,
                                               0.0 if job.handed_ahead else job.taken_at)
                job.native_id = update.native_id or job.native_id
                job.live_output = update.live_output
                job.handed_ahead = False
                # (Aborted while its idle worker took it up: it says so running, too.)
                # Journaled when it began, as its end is when a try is retried (see _settle).
                self._move(job, _S.RUNNING, self._aborting_reason()
                           if job.kill_intent is KillIntent.ABORT else None, job.started)
                self._arm_timeout(job, WORKER_START_ALLOWANCE_S if update.starting else 0.0)
            elif (job.final and job.status is _S.CANCELLED and job.started is None
                  and job.handed_ahead):
                # Settled CANCELLED without its busy worker's answer, which had taken
                # it up all the same (see _settle_unanswered): its row says it ran
                # (attack review: no try, no time, no bar in the report).
                job.started = _plausible_start(update.at, 0.0)
                job.attempts += 1
                if self.journal is not None:
                    self.journal.touched(job)
            elif (job.status is _S.RUNNING and update.at is not None and job.started is not None
                  and update.at > job.started):
                # Its worker, started for it, says when it really began: its
                # start-up does not count against its timeout.
                job.started = _plausible_start(update.at, 0.0)
                self._arm_timeout(job)
            return
        if state in ACTIVE:
            if state is _S.SUBMITTED and update.reason and job.status is _S.SUBMITTED:
                self.note_reason(job, update.reason)  # why the backend has not started it yet
            return
        if state is _S.QUEUED:  # handed ahead and given back unstarted
            del self._active[job.dispatched_id]
            self.packer.release(job)
            if not job.final:
                job.attempts -= 1
                self._move(job, _S.QUEUED, update.reason)
                self.packer.push(job, keep_place=True)
            return
        del self._active[job.dispatched_id]
        self.packer.release(job)
        job.live_output = None
        if job.final:  # cancelled while it ran: it ended then (see _move); its processes now
            if state is _S.COMPLETED and job.status is _S.CANCELLED:
                self._completed_all_the_same(job, update)
            return
        job.ended = update.at or time.time()
        if update.exit_code is not None:
            job.exit_code = update.exit_code
        if self._pace is not None and job.kill_intent is None:
            began = update.began or job.started
            if began is not None:
                self._pace.observe(job, job.ended - began)
        self._settle(job, *decide_outcome(job, update, EndingRules(
            self.journal is not None, self._cluster_walltime, self.abort_grace,
            self.files_are_temporary)))

    def _completed_all_the_same(self, job: JobRecord, update: Update) -> None:
        """*job* was cancelled while its worker was finishing it: its completion
        was already on its way. It stays CANCELLED (``cancel()`` said so, and its
        Future is cancelled), but its row keeps the exit code and the result,
        and says so: a resumed run then takes it as completed (see
        :func:`corral.core.resume.completed_before`) instead of running it again.
        Not one asked to abort before: its completion may be what it did
        before it stopped early, a map's chunk short of its calls (attack
        review: a rerun restored one and its map lost calls without a word)."""
        if job.asked_to_abort:
            return
        job.exit_code = 0 if update.exit_code is None else update.exit_code
        job.ended = update.at or job.ended  # (when it did, not when it was cancelled)
        if job.started is None:  # (on Dask: cancelled before its start was heard of, it ran)
            job.started = update.began or job.ended
            job.attempts += 1
        job.reason = f"{job.reason}; {COMPLETED_ALL_THE_SAME}"
        if self.journal is not None:
            job.result_blob = update.value
            self.journal.touched(job)

    def _settle(self, job: JobRecord, status: JobStatus, reason: str | None, value: Any,
                error: BaseException | None) -> None:
        """Retry, run again for on_finish, or make the outcome final."""
        if status in (_S.FAILED, _S.TIMED_OUT):
            job.failures += 1
            _log_failure(job, status, reason)
        if (status in (_S.FAILED, _S.TIMED_OUT) and job.failures <= job.spec.retries
                and not job.asked_to_abort):  # (one its timeout stopped as it was aborted)
            # Journaled when the try ended, not when the loop read that it did: the
            # report draws a retried try by these times (it drew one reaching into
            # the start of the job its worker ran next, a third core on two).
            self._move(job, _S.QUEUED,
                       retry_reason(job.failures, job.spec.retries, reason), job.ended)
            keep_earlier_attempt(job.jobdir, job.attempts)
            # In its place in line, not behind every job queued since (cold
            # review: an experiment's "not homed, try again" ran hours later).
            self.packer.push(job, keep_place=True)
            return
        self._move(job, status, reason)
        job.data = value
        if self.on_finish is not None and status is not _S.CANCELLED and not job.asked_to_abort:
            again = self._ask_on_finish(job, error)
            if again:
                self._move(job, _S.QUEUED, "run again: on_finish asked for it")
                keep_earlier_attempt(job.jobdir, job.attempts)
                # Behind what is queued, unlike a retry: a job that on_finish runs
                # again until another job has done its part must let that one
                # start (re-attack review: in its place, it looped for ever).
                self.packer.push(job)
                return
        self._finalize(job, error)

    def _finalize(self, job: JobRecord, error: BaseException | None = None, cascade: bool = True,
                  notify: bool = True) -> None:
        """Make the outcome final: publish the result, release or cancel dependents.

        The Future itself is resolved a little later, in :meth:`_resolve_finished`,
        after the loop has handed out the room this job freed: waking the
        waiting thread first would make idle workers wait for it.
        """
        job.final = True
        self._to_resolve.append((job, error))
        self.tally.count(job)
        notifier = self.notifier
        if notify and job.spec.notify and notifier is not None:
            try:
                self._notify(job, notifier, error)
            except Exception:  # a lost mail must not stop the loop (attack review: it did)
                log.exception("could not queue the e-mail notice of job %s", job.dispatched_id)
        with self.results_ready:
            if job.collectable:
                self.results.append(job.result_view(
                    None if job.status is JobStatus.CANCELLED else error))
                self.uncollected -= 1
            self.unfinished -= 1
            self.results_ready.notify_all()
        self._live.pop(id(job), None)
        if cascade:
            self._release_dependents(job)
        if self.on_final is not None:
            self.on_final(job)
        if self._removing:
            handle = self._removing.pop(id(job), None)
            if handle is not None and job.status is _S.CANCELLED:  # taken back: not started
                self._removed(handle)
        job.release_run_state()

    def _notify(self, job: JobRecord, notifier: Notifier,
                error: BaseException | None = None) -> None:
        if job.spec.notify_on == "failure" and job.status not in (_S.FAILED, _S.TIMED_OUT):
            return
        from corral.core.notify import JobNotice

        call = isinstance(job.spec.task, (Call, FunctionRef))  # (no exit code of its own)
        notice = JobNotice(
            job_id=job.dispatched_id, name=job.name, status=job.status.name, reason=job.reason,
            exit_code=None if call else job.exit_code, started=job.started, ended=job.ended,
            attempts=job.attempts, run_dir=None if self.journal is None else str(self.run_dir),
            stderr_tail=stderr_tail(job), traceback=raised_traceback(error))
        notifier.send(notice, job.spec.notify)

    def _resolve_finished(self) -> None:
        """Resolve the Futures of the jobs made final since the last call."""
        finished, self._to_resolve = self._to_resolve, []
        for job, error in finished:
            if error is None and job.status not in (_S.COMPLETED, _S.CANCELLED):
                error = JobFailed(f"job {job.id} {job.name!r} {job.reason}")
            job.resolve(error)

    def _release_dependents(self, job: JobRecord) -> None:
        """Queue dependents whose last dependency completed; cancel, transitively
        and without recursion (chains are long), those of a job that did not."""
        if job.status is _S.COMPLETED:
            dependents, job.dependents = job.dependents, []
            for dependent in dependents:
                if dependent.final:
                    continue
                dependent.unmet -= 1
                if dependent.status is not _S.WAITING:
                    continue
                if dependent.unmet == 0:
                    self._move(dependent, _S.QUEUED)
                    self.packer.push(dependent, keep_place=True)  # (see hold_place)
                elif any(named is job for named in dependent.named_waits):
                    self.note_reason(dependent, _waiting_reason(dependent))
            return
        reason = _upstream_reason(job)  # the root cause, for the whole cascade
        broken = [job]
        while broken:
            parent = broken.pop()
            dependents, parent.dependents = parent.dependents, []
            for dependent in dependents:
                if dependent.final:
                    continue
                if dependent.status in ACTIVE:  # held by the cluster on this parent
                    dependent.kill_intent = KillIntent.CANCEL
                    self.backend.kill([dependent.dispatched_id])
                if dependent.status in PENDING or dependent.status in ACTIVE:
                    self._move(dependent, _S.CANCELLED, reason)
                    self._finalize(dependent, cascade=False)
                    broken.append(dependent)

    # -- deadlines -------------------------------------------------------------------------

    def _arm_timeout(self, job: JobRecord, allowance: float = 0.0) -> None:
        """Kill *job* once its time limit, counted from ``job.started``, is over,
        plus *allowance* (a timeout armed for it before no longer counts)."""
        limit = job.spec.timeout_s if self._cluster_walltime else job.spec.kill_after_s
        if limit is not None:
            ran = time.time() - (job.started or time.time())
            job.timeout_deadline = self._add_deadline(max(0.0, limit + allowance - ran),
                                                      DeadlineKind.TIMEOUT, job)

    def _add_deadline(self, delay: float, kind: DeadlineKind, job: JobRecord) -> int:
        """Add a deadline; return its sequence number."""
        sequence = next(self._sequence)
        heapq.heappush(self._deadlines, (time.monotonic() + delay, sequence, kind,
                                         weakref.ref(job), job.attempts))
        return sequence

    def _fire_deadlines(self) -> None:
        deadlines = self._deadlines
        now = time.monotonic()
        if deadlines and deadlines[0][0] <= now and now - self._read_at > READ_AGAIN_AFTER_S:
            # The loop was held since it last read the backend (a callback that
            # blocks): a job whose end waits unread is not killed for its timeout
            # and said TIMED_OUT "killed" (attack review: it had run to its end).
            self._apply_all(self._read_updates(0))
            now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, sequence, kind, job_ref, attempt = heapq.heappop(deadlines)
            job = job_ref()
            if (job is None or job.final or job.attempts != attempt
                    or self._active.get(job.dispatched_id) is not job
                    or (kind is DeadlineKind.TIMEOUT and sequence != job.timeout_deadline)):
                continue
            if kind is DeadlineKind.TIMEOUT:  # (aborted already: it ends CANCELLED, not
                # retried as a timed-out job is: attack review)
                job.kill_intent = (KillIntent.ABORT_TIMED_OUT if job.kill_intent in _ABORTING
                                   else KillIntent.TIMEOUT)
            elif job.kill_intent is KillIntent.ABORT:
                job.kill_intent = KillIntent.ABORT_KILLED
            log.info("killing job %s %r: %s", job.id, job.name,
                     "timeout" if kind is DeadlineKind.TIMEOUT else "abort grace period over")
            self.backend.kill([job.dispatched_id])

    # -- control (loop thread) ---------------------------------------------------------------

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def stuck(self) -> bool:
        """Whether, for more than :data:`STUCK_S`, the driver has been told to end
        (SIGTERM, Ctrl-C) and its loop has been in a callback of the program's,
        or in one pass without waiting: a callback, or a value's ``__del__``,
        that waits for ever must not keep the driver from ending (a slow one
        that ends within the time is waited for)."""
        thread = self._thread
        told = driver_signals.told_to_end_for()
        if thread is None or told is None:
            return False
        busy = self._busy_since
        # Held by the program's code: a callback, a value unpickled, or one let go
        # whose __del__ waits for ever (no mark says that one: the pass's length does).
        held = max(in_program_code_for(thread), 0.0 if busy is None else time.monotonic() - busy)
        return min(told, held) > STUCK_S

    def stuck_error(self) -> LoopStuck:
        """The :class:`LoopStuck` to raise, said in the log once."""
        message = (f"the driver is ending, and its control loop has been held for more than "
                   f"{STUCK_S:g} s since, by the program's own code (a callback: on_event, "
                   f"on_finish or a done callback; a job's value unpickled or let go): it ends "
                   "without cancelling its jobs; their processes end with it")
        if not self._said_stuck:
            self._said_stuck = True
            log.error("%s", message)
        return LoopStuck(driver_signals.ending_status())

    def cancel(self, job: JobRecord, reason: str) -> bool:
        """Cancel *job* from any thread; True if it is cancelled now. One that
        waited in a worker's queue is taken back before this returns, or,
        its worker not answering, settled CANCELLED (see wait_taken_back)."""
        cancelled, queued = self.call(self._cancel_noting_queued, job, reason)
        if not queued:
            return cancelled
        self.wait_taken_back(queued, until_ended=True)
        return job.status is _S.CANCELLED  # or it had started: it ran to its end

    def _cancel_noting_queued(self, job: JobRecord, reason: str
                              ) -> tuple[bool, list[int | str]]:
        self._read_ended_first([job])
        queued = [job.dispatched_id] if self._queued_ahead(job) else []
        return self._cancel(job, reason), queued

    def cancel_many(self, jobs: list[JobRecord], reason: str) -> list[int | str]:
        """Cancel those of *jobs* this engine owns that are not final; return
        the ids of those that waited in a worker's queue (see wait_taken_back)."""
        self._read_ended_first(jobs)
        mine = [job for job in jobs if job.owner is self and not job.final]
        queued = [job.dispatched_id for job in mine if self._queued_ahead(job)]
        self._cancel_all(mine, reason)
        return queued

    def queued_ahead_ids(self) -> list[int | str]:
        """The jobs waiting in a worker's queue now."""
        return [job.dispatched_id for job in self._active.values() if self._queued_ahead(job)]

    def wait_taken_back(self, job_ids: list[int | str], until_ended: bool) -> None:
        """Return once each of *job_ids* — jobs that waited in a worker's queue
        when they were asked back — is back in corral's queue or has started
        (*until_ended*: has been reported ended, for a cancelled one), so that
        none starts after the pause or cancel returned; or after
        :data:`TAKE_BACK_LIMIT_S` (a worker whose job holds the GIL cannot
        answer): then, *until_ended*, those still waiting are settled
        CANCELLED without the worker's answer (:meth:`_settle_unanswered`),
        so that a cancel() that returns has its outcome. From any
        thread but the loop's (there it returns at once)."""
        if threading.current_thread() is self._thread:
            return
        still = self._still_active if until_ended else self.still_queued_ahead
        deadline = time.monotonic() + TAKE_BACK_LIMIT_S
        with self._progress:
            self._progress_waiters += 1
        try:
            while job_ids and not self.stopped.is_set():
                turns = self._progress_turns  # read before asking: no turn goes unseen
                job_ids = self.call(still, job_ids)
                left = deadline - time.monotonic()
                if job_ids and left <= 0 and until_ended:
                    self.call(self._settle_unanswered, job_ids)
                if not job_ids or left <= 0:
                    return
                with self._progress:  # until the loop has applied updates again
                    self._progress.wait_for(partial(self._moved_on, turns), left)
        finally:
            with self._progress:
                self._progress_waiters -= 1

    def _settle_unanswered(self, job_ids: list[int | str]) -> None:
        """Cancel those of *job_ids* still waiting, asked back, in the queue of
        a worker that has not answered in :data:`TAKE_BACK_LIMIT_S`: its
        current job holds the GIL, so its threads cannot give them back. The
        drop is in its pipe and it reads that before it starts its next job,
        so they will not start. Each is settled as a cancelled running job
        is: final now, and followed until its worker says how it ended.
        Should the worker have taken one up just as it was asked for it, it
        runs to its end (these are tiny jobs), and one that completed says
        so in its row (see :meth:`_completed_all_the_same`): a resumed run
        does not run it again. (cancel() returned False after a second, and
        the job ended CANCELLED seconds later.)"""
        for job_id in job_ids:
            job = self._active.get(job_id)
            if job is not None and self._queued_ahead(job) and job.cancel_reason is not None:
                self._move(job, _S.CANCELLED, job.cancel_reason)
                self._finalize(job)

    def _moved_on(self, turns: int) -> bool:
        """Whether the loop applied updates since its count was *turns*, or ended."""
        return self._progress_turns != turns or self.stopped.is_set()

    def _still_active(self, job_ids: list[int | str]) -> list[int | str]:
        return [job_id for job_id in job_ids if job_id in self._active]

    def _read_ended_first(self, jobs: Iterable[JobRecord]) -> None:
        """Apply the replies already waiting unread, before cancelling *jobs*.

        A job handed ahead to a worker, or running there, may have ended
        already, its reply still in the pipe (the loop reads a worker's
        replies in bulk): it completed (or failed), and must not be recorded
        CANCELLED, which a journaled run's rerun would take as a reason to
        run it again. (Only where workers answer at once: a cluster's
        backend would ask its controller.)
        """
        if self._pace is not None and any(job.status in ACTIVE for job in jobs):
            self._apply_all(self.backend.updates(0))

    def _withdraw(self, jobs: list[JobRecord], reason: str) -> None:
        """Ask the workers for *jobs*, handed ahead and not known to have
        started. Each ends CANCELLED with *reason* once its worker gives it
        back; one the worker had started before the request came runs to its
        end and keeps its outcome. (Made CANCELLED at once, such a job ran all
        the same, and a journaled run's rerun ran it a second time.)"""
        asked = [job for job in jobs if job.cancel_reason is None]
        for job in asked:
            job.cancel_reason = reason
        if asked:
            self.backend.kill([job.dispatched_id for job in asked])

    def _cancel(self, job: JobRecord, reason: str) -> bool:
        if job.final or job.status.is_terminal:  # (ended, its callbacks not yet done)
            return job.status is _S.CANCELLED
        if self._queued_ahead(job):
            self._withdraw([job], reason)
            return True
        if job.status in ACTIVE:
            job.kill_intent = KillIntent.CANCEL
            reason = _with_doubt(reason, job, self.backend.kill([job.dispatched_id]))
            self._hold_starts_after_cancel()
        self._move(job, _S.CANCELLED, reason)
        self._finalize(job)
        return True

    def abort(self, job: JobRecord | None) -> int:
        """Ask running jobs (or one) to stop; kill them after the grace period.
        Returns how many were asked, or are being stopped already. A SUBMITTED
        job waits in a backend's queue (a worker's, Dask's, a cluster's): it is
        not asked, and runs when its turn comes, as the rest of the queue does.

        One its timeout is stopping is left to end TIMED_OUT, but is not
        retried (re-attack review: an abort in its grace made it "aborted" and
        kept what its call returned; left alone, its retry ran after the
        abort). One being aborted already keeps its grace (a second abort
        started it afresh)."""
        if job is not None and (job.final or not self._running(job)):
            waits = " (waiting in its backend's queue: it runs in its turn)" if (
                job.status is _S.SUBMITTED) else ""
            raise ValueError(
                f"job {job.id} {job.name!r} is {job.status.name}{waits}, not running; abort() "
                "stops running jobs, use cancel() or remove() for others")
        targets = [job] if job is not None else [
            j for j in self._active.values() if not j.final and self._running(j)]
        asked = [target for target in targets if target.kill_intent is None]
        for target in targets:
            if target.kill_intent is KillIntent.TIMEOUT:
                target.asked_to_abort = True  # (no retry)
        for target in asked:
            target.kill_intent = KillIntent.ABORT
            target.asked_to_abort = True
            self._add_deadline(self.abort_grace, DeadlineKind.ABORT_GRACE, target)
            # (Cold review: status said a plain RUNNING through the grace period,
            # and a GUI listening to events could not show the job stopping.)
            self.note_reason(target, self._aborting_reason())
            if self.listeners:
                self.emit("aborting", target, target.status, target.status, target.reason)
        self.backend.terminate([target.dispatched_id for target in asked])
        return len(targets)

    def _aborting_reason(self) -> str:
        return (f"aborting: asked to stop; killed {self.abort_grace:g}s after the ask unless it "
                "ends first")

    def _running(self, job: JobRecord) -> bool:
        """RUNNING, or handed to an idle local worker, which starts it at once
        (SUBMITTED until the loop reads that it did). A job SUBMITTED to a
        queue (a worker's line, Dask's, a cluster's) is not running."""
        return job.status is _S.RUNNING or (
            job.status is _S.SUBMITTED and self._pace is not None and not job.handed_ahead)

    def _queued_ahead(self, job: JobRecord) -> bool:
        """Waiting in a worker's queue, handed ahead (not running)."""
        return self._pace is not None and job.status is _S.SUBMITTED and job.handed_ahead

    def _not_started(self, job: JobRecord) -> bool:
        """Pending in corral, or still waiting in a cluster's or a worker's queue."""
        return job.status in PENDING or (self._chains and job.status is _S.SUBMITTED) or (
            self._queued_ahead(job))

    def cancel_pending(self, reason: str, removing: bool = False) -> list[JobRecord]:
        """Cancel every job that has not started; return them. One that waited
        in a worker's queue may have started meanwhile: it runs on.

        *removing* them (``clear()``), each one cancelled is also removed as
        :meth:`remove` does: a "removed" event, and :attr:`on_removed`. One
        being taken back from a worker's queue is, once it is back: it may
        have started meanwhile.
        """
        self._read_ended_first(self._live.values())
        pending = [job for job in self._live.values() if self._not_started(job)]
        handles = [(job, cast("Job | None", job.future)) for job in pending]  # (let go of once
        # resolved)
        self._cancel_all(pending, reason)
        for job, handle in handles if removing else ():
            if not job.final:
                self._removing[id(job)] = handle
            elif job.status is _S.CANCELLED:
                self._removed(handle)
        return pending

    def _removed(self, handle: Job | None) -> None:
        if handle is None:  # (a record whose Job was let go of: nothing holds it to tell)
            return
        if self.listeners:
            self.emit("removed", handle)
        if self.on_removed is not None:
            self.on_removed(handle)

    def interrupt(self, reason: str = "interrupted", left_early: bool = False,
                  failed: bool = True) -> None:
        """Cancel everything, running jobs included, now; *left_early*: because
        the program left its ``with`` block (the journal notes why), *failed*
        unless by ``sys.exit(0)``. A failure is noted also with no job left: a
        script that raised before its first job left a run that ``corral wait``
        called a success (fyrd review)."""
        if left_early and self.journal is not None and (self._live or failed):
            self.journal.record_left_early(reason)
        self._read_ended_first(self._live.values())
        self._cancel_all(list(self._live.values()), reason)

    def _cancel_all(self, jobs: list[JobRecord], reason: str) -> None:
        """Cancel *jobs*, killing the active ones with one backend call (one scancel)."""
        handed_ahead = [job for job in jobs if not job.final and self._queued_ahead(job)]
        self._withdraw(handed_ahead, reason)
        # (Ended but not yet final: the job an on_finish or event callback is
        # told of, which keeps how it ended; attack review: IllegalTransition.)
        jobs = [job for job in jobs
                if not (job.final or job.status.is_terminal or self._queued_ahead(job))]
        active = [job for job in jobs if job.status in ACTIVE]
        for job in active:
            job.kill_intent = KillIntent.CANCEL
        doubts = self.backend.kill([job.dispatched_id for job in active]) if active else None
        cancelled = [job for job in jobs if not job.final]
        for job in cancelled:  # each with this reason, not "upstream ... was cancelled"
            self._move(job, _S.CANCELLED, _with_doubt(reason, job, doubts))
            self._finalize(job, cascade=False)
        for job in cancelled:  # then whatever waited on them and was not among them
            self._release_dependents(job)

    def remove(self, job: JobRecord) -> None:
        self._read_ended_first([job])
        if job.final or job.status.is_terminal:
            raise ValueError(f"cannot remove job {job.id} {job.name!r}: it has already "
                             f"finished ({job.status.name})")
        if job.status in ACTIVE and not self._not_started(job):
            raise ValueError(f"cannot remove job {job.id} {job.name!r}: it is {job.status.name}; "
                             "use cancel() or abort() to stop it")
        handle = cast("Job | None", job.future)  # let go of once the job is resolved
        self._cancel(job, "removed")
        if not job.final:  # asked back from a worker's queue: removed once back, if it is
            self._removing[id(job)] = handle  # (one the worker started runs on)
        else:
            self._removed(handle)

    # -- failure of the loop itself --------------------------------------------------------

    def _fail_everything(self, crash: BaseException) -> None:
        self.crash = crash
        try:
            self._resolve_finished()
        except Exception:
            log.exception("could not resolve finished jobs after the crash")
        _fail_unchecked(self._live.values(), f"corral's scheduler crashed: {crash!r}")
        self._live.clear()
        self._active.clear()
        self.unfinished = self.uncollected = 0
        with self.results_ready:
            self.results_ready.notify_all()

    def _fail_if_new_jobs(self, function: Callable[..., Any], args: tuple) -> None:
        """Fail the jobs of an :meth:`add` the loop ended without running, as a
        crash fails the jobs it knows: submitted as it crashed, they stayed NEW
        for ever, and ``result()`` never returned (race review)."""
        if function != self.add:
            return
        jobs = [job for job in args[0] if not job.final]
        _fail_unchecked(jobs, f"corral's scheduler crashed: {self.crash!r}"
                        if self.crash is not None else "corral's control loop had ended")
        with self.results_ready:  # (as the crash left them: nothing more comes)
            self.unfinished = max(0, self.unfinished - len(jobs))
            self.uncollected = max(0, self.uncollected - sum(job.collectable for job in jobs))
            self.results_ready.notify_all()

    def _answer_leftover_calls(self) -> None:
        """Answer the calls that came after the loop's last round, as the loop
        would have (``cancel()`` of a job that just finished returns False);
        posted requests that expected a running loop are dropped."""
        try:
            while self._inbox:
                function, args, reply = self._inbox.popleft()
                if reply is None:
                    self._fail_if_new_jobs(function, args)
                    continue
                try:
                    reply.value = function(*args)
                except Exception as error:
                    reply.error = error
                reply.done.set()
        finally:
            self._inbox_closed.set()


def _fail_unchecked(jobs: Iterable[JobRecord], reason: str) -> None:
    """Fail the unfinished of *jobs* for *reason*, the loop's end: unchecked,
    as it may end a job in any state, and resolved with a CorralError."""
    for job in list(jobs):
        if job.final:
            continue
        job.move(_S.FAILED, reason, checked=False)
        try:
            job.resolve(CorralError(f"job {job.id} {job.name!r}: {reason}"))
        except Exception:
            pass


def _job_of(job: JobRecord) -> Job:
    """The user's Job of a record the loop has not resolved yet (it holds it until then)."""
    return cast("Job", job.future)


def _upstream_reason(parent: JobRecord) -> str:
    """Why the jobs after *parent*, which did not complete, are cancelled (a
    parent the program let go of is a FinishedJob, which keeps no reason)."""
    return upstream_reason(parent.id, parent.name, parent.status,
                           getattr(parent, "reason", None))


#: The reason of a job restored from the journal (COMPLETED in an earlier run).
RESTORED_REASON = "completed in an earlier run (from the journal)"


def _restored(dep: Any) -> bool:
    """Whether the dependency *dep* was restored from the journal, not run in
    this run. (A FinishedJob, a finished job's stand-in, keeps no reason: it
    counts as restored, as a dependency of it by name or id cannot tell.)"""
    return getattr(dep, "reason", RESTORED_REASON) == RESTORED_REASON


def _waiting_reason(job: JobRecord) -> str:
    """Which unfinished jobs a WAITING job waits for: three named, and how
    many more (its ``unmet``). Made again each time one it names completes
    (cold review: "after jobs 1, 2, 3 and 21 more" named the three that had
    finished): those it named that still run stay, and the search for others
    goes on past the last one looked at, never back (attack review: from the
    first unfinished one, a fan-in whose first dependency ends last cost
    O(n**2), 16 s of the loop at 40,000). So a fan-in of n costs O(n) in all."""
    named = [dep for dep in job.named_waits if not dep.final]
    deps, at = job.deps, job.waits_from
    while len(named) < 3 and at < len(deps):
        dep = deps[at]
        at += 1
        if not dep.final:
            named.append(dep)
    job.waits_from = at
    job.named_waits = tuple(named)
    text = ", ".join(f"{dep.id} {dep.name!r}" for dep in named)
    more = f" and {job.unmet - len(named)} more" if job.unmet > len(named) else ""
    return f"after job{'s' if job.unmet > 1 else ''} {text}{more}"


def _log_failure(job: JobRecord, status: JobStatus, reason: str | None) -> None:
    """One line in the run's log (corral.log) for every failed attempt."""
    retry = (f"; retry {job.failures} of {job.spec.retries} follows"
             if job.failures <= job.spec.retries else "")
    what = "timed out" if status is _S.TIMED_OUT else "failed"
    log.info("job %s %r %s: %s%s", job.id, job.name, what,
             " ".join((reason or "no reason given").split()), retry)


def _plausible_start(reported: float | None, taken_at: float) -> float:
    """When a job started, as its backend says (a cluster node's clock), kept
    within what the driver's own clock knows: not before the job was given room
    (*taken_at*, monotonic; 0 where that is unknown: a job taken up from an
    earlier run, or handed ahead to a worker), nor after now. A node's clock an
    hour behind had a job's 10-minute timeout fire at once (attack review)."""
    now = time.time()
    if reported is None:
        return now
    if taken_at:
        reported = max(reported, now - max(0.0, time.monotonic() - taken_at))
    return min(reported, now)

