"""The batch backend every scheduler shares: jobs become batch jobs.

How a dispatch goes out:

* Each job's request is written to ``<jobdir>/task``; jobs dispatched together
  with equal resources and placement go out as **one** array (chunked below
  the cluster's array limit, optionally throttled) — see
  :mod:`~corral.backends.batch.arrays`. With the ``bundle=N`` job option, up to
  N jobs share one array task, run in turn by :mod:`corral.runtime.batch` —
  the same runtime code the local workers use (see
  :mod:`~corral.backends.batch.bundles`).
* The batch script is rendered from the scheduler's template
  (:mod:`~corral.backends.batch.taskfiles`); every user value reaches the
  scheduler as one argument of its submit command, never through a shell; only
  ``setup`` lines are shell code, by intent. A refused submission fails its jobs
  with the scheduler's message.
* A dependency on a job that the scheduler still has pending or running is
  handed to it too, so the chain goes on without the driver — never on a job
  it may have forgotten, where a forgotten dependency counts as met (Slurm) or
  is refused (PBS).

How state comes back: one status query per poll for all of the user's jobs,
polled more slowly while nothing changes (:mod:`~corral.backends.batch.polling`);
a query that fails or prints what cannot be read is asked again later, and
jobs fail only once its output stayed unreadable for
:data:`UNREADABLE_STATUS_LIMIT` answers in a row. A poll reports a parent's
outcome before its children's.
A job's outcome is its result file when the runtime wrote one; otherwise the
scheduler's state, from the status query, or from accounting when the query
has forgotten the job (:mod:`~corral.backends.batch.forgotten`). Jobs that can
never start are cancelled with a clear reason.

A scheduler supplies only pure pieces: see
:class:`corral.backends.batch.scheduler.BatchScheduler`.
"""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from corral.backends.base import Capacity, Submission, Update
from corral.backends.batch import arrays, bundles, forgotten, outcomes, taskfiles
from corral.backends.batch.invoke import (CommandInFlight, CommandTimedOut,
                                          run_command)
from corral.backends.batch.polling import PollClock
from corral.backends.batch.records import BatchJob, Group, TaskRecord
from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, NativeRow,
                                             NeverKind, SubmitRequest)
from corral.backends.batch.settings import parse_settings, split_options
from corral.errors import BackendError, ResourceError
from corral.runtime.batch import CANCELLED_MARK, claim_for_cancel, read_result
from corral.status import JobStatus
from corral.units import format_span

__all__ = ["BatchBackend", "UNREADABLE_STATUS_LIMIT"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Status answers in a row that cannot be read before the jobs fail: one is a
#: glitch (polled again, backing off), this many a command that stays broken,
#: and jobs nobody can follow must not wait forever.
UNREADABLE_STATUS_LIMIT = 5

#: How long the control loop waits for a cancel command's answer before it
#: goes on without it (see BatchBackend._cancel_doubt).
CANCEL_PATIENCE_S = 5.0

#: Accounting queries a poll makes where each takes one job (SGE's qacct, which
#: reads the accounting file through: seconds on a large one).
ACCOUNTING_QUERIES_PER_POLL = 4


class BatchBackend:
    """Runs jobs as batch jobs of :attr:`scheduler`. See the module docstring.

    A scheduler's backend is a subclass that sets :attr:`name` and
    :attr:`scheduler`; a test may instead pass ``scheduler=`` to the constructor.
    Called from the scheduler's control-loop thread only, except :meth:`wake`.
    """

    #: The backend's name: its scheduler's (set for each subclass, so that the
    #: name is written once, in the BatchScheduler).
    name: ClassVar[str]
    #: The scheduler's pure pieces (argv, parsers, tables, template).
    scheduler: ClassVar[BatchScheduler]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "scheduler" in cls.__dict__:
            cls.name = cls.scheduler.name
    #: The cluster ends a job at its time limit; the scheduler only arms ``timeout``.
    enforces_walltime: ClassVar[bool] = True
    #: Dependencies between running jobs may be handed over (see :meth:`can_chain`).
    chains_dependencies: ClassVar[bool] = True
    #: A submission costs ~10 ms and schedulers start jobs on ~1 s ticks: waiting
    #: 50 ms for more jobs makes a loop of submits one array instead of one job
    #: and the rest.
    gather_s: ClassVar[float] = 0.05

    def __init__(self, cores: int | None = None, memory: int | None = None,
                 gpus: int | None = None, python: str = sys.executable,
                 options: dict[str, Any] | None = None,
                 scheduler: BatchScheduler | None = None) -> None:
        if scheduler is not None:
            self.scheduler = scheduler  # type: ignore[misc]
        shared, own = split_options(options or {}, self.scheduler.own_options,
                                    self.scheduler.title)
        if own:  # the scheduler's own options: a scheduler of its own, configured
            self.scheduler = self.scheduler.with_settings(own)  # type: ignore[misc]
        self._settings = parse_settings(shared, self.scheduler.title)
        self._capacity = Capacity(cores, memory, gpus)  # None: the cluster packs
        self._python = python
        self._user = self._settings.user or getpass.getuser()
        self._wake = threading.Event()
        self._tasks: dict[int | str, TaskRecord] = {}
        self._jobs: dict[str, BatchJob] = {}
        self._updates: list[Update] = []
        self._limits: ClusterLimits | None = None
        self._directory_numbers = itertools.count(1)
        self._clock = PollClock(self._settings.poll_interval, self._settings.max_poll_interval)
        self._closed = False
        #: Status answers in a row that could not be read (see _unreadable_status).
        self._unreadable_answers = 0
        #: The status query running now, if any (one at a time).
        self._query: CommandInFlight | None = None
        #: Batch jobs an abort ended (see BatchScheduler.signal_ends_job).
        self._ended_by_signal: set[str] = set()
        #: Chained jobs the scheduler refused, waiting for their parents (see _hold_back).
        self._held_back: list[Group] = []
        #: The refusals of an unreachable scheduler said in the log already.
        self._retry_noted: set[str] = set()
        #: The state words no meaning is known for, said in the log already.
        self._unknown_states_noted: set[str] = set()
        #: Cancel commands that did not answer in time, answered in the log.
        self._cancels_in_flight: list[CommandInFlight] = []
        #: Held-back jobs a pause holds: not submitted until released.
        self._paused_held_back: set[int | str] = set()
        #: Batch jobs in which a job failed, which the scheduler keeps until they
        #: are deleted (see BatchScheduler.failed_jobs_stay).
        self._kept: set[str] = set()
        #: Where a temporary run directory goes: jobs run on other nodes, so not /tmp.
        from platformdirs import user_cache_dir

        self.workdir_parent = os.path.join(user_cache_dir("corral"), "runs")

    # -- what the scheduler asks -------------------------------------------------------

    def capacity(self) -> Capacity:
        return self._capacity

    def check(self, resources: Any) -> None:
        """The cluster decides what fits, and a request it can never satisfy is
        found by its pending reason (see :meth:`BatchScheduler.never_starts`);
        a cap of the run's own is corral's (see :meth:`Capacity.check`), and
        one the scheduler cannot be asked for is refused (see
        :meth:`BatchScheduler.request_problem`)."""
        self._capacity.check(resources, self.scheduler.title)
        problem = self.scheduler.request_problem(resources)
        if problem is not None:
            raise ResourceError(problem)

    def submit(self, batch: Sequence[Submission]) -> list[str]:
        if not batch:
            return []
        for group in arrays.group_submissions(batch, self._tasks):
            self._submit_group(group)
        self._clock.soon()
        return [self._tasks[s.job_id].native_id if s.job_id in self._tasks else ""
                for s in batch]

    def attach(self, submission: Submission, native_id: str) -> None:
        """Follow a job an earlier driver submitted, by its native id, without submitting it."""
        group = Group(submission.resources, submission.placement, (), submission.placement.bundle)
        group.submissions.append(submission)
        task = TaskRecord(submission.job_id, os.fspath(submission.jobdir), bool(submission.argv),
                          submission.placement.bundle > 1, group, native_id,
                          name=submission.name)
        job = self._jobs.get(native_id)
        if job is None:
            job = self._jobs[native_id] = BatchJob(native_id, taskfiles.batch_log_of(task.jobdir),
                                                   last_seen=time.monotonic())
        job.tasks.append(task)
        self._tasks[task.job_id] = task
        self._clock.soon()

    def can_chain(self, job_id: int | str) -> bool:
        """Whether a dependency on *job_id* may be handed to the scheduler now:
        only on a job it surely still knows (unbundled, and seen pending or
        running by a poll, or submitted, less than half the forget time ago).

        A scheduler that forgot the parent either counts the dependency as met
        (Slurm: the child would run after a failed parent) or refuses the
        submission (PBS: the child would fail): both are avoided alike. A child
        not chained waits for its parent's result and goes out unchained."""
        task = self._tasks.get(job_id)
        if task is None or task.bundled or not task.native_id:
            return False
        if not self.scheduler.chains_on(task.native_id):
            return False
        job = self._jobs.get(task.native_id)
        if job is None or read_result(task.jobdir) is not None:
            return False
        safe_for = self._cluster_limits().forget_after_s / 2
        if job.row is None:  # not polled yet: known to the scheduler if we just submitted it
            return task.submitted_at > 0 and time.monotonic() - task.submitted_at < safe_for
        meaning = self.scheduler.meaning(job.row)
        if meaning is None or meaning[0] not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            return False
        return time.monotonic() - self._clock.last_answer < safe_for

    def updates(self, timeout: float | None) -> list[Update]:
        """What happened since the last call. The status query runs on a thread
        of its own (see :class:`CommandInFlight`): a slow controller delays the
        news, never the loop's next request (a cancel, a pause)."""
        if not self._updates:
            wait = timeout
            if self._jobs and self._query is None:
                until_poll = self._clock.seconds_left()
                wait = until_poll if wait is None else min(wait, until_poll)
            if self._held_back:  # their parents' result files are read at this pace
                shortest = self._settings.poll_interval
                wait = shortest if wait is None else min(wait, shortest)
            if wait is None or wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            if self._jobs and self._query is None and self._clock.due():
                self._query = CommandInFlight(
                    self.scheduler.status_argv_for(self._user, sorted(self._jobs)), self._wake,
                    self.scheduler.status_answer_usable)
            if self._query is not None and self._query.finished:
                query, self._query = self._query, None
                if self._jobs:
                    self._poll(query)
            if self._held_back:
                self._release_held_back()
            if self._cancels_in_flight:
                self._note_late_cancels()
        found, self._updates = self._updates, []
        return found

    def wake(self) -> None:
        self._wake.set()

    def kill(self, job_ids: Collection[int | str]) -> Mapping[int | str, str] | None:
        """Cancel the jobs now; each is reported CANCELLED. One that has not
        started is marked first, so that the runtime never starts it: a bundle
        skips it, and so does a batch job that the scheduler starts after all
        (its delete failed, or came after the scheduler had started it)."""
        to_cancel: set[str] = set()
        may_run_on: list[int | str] = []  # if their batch job's delete is refused
        self._drop_held_back(set(job_ids))
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if task is None:
                continue
            job = self._jobs.get(task.native_id)
            unstarted = bool(task.jobdir) and claim_for_cancel(task.jobdir)
            if task.bundled and unstarted:
                pass  # its bundle will skip it
            elif task.native_id:
                # Running: end its batch job. Its bundle's jobs that have not
                # started are then submitted again (see _settle_ended).
                to_cancel.add(task.native_id)
                if job is not None:
                    job.runtime_ran = True
            if not unstarted:
                may_run_on.append(job_id)
            self._finish(task, Update(job_id, JobStatus.CANCELLED, task.native_id or None,
                                      reason="cancelled"))
            if job is not None and not job.tasks:
                to_cancel.add(job.native_id)  # nothing left for it to do
        to_cancel -= self._ended_by_signal  # deleted already: a second delete only errs
        if to_cancel:
            doubt = self._cancel_doubt(self.scheduler.cancel_argv(sorted(to_cancel)))
            if doubt is not None:  # (cold review: "cancelled", and it ran on in the cluster)
                return dict.fromkeys(may_run_on, f"{doubt}: it may still run; check with the "
                                                 "scheduler")
        return None

    def _cancel_doubt(self, argv: Sequence[str]) -> str | None:
        """Run a cancel command; None if it went through, else why the jobs may
        still run: it refused (logged), or it has not answered yet. A refusal
        that only says the jobs had ended already is no refusal.

        It is waited for :data:`CANCEL_PATIENCE_S` at most: the control loop
        waits on it, and a controller that hung held ``cancel()`` and every
        other job for a minute (a sysadmin's review). Past that it goes on in
        the background, what it answers is logged, and the jobs are said to be
        in doubt."""
        query = CommandInFlight(argv, self._wake, self.scheduler.cancel_answer_usable)
        if not query.finished_within(CANCEL_PATIENCE_S):
            self._cancels_in_flight.append(query)
            return (f"the scheduler has not answered the cancel yet ({argv[0]} still runs after "
                    f"{CANCEL_PATIENCE_S:g} s; its answer goes to the log)")
        refused = self._cancel_answer(query)
        return None if refused is None else f"the scheduler refused to end it ({refused})"

    @staticmethod
    def _cancel_answer(query: CommandInFlight, late: bool = False) -> str | None:
        try:
            query.answer()
        except BackendError as error:
            if late:  # (which jobs: the reason sent the user to the log)
                log.warning("%s answered late, refusing: %s", " ".join(query.argv), error)
            else:
                log.warning("%s", error)
            return str(error)
        return None

    def _note_late_cancels(self) -> None:
        """Log what cancels that answered late said (see _cancel_doubt)."""
        waiting = []
        for query in self._cancels_in_flight:
            if not query.finished:
                waiting.append(query)
            elif self._cancel_answer(query, late=True) is None:
                log.info("%s answered late: the cancel went through", " ".join(query.argv))
        self._cancels_in_flight = waiting

    def terminate(self, job_ids: Collection[int | str]) -> None:
        """Ask running jobs to stop: SIGUSR1 to the batch script's runtime,
        which sets :func:`corral.abort_requested` in the job."""
        natives = sorted({self._tasks[job_id].native_id for job_id in job_ids
                          if job_id in self._tasks and self._tasks[job_id].native_id})
        if natives:
            self._run_quietly(self.scheduler.signal_argv(natives))
            if self.scheduler.signal_ends_job:
                self._ended_by_signal.update(natives)

    def hold(self, job_ids: Collection[int | str]) -> None:
        """Keep pending jobs from starting; for pause (held-back jobs stay back)."""
        self._paused_held_back |= {s.job_id for group in self._held_back
                                   for s in group.submissions} & set(job_ids)
        natives = self._pending_natives(job_ids)
        if natives:
            self._run_quietly(self.scheduler.hold_argv(natives))

    def release(self, job_ids: Collection[int | str]) -> None:
        """Let held jobs start again; for resume. An attached job not polled yet
        is released at its first poll if held (a driver killed while paused left it so)."""
        self._paused_held_back -= set(job_ids)
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            job = None if task is None else self._jobs.get(task.native_id)
            if task is not None and job is not None and job.row is None:
                task.release_if_held = True
        natives = {native for native in self._pending_natives(job_ids)
                   if self._jobs[native].row is not None}
        # A hold that reached a job just as it started stops a running job where the
        # scheduler can (LSF's bstop: USUSP): the scheduler calls it held, so it goes too.
        natives |= self._held_natives(job_ids)
        if natives:
            self._run_quietly(self.scheduler.release_argv(sorted(natives)))

    def close(self) -> None:
        """Cancel what is still in the scheduler's hands: a driver that stops
        cleanly leaves nothing running (one killed outright is found again by its journal)."""
        if self._closed:
            return
        self._closed = True
        if self._query is not None:
            self._query.abandon()
            self._query = None
        if self._cancels_in_flight:  # their answers, a little longer; then said and left
            # (re-attack: waiting each one's minute held a closing program that long)
            deadline = time.monotonic() + CANCEL_PATIENCE_S
            for late in self._cancels_in_flight:
                late.finished_within(max(0.0, deadline - time.monotonic()))
            self._note_late_cancels()
            for late in self._cancels_in_flight:
                log.warning("%s has not answered at the close: its jobs may still run; check "
                            "with the scheduler", " ".join(late.argv))
                late.abandon()
            self._cancels_in_flight = []
        natives = sorted({task.native_id for task in self._tasks.values() if task.native_id}
                         | set(self._jobs))
        if natives:
            self._run_quietly(self.scheduler.cancel_argv(natives))
        if self._kept - set(natives):  # after their dependents, which they hold back
            try:
                self._run(self.scheduler.cancel_argv(sorted(self._kept - set(natives))))
            except BackendError as error:  # one the scheduler killed is gone already
                log.debug("%s", error)
        self._tasks.clear()
        self._jobs.clear()

    # -- submitting ------------------------------------------------------------------------

    def _submit_group(self, group: Group) -> None:
        base = Path(group.submissions[0].jobdir).parent / self.scheduler.name
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        split = bundles.split_into_bundles(group.submissions, group.bundle)
        limit = self._settings.max_array_size or self._cluster_limits().max_array_tasks
        for first, size in arrays.array_ranges(len(split), limit):
            self._submit_chunk(group, split[first:first + size], base)

    def _submit_chunk(self, group: Group, chunk: list[list[Submission]], base: Path) -> None:
        scheduler = self.scheduler
        directory = taskfiles.new_directory(base, self._directory_numbers)
        bundled = group.bundle > 1
        time_limit = bundles.time_limit_s(group.resources.walltime_s, chunk, bundled,
                                          scheduler.granted_time_s)
        is_array = len(chunk) > 1
        indexes = [scheduler.array_index_base + i if is_array else 0 for i in range(len(chunk))]
        for index, members in zip(indexes, chunk, strict=True):
            log_path = taskfiles.log_path(directory, scheduler.name, index)
            for submission in members:
                taskfiles.write_task(submission, log_path)
            # (A job alone is asked for its walltime only, and its watchdog counts
            # that from its own start: see the runtime's _Watchdog.)
            taskfiles.write_bundle(directory, index, [os.fspath(s.jobdir) for s in members],
                                   time_limit if bundled else None)
        script = directory / taskfiles.SCRIPT_FILE
        # The script sends its own output to its log in its directory, so no
        # path of ours goes through the scheduler's %-patterns, which a '%' or
        # a backslash in the run directory would break.
        request = SubmitRequest(
            script=os.fspath(script), name=_job_name(chunk[0][0].name, len(chunk)),
            resources=group.resources, placement=group.placement, output="/dev/null",
            array_size=len(chunk) if is_array else None,
            throttle=self._settings.array_throttle if is_array else None,
            dependencies=group.after, time_limit_s=time_limit)
        script.write_text(taskfiles.script_for(
            scheduler, directory=directory, tasks=max(len(members) for members in chunk),
            setup=group.placement.setup, python=group.placement.python or self._python,
            request=request))
        job_id, refusal = self._submit_script(request, directory)
        if job_id is None and self._try_again_later(group, chunk, refusal):
            return
        if job_id is None:
            if group.after and group.parents:
                self._hold_back(group, chunk, refusal)
                return
            for members in chunk:
                for submission in members:
                    self._updates.append(Update(submission.job_id, JobStatus.FAILED,
                                                reason=refusal))
            return
        for index, members in zip(indexes, chunk, strict=True):
            native_id = scheduler.array_task_id(job_id, index) if is_array else job_id
            job = self._jobs[native_id] = BatchJob(
                native_id, taskfiles.log_path(directory, scheduler.name, index),
                last_seen=time.monotonic())
            for submission in members:
                self._follow_submitted(submission, group, bundled, job)

    def _submit_script(self, request: SubmitRequest, directory: Path) -> tuple[str | None, str]:
        """Submit *request*: its job id, or None and why not. A job is submitted only
        where corral can follow it; one whose id corral cannot read may run all the
        same, which its reason says, with where to look."""
        scheduler = self.scheduler
        status = scheduler.status_argv(self._user)[0]
        if shutil.which(status) is None:
            return None, (f"not submitted: {status}, the status command, is not on PATH, "
                          "so corral could never follow it")
        if "\n" in os.fspath(directory):  # schedulers print paths raw in their answers
            return None, (f"not submitted: the run directory {os.fspath(directory)!r} holds "
                          "a line break, which a scheduler's answer would not keep apart")
        argv = scheduler.submit_argv(request)
        if (unsafe := scheduler.unsafe_argument(argv)) is not None:
            return None, f"not submitted: {unsafe}"
        try:
            printed = self._run(argv)
        except CommandTimedOut as error:  # not a refusal: submitting it again may run it twice
            return None, (f"{error}; it may have submitted the job all the same, which corral "
                          f"cannot follow: look for it in {scheduler.title} (its script: "
                          f"{request.script})")
        except BackendError as error:
            return None, f"{argv[0]} refused it: {scheduler.explain_refusal(request, str(error))}"
        try:
            return _parsed(scheduler.parse_submit, printed), ""
        except ValueError as error:
            return None, (f"{argv[0]} ran, but {error}; if it submitted the job, corral cannot "
                          f"follow it: look for it in {scheduler.title} (its script: "
                          f"{request.script})")

    def _try_again_later(self, group: Group, chunk: list[list[Submission]],
                         refusal: str) -> bool:
        """Keep a submission the scheduler could not be reached for, to submit it
        again at the next polls (held back: a pause holds it, a cancel drops
        it), for ``submit_retry`` seconds; whether it was kept. Controllers
        restart and fail over: their jobs must not fail for that."""
        if not self._settings.submit_retry or not self.scheduler.could_not_reach(refusal):
            return False
        now = time.monotonic()
        until = group.retry_until or now + self._settings.submit_retry
        if now >= until:
            for members in chunk:
                for submission in members:
                    self._updates.append(Update(submission.job_id, JobStatus.FAILED, reason=(
                        f"{refusal} (tried again for {format_span(self._settings.submit_retry)})")))
            return True
        if group.retry_until is None and refusal not in self._retry_noted:
            self._retry_noted.add(refusal)  # once, not once per group refused alike
            log.warning("%s; trying again for up to %s", refusal,
                        format_span(self._settings.submit_retry))
        submissions = [submission for members in chunk for submission in members]
        self._held_back.append(Group(group.resources, group.placement, (), group.bundle,
                                     submissions, parents=group.parents, depth=group.depth,
                                     retry_until=until,
                                     next_try=now + self._settings.max_poll_interval))
        return True

    def _hold_back(self, group: Group, chunk: list[list[Submission]], refusal: str) -> None:
        """Keep chained jobs the scheduler refused until their parents' outcome is
        known. A scheduler that drops the children of a failed job at once (PBS)
        refuses a child chained to one of them: the parent failed meanwhile, and
        the child must end CANCELLED naming it, as on every backend; a refusal for
        another cause comes again, unchained, once the parents completed."""
        submissions = [submission for members in chunk for submission in members]
        # A refusal with every parent well is no failed parent's: said where a person
        # sees it (cold review: a table's wrong dependency flag refused every chained
        # job, and corral.log alone said so, at INFO).
        unexplained = forgotten.upstream_failure(group.parents) is None
        log.log(logging.WARNING if unexplained else logging.INFO,
                "%s; %d job(s) chained to %s wait for their parents here", refusal,
                len(submissions), ", ".join(group.after))
        self._held_back.append(Group(group.resources, group.placement, (), group.bundle,
                                     submissions, parents=group.parents, depth=group.depth))

    def _drop_held_back(self, job_ids: set[int | str]) -> None:
        """Cancel held-back jobs among *job_ids*: the scheduler never had them."""
        self._paused_held_back -= job_ids
        for group in self._held_back:
            dropped = [s for s in group.submissions if s.job_id in job_ids]
            if dropped:
                group.submissions = [s for s in group.submissions if s.job_id not in job_ids]
                self._updates.extend(Update(s.job_id, JobStatus.CANCELLED, reason="cancelled")
                                     for s in dropped)
        self._held_back = [group for group in self._held_back if group.submissions]

    def _release_held_back(self) -> None:
        """Cancel held-back jobs whose parent did not complete (naming it); submit,
        unchained, those whose parents all completed (alike ones as one array),
        unless a pause holds them; keep the others."""
        waiting, self._held_back = self._held_back, []
        ready: dict[tuple[object, ...], Group] = {}
        for group in waiting:
            upstream = forgotten.upstream_failure(group.parents)
            if upstream is not None:
                self._updates.extend(Update(submission.job_id, JobStatus.CANCELLED,
                                            reason=upstream)
                                     for submission in group.submissions)
            elif not all(getattr(read_result(parent.jobdir), "ok", False)
                         for parent in group.parents) or time.monotonic() < group.next_try:
                self._held_back.append(group)
            elif any(s.job_id in self._paused_held_back for s in group.submissions):
                if not group.pause_noted:
                    group.pause_noted = True
                    log.info("%d held-back job(s) may go out now, but the run is paused",
                             len(group.submissions))
                self._held_back.append(group)
            else:
                key = (group.resources, group.placement, group.bundle)
                merged = ready.setdefault(key, Group(group.resources, group.placement, (),
                                                     group.bundle, depth=group.depth,
                                                     retry_until=group.retry_until))
                if group.retry_until is not None:  # the earliest deadline of those merged
                    merged.retry_until = min(merged.retry_until or group.retry_until,
                                             group.retry_until)
                merged.submissions.extend(group.submissions)
                merged.parents += group.parents
                merged.depth = max(merged.depth, group.depth)
        for group in ready.values():
            self._submit_group(group)

    def _follow_submitted(self, submission: Submission, group: Group, bundled: bool,
                          job: BatchJob) -> None:
        task = self._tasks.get(submission.job_id)
        if task is None:
            task = TaskRecord(submission.job_id, os.fspath(submission.jobdir),
                              bool(submission.argv), bundled, group, name=submission.name)
            self._tasks[submission.job_id] = task
        task.native_id = job.native_id
        task.running = False
        task.submitted_at = time.monotonic()
        job.tasks.append(task)

    # -- polling -----------------------------------------------------------------------------

    def _poll(self, query: CommandInFlight) -> None:
        """Act on a status query's answer. It tells the state as of when it was
        asked: a job submitted since is not in it, and is left for the next."""
        before = len(self._updates)
        depths = {job_id: task.group.depth for job_id, task in self._tasks.items()
                  if task.group.depth}
        rows = self._query_status(query)
        asked = query.started
        changed = False
        if rows is not None:
            # Forgotten jobs first: a parent the scheduler dropped (a pending
            # array task cancelled) must be reported before a child it let run.
            lost = [job for job in self._jobs.values()
                    if job.native_id not in rows and job.last_seen <= asked]
            for job in lost:
                job.missing += 1
            if lost:
                self._decide_forgotten(lost)
            for job in list(self._jobs.values()):
                row = rows.get(job.native_id)
                if row is None or self._jobs.get(job.native_id) is not job:
                    continue
                changed |= row != job.row
                job.row = row
                job.last_seen = asked
                job.missing = 0
                self._follow(job)
        changed |= len(self._updates) > before
        if depths:  # parents first: the engine then cancels their children for the
            # root cause, as on every backend (fakebatch drops them in the same poll)
            self._updates[before:] = sorted(self._updates[before:],
                                            key=lambda update: depths.get(update.job_id, 0))
        self._clock.polled(asked, answered=rows is not None, changed=changed)

    def _query_status(self, query: CommandInFlight) -> dict[str, NativeRow] | None:
        """The rows of the status query for every job; None when it failed or
        printed what cannot be read (logged: the poll clock backs off and asks again)."""
        argv = query.argv
        try:
            output = query.answer()
        except BackendError as error:
            log.warning("the status query failed, trying again later: %s", error)
            return None
        try:
            rows = _parsed(self.scheduler.parse_status, output)
        except ValueError as error:
            self._unreadable_status(argv[0], output, error)
            return None
        self._unreadable_answers = 0
        return rows

    def _unreadable_status(self, program: str, output: str, error: ValueError) -> None:
        """A status answer corral cannot read (a login banner, a changed format).
        Once :data:`UNREADABLE_STATUS_LIMIT` come in a row the command stays
        broken: every job is decided by its result file, or else fails with
        the output quoted, and its batch job is cancelled (nobody could follow it)."""
        self._unreadable_answers += 1
        count = self._unreadable_answers
        log.warning("%s printed what corral cannot read (%d of %d in a row before its jobs "
                    "fail): %s", program, count, UNREADABLE_STATUS_LIMIT, error)
        if count < UNREADABLE_STATUS_LIMIT:
            return
        self._unreadable_answers = 0
        reason = (f"{program} printed what corral cannot read {count} times in a row, so the "
                  f"job could not be followed (its batch job is cancelled): {_quoted(output)}")
        natives = sorted(set(self._jobs) | {task.native_id for task in self._tasks.values()
                                            if task.native_id})
        for task in list(self._tasks.values()):
            result = read_result(task.jobdir)
            self._finish(task, outcomes.from_result(task, result, self.scheduler.title)
                         if result is not None else
                         Update(task.job_id, JobStatus.FAILED, task.native_id or None,
                                reason=reason))
        self._jobs.clear()
        if natives:
            self._run_quietly(self.scheduler.cancel_argv(natives))

    def _follow(self, job: BatchJob) -> None:
        """Turn what the status query says of one batch job into updates for its tasks."""
        row = job.row
        if row is None:
            return
        meaning = self.scheduler.meaning(row)
        if meaning is None:
            if row.state not in self._unknown_states_noted:  # (not at every poll: once a word)
                self._unknown_states_noted.add(row.state)
                log.warning("%s job %s is in a state corral does not know: %r; still polling "
                            "(said once for each such state)", self.scheduler.title,
                            job.native_id, row.state)
            return
        status, words = meaning
        if status is JobStatus.SUBMITTED:
            self._check_pending(job, row)
            return
        for task in list(job.tasks):
            result = read_result(task.jobdir)
            if result is not None:
                self._finish(task, outcomes.from_result(task, result, self.scheduler.title))
            elif status is JobStatus.RUNNING and not task.running and self._has_started(task):
                task.running = True
                self._updates.append(Update(task.job_id, JobStatus.RUNNING, task.native_id,
                                            live_output=taskfiles.live_files(task.jobdir),
                                            at=taskfiles.start_time(task.jobdir)))
        if status is not JobStatus.RUNNING:
            self._settle_ended(job, status, words, row)

    def _check_pending(self, job: BatchJob, row: NativeRow) -> None:
        scheduler = self.scheduler
        if scheduler.is_held(row) and any(task.release_if_held for task in job.tasks):
            for task in job.tasks:
                task.release_if_held = False
            self._run_quietly(scheduler.release_argv([job.native_id]))
            return
        never = scheduler.never_starts(row)
        if never is None:
            return
        if never.kind is NeverKind.DEPENDENCY_FAILED and self._parents_completed(job):
            # The scheduler judged a parent failed whose result says it completed
            # (its batch job ended badly after writing it): run the job without it.
            log.warning("%s job %s: its dependencies completed, but %s says %s; "
                        "submitting it again without them", scheduler.title, job.native_id,
                        scheduler.title, row.reason)
            self._run_quietly(scheduler.cancel_argv([job.native_id]))
            self._jobs.pop(job.native_id, None)
            self._resubmit(job.tasks, count=False)
            return
        if never.kind is NeverKind.DEPENDENCY_FAILED:
            reason = (f"a job it depends on did not complete ({scheduler.title}: {row.reason}; "
                      f"{scheduler.title} job {job.native_id} cancelled)")
            final = JobStatus.CANCELLED
        else:
            reason = (f"{scheduler.title} can never start it: {never.words} ({scheduler.title} "
                      f"reason {row.reason}; {scheduler.title} job {job.native_id} cancelled)")
            final = JobStatus.FAILED
        self._run_quietly(scheduler.cancel_argv([job.native_id]))
        for task in list(job.tasks):
            self._finish(task, Update(task.job_id, final, job.native_id, reason=reason))

    def _settle_ended(self, job: BatchJob, status: JobStatus, words: str,
                      row: NativeRow | None) -> None:
        """The batch job is over: each task has a result, was cancelled, was left
        for lack of time (submitted again), or failed with the batch job."""
        leftovers = []
        someone_ran = job.runtime_ran or any(
            taskfiles.started_by_runtime(task.jobdir) for task in job.tasks)
        for task in list(job.tasks):
            result = read_result(task.jobdir)
            if result is not None:
                self._finish(task, outcomes.from_result(task, result, self.scheduler.title))
                continue
            started = taskfiles.read_started(task.jobdir)
            if started == CANCELLED_MARK:
                self._finish(task, Update(task.job_id, JobStatus.CANCELLED, task.native_id,
                                          reason="cancelled"))
            elif bundles.is_leftover(task, started, someone_ran, status):
                leftovers.append(task)
            else:
                self._finish(task, outcomes.from_scheduler(task, job, status, words, row,
                                                           self.scheduler))
        self._jobs.pop(job.native_id, None)
        if leftovers:
            try:
                self._resubmit(leftovers)
            except Exception as error:  # a bug or a full disk must not stop the loop
                log.exception("could not submit %d bundled jobs again", len(leftovers))
                for task in leftovers:
                    self._finish(task, Update(task.job_id, JobStatus.FAILED, task.native_id,
                                              reason=f"could not be submitted again: {error}"))

    def _parents_completed(self, job: BatchJob) -> bool:
        groups = {id(task.group): task.group for task in job.tasks}.values()
        dirs = [jobdir for group in groups for jobdir in group.after_jobdirs]
        return bool(dirs) and all(getattr(read_result(jobdir), "ok", False) for jobdir in dirs)

    def _resubmit(self, tasks: list[TaskRecord], count: bool = True) -> None:
        """Submit again jobs that a batch job left (without dependencies: their
        parents are over)."""
        by_group: dict[int, list[TaskRecord]] = {}
        for task in list(tasks):
            task.leftovers += count
            by_group.setdefault(id(task.group), []).append(task)
        for members in by_group.values():
            old = members[0].group
            wanted = {task.job_id for task in members}
            group = Group(old.resources, old.placement, (), old.bundle,
                          [s for s in old.submissions if s.job_id in wanted],
                          parents=old.parents, depth=old.depth)
            for task in members:
                task.group = group
            log.info("submitting %d jobs again that their batch job did not run", len(members))
            self._submit_group(group)

    def _decide_forgotten(self, lost: list[BatchJob]) -> None:
        """Jobs the status query no longer lists: see :mod:`~corral.backends.batch.forgotten`."""
        undecided = forgotten.undecided(lost)
        accounting = self._cluster_limits().accounting
        rows = self._ask_accounting(undecided) if undecided and accounting else {}
        forget_after = self._cluster_limits().forget_after_s
        now = time.monotonic()
        for job in lost:
            row = rows.get(job.native_id)
            meaning = forgotten.verdict(job, job in undecided, row, self.scheduler, accounting)
            if meaning is None:
                job.row = row  # accounting says it still runs: wait
                continue
            guess = forgotten.is_a_guess(job, job in undecided, row)
            # (Re-attack review: of 60 jobs deleted at once on SGE, whose qacct
            # is asked of a few a poll, 20 were guessed FAILED, never asked.)
            unasked = accounting and (job.accounting_asked_at is None
                                      or job.accounting_asked_at < job.last_seen + forget_after)
            if guess and (now - job.last_seen < forget_after or job.missing < 2 or unasked):
                log.info("%s job %s is missing from %d status answer(s), %.0f s after it was "
                         "last listed (or followed); the scheduler forgets jobs after %.0f s: "
                         "waiting", self.scheduler.title, job.native_id, job.missing,
                         now - job.last_seen, forget_after)
                continue
            if guess:  # in case it runs on unseen: nobody could follow it any more
                try:
                    self._run(self.scheduler.cancel_argv([job.native_id]))
                except BackendError as error:  # the usual answer: it is gone indeed
                    log.debug("%s", error)
            self._settle_ended(job, meaning[0], meaning[1], row)

    def _ask_accounting(self, undecided: list[BatchJob]) -> dict[str, NativeRow]:
        """What accounting says of *undecided* jobs: in one query, or, where it
        takes one job (SGE's qacct), in one query each for the least asked few,
        so that each is asked before its forget time runs out and one it cannot
        answer (a job deleted while pending) holds up none of the others
        (review: only the first was ever asked, and the rest were guessed). The
        longest unasked go first; a job is guessed only once asked after its
        forget time, when accounting knows of it (see _decide_forgotten)."""
        scheduler = self.scheduler
        queries: dict[tuple[str, ...], list[BatchJob]] = {}
        if scheduler.accounting_takes_one_job:  # (an array's tasks share their job's query)
            for job in undecided:
                argv = scheduler.accounting_argv([job.native_id])
                if argv is not None:
                    queries.setdefault(tuple(argv), []).append(job)
            longest_unasked = sorted(queries.items(), key=lambda query: min(
                job.accounting_asked_at or 0.0 for job in query[1]))
            queries = dict(longest_unasked[:ACCOUNTING_QUERIES_PER_POLL])
        elif (together := scheduler.accounting_argv([job.native_id for job in undecided])):
            queries[tuple(together)] = undecided
        rows: dict[str, NativeRow] = {}
        for query, jobs in queries.items():
            asked_at = time.monotonic()
            for job in jobs:
                job.accounting_asked_at = asked_at
            try:
                rows.update(_parsed(scheduler.parse_accounting, self._run(list(query))))
            except (BackendError, ValueError) as error:
                log.warning("the accounting query failed: %s", error)
        return rows

    def _finish(self, task: TaskRecord, update: Update) -> None:
        """Report a task's final update, once, and stop following it."""
        if self._tasks.get(task.job_id) is not task:
            return
        del self._tasks[task.job_id]
        if (self.scheduler.failed_jobs_stay and task.native_id
                and update.state in (JobStatus.FAILED, JobStatus.TIMED_OUT)):
            self._kept.add(task.native_id)
        job = self._jobs.get(task.native_id)
        started = taskfiles.started_by_runtime(task.jobdir)
        if job is not None:
            if started:  # the batch job works: see _settle_ended
                job.runtime_ran = True
            if task in job.tasks:
                job.tasks.remove(task)
            if not job.tasks:
                del self._jobs[task.native_id]
        if not task.running and started:  # it ran between two polls
            self._updates.append(Update(task.job_id, JobStatus.RUNNING, task.native_id or None,
                                        at=taskfiles.start_time(task.jobdir)))
        if update.at is None and update.state is not JobStatus.CANCELLED:
            update = dataclasses.replace(update, at=taskfiles.end_time(task.jobdir))
        self._updates.append(update)

    @staticmethod
    def _has_started(task: TaskRecord) -> bool:
        return not task.bundled or taskfiles.started_by_runtime(task.jobdir)

    # -- the cluster ---------------------------------------------------------------------------

    def _cluster_limits(self) -> ClusterLimits:
        """The cluster's limits, read once (its defaults if they cannot be read)."""
        if self._limits is None:
            argv = self.scheduler.limits_argv()
            self._limits = self.scheduler.default_limits
            if argv is not None:
                try:
                    self._limits = _parsed(self.scheduler.parse_limits, self._run(argv))
                except (BackendError, ValueError) as error:
                    log.warning("cannot read %s's configuration (%s); assuming defaults",
                                self.scheduler.title, error)
        return self._limits

    def _pending_natives(self, job_ids: Collection[int | str]) -> list[str]:
        natives = set()
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if task is None or not task.native_id or task.running:
                continue
            job = self._jobs.get(task.native_id)
            if job is not None and (job.row is None or self.scheduler.is_pending(job.row)):
                natives.add(task.native_id)
        return sorted(natives)

    def _held_natives(self, job_ids: Collection[int | str]) -> set[str]:
        """The native ids of these jobs that the last poll saw held, running or not."""
        natives = set()
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            job = None if task is None or not task.native_id else self._jobs.get(task.native_id)
            if job is not None and job.row is not None and self.scheduler.is_held(job.row):
                natives.add(job.native_id)
        return natives

    def _run_quietly(self, argv: Sequence[str]) -> None:
        """Run a control command whose failure is logged, not raised: the job
        may have ended meanwhile, and the next poll tells what became of it."""
        try:
            self._run(argv)
        except BackendError as error:
            log.warning("%s", error)

    def _run(self, argv: Sequence[str]) -> str:
        """Run a scheduler command; return its stdout. Raises BackendError with its message."""
        return run_command(argv)


def _parsed(parse: Callable[[str], _T], output: str) -> _T:
    """*parse* (a scheduler's parser) of a command's *output*. A parser meets
    output nobody recorded (a banner, a new version's format): whatever it
    raises becomes a ValueError quoting the output, which the caller handles
    like a failed command, so that the poller never stops on a traceback."""
    try:
        return parse(output)
    except ValueError:
        raise
    except Exception as error:
        log.debug("a parser failed", exc_info=True)
        raise ValueError(f"{type(error).__name__}: {error} in {_quoted(output)}") from None


def _quoted(output: str, limit: int = 300) -> str:
    """A command's output for a message: stripped, cut at *limit* characters, repr-quoted."""
    text = output.strip()
    return repr(text[:limit]) + (f" (and {len(text) - limit} more characters)"
                                 if len(text) > limit else "")


def _job_name(name: str, count: int) -> str:
    """The batch job's name: the first job's, and how many more the array holds."""
    text = taskfiles.printable(name)[:100]
    return text if count == 1 else f"{text} (+{count - 1})"
