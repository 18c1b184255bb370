"""LSF's pieces for the batch base: :class:`LsfScheduler` maps the base's
questions onto :mod:`~corral.backends.batch.lsf.commands`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from corral.backends.batch.lsf import OWN_OPTIONS, commands
from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, NativeRow,
                                             NeverKind, NeverStarts, SubmitRequest, number)

__all__ = ["LsfScheduler", "LsfLimits"]


@dataclass(frozen=True, slots=True)
class LsfLimits(ClusterLimits):
    """The cluster's limits, and how LSF reserves a job's memory (``bparams -a``)."""

    #: ``rusage[mem=]`` is reserved once per task (RESOURCE_RESERVE_PER_TASK=Y),
    #: not once per host (LSF's default).
    reserve_per_task: bool = False


class LsfScheduler(BatchScheduler):
    """IBM Spectrum LSF 10.1.0.2 or later (the first with bjobs -json): bsub, bjobs -json,
    bkill, bstop, bresume, bparams."""

    name: ClassVar[str] = "lsf"
    title: ClassVar[str] = "LSF"
    template: ClassVar[Path] = Path(__file__).with_name("job.sh.template")
    array_index_base: ClassVar[int] = 1
    #: ``done(ID)`` needs DONE (exit status 0): any other status holds dependents.
    failed_exit_status: ClassVar[int] = 1
    #: LSF's own defaults: MAX_JOB_ARRAY_SIZE 1000, CLEAN_PERIOD 3600 s; no
    #: accounting query (bhist/bacct are not read: result files decide).
    default_limits: ClassVar[ClusterLimits] = LsfLimits(1000, 3600.0, False)
    forgotten_words: ClassVar[str] = "cleaned after CLEAN_PERIOD"
    own_options: ClassVar[dict[str, tuple[Any, str]]] = OWN_OPTIONS

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        unit = self.settings["unit_for_limits"]
        canonical = unit.upper() if isinstance(unit, str) else None
        canonical = {"K": "KB", "M": "MB", "G": "GB", "T": "TB", "P": "PB", "E": "EB"}.get(
            canonical or "", canonical)
        if canonical not in commands.UNITS:
            raise ValueError(f"unit_for_limits={unit!r} is not an LSF_UNIT_FOR_LIMITS unit "
                             f"(one of {', '.join(commands.UNITS)})")
        self.settings["unit_for_limits"] = canonical
        #: Memory is reserved per task: see :meth:`for_cluster`.
        self.reserve_per_task = False

    def for_cluster(self, limits: ClusterLimits) -> LsfScheduler:
        """This scheduler for the cluster whose ``bparams -a`` gave *limits*: one
        that divides ``rusage[mem=]`` by the cores where LSF reserves it per task
        (see :func:`~corral.backends.batch.lsf.commands.bsub_argv`)."""
        per_task = isinstance(limits, LsfLimits) and limits.reserve_per_task
        if per_task == self.reserve_per_task:
            return self
        made = copy.copy(self)
        made.settings = dict(self.settings)
        made.reserve_per_task = per_task
        return made

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        return commands.bsub_argv(request, self.settings["unit_for_limits"],
                                  self.reserve_per_task)

    parse_submit = staticmethod(commands.parse_bsub)
    status_argv = staticmethod(commands.bjobs_argv)
    parse_status = staticmethod(commands.parse_bjobs)
    meaning = staticmethod(commands.state_of)
    exit_code = staticmethod(commands.exit_code_of)

    def status_answer_usable(self, returncode: int, stderr: str) -> bool:
        # "No job found" (exit status 255): no jobs, what the empty stdout parses to.
        return commands.says_no_jobs(stderr)

    def array_task_id(self, job_id: str, index: int) -> str:
        return f"{job_id}[{index}]"

    def granted_time_s(self, seconds: float) -> float:
        return 60.0 * commands.walltime_minutes(seconds)

    def limits_argv(self) -> list[str] | None:
        return ["bparams", "-a"]

    def parse_limits(self, stdout: str) -> ClusterLimits:
        params = commands.parse_bparams(stdout)
        size, clean = params.get("MAX_JOB_ARRAY_SIZE", ""), params.get("CLEAN_PERIOD", "")
        default = self.default_limits
        return LsfLimits(
            max_array_tasks=number(size) or default.max_array_tasks,
            forget_after_s=float(seconds) if (seconds := number(clean)) is not None
            else default.forget_after_s,
            accounting=False, reserve_per_task=commands.reserves_per_task(params))

    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        if row.state == "PEND" and row.reason.startswith(commands.NEVER_REASON):
            return NeverStarts(NeverKind.DEPENDENCY_FAILED, "a job it depends on did not end DONE")
        return None

    def is_pending(self, row: NativeRow) -> bool:
        return row.state in ("PEND", "PSUSP")

    def is_held(self, row: NativeRow) -> bool:
        # USUSP: bstop reached it as it started (or a user stopped it): resume undoes it.
        return row.state in ("PSUSP", "USUSP")

    #: bkill's "Job <N>: No matching job found": LSF cleaned the job after
    #: CLEAN_PERIOD, so it ended long ago (Arvados' and ERT's LSF drivers read it so).
    already_ended_signs: tuple[str, ...] = (*BatchScheduler.already_ended_signs,
                                            "no matching job found")

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bkill", *native_ids]

    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bkill", "-s", "USR1", *native_ids]

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        # bstop holds a pending job (PSUSP); corral asks only for pending ones.
        return ["bstop", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bresume", *native_ids]
