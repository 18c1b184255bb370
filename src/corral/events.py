"""What ``Scheduler.on_event`` callbacks receive.

Three kinds: ``"added"`` (a job entered the scheduler), ``"removed"``
(``Scheduler.remove``) and ``"status"`` (a state change, with the old and new
state and the reason). Callbacks run on the control-loop thread: keep them
short, and hand long work to another thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from corral.status import JobStatus

if TYPE_CHECKING:
    from corral.core.job import Job

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to one job."""

    kind: Literal["added", "removed", "status"]
    job: Job
    old: JobStatus | None
    new: JobStatus | None
    reason: str | None
    time: float

    def __str__(self) -> str:
        if self.kind == "status":
            because = f" ({self.reason})" if self.reason else ""
            return f"job {self.job.id} {self.job.name!r}: {self.old} -> {self.new}{because}"
        return f"job {self.job.id} {self.job.name!r} {self.kind}"
