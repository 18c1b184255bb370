"""Slurm: ``sbatch``/``squeue``/``sacct``/``scancel`` and the batch script template.

This file declares the backend for the registry (:mod:`corral.backends`) and
holds the probe ``backend="auto"`` runs; the backend's code, in
:mod:`corral.backends.batch.slurm.backend`, is imported when one is made.
"""

from __future__ import annotations

from corral.backends.info import BackendInfo, Probe, option_help
from corral.backends.batch import BATCH_CAPABILITIES, probing
from corral.backends.batch.settings import options_help

__all__ = ["BACKEND", "answers"]


def answers(timeout: float = 5.0) -> Probe:
    """Whether a Slurm controller answers this machine's client commands:
    ``sbatch`` and ``squeue`` are on PATH and ``squeue --me`` succeeds within
    *timeout* seconds."""
    if (absent := probing.missing("sbatch", "squeue")) is not None:
        return absent
    argv = ["squeue", "--noheader", "--me", "--states=all", "--format=%i"]
    done = probing.answered(argv, timeout, "squeue --me")
    if isinstance(done, Probe):
        return done
    return Probe(True, "squeue --me answered")


BACKEND = BackendInfo(
    name="slurm",
    title="Slurm",
    description="batch jobs on a Slurm cluster (sbatch, squeue, sacct, scancel)",
    capabilities=BATCH_CAPABILITIES,
    factory="corral.backends.batch.slurm.backend:SlurmBackend",
    option_help=option_help({
        "cores": "--cpus-per-task=N",
        "memory": "--mem=<MB>M",
        "walltime": "--time=<minutes, rounded up>",
        "gpus": "--gres=gpu:N",
        "name": "--job-name (an array: the first job's name and '(+N)')",
        "after": "--dependency=afterok:ID while the parent is known",
        "priority": "order of submission",
        "retries": "a new sbatch per retry",
        "timeout": "scancel after it",
        "cwd": "corral's runtime changes to it on the node",
        "env": "set by corral's runtime on the node",
        "partition": "--partition=NAME",
        "account": "--account=NAME",
        "qos": "--qos=NAME",
        "constraint": "--constraint=EXPR",
        "setup": "lines of the batch script",
        "extra_flags": "added to sbatch",
        "python": "runs corral's runtime in the batch script",
        "bundle": "one array task runs them in turn",
    }),
    backend_options=options_help(),
    answers=answers,
    driverless_control="corral.backends.batch.slurm.backend:control_without_driver",
)
