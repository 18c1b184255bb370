"""What a finished job left behind: the plain record that ``job.record``,
``Scheduler.collect()`` and ``Run.results()`` hand out.

A vocabulary module: the engine fills it, the journal's readers rebuild it
from stored rows, and neither needs the other to do so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.status import JobStatus

__all__ = ["Result"]


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished job left behind, as a plain record.

    ``data`` is the return value of a Python call (None for commands, or for
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
    #: The exception its ``result()`` raises; None unless it failed.
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED
