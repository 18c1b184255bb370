"""What a backend is and can do, without importing it: :class:`BackendInfo`
and its :class:`Capabilities`, for the registry in :mod:`corral.backends`.

Apart from :mod:`corral.backends.base` (what a backend is handed and reports),
so that a command that only asks whether a run's backend outlives its driver
(``corral status``) does not import the job specs that protocol speaks of.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.backends.base import Backend

__all__ = ["Capabilities", "BackendInfo", "Probe", "option_help", "APPLIED_BY_CORRAL",
           "NOT_USED", "DRIVERLESS_VERBS"]


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
#: What a timeout does where a corral worker runs the job (local, Dask).
STOPPED_IN_PLACE = ("a call gets JobStopped (its finally blocks run), a command SIGTERM; "
                    "killed with its process tree 2 s later if still running")
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
    #: What to do about a placement option (``{option}``) it has no way to ask
    #: for, said with the warning of the first job that asks for one; None:
    #: pass the scheduler's own flag with ``extra_flags`` (a site's table adds
    #: a directive instead).
    placement_hint: str | None = None

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
