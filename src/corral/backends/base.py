"""What every backend is handed and what it reports: the backend protocol.

A backend sees only plain values — never the DAG, a callable or a Future. The
scheduler hands it ready jobs (:class:`Submission`) and reads back native
states (:class:`Update`). Packing decisions use :meth:`Backend.capacity`:
``None`` for a resource means the backend packs it itself (a cluster does).

What the rest of corral may assume of a backend is in its :class:`Capabilities`,
never in its name; :class:`BackendInfo` describes a backend without importing
it, for the registry in :mod:`corral.backends`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from corral.backends.info import (APPLIED_BY_CORRAL, NOT_USED, BackendInfo,
                                  Capabilities, Probe, option_help)
from corral.errors import ResourceError
from corral.spec import Placement, Resources
from corral.status import JobStatus

__all__ = ["Capabilities", "BackendInfo", "Probe", "Submission", "Update", "Capacity", "Backend",
           "ClusterBackend", "QueuingBackend", "option_help", "APPLIED_BY_CORRAL", "NOT_USED"]


@dataclass(slots=True)
class Submission:
    """One job, ready to run.

    Exactly one of ``call`` (a pickled Python call, see
    :mod:`corral.runtime.payload`) and ``argv`` (a command) is set.

    Not frozen only for speed, like :class:`Update`: nothing changes one once
    it is made.
    """

    job_id: int | str
    name: str
    #: The job's directory, as text (``os.fspath``-able; a Path costs the control
    #: loop microseconds per job): wrap it in ``Path()`` to join paths.
    jobdir: str | os.PathLike[str]
    resources: Resources
    call: bytes | None = None
    #: The results of the call's dependencies, in order: a pickled value, or
    #: (only for a backend that :attr:`chains dependencies <Backend>`) the id of
    #: a job still running there, whose result the runtime reads when it starts.
    upstream: tuple[bytes | int | str, ...] = ()
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str | None], ...] = ()  # None: unset
    #: A journaled run's outcome log directory: the runtime records a call's
    #: outcome there before reporting it, so that a driver killed in between
    #: finds it on resume (see corral.runtime.outcomes).
    outcomes: str | None = None
    #: Where on a cluster it goes (partition, setup lines, bundling...); the
    #: local backend ignores it.
    placement: Placement = field(default_factory=Placement)
    #: Ids of jobs still running in this backend that must complete first: the
    #: backend holds this job back itself (Slurm: ``--dependency=afterok``).
    after: tuple[int | str, ...] = ()
    #: The job's priority (higher first), for a backend that orders what it was
    #: handed by its own rules (Dask).
    priority: int = 0
    #: The id of a job the backend has now, after which this one runs on the
    #: same worker (only for a backend that :attr:`~Capabilities.queues_ahead`).
    follows: int | str | None = None


@dataclass(slots=True)
class Update:
    """A change the backend saw. For a Python call, ``value``/``error`` carry the outcome.

    ``value`` is the pickled return value of a completed call; ``error`` is a
    packed exception (see :func:`corral.runtime.payload.loads_error`).

    Not frozen only for speed: one or two are made for every job on the control
    loop's path, and a frozen dataclass's constructor (an ``object.__setattr__``
    per field) took 3.1 µs against 0.6 µs. Nothing changes one once it is made.
    """

    job_id: int | str
    state: JobStatus
    native_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    value: bytes | None = None
    error: bytes | None = None
    live_output: tuple[str, str] | None = None  # stdout, stderr files while it runs
    #: When it really started or ended (epoch seconds), where the backend learns
    #: it later than it happened (a cluster's poll); else the time of the update.
    at: float | None = None
    #: For an end: when the job's own code began, where the backend measured
    #: it (a worker's clock, without the hand-over): how long jobs of its
    #: kind take, for queueing ahead (see corral.core.ahead).
    began: float | None = None
    #: A RUNNING update sent as the job was handed to a worker still starting:
    #: a second RUNNING update says when its code really began, and its
    #: timeout counts from then (a worker's start-up is not the job's time).
    starting: bool = False
    #: An end the job reached after an abort asked it to stop: ended as an
    #: aborted job, whichever driver asked (see corral.runtime.batch.BatchOutcome).
    aborted: bool = False


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the backend can run at once. ``None`` means no limit that corral must pack."""

    cores: int | None
    memory_mb: int | None
    gpus: int | None

    def check(self, resources: Resources, where: str) -> None:
        """Refuse a job over a cap the program set on what the run has in
        flight where the cluster packs (``Scheduler(cores=2)``, ``[daemon]
        cores``): it would wait for ever, unsubmitted and unsaid (a sysadmin's
        review), so it is refused when it is made, as the local backend refuses
        one larger than the machine.

        Raises:
            ResourceError: naming the request and the cap.
        """
        for what, asked, limit, knob, unit in (
            ("cores", resources.cores, self.cores, "cores", ""),
            ("MB of memory", resources.memory_mb, self.memory_mb, "memory", " MB"),
            ("GPUs", resources.gpus, self.gpus, "gpus", ""),
        ):
            if asked and limit is not None and asked > limit:
                raise ResourceError(f"asks for {asked} {what} but {knob}={limit}{unit} caps what "
                                    f"this run has in flight on {where} at once", setting=knob)


class Backend(Protocol):
    """Where jobs run. Called from the scheduler's control-loop thread only, except
    :meth:`wake`, which any thread may call."""

    name: ClassVar[str]

    def capacity(self) -> Capacity: ...

    def check(self, resources: Resources) -> None:
        """Raise ResourceError now for a request this backend can never satisfy."""

    def submit(self, batch: Sequence[Submission]) -> list[str]:
        """Start the jobs; return their native ids in order."""

    def updates(self, timeout: float | None) -> list[Update]:
        """Wait up to *timeout* seconds for changes; return early on :meth:`wake`."""

    def wake(self) -> None:
        """Make a blocked :meth:`updates` return now. Thread-safe."""

    def kill(self, job_ids: Collection[int | str]) -> Mapping[int | str, str] | None:
        """End the jobs now, with every process they started. Each is then
        reported once more, as CANCELLED (or as what it finished with first).

        Returns what to say of jobs whose end is in doubt (a cluster refused to
        delete them: they may run on), by job id; None when all went as asked."""

    def terminate(self, job_ids: Collection[int | str]) -> None:
        """Ask the jobs to stop cleanly (abort); they may ignore it."""

    def close(self) -> None:
        """Kill whatever still runs and release every process and file."""


class QueuingBackend(Backend, Protocol):
    """A backend whose workers take jobs ahead (:attr:`Capabilities.queues_ahead`)."""

    def give_back(self, job_ids: Collection[int | str]) -> None:
        """Take these jobs back from the workers' queues if they have not
        started: each is then reported QUEUED (or, started meanwhile, runs on)."""

    def hold_replies(self, seconds: float) -> None:
        """Wait up to *seconds* without reading the workers' replies, unless
        :meth:`wake` is called or something else is due meanwhile."""


class ClusterBackend(Backend, Protocol):
    """A batch scheduler: jobs outlive the driver, so it also can attach to a
    job an earlier driver submitted, chain dependencies itself, and hold jobs.

    Its ``enforces_walltime`` is True: the cluster ends a job at its walltime,
    so the scheduler arms only the ``timeout`` option.
    """

    enforces_walltime: ClassVar[bool]
    chains_dependencies: ClassVar[bool]

    def attach(self, submission: Submission, native_id: str) -> None:
        """Follow a job submitted by an earlier driver, without submitting it again."""

    def can_chain(self, job_id: int | str) -> bool:
        """Whether a job may be submitted now with *job_id* in its ``after``."""

    def hold(self, job_ids: Collection[int | str]) -> None:
        """Keep pending jobs from starting (pause)."""

    def release(self, job_ids: Collection[int | str]) -> None:
        """Undo :meth:`hold` (resume)."""
