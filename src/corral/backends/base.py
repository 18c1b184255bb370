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

import importlib
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from corral.spec import Placement, Resources
from corral.status import JobStatus

__all__ = ["Capabilities", "BackendInfo", "Probe", "Submission", "Update", "Capacity", "Backend",
           "ClusterBackend", "QueuingBackend", "option_help", "APPLIED_BY_CORRAL", "NOT_USED"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend does, which the engine, the journal and the CLI act on.

    Each is a question the code used to answer by comparing the backend's
    name; a new backend answers them once, here.
    """

    #: Its jobs keep running when the driver dies. The journal then counts an
    #: unfinished job as still running, not lost; a resumed run attaches to it
    #: instead of running it again; ``corral status`` shows its native id and
    #: keeps its clock going; and ``corral cancel``/``pause``/``resume`` with no
    #: driver alive act on the backend directly (:attr:`BackendInfo.driverless_control`).
    outlives_driver: bool
    #: It can hold a job back until jobs it already runs complete (Slurm's
    #: ``afterok``): the engine submits a child while its parent still runs, with
    #: the parent in :attr:`Submission.after`, instead of waiting for the parent.
    chains_dependencies: bool
    #: It can keep its pending jobs from starting and let them go again: pause
    #: holds what the backend has not started (resume releases it), on top of
    #: the engine's own stop on dispatching.
    holds: bool
    #: It ends a job at the job's walltime itself, so the engine arms only the
    #: ``timeout`` option; otherwise the engine also kills a job at its walltime.
    enforces_walltime: bool
    #: Its jobs run on this machine, packed by corral against the cores, memory
    #: and GPUs the Scheduler was given (a job that can never fit is refused when
    #: it is made); otherwise the backend's own scheduler places them.
    packs_locally: bool
    #: A worker can be handed jobs to run after the one it runs now
    #: (:attr:`Submission.follows`), so that it never idles while the driver
    #: catches up. They count as SUBMITTED until they start; the backend gives
    #: them back unstarted (an update to QUEUED) when asked
    #: (``give_back``), when the job before runs long, or when the worker is lost.
    queues_ahead: bool = False
    #: How long ``map(..., chunksize="auto")`` aims for one chunk of calls to
    #: run: long enough that what a job costs besides its calls (a round trip
    #: through the driver, a task's hand-over, a cluster's queue) is a small
    #: share of it (see :mod:`corral.core.chunk_sizes`). A minute for a cluster,
    #: whose jobs take seconds to start.
    chunk_seconds: float = 60.0


#: The verbs a backend's driverless control accepts (see BackendInfo.driverless_control).
DRIVERLESS_VERBS = ("cancel", "pause", "resume")

#: The help of an option the engine applies before the backend sees the job.
APPLIED_BY_CORRAL = "not sent: corral applies it"
#: The help of an option the backend ignores.
NOT_USED = "not used"
#: Options corral applies itself, alike on every backend.
_SAME_ON_EVERY_BACKEND = {
    "queue": APPLIED_BY_CORRAL,
    "tokens": APPLIED_BY_CORRAL,
    "notify": "sent by corral through the [smtp] settings",
    "notify_on": APPLIED_BY_CORRAL,
}


def option_help(own: Mapping[str, str], not_used: Sequence[str] = ()) -> Mapping[str, str]:
    """A backend's :attr:`BackendInfo.option_help`: its *own* words per option, the
    options it ignores (*not_used*), and those corral applies alike everywhere."""
    return MappingProxyType({**_SAME_ON_EVERY_BACKEND, **dict.fromkeys(not_used, NOT_USED),
                             **own})


@dataclass(frozen=True, slots=True)
class Probe:
    """What a backend's probe found here: whether it can be used, and why, in words
    a user checks (``corral backends`` prints them): "qstat -help says SGE 8.1.9",
    "sbatch is not on PATH"."""

    answers: bool
    why: str


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend as the registry knows it, without importing its code.

    Declared in the backend's own package ``__init__`` (light: no heavy
    imports), so that ``corral options``, config checks and ``backend="auto"``
    can ask about every backend without starting or importing any.
    """

    #: What ``Scheduler(backend=...)`` and the config's ``[daemon] backend`` take.
    name: str
    #: How people call it in messages: "sent to Slurm", the "SLURM ID" column.
    title: str
    #: One line for listings.
    description: str
    capabilities: Capabilities
    #: ``"module:Class"`` of the backend, imported only when one is made.
    factory: str
    #: What each job option becomes on this backend, for ``corral options``:
    #: ``{option name: one line}``; an option not listed shows as "-".
    option_help: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Whether the backend can be used from this machine now, for
    #: ``backend="auto"`` and ``corral backends``: a :class:`Probe` (or a bare
    #: bool). It must tell schedulers apart by what answers, never by a command's
    #: name (SGE's and PBS's ``qsub`` differ). None: never chosen by "auto".
    answers: Callable[[], Probe | bool] | None = None
    #: The ``backend_options`` it takes, for ``corral backends``: ``{name: one line}``.
    backend_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: ``"module:function"`` taking ``(verb, native_ids)`` (a verb of
    #: DRIVERLESS_VERBS) that acts on jobs with no driver alive and returns what
    #: the backend said; needed when its jobs outlive the driver.
    driverless_control: str | None = None
    #: Whether ``backend="auto"`` may choose it when its probe answers. A backend
    #: that would start machinery of its own to run anything (Dask without an
    #: address starts a LocalCluster) is chosen only by its name.
    auto: bool = True

    @property
    def native_id_column(self) -> str:
        """The title of ``corral status``'s column of this backend's job ids."""
        return f"{self.title.upper()} ID"

    def backend_class(self) -> Callable[..., Backend]:
        """Import the backend's class (the first call pays for its imports)."""
        return _load(self.factory)

    def control_without_driver(self, verb: str, native_ids: Sequence[str]) -> str:
        """Cancel, pause or resume jobs of this backend with no driver alive.

        Raises:
            ValueError: the backend's jobs do not outlive a driver, so there
                is nothing to act on without one, or *verb* is not one of
                DRIVERLESS_VERBS.
            corral.errors.BackendError: the backend's command failed.
        """
        if self.driverless_control is None:
            raise ValueError(f"the {self.name} backend's jobs end with their driver: "
                             "there is nothing to control without one")
        if verb not in DRIVERLESS_VERBS:
            raise ValueError(f"{verb!r} cannot be done without a driver; "
                             f"only {', '.join(DRIVERLESS_VERBS)}")
        return str(_load(self.driverless_control)(verb, list(native_ids)))


def _load(target: str) -> Any:
    """The object a ``"module:name"`` string names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


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


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the backend can run at once. ``None`` means no limit that corral must pack."""

    cores: int | None
    memory_mb: int | None
    gpus: int | None


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
