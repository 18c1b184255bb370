"""How an attempt of a job ended, decided from its backend's last update: the
status, the reason a person reads, the value and the exception its Future gets.

Apart from :class:`~corral.core.engine.Engine`, which applies the decision
(retry, run again, make final): what a timeout, an abort, a value that cannot
be unpickled, a call that raised or a command's exit code each become is read
here in one place, with none of the loop's state.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, NamedTuple

from corral.core.record import KillIntent
from corral.errors import JobFailed, JobTimedOut, RemoteTraceback, WorkerLost
from corral.runtime.command_result import read_command_result
from corral.runtime.execute import BEFORE_IT_BEGAN, CwdUnusable
from corral.runtime.interrupt import CAUGHT_AND_RETURNED
from corral.runtime.payload import dumps_value, loads_error
from corral.runtime.spool import TAIL_BYTES, last_lines, with_stderr_tail
from corral.safe_repr import describe_error
from corral.status import JobStatus
from corral.units import format_span

if TYPE_CHECKING:
    from corral.backends.base import Update
    from corral.core.record import JobRecord

__all__ = ["Outcome", "EndingRules", "decide_outcome", "stderr_tail", "raised_traceback",
           "unpickled"]

_S = JobStatus


class Outcome(NamedTuple):
    """How one attempt ended."""

    status: JobStatus
    reason: str | None
    value: Any
    error: BaseException | None


class EndingRules(NamedTuple):
    """What of the run decides an ending, besides the job and its update."""

    #: Whether the journal keeps results and errors (the job's blobs are set for it).
    journaled: bool
    #: Whether the backend enforces walltimes itself: a timeout then names the
    #: walltime, not the local kill-after limit.
    cluster_walltime: bool
    #: Seconds an aborted job was given before it was killed.
    abort_grace: float
    #: Whether the job's files go with the run (its stderr is then in job.stderr).
    files_are_temporary: bool


def decide_outcome(job: JobRecord, update: Update, rules: EndingRules) -> Outcome:
    """How *job*'s attempt ended, by its *update*. Keeps the pickled value or
    error on *job* where the journal or its dependents need them."""
    intent = job.kill_intent
    if intent is KillIntent.TIMEOUT:
        return _timed_out(job, update, rules)
    if intent is KillIntent.ABORT_KILLED and update.state is not _S.COMPLETED:
        grace = format_span(rules.abort_grace)
        if _took_jobstopped(job, update):
            reason = f"aborted; stopped by JobStopped {grace} later, its grace period over"
        elif job.runs_a_command:
            reason = f"aborted; killed {grace} later, its grace period over"
        else:  # (cold review: "killed 1.0s later" where the kill came 2 s after that)
            reason = (f"aborted; its grace period ({grace}) over, JobStopped did not end it, "
                      "and it was killed")
        return Outcome(_S.CANCELLED, reason, None, None)
    if intent is KillIntent.ABORT_TIMED_OUT and update.state is not _S.COMPLETED:
        how = ("stopped by JobStopped at" if _took_jobstopped(job, update) else "killed by")
        return Outcome(_S.CANCELLED, f"aborted; {how} its timeout "
                       f"({format_span(_armed_limit(job, rules))}) within its grace period",
                       None, None)
    if intent in (KillIntent.ABORT, KillIntent.ABORT_KILLED, KillIntent.ABORT_TIMED_OUT) or (
            update.aborted):  # (asked by a driver before this one: re-attack review)
        # Stopped by itself: what it returned (its partial work) is kept.
        if rules.journaled and update.state is _S.COMPLETED:
            job.result_blob = update.value
        return Outcome(_S.CANCELLED, "aborted", unpickled(update.value)[0], None)
    if update.state is _S.COMPLETED:
        return _completed(job, update, rules)
    if update.state is _S.CANCELLED:
        return Outcome(_S.CANCELLED, job.cancel_reason or update.reason or "cancelled", None,
                       None)
    if update.state is _S.TIMED_OUT:
        reason = update.reason or "ran past its walltime"
        return Outcome(_S.TIMED_OUT, reason, None, JobTimedOut(
            f"{_label(job)} {reason}", job_id=job.id, status=_S.TIMED_OUT, reason=reason))
    if update.error is not None:
        return _raised(job, update, update.error, rules)
    return _exited(job, update, rules)


def _took_jobstopped(job: JobRecord, update: Update) -> bool:
    """Whether *job*, a Python call corral stopped, ended by JobStopped raised
    in it (its finally blocks ran), not by its worker's kill."""
    if job.runs_a_command or update.state is not _S.FAILED or update.error is None:
        return False
    return loads_error(update.error)[2].startswith("JobStopped")


def _timed_out(job: JobRecord, update: Update, rules: EndingRules) -> Outcome:
    """A job corral stopped for its timeout. A Python call that ended within
    its grace, once JobStopped was raised in it (see corral.runtime.interrupt),
    says how, and where it was then is its error's cause: where a hung call hung."""
    limit = format_span(_armed_limit(job, rules))
    ended_itself = not job.runs_a_command and (
        (update.state is _S.COMPLETED and update.value is not None)
        or (update.state is _S.FAILED and update.error is not None))
    traceback_text = None
    if not ended_itself:
        reason = f"timed out after {limit}; killed with its child processes"
    elif update.error is None:
        reason = f"timed out after {limit}; it returned as it was being stopped"
    else:
        _, traceback_text, summary = loads_error(update.error)
        if not summary.startswith("JobStopped"):
            reason = f"timed out after {limit}; it raised {summary} as it was being stopped"
        elif summary.endswith(BEFORE_IT_BEGAN):  # (attack review: said "raised in it")
            reason = f"timed out after {limit}, before its call began (its arguments were loading)"
        elif summary.endswith(CAUGHT_AND_RETURNED):
            reason = f"timed out after {limit}; {CAUGHT_AND_RETURNED}"
            traceback_text = None  # (where it was is not known: it went on)
        else:
            reason = (f"timed out after {limit}; stopped by JobStopped raised in it, its child "
                      "processes killed")
        if rules.journaled and traceback_text is not None:  # (corral status ID and the
            job.error_blob = update.error  # report show where it was)
    error = JobTimedOut(f"{_label(job)} {reason}", job_id=job.id, status=_S.TIMED_OUT,
                        reason=reason)
    if traceback_text is not None:
        error.__cause__ = RemoteTraceback(traceback_text)
    return Outcome(_S.TIMED_OUT, reason, None, error)


def _completed(job: JobRecord, update: Update, rules: EndingRules) -> Outcome:
    """A job that returned: its value, unless this process cannot unpickle it;
    a command's, the JSON it left in its result file (see
    :mod:`corral.runtime.command_result`)."""
    blob = update.value
    if job.runs_a_command:
        value, why = read_command_result(job.jobdir)
        if why is not None:
            return Outcome(_S.FAILED, why, None, JobFailed(
                f"{_label(job)}: {why}", job_id=job.id, status=_S.FAILED, reason=why))
        if value is not None:
            try:  # (JSON nested some 500 deep parses, and cannot be pickled: re-attack review)
                blob = dumps_value(value)
            except Exception as error:  # (cloudpickle's PicklingError, RecursionError)
                why = (f"its result file's JSON cannot be kept (nested too deep?): "
                       f"{describe_error(error)}")
                return Outcome(_S.FAILED, why, None, JobFailed(
                    f"{_label(job)}: {why}", job_id=job.id, status=_S.FAILED, reason=why))
    else:
        value, problem = unpickled(blob)
        if problem is not None:
            reason = f"its return value cannot be unpickled here: {problem}"
            return Outcome(_S.FAILED, reason, None, JobFailed(
                f"{_label(job)}: {reason}", job_id=job.id, status=_S.FAILED, reason=reason))
    if job.feeds_values:
        job.value_bytes = blob
    if rules.journaled:
        job.result_blob = blob
    return Outcome(_S.COMPLETED, None, value, None)


def _raised(job: JobRecord, update: Update, blob: bytes, rules: EndingRules) -> Outcome:
    """A call that raised: its own exception, with the worker's traceback as
    its cause, or a JobFailed that carries the traceback when the exception
    cannot be unpickled here."""
    if rules.journaled:
        job.error_blob = blob
    error, traceback_text, summary = loads_error(blob)
    if isinstance(error, CwdUnusable):  # it never ran: nothing raised, nothing to keep
        job.error_blob = None  # (read back, it was corral's OSError, and "raised" in status)
        reason = f"could not start: {error}"
        if update.reason:
            reason += f" ({update.reason})"
        return Outcome(_S.FAILED, reason, None, JobFailed(
            f"{_label(job)} failed: {reason}", job_id=job.id, status=_S.FAILED, reason=reason))
    reason = f"raised {summary}"
    if update.reason:  # where it ran, e.g. the Slurm job
        reason += f" ({update.reason})"
    if error is None:
        error = JobFailed(f"{_label(job)} {reason}\n{traceback_text}", job_id=job.id,
                          status=_S.FAILED, reason=reason)
    else:
        error.__cause__ = RemoteTraceback(traceback_text)
        if isinstance(error, SystemExit) and type(error.code) is int and error.code:
            job.exit_code = error.code  # (as the call's own process would have exited: it was 1)
    return Outcome(_S.FAILED, reason, None, error)


def _exited(job: JobRecord, update: Update, rules: EndingRules) -> Outcome:
    """A command that exited non-zero, or a job whose worker was lost: the
    error shows the last lines of its stderr and where the rest is."""
    reason = update.reason or f"exit code {update.exit_code}"
    kind = WorkerLost if reason.startswith("worker lost") else JobFailed
    where = "all of it is in job.stderr" if rules.files_are_temporary else f"{job.jobdir}/stderr"
    message = with_stderr_tail(f"{_label(job)} failed: {reason}", stderr_tail(job), where)
    return Outcome(_S.FAILED, reason, None, kind(message, job_id=job.id, status=_S.FAILED,
                                                 reason=reason, exit_code=update.exit_code))


def _armed_limit(job: JobRecord, rules: EndingRules) -> float:
    """The time limit corral armed for *job* (see Engine._arm_timeout): its
    ``timeout`` where the cluster enforces the walltime, else the first of the two."""
    return (job.spec.timeout_s if rules.cluster_walltime else job.spec.kill_after_s) or 0


def unpickled(blob: bytes | None) -> tuple[Any, str | None]:
    """(value, None), or (None, what went wrong) for a value this process cannot load."""
    if blob is None:
        return None, None
    try:  # (one whose class hangs in it holds a pass: a driver told to end still ends, see stuck)
        return pickle.loads(blob), None
    except BaseException as error:  # what loading it raised, SystemExit too, is the job's
        return None, describe_error(error)


def raised_traceback(error: BaseException | None) -> str:
    """The worker's traceback of a call that raised (see :func:`_raised`): the
    cause of its own exception, or the rest of the JobFailed that stands for
    one that could not be unpickled here. "" for anything else."""
    if error is None:
        return ""
    if isinstance(error.__cause__, RemoteTraceback):
        return str(error.__cause__)
    if isinstance(error, JobFailed) and " raised " in str(error).split("\n", 1)[0]:
        return str(error).partition("\n")[2]
    return ""


def stderr_tail(job: JobRecord) -> str:
    """The last lines a failed job wrote to its stderr, for its error and its
    notice mail, read from the file's end (see :func:`last_lines`)."""
    return last_lines(job.read_output("stderr", last_bytes=TAIL_BYTES))


def _label(job: JobRecord) -> str:
    """A job as errors name it: ``job 7 'train'`` (made only when an error is)."""
    return f"job {job.id} {job.name!r}"
