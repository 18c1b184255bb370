"""The public surface is deliberate, and importing corral stays light."""

from __future__ import annotations

import subprocess
import sys

import corral


def test_the_public_names_are_pinned():
    assert corral.__all__ == sorted([
        "ALL_COMPLETED", "BackendError", "Call", "CancelledError", "ConfigError", "CorralError",
        "DependencyError", "DriverTerminated", "Event", "FIRST_COMPLETED", "FIRST_EXCEPTION",
        "FunctionRef", "Job", "JobError", "JobFailed", "JobStatus", "JobStopped", "JournalError",
        "JobTimedOut",
        "NotPicklable", "RemoteTraceback", "ResourceError",
        "Resources", "Result", "Run", "RunInUse", "Scheduler", "Script", "Shell", "StoredJob",
        "Submitter", "WorkerLost", "abort_requested", "as_completed", "wait",
    ])
    for name in corral.__all__:
        assert getattr(corral, name) is not None


def test_importing_corral_loads_no_heavy_module():
    code = ("import sys, corral; heavy = [m for m in ('cloudpickle', 'psutil', 'multiprocessing', "
            "'asyncio', 'typing', 'subprocess') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_hierarchy_lets_callers_catch_broadly_or_narrowly():
    assert issubclass(corral.WorkerLost, corral.JobFailed)
    assert issubclass(corral.JobFailed, corral.JobError)
    assert issubclass(corral.JobTimedOut, corral.JobError)
    assert issubclass(corral.ResourceError, ValueError)
    assert issubclass(corral.DependencyError, ValueError)
    assert all(issubclass(error, corral.CorralError) for error in (
        corral.JobError, corral.ResourceError, corral.DependencyError, corral.BackendError))
