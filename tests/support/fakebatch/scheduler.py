"""corral's side of the fake batch scheduler: its :class:`BatchScheduler` pieces
and its registration as the backend ``"fakebatch"``.

Everything here is pure (argv builders, parsers, the state table), as for a
real scheduler; the shared batch base runs the commands. A test makes a
``Scheduler(backend="fakebatch")`` inside :func:`registered`, so that the
registry of the test process is left as it was found; a driver process of its
own calls :func:`register`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from corral.backends.batch import BATCH_CAPABILITIES
from corral.backends.info import BackendInfo, option_help
from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, Meaning, NativeRow,
                                             NeverStarts, SubmitRequest)
from corral.status import JobStatus

__all__ = ["FakeBatchScheduler", "BACKEND", "register", "registered", "control_without_driver"]

BIN = Path(__file__).with_name("bin")

#: The fake's task states (see qlib.py), and what a finished task's reason means.
_ACTIVE: dict[str, Meaning] = {"Q": (JobStatus.SUBMITTED, ""), "H": (JobStatus.SUBMITTED, ""),
                               "R": (JobStatus.RUNNING, "")}
_ENDED_BY: dict[str, Meaning] = {
    "walltime": (JobStatus.TIMED_OUT, "killed at its walltime by fakebatch"),
    "deleted": (JobStatus.CANCELLED, "deleted with qdel"),
}


class FakeBatchScheduler(BatchScheduler):
    """qsub/qstat/qdel/qhold/qrls/qsig/qmgr of ``tests/support/fakebatch/bin``."""

    name: ClassVar[str] = "fakebatch"
    title: ClassVar[str] = "fakebatch"
    template: ClassVar[Path] = Path(__file__).with_name("job.sh.template")
    array_index_base: ClassVar[int] = 1
    failed_exit_status: ClassVar[int] = 1

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        argv = ["qsub", "-N", request.name, "-o", request.output,
                "-l", f"ncpus={request.resources.cores}"]
        if request.resources.memory_mb:
            argv += ["-l", f"mem={request.resources.memory_mb}"]
        if request.resources.gpus:
            argv += ["-l", f"ngpus={request.resources.gpus}"]
        if request.time_limit_s is not None:
            argv += ["-l", f"walltime={math.ceil(request.time_limit_s)}"]
        if request.array_size is not None:
            last = self.array_index_base + request.array_size - 1
            throttle = f"%{request.throttle}" if request.throttle else ""
            argv += ["-t", f"{self.array_index_base}-{last}{throttle}"]
        if request.dependencies:
            argv += ["-W", "depend=afterok:" + ":".join(request.dependencies)]
        return [*argv, *request.placement.extra_flags, request.script]

    def parse_submit(self, stdout: str) -> str:
        job_id = stdout.strip()
        if not job_id.isdigit():
            raise ValueError(f"qsub printed no job id: {stdout.strip()!r}")
        return job_id

    def granted_time_s(self, seconds: float) -> float:
        return float(math.ceil(seconds))

    def status_argv(self, user: str) -> list[str]:
        return ["qstat", "-u", user]

    def parse_status(self, stdout: str) -> dict[str, NativeRow]:
        try:
            listed = json.loads(stdout)
        except ValueError:
            raise ValueError(f"qstat printed no JSON: {stdout[:200]!r}") from None
        rows = {}
        for native, task in listed.items():
            if isinstance(task, dict) and isinstance(task.get("state"), str):
                rows[native] = NativeRow(native, task["state"], task.get("reason") or "",
                                         task.get("exit_status"), task.get("signal"))
        return rows

    def limits_argv(self) -> list[str] | None:
        return ["qmgr"]

    def parse_limits(self, stdout: str) -> ClusterLimits:
        config = json.loads(stdout)
        return ClusterLimits(int(config["max_array_size"]), float(config["forget_after_s"]),
                             accounting=False)

    def meaning(self, row: NativeRow) -> Meaning | None:
        if row.state in _ACTIVE:
            return _ACTIVE[row.state]
        if row.state != "F":
            return None
        if row.reason in _ENDED_BY:
            return _ENDED_BY[row.reason]
        if row.exit_status == 0 and not row.signal:
            return JobStatus.COMPLETED, ""
        if row.signal:
            return JobStatus.FAILED, f"killed by signal {row.signal}"
        return JobStatus.FAILED, f"exit status {row.exit_status}"

    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        return None  # the fake removes a job whose dependency failed, as PBS does

    def is_pending(self, row: NativeRow) -> bool:
        return row.state in ("Q", "H")

    def is_held(self, row: NativeRow) -> bool:
        return row.state == "H"

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qdel", *native_ids]

    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qsig", "-s", "USR1", *native_ids]

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qhold", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qrls", *native_ids]


def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
    """``corral cancel/pause/resume`` on fakebatch jobs with no driver alive."""
    from corral.backends.batch.control import control_without_driver as control

    return control(FakeBatchScheduler(), verb, native_ids)


BACKEND = BackendInfo(
    name="fakebatch",
    title="fakebatch",
    description="the fake batch scheduler the tests ship (tests/support/fakebatch)",
    capabilities=BATCH_CAPABILITIES,
    factory="support.fakebatch.backend:FakeBatchBackend",
    option_help=option_help({
        "cores": "-l ncpus=N",
        "memory": "-l mem=MB",
        "walltime": "-l walltime=<seconds, rounded up>",
        "gpus": "-l ngpus=N",
        "name": "-N (an array: the first job's name and '(+N)')",
        "after": "-W depend=afterok:ID while the parent is surely known",
        "priority": "order of submission",
        "retries": "a new qsub per retry",
        "timeout": "qdel after it",
        "cwd": "corral's runtime changes to it",
        "env": "set by corral's runtime",
        "setup": "lines of the batch script",
        "extra_flags": "added to qsub",
        "python": "runs corral's runtime in the batch script",
        "bundle": "one array task runs them in turn",
    }, not_used=("partition", "account", "qos", "constraint")),
    driverless_control="support.fakebatch.scheduler:control_without_driver",
)


def register() -> None:
    """Make ``backend="fakebatch"`` known in this process for good (again:
    no-op); for a driver process of its own. Tests use :func:`registered`."""
    from corral.backends import backend_names, register_backend

    if BACKEND.name not in backend_names():
        register_backend(BACKEND)


@contextmanager
def registered() -> Iterator[None]:
    """``backend="fakebatch"`` known inside the block, and afterwards only if
    it was before: other tests see the registry they expect."""
    from corral.backends import backend_names, unregister_backend

    known_before = BACKEND.name in backend_names()
    register()
    try:
        yield
    finally:
        if not known_before:
            unregister_backend(BACKEND.name)
