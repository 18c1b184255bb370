"""The local backend: persistent worker processes on this machine, packed by cores,
memory and GPUs.

This file only declares the backend for the registry (:mod:`corral.backends`);
its code, in :mod:`corral.backends.local.backend`, is imported when one is made.
"""

from __future__ import annotations

from types import MappingProxyType

from corral.backends.base import BackendInfo, Capabilities

__all__ = ["BACKEND"]

_APPLIED_BY_CORRAL = "not sent: the scheduler applies it"
_NOT_USED = "not used"

BACKEND = BackendInfo(
    name="local",
    title="local",
    description="worker processes on this machine, packed by cores, memory and GPUs",
    capabilities=Capabilities(
        # Workers die with the driver (they take their process trees along).
        outlives_driver=False,
        chains_dependencies=False,
        holds=False,
        # The engine's own deadline kills a job at its walltime; the backend
        # only kills what it is told to.
        enforces_walltime=False,
        packs_locally=True,
    ),
    factory="corral.backends.local.backend:LocalBackend",
    option_help=MappingProxyType({
        "cores": "packed against Scheduler(cores=...)",
        "memory": "packed against Scheduler(memory=...)",
        "walltime": "killed with its process tree past it",
        "gpus": "ids in CUDA_VISIBLE_DEVICES",
        "name": "shown in status",
        "after": _APPLIED_BY_CORRAL,
        "queue": _APPLIED_BY_CORRAL,
        "tokens": _APPLIED_BY_CORRAL,
        "priority": _APPLIED_BY_CORRAL,
        "retries": _APPLIED_BY_CORRAL,
        "timeout": "killed with its process tree",
        "cwd": "chdir before the job starts",
        "env": "set in the job's environment",
        "notify": "sent by corral through the [smtp] settings",
        "notify_on": _APPLIED_BY_CORRAL,
        "partition": _NOT_USED,
        "account": _NOT_USED,
        "qos": _NOT_USED,
        "constraint": _NOT_USED,
        "setup": _NOT_USED,
        "extra_flags": _NOT_USED,
        "python": "the driver's",
        "bundle": _NOT_USED,
    }),
)
