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
    "Result": "core.job",
    "Run": "journal.run",
    "StoredJob": "journal.store",
    "RunInUse": "journal.store",
    "JournalError": "journal.store",
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
    "ResourceError": "errors",
    "DependencyError": "errors",
    "BackendError": "errors",
    "DriverTerminated": "errors",
    "RemoteTraceback": "errors",
}
_FROM_FUTURES = ("wait", "as_completed", "CancelledError", "FIRST_COMPLETED",
                 "FIRST_EXCEPTION", "ALL_COMPLETED")

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
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from concurrent.futures import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION,
                                    CancelledError, as_completed, wait)

    from corral.errors import (BackendError, CorralError, DependencyError, DriverTerminated, JobError,
                         JobFailed, JobTimedOut, RemoteTraceback, ResourceError, WorkerLost)
    from corral.events import Event
    from corral.config import ConfigError
    from corral.core.job import Job, Result
    from corral.journal.run import Run
    from corral.journal.store import JournalError, RunInUse, StoredJob
    from corral.runtime.abort import abort_requested
    from corral.core.scheduler import Scheduler, Submitter
    from corral.spec import Call, FunctionRef, Resources, Script, Shell
    from corral.status import JobStatus
