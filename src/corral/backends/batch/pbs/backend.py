"""The PBS backend: jobs become PBS batch jobs (``qsub -J`` arrays on OpenPBS/PBS
Pro, one ``qsub`` per job in Torque's dialect), through the batch base
(:mod:`corral.backends.batch.base`) and the dialect's scheduler
(:mod:`corral.backends.batch.pbs.scheduler`).

The dialect is the ``dialect`` backend option, or, by default, what ``qstat
--version`` shows here. A child whose parent failed is deleted by PBS at once:
the base then cancels it naming the parent; a chained child PBS refuses waits in
the base for its parents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from corral.backends.batch import control
from corral.backends.batch.base import BatchBackend
from corral.backends.batch.pbs.scheduler import PbsProScheduler, scheduler_for
from corral.backends.batch.scheduler import BatchScheduler

__all__ = ["PbsBackend", "control_without_driver"]


class PbsBackend(BatchBackend):
    """PBS in the dialect the ``dialect`` option names or ``qstat --version`` shows."""

    #: Made without options, it speaks PBS Pro until __init__ probes the dialect.
    scheduler: ClassVar[BatchScheduler] = PbsProScheduler()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Always through with_settings, which resolves "auto" (probed once per process).
        kwargs["options"] = {"dialect": "auto", **(kwargs.get("options") or {})}
        super().__init__(*args, **kwargs)


def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
    """``corral cancel/pause/resume`` on PBS jobs with no driver alive, in the
    dialect ``qstat --version`` shows here."""
    return control.control_without_driver(scheduler_for("auto"), verb, native_ids)
