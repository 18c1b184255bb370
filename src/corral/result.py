"""What a finished job left behind: the plain record that ``job.record``,
``Scheduler.collect()`` and ``Run.results()`` hand out.

A vocabulary module: the engine fills it, the journal's readers rebuild it
from stored rows, and neither needs the other to do so.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass, field, fields, replace
from typing import Any

from corral.status import JobStatus

__all__ = ["Result"]


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished job left behind, as a plain record.

    ``data`` is the return value of a Python call, or the JSON a command or
    script wrote to ``$CORRAL_RESULT_FILE`` (None where it wrote none, or for
    a job that did not complete); ``reason`` says why it ended as it did, and
    ``error`` is what ``job.result()`` raises for a job that failed: the call's
    own exception, or a :class:`corral.JobFailed` that ends with the last lines
    of the job's stderr (a cold review: a failed script's Result said only
    "exit code 3", and why was in its JobFailed alone).
    """

    id: int | str
    name: str
    data: Any
    status: JobStatus
    exit_code: int | None
    started: float | None
    ended: float | None
    attempts: int
    reason: str | None = None
    #: What the job was given as ``meta=`` (read back from a journal: as JSON
    #: gives it back, or its repr when it was not plain data).
    meta: Any = None
    #: The exception its ``result()`` raises: None for a job that completed or
    #: was cancelled (whose result() raises CancelledError). (Not
    #: compared: two reads of one journal make two exceptions of one failure.)
    error: BaseException | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED

    # A Result stays a record to pickle and copy, whatever its job raised (an
    # exception whose __init__ takes other arguments than it keeps cannot be
    # made again by pickle or deepcopy: re-attack review). dataclasses.asdict,
    # which deep-copies each field itself, still copies the error: for such
    # an exception, leave it out (``{f.name: getattr(r, f.name) for f in ...}``).

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (type(self), {part.name: _portable(self.error, self)
                                        if part.name == "error" else getattr(self, part.name)
                                        for part in fields(self)}))

    def __copy__(self) -> Result:
        return replace(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Result:
        return replace(self, **{part.name: copy.deepcopy(getattr(self, part.name), memo)
                                for part in fields(self) if part.name != "error"})
        # (its exception is kept, not copied)


def _rebuilt(kind: type[Result], values: dict[str, Any]) -> Result:
    return kind(**values)


def _portable(error: BaseException | None, result: Result) -> BaseException | None:
    """*error*, or, when it cannot be pickled, a JobFailed that says what it was."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        from corral.errors import JobFailed
        from corral.safe_repr import describe_error

        return JobFailed(f"job {result.id} {result.name!r} raised {describe_error(error)} (an "
                         "exception that cannot be pickled, said here in words)",
                         job_id=result.id, status=result.status, reason=result.reason)
