"""Deciding jobs the scheduler's status query no longer lists.

A scheduler forgets a finished job after a while (Slurm: MinJobAge). What
became of it is then told, in this order, by its result files (the runtime
wrote them), by accounting when the cluster keeps it, and failing both by
whether the runtime ever took one of its jobs. A job that never started and
whose upstream job failed was dropped for that (PBS removes the children of
a failed job at once): it is cancelled with the reason the engine gives such
a child on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.backends.batch.records import BatchJob, TaskRecord
from corral.backends.batch.scheduler import BatchScheduler, Meaning, NativeRow
from corral.backends.batch.taskfiles import read_started, started_by_runtime
from corral.runtime.batch import CANCELLED_MARK, read_result
from corral.status import JobStatus, upstream_reason

__all__ = ["undecided", "verdict", "is_a_guess", "failed_upstream", "upstream_failure"]

_ACTIVE = (JobStatus.SUBMITTED, JobStatus.RUNNING)


def undecided(forgotten: Iterable[BatchJob]) -> list[BatchJob]:
    """The forgotten jobs whose files do not tell everything: a job's result,
    or the mark of a cancel that came before it started (``corral cancel``
    with no driver writes one too: the next driver waited the scheduler's
    forget time, five minutes on Slurm, before it believed it; submitit review)."""
    return [job for job in forgotten if not all(map(_told_by_its_files, job.tasks))]


def _told_by_its_files(task: TaskRecord) -> bool:
    return read_result(task.jobdir) is not None or read_started(task.jobdir) == CANCELLED_MARK


def verdict(job: BatchJob, is_undecided: bool, row: NativeRow | None,
            scheduler: BatchScheduler, accounting: bool) -> Meaning | None:
    """How the forgotten *job* ended, given its accounting *row* (None: none);
    None when accounting says it still runs (wait for it)."""
    meaning = scheduler.meaning(row) if row is not None else None
    if meaning is not None and meaning[0] not in _ACTIVE:
        return meaning
    if is_undecided and row is None:
        if not any(started_by_runtime(task.jobdir) for task in job.tasks):
            upstream = failed_upstream(job.tasks)
            if upstream is not None:
                return JobStatus.CANCELLED, upstream
            return (JobStatus.CANCELLED,
                    f"{scheduler.title} no longer lists it and it never started (cancelled "
                    "outside corral, or ended without starting long ago)")
        return (JobStatus.FAILED,
                f"{scheduler.title} no longer knows the job and it left no result"
                + ("" if accounting else f" ({scheduler.forgotten_words}; no accounting to ask)"))
    if row is not None:  # accounting says it still runs (or a state we do not know): wait
        return None
    return JobStatus.COMPLETED, ""  # every job has its result


def is_a_guess(job: BatchJob, is_undecided: bool, row: NativeRow | None) -> bool:
    """Whether :func:`verdict` would only guess for *job*: no result file, no
    accounting row and no failed upstream job tell how it ended."""
    return is_undecided and row is None and failed_upstream(job.tasks) is None


def failed_upstream(tasks: Iterable[TaskRecord]) -> str | None:
    """Why jobs that never started cannot run: the engine's words for the
    first followed ancestor whose result says it did not complete ("upstream
    job 3 'train' failed"), looking past parents that never started either
    (the scheduler dropped them for the same cause); None when no result says so.

    The words are the engine's (:func:`corral.status.upstream_reason`), so a
    child reads the same whichever of the engine or the scheduler dropped it.
    """
    return upstream_failure([parent for task in tasks for parent in task.group.parents])


def upstream_failure(parents: Iterable[TaskRecord]) -> str | None:
    """:func:`failed_upstream` for jobs whose followed parents are *parents*."""
    seen: set[int] = set()
    stack = list(reversed(list(parents)))
    while stack:
        parent = stack.pop()
        if id(parent) in seen:
            continue
        seen.add(id(parent))
        result = read_result(parent.jobdir)
        if result is not None and not result.ok:
            status = JobStatus.TIMED_OUT if result.timed_out else JobStatus.FAILED
            return upstream_reason(parent.job_id, parent.name, status, None)
        if result is not None:
            continue
        started = read_started(parent.jobdir)
        if started == CANCELLED_MARK:  # claimed for cancel before its bundle reached it
            return upstream_reason(parent.job_id, parent.name, JobStatus.CANCELLED, None)
        if not started:
            stack.extend(reversed(parent.group.parents))
    return None
