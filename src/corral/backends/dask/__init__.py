"""The Dask backend: corral's jobs as tasks of a ``distributed`` cluster.

This file only declares the backend for the registry (:mod:`corral.backends`);
the driver's side is :mod:`corral.backends.dask.backend` and what runs inside a
Dask worker is :mod:`corral.backends.dask.task`, both imported only when a
Scheduler uses Dask (``pip install 'corral[dask]'``): ``import corral`` never
imports dask.
"""

from __future__ import annotations

from corral.backends.info import (APPLIED_BY_CORRAL, STOPPED_IN_PLACE, BackendInfo, Capabilities,
                                  Probe, option_help)

__all__ = ["BACKEND", "INSTALL_HINT"]

#: What a user without ``distributed`` is told to run.
INSTALL_HINT = "pip install 'corral[dask]'"

def _installed() -> Probe:
    """Whether ``distributed`` is installed here (found, not imported: it is heavy)."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if find_spec("distributed") is None:
        return Probe(False, f"the distributed package is not installed: {INSTALL_HINT}")
    try:
        found = f"distributed {version('distributed')} is installed"
    except PackageNotFoundError:
        found = "distributed is importable"
    return Probe(True, f"{found}; chosen by its name only, never by 'auto'")


BACKEND = BackendInfo(
    name="dask",
    title="Dask",
    description="tasks of a Dask distributed cluster (an address, a Client, or a LocalCluster)",
    capabilities=Capabilities(
        # A Dask scheduler forgets a client's tasks when the client goes, and
        # corral then kills what they had started.
        outlives_driver=False,
        # A child goes to Dask with its parents' futures: Dask starts it.
        chains_dependencies=True,
        # Pause: a task that starts finds the run's pause mark and runs nothing;
        # the backend sends it again at resume.
        holds=True,
        # Dask has no walltime: the engine's deadline kills a job past it.
        enforces_walltime=False,
        packs_locally=False,
        # A task costs the client and the scheduler about a millisecond or two.
        chunk_seconds=0.1,
    ),
    factory="corral.backends.dask.backend:DaskBackend",
    option_help=option_help({
        "cores": "Dask resource 'cores' where workers declare it",
        "memory": "Dask resource 'memory' (bytes) where workers declare it",
        "walltime": f"stopped past it: {STOPPED_IN_PLACE}",
        "gpus": "Dask resource 'GPU': a worker must declare it",
        "name": "shown in status",
        "after": "chained in Dask (the parents' futures)",
        "priority": "Dask's task priority (higher first)",
        "retries": APPLIED_BY_CORRAL,
        "timeout": STOPPED_IN_PLACE,
        "cwd": "chdir before it starts (default: the driver's, where the worker has it)",
        "env": "set on top of the Dask worker's environment",
        "python": "the Dask worker's",
    }, not_used=("partition", "account", "qos", "constraint", "setup", "extra_flags", "bundle")),
    answers=_installed,
    auto=False,
    backend_options={
        "address": "the Dask scheduler's address (tcp://host:8786); none: a LocalCluster",
        "client": "a distributed.Client, or a cluster object (LocalCluster, dask-jobqueue)",
        "n_workers": "worker processes of the LocalCluster started without an address",
        "connect_timeout": "seconds to wait for the scheduler (default 10)",
    },
)
