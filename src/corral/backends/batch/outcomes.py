"""Turning how a job ended — its result file, or else the scheduler's word —
into the update the scheduler reports. Reasons name the batch job ("Slurm
job 123") so that a user can look it up."""

from __future__ import annotations

import os

from corral.backends.base import Update
from corral.backends.batch.records import BatchJob, TaskRecord
from corral.backends.batch.scheduler import BatchScheduler, NativeRow
from corral.backends.batch.taskfiles import batch_log_tail
from corral.runtime.batch import STARTED_FILE, BatchOutcome
from corral.status import JobStatus

__all__ = ["from_result", "from_scheduler"]


def from_result(task: TaskRecord, outcome: BatchOutcome, title: str) -> Update:
    """The update for a job whose runtime wrote *outcome*."""
    where = f"{title} job {task.native_id}"
    if outcome.ok:
        return Update(task.job_id, JobStatus.COMPLETED, task.native_id,
                      exit_code=outcome.exit_code,
                      value=None if task.is_command else outcome.blob,
                      aborted=outcome.aborted)
    if outcome.timed_out:
        return Update(task.job_id, JobStatus.TIMED_OUT, task.native_id,
                      reason=f"{outcome.reason} ({where})")
    if outcome.blob is not None and not task.is_command:
        return Update(task.job_id, JobStatus.FAILED, task.native_id,
                      exit_code=outcome.exit_code, error=outcome.blob, reason=where)
    reason = outcome.reason
    if reason is None and outcome.blob is not None:  # the runtime's own error, e.g. a bad env
        from corral.runtime.payload import loads_error

        reason = loads_error(outcome.blob)[2]
    text = reason or f"exit code {outcome.exit_code}"
    return Update(task.job_id, JobStatus.FAILED, task.native_id, exit_code=outcome.exit_code,
                  reason=f"{text} ({where})")


def from_scheduler(task: TaskRecord, job: BatchJob, status: JobStatus, words: str,
                   row: NativeRow | None, scheduler: BatchScheduler) -> Update:
    """The update for a job that left no result, from what the scheduler says
    of its batch job."""
    exit_code = None if row is None else scheduler.exit_code(row)
    if status is JobStatus.COMPLETED:  # ended well, yet the runtime wrote nothing
        status = JobStatus.FAILED
        started = os.path.exists(os.path.join(task.jobdir, STARTED_FILE))
        words = ("it started but left no result: its batch job ended under it (a node or "
                 "server that went away?)" if started
                 else "the batch job ended without running it")
    reason = f"{words} ({scheduler.title} job {job.native_id})"
    if status is not JobStatus.CANCELLED:
        reason += batch_log_tail(task.jobdir, job.log_path)
    return Update(task.job_id, status, job.native_id, exit_code=exit_code, reason=reason)
