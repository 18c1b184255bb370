"""The Slurm backend: jobs become Slurm batch jobs (``sbatch --array``), through
the batch base (:mod:`corral.backends.batch.base`) and Slurm's pieces
(:class:`~corral.backends.batch.slurm.scheduler.SlurmScheduler`).

Dependencies go to Slurm as ``--dependency=afterok:ID`` while Slurm surely
still knows the parent (``afterok`` on a forgotten id counts as met); jobs that
can never start (``PartitionConfig``, a dependency that failed) are cancelled
with a clear reason; forgotten jobs are decided by their result files, or by
``sacct`` when accounting is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from corral.backends.batch import control
from corral.backends.batch.base import BatchBackend
from corral.backends.batch.scheduler import BatchScheduler
from corral.backends.batch.slurm.scheduler import SlurmScheduler

__all__ = ["SlurmBackend", "control_without_driver"]


class SlurmBackend(BatchBackend):
    """Runs jobs as Slurm batch jobs. See the module docstring."""

    scheduler: ClassVar[BatchScheduler] = SlurmScheduler()


def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
    """Act on Slurm jobs directly, for the ``corral`` command when no driver runs:
    ``cancel`` (scancel), ``pause`` (hold) or ``resume`` (release). Returns what
    Slurm said. The next driver of the run finds the outcome when it attaches.

    Raises:
        BackendError: the Slurm command failed (its message included).
    """
    return control.control_without_driver(SlurmBackend.scheduler, verb, native_ids)
