"""The LSF backend: jobs become LSF jobs (``bsub -J "name[1-N]"`` arrays), through
the batch base (:mod:`corral.backends.batch.base`) and LSF's pieces
(:class:`~corral.backends.batch.lsf.scheduler.LsfScheduler`).

Dependencies go to LSF as ``-w "done(ID)"`` while LSF surely still knows the
parent; a child whose parent did not end DONE pends in LSF with "Dependency
condition invalid or never satisfied" and is cancelled with a clear reason.
Jobs LSF cleaned after CLEAN_PERIOD are decided by their result files.
Memory goes out as the job's total, its ``rusage`` divided by the cores where
``bparams -a`` says LSF reserves it per task (RESOURCE_RESERVE_PER_TASK=Y).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from corral.backends.batch import control
from corral.backends.batch.base import BatchBackend
from corral.backends.batch.lsf.scheduler import LsfScheduler
from corral.backends.batch.scheduler import BatchScheduler, SubmitRequest

__all__ = ["LsfBackend", "control_without_driver"]


class LsfBackend(BatchBackend):
    """Runs jobs as LSF jobs. See the module docstring."""

    scheduler: ClassVar[BatchScheduler] = LsfScheduler()

    def _submit_script(self, request: SubmitRequest, directory: Path) -> tuple[str | None, str]:
        # How the cluster reserves memory (bparams -a, read once) decides the
        # rusage: per task, the job's total would be reserved once per core.
        if isinstance(self.scheduler, LsfScheduler):
            self.scheduler = self.scheduler.for_cluster(  # type: ignore[misc]
                self._cluster_limits())
        return super()._submit_script(request, directory)


def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
    """Act on LSF jobs directly, for the ``corral`` command when no driver runs:
    ``cancel`` (bkill), ``pause`` (bstop of pending jobs) or ``resume`` (bresume).
    Returns what LSF said.

    Raises:
        BackendError: the LSF command failed (its message included).
    """
    return control.control_without_driver(LsfBackend.scheduler, verb, native_ids)
