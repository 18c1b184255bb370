"""Bundles (``bundle=N``: up to N jobs run in turn in one array task) and the
jobs a bundle leaves.

A bundle asks for the time all its jobs need plus the runtime's margin (a job
alone asks for its walltime only: see the runtime's watchdog); the runtime
(:mod:`corral.runtime.batch`) starts a job only when the time left covers it. A
job the runtime did not take — out of time, or its batch job was cancelled for
another job — is a *leftover*, submitted again (a few times at most) rather than
failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from corral.backends.base import Submission
from corral.backends.batch.records import TaskRecord
from corral.runtime.batch import MARGIN_S
from corral.status import JobStatus

__all__ = ["LEFTOVER_TRIES", "split_into_bundles", "time_limit_s", "is_leftover"]

#: Times a bundle's unstarted job is submitted again before it fails.
LEFTOVER_TRIES = 3


def split_into_bundles(submissions: Sequence[Submission], size: int) -> list[list[Submission]]:
    """Consecutive runs of at most *size* jobs: one per array task."""
    return [list(submissions[first:first + size]) for first in range(0, len(submissions), size)]


def time_limit_s(walltime_s: float | None, bundles: Sequence[Sequence[Submission]],
                 bundled: bool, granted: Callable[[float], float]) -> float | None:
    """The time limit to ask for an array of *bundles* whose jobs each need
    *walltime_s* (None: no limit), as the scheduler grants it: a bundle gets
    room for all its jobs and the runtime's margin."""
    if walltime_s is None:
        return None
    wanted = walltime_s * max(len(members) for members in bundles) + (MARGIN_S if bundled else 0)
    return granted(wanted)


def is_leftover(task: TaskRecord, started: bytes | None, someone_ran: bool,
                status: JobStatus) -> bool:
    """Whether a job its ended batch job did not run goes out again: a bundled
    job never started, while the batch job did work (or ended well), and
    tries are left."""
    return (started is None and task.bundled and task.leftovers < LEFTOVER_TRIES
            and (someone_ran or status is JobStatus.COMPLETED))
