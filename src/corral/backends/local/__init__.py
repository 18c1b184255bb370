"""The local backend: persistent worker processes on this machine, packed by cores,
memory and GPUs.

This file only declares the backend for the registry (:mod:`corral.backends`);
its code, in :mod:`corral.backends.local.backend`, is imported when one is made.
"""

from __future__ import annotations


from corral.backends.info import (APPLIED_BY_CORRAL, STOPPED_IN_PLACE, BackendInfo, Capabilities,
                                  option_help)

__all__ = ["BACKEND"]

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
        # A worker gets its next jobs while it runs one (see backend.py).
        queues_ahead=True,
        # A job costs the driver about 50 µs: 5 ms chunks spend 1 % on it, and
        # stay short enough to be queued ahead (corral.core.ahead.LONG_S).
        chunk_seconds=0.005,
    ),
    factory="corral.backends.local.backend:LocalBackend",
    option_help=option_help({
        "cores": "packed against Scheduler(cores=...)",
        "memory": "packed against Scheduler(memory=...)",
        "walltime": f"stopped past it: {STOPPED_IN_PLACE}",
        "gpus": "ids in CUDA_VISIBLE_DEVICES",
        "name": "shown in status",
        "after": APPLIED_BY_CORRAL,
        "priority": APPLIED_BY_CORRAL,
        "retries": APPLIED_BY_CORRAL,
        "timeout": STOPPED_IN_PLACE,
        "cwd": "chdir before the job starts",
        "env": "set in the job's environment",
        "python": "the driver's",
    }, not_used=("partition", "account", "qos", "constraint", "setup", "extra_flags", "bundle")),
)
