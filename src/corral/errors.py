"""corral's exceptions: what went wrong, to which job, and what to do next.

::

    CorralError
    ├── JobError                  a job did not complete (has .job_id, .status, .reason)
    │   ├── JobFailed             non-zero exit code, or an error that could not be re-raised
    │   │   └── WorkerLost        the process running the job died under it
    │   └── JobTimedOut           killed after its timeout or walltime
    ├── ResourceError (ValueError)    a job asks for more than the backend can ever give
    ├── DependencyError (ValueError)  a dependency cycle, or an unknown job name in after=
    ├── BackendError              the backend itself failed (cannot start workers, ...)
    ├── JournalError              a run's journal is damaged or lost a row
    └── RunInUse                  another driver holds the run

    SystemExit
    └── DriverTerminated          SIGTERM reached a driver with a live scheduler

    BaseException
    └── JobStopped                raised inside a Python call corral stops (timeout, cancel)

A Python job that raises is re-raised with its *own* exception type from
``Job.result()``; its traceback in the job's process is attached as the
``__cause__`` (a :class:`RemoteTraceback`). Cancelled jobs raise
``concurrent.futures.CancelledError`` with the reason in its message.
"""

from __future__ import annotations

__all__ = [
    "CorralError",
    "RunLockTakenAway",
    "JobError",
    "JobFailed",
    "WorkerLost",
    "JobTimedOut",
    "ResourceError",
    "DependencyError",
    "NotPicklable",
    "BackendError",
    "RemoteTraceback",
    "DriverTerminated",
    "JobStopped",
    "JournalError",
    "RunInUse",
    "cancelled_message",
]


class CorralError(Exception):
    """Base of every error corral raises on purpose."""


class JobError(CorralError):
    """A job ended without a result. ``reason`` says why, in words."""

    def __init__(self, message: str, *, job_id: object = None, status: object = None,
                 reason: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.reason = reason
        self.exit_code = exit_code

    def __reduce__(self):  # keep the keyword fields when pickled
        return (_rebuild_job_error, (type(self), str(self), self.job_id, self.status,
                                     self.reason, self.exit_code))


def _rebuild_job_error(cls, message, job_id, status, reason, exit_code):
    return cls(message, job_id=job_id, status=status, reason=reason, exit_code=exit_code)


class JobFailed(JobError):
    """The job ran and failed: a non-zero exit code, or an unpicklable exception."""


class WorkerLost(JobFailed):
    """The worker process died while running the job (segfault, kill, out of memory)."""


class JobTimedOut(JobError):
    """The job ran past its ``timeout`` (or ``walltime``) and was killed with its children."""


class JobStopped(BaseException):
    """Raised inside a running Python call that corral stops: its timeout ran
    out, or it was cancelled. It comes where the call is (a ``time.sleep`` or a
    wait is cut short), so that its ``finally`` blocks and ``with`` blocks run:
    a lock file removed, a connection closed, partial work saved, as a
    command's shell gets SIGTERM first. A BaseException, as KeyboardInterrupt
    is, so that an ``except Exception`` does not keep the call going. A call
    still running two seconds later (in C code that does not return to Python,
    or one that went on after catching this) is killed with its worker. The
    job ends TIMED_OUT or CANCELLED as before; where the call was when it was
    stopped is the ``__cause__`` of its error."""


class ResourceError(CorralError, ValueError):
    """A job asks for more cores, memory, GPUs or tokens than the scheduler has.

    ``setting`` names the scheduler setting that would make room (``"cores"``),
    so that the message can say where the person running it sets it.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DependencyError(CorralError, ValueError):
    """Dependencies that can never be met: a cycle, or ``after=`` naming no known job."""


class NotPicklable(CorralError, ValueError, TypeError):
    """A job's function or arguments cannot be sent to a worker (they do not
    pickle), said as the job is made; or a call's return value cannot be sent
    back, raised by its result(). A ValueError, as every bad input is here,
    and a TypeError, as pickle and ProcessPoolExecutor raise it: code written
    for either catches it."""

    def __init__(self, *args: object, in_arguments: bool = False) -> None:
        super().__init__(*args)
        #: Whether what does not pickle is among the call's arguments (not its
        #: function): an error of this call's, not of every call of a map.
        self.in_arguments = in_arguments


class BackendError(CorralError):
    """The backend could not do what was asked (start a worker, submit, query)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside a job's process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class DriverTerminated(SystemExit):
    """SIGTERM (or SIGHUP) reached a program that runs a scheduler (see
    :mod:`corral.core.driver_signals`).

    Raised in the main thread so that ``with Scheduler()`` blocks and
    ``finally`` clauses run: unfinished jobs are cancelled, temporary files
    removed. Uncaught, it ends the program with status 143 (128 + SIGTERM;
    129 for SIGHUP), without a traceback, as the default action would have.
    """


class RunInUse(CorralError):
    """Another live process drives this run directory."""


class RunLockTakenAway(RunInUse):
    """Another live process drives this run directory, though its lock file was
    deleted: no race between two starts, which a daemon that loses one ends on
    without a word, but a run no second driver may take (see corral.journal.store)."""


class JournalError(CorralError):
    """The journal cannot be read, or cannot be trusted: not a corral journal,
    empty, missing what its write-ahead log held, a value corral cannot read,
    or a write the writer process could not make. The message names the file
    and what is wrong."""


def cancelled_message(job_id: object, name: str, reason: str | None) -> str:
    """The message of the CancelledError a cancelled job's result raises, live
    (``Job.result()``) or read back (``StoredJob.result_value()``) alike."""
    return f"job {job_id} {name!r} was cancelled: {reason or 'cancelled'}"
