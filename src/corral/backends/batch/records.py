"""What the batch base keeps per corral job, per batch job and per group of jobs.

Owned by the backend's control-loop thread; never shared with another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.backends.base import Submission
from corral.backends.batch.scheduler import NativeRow
from corral.spec import Placement, Resources

__all__ = ["Group", "TaskRecord", "BatchJob"]


@dataclass(slots=True)
class Group:
    """Jobs that can share one submission: everything but their work is equal."""

    resources: Resources
    placement: Placement
    after: tuple[str, ...]  # native ids the submission depends on
    bundle: int  # jobs per array task
    submissions: list[Submission] = field(default_factory=list)
    #: The followed parents behind ``after``: their results tell whether a
    #: dependency the scheduler calls never satisfied was in fact met, and why
    #: a child the scheduler dropped never started (see
    #: :func:`corral.backends.batch.forgotten.failed_upstream`). Kept after a
    #: resubmission drops ``after``; never compared (chains are long).
    parents: tuple[TaskRecord, ...] = field(default=(), compare=False, repr=False)
    #: How many followed parents deep it is (0: none): a poll reports a
    #: parent's outcome before its children's, as the engine would decide them.
    depth: int = 0
    #: Held back and ready to go, but a pause holds it: said once in the log.
    pause_noted: bool = field(default=False, compare=False)
    #: Its submission found the scheduler unreachable: until when (monotonic)
    #: it is tried again (see BatchBackend._submit_chunk); None: never was.
    retry_until: float | None = field(default=None, compare=False)
    #: Not tried again before this (monotonic): a controller down is asked at the
    #: slow poll's pace, not at every poll.
    next_try: float = field(default=0.0, compare=False)

    @property
    def after_jobdirs(self) -> tuple[str, ...]:
        """The job directories of :attr:`parents`."""
        return tuple(parent.jobdir for parent in self.parents)


@dataclass(slots=True)
class TaskRecord:
    """One corral job in the scheduler's hands."""

    job_id: int | str
    jobdir: str
    is_command: bool
    bundled: bool
    group: Group
    native_id: str = ""
    running: bool = False
    leftovers: int = 0  # times it was submitted again, left by its batch job
    submitted_at: float = 0.0  # monotonic time of our submission; 0 for an attached job
    release_if_held: bool = False  # attached while not paused: a dead driver's hold goes
    name: str = ""  # the job's name, for a child's reason when this job fails


@dataclass(slots=True)
class BatchJob:
    """One batch job or array task and the corral jobs it runs."""

    native_id: str
    log_path: str
    tasks: list[TaskRecord] = field(default_factory=list)
    row: NativeRow | None = None
    #: The runtime took at least one of its jobs: the batch job works, so jobs
    #: it did not take were left (cancelled, out of time) and go out again.
    runtime_ran: bool = False
    #: When a status answer last listed it, or it was submitted or attached
    #: (monotonic). A scheduler lists a job for its forget time after it ends,
    #: so one missing sooner is a bad answer (an empty or cut-off listing, a
    #: controller that restarted), not a forgotten job.
    last_seen: float = 0.0
    #: Status answers in a row that did not list it: a single one never decides.
    missing: int = 0
    #: When accounting was last asked about it (monotonic; None: never). Of the
    #: jobs a scheduler's accounting takes one at a time, the longest unasked go
    #: first, and none is guessed before an ask made once accounting could know it.
    accounting_asked_at: float | None = None
