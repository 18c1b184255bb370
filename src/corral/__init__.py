"""corral: run jobs with resources and dependencies, here or on a cluster.

    import corral

    with corral.Scheduler(cores=4) as scheduler:
        prepared = scheduler.submit(prepare, "data.csv")
        trained = scheduler.options(cores=2, memory="4G", timeout="2h").submit(train, prepared)
        print(trained.result())

Everything public is importable from here; implementation modules are loaded
on first use so that ``import corral`` stays fast.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # `typing` costs ~10 ms to import; type checkers read the block below

__version__ = "0.1.0"

_EXPORTS = {
    "Scheduler": "core.scheduler",
    "Submitter": "core.scheduler",
    "Job": "core.job",
    "Result": "result",
    "Run": "journal.run",
    "StoredJob": "journal.stored",
    "RunInUse": "errors",
    "JournalError": "errors",
    "ConfigError": "config",
    "JobStatus": "status",
    "Event": "events",
    "Call": "spec",
    "FunctionRef": "spec",
    "Script": "spec",
    "Shell": "spec",
    "Resources": "spec",
    "abort_requested": "runtime.abort",
    "CorralError": "errors",
    "JobError": "errors",
    "JobFailed": "errors",
    "WorkerLost": "errors",
    "JobTimedOut": "errors",
    "JobStopped": "errors",
    "ResourceError": "errors",
    "DependencyError": "errors",
    "NotPicklable": "errors",
    "BackendError": "errors",
    "DriverTerminated": "errors",
    "RemoteTraceback": "errors",
    "wait": "core.waiting",
    "as_completed": "core.waiting",
}
_FROM_FUTURES = ("CancelledError", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED")

__all__ = sorted([*_EXPORTS, *_FROM_FUTURES])


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _FROM_FUTURES:
        value = getattr(import_module("concurrent.futures"), name)
    else:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, and the module's own dunders (not ``annotations``,
    ``TYPE_CHECKING`` or ``import_module``, which are no API: a cold review)."""
    return sorted({name for name in globals() if name.startswith("__")} | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # `X as X` marks a re-export (PEP 484), so linters do not call these imports unused.
    from concurrent.futures import ALL_COMPLETED as ALL_COMPLETED
    from concurrent.futures import FIRST_COMPLETED as FIRST_COMPLETED
    from concurrent.futures import FIRST_EXCEPTION as FIRST_EXCEPTION
    from concurrent.futures import CancelledError as CancelledError

    from corral.config import ConfigError as ConfigError
    from corral.core.waiting import as_completed as as_completed
    from corral.core.waiting import wait as wait
    from corral.core.job import Job as Job
    from corral.result import Result as Result
    from corral.core.scheduler import Scheduler as Scheduler
    from corral.core.scheduler import Submitter as Submitter
    from corral.errors import BackendError as BackendError
    from corral.errors import CorralError as CorralError
    from corral.errors import DependencyError as DependencyError
    from corral.errors import DriverTerminated as DriverTerminated
    from corral.errors import JobError as JobError
    from corral.errors import JobFailed as JobFailed
    from corral.errors import JobStopped as JobStopped
    from corral.errors import JobTimedOut as JobTimedOut
    from corral.errors import NotPicklable as NotPicklable
    from corral.errors import RemoteTraceback as RemoteTraceback
    from corral.errors import ResourceError as ResourceError
    from corral.errors import WorkerLost as WorkerLost
    from corral.events import Event as Event
    from corral.journal.run import Run as Run
    from corral.errors import JournalError as JournalError
    from corral.errors import RunInUse as RunInUse
    from corral.journal.stored import StoredJob as StoredJob
    from corral.runtime.abort import abort_requested as abort_requested
    from corral.spec import Call as Call
    from corral.spec import FunctionRef as FunctionRef
    from corral.spec import Resources as Resources
    from corral.spec import Script as Script
    from corral.spec import Shell as Shell
    from corral.status import JobStatus as JobStatus
