"""Slurm's pieces for the batch base: :class:`SlurmScheduler` maps the base's
questions onto :mod:`~corral.backends.batch.slurm.commands`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, NativeRow,
                                             NeverKind, NeverStarts, SubmitRequest, number)
from corral.backends.batch.slurm import commands

__all__ = ["SlurmScheduler"]

_NO_ACCOUNTING = ("accounting_storage/none", "(null)", "")


class SlurmScheduler(BatchScheduler):
    """Slurm 22.05 and later: sbatch, squeue, sacct, scancel, scontrol."""

    name: ClassVar[str] = "slurm"
    title: ClassVar[str] = "Slurm"
    template: ClassVar[Path] = Path(__file__).with_name("job.sh.template")
    array_index_base: ClassVar[int] = 0
    #: Any non-zero status keeps ``afterok`` dependents from starting.
    failed_exit_status: ClassVar[int] = 1
    #: Slurm's own defaults: MaxArraySize 1001, MinJobAge 300 s, no slurmdbd.
    default_limits: ClassVar[ClusterLimits] = ClusterLimits(1000, 300.0, False)
    forgotten_words: ClassVar[str] = "purged after MinJobAge"

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        return commands.sbatch_argv(
            script=request.script, name=request.name, resources=request.resources,
            placement=request.placement, output=request.output, array_size=request.array_size,
            throttle=request.throttle, dependencies=request.dependencies,
            time_limit_s=request.time_limit_s)

    # Slurm's parsers and tables are plain functions of :mod:`commands`.
    parse_submit = staticmethod(commands.parse_sbatch)
    status_argv = staticmethod(commands.squeue_argv)
    parse_status = staticmethod(commands.parse_squeue)
    accounting_argv = staticmethod(commands.sacct_argv)
    parse_accounting = staticmethod(commands.parse_sacct)
    meaning = staticmethod(commands.state_of)
    exit_code = staticmethod(commands.exit_code_of)

    def granted_time_s(self, seconds: float) -> float:
        return 60.0 * commands.walltime_minutes(seconds)

    def limits_argv(self) -> list[str] | None:
        return ["scontrol", "show", "config"]

    def parse_limits(self, stdout: str) -> ClusterLimits:
        config = commands.parse_config(stdout)
        size = config.get("MaxArraySize", "")
        return ClusterLimits(
            # MaxArraySize bounds the highest index, which starts at 0.
            max_array_tasks=max(1, size_value - 1) if (size_value := number(size)) else 1000,
            forget_after_s=_seconds(config.get("MinJobAge", "300")),
            accounting=config.get("AccountingStorageType", _NO_ACCOUNTING[0]) not in _NO_ACCOUNTING)

    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        if row.reason == commands.NEVER_REASON:
            return NeverStarts(NeverKind.DEPENDENCY_FAILED, "a job it depends on failed")
        words = commands.describe_pending(row.reason)
        return None if words is None else NeverStarts(NeverKind.IMPOSSIBLE, words)

    def is_pending(self, row: NativeRow) -> bool:
        return row.state == "PENDING"

    def is_held(self, row: NativeRow) -> bool:
        return row.reason in commands.HELD_REASONS

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["scancel", *native_ids]

    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        # --batch: the batch step only, where corral's runtime listens.
        return ["scancel", "--signal=USR1", "--batch", *native_ids]

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["scontrol", "hold", ",".join(native_ids)]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["scontrol", "release", ",".join(native_ids)]


def _seconds(text: str) -> float:
    """Seconds from a duration Slurm prints as ``300 sec``; 300 if unreadable."""
    digits = "".join(itertools.takewhile(str.isdigit, text.strip()))
    return float(digits) if digits else 300.0
