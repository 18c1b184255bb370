"""The Grid Engine backend: jobs become SGE batch jobs (``qsub -t`` arrays),
through the batch base (:mod:`corral.backends.batch.base`) and SGE's pieces
(:class:`~corral.backends.batch.sge.scheduler.SgeScheduler`).

Dependencies go to SGE as ``-hold_jid``; a batch job in which a job failed
ends with exit status 100, which SGE turns into an error state (``Eqw``) that
keeps its dependents waiting; such a dependent is cancelled with the reason,
and the failed batch job is deleted when the driver closes, after them.
Finished jobs leave ``qstat`` at once: they are decided by their result
files, or by ``qacct``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from corral.backends.batch import control
from corral.backends.batch.base import BatchBackend
from corral.backends.batch.scheduler import BatchScheduler
from corral.backends.batch.sge.scheduler import SgeScheduler

__all__ = ["SgeBackend", "control_without_driver"]


class SgeBackend(BatchBackend):
    """Runs jobs as Grid Engine batch jobs. See the module docstring."""

    scheduler: ClassVar[BatchScheduler] = SgeScheduler()


def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
    """Act on SGE jobs directly, for the ``corral`` command when no driver runs:
    ``cancel`` (qdel), ``pause`` (qhold) or ``resume`` (qrls). Returns what SGE
    said. The next driver of the run finds the outcome when it attaches.

    Raises:
        BackendError: the SGE command failed (its message included).
    """
    return control.control_without_driver(SgeBackend.scheduler, verb, native_ids)
