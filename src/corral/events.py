"""What ``Scheduler.on_event`` callbacks receive.

Four kinds: ``"added"`` (a job entered the scheduler), ``"removed"``
(``Scheduler.remove``), ``"status"`` (a state change, with the old and new
state and the reason) and ``"aborting"`` (``Scheduler.abort`` asked a running
job to stop: its reason says until when it may; the status event that ends it
follows). Callbacks run on the control-loop thread: keep them short, and hand
long work to another thread.
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

    kind: Literal["added", "removed", "status", "aborting"]
    job: Job
    old: JobStatus | None
    new: JobStatus | None
    reason: str | None
    time: float

    def __str__(self) -> str:
        if self.kind == "status":
            because = f" ({self.reason})" if self.reason else ""
            return f"job {self.job.id} {self.job.name!r}: {self.old} -> {self.new}{because}"
        if self.kind == "aborting":
            return f"job {self.job.id} {self.job.name!r} aborting ({self.reason})"
        return f"job {self.job.id} {self.job.name!r} {self.kind}"
