"""A job's cores, memory and GPUs as Dask worker resources, and the check that
some worker can ever run it.

Dask places a task with ``resources={"GPU": 1}`` only on a worker started with
``--resources "GPU=1"``, and a task no worker can meet waits for ever. So a
request is sent only for what the workers declare (``cores``, ``memory`` in
bytes, ``GPU``), and a job no current worker could ever run is refused when it
is made, naming each worker's capacities (the workers' settings, not the
Scheduler's, make room: no ``setting`` is named). What the workers do not declare is
not enforced: a 4-core job on workers without a ``cores`` resource takes one
thread like any task, except GPUs, which a worker must declare. With no
worker at all (an adaptive cluster that has not started any) nothing is
refused: workers may come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.errors import ResourceError
from corral.spec import Resources
from corral.units import format_memory

__all__ = ["WorkerCapacity", "dask_resources", "refusal", "CORES", "MEMORY", "GPU"]

CORES, MEMORY, GPU = "cores", "memory", "GPU"
_BYTES_PER_MB = 1024 * 1024
#: Workers named in a refusal before "and N more".
_LISTED = 4


@dataclass(frozen=True, slots=True)
class WorkerCapacity:
    """One Dask worker as ``Client.scheduler_info()`` describes it."""

    address: str
    nthreads: int
    memory_limit: int  # bytes; 0: none
    resources: Mapping[str, float]

    @classmethod
    def from_info(cls, address: str, info: Mapping[str, object]) -> WorkerCapacity:
        resources = info.get("resources") or {}
        return cls(address, int(info.get("nthreads") or 0),  # type: ignore[call-overload]
                   int(info.get("memory_limit") or 0),  # type: ignore[call-overload]
                   dict(resources))  # type: ignore[call-overload]

    def describe(self) -> str:
        declared = ", ".join(f"{name}={_amount(name, value)}"
                             for name, value in sorted(self.resources.items()))
        return (f"{self.address} has {declared or 'no resources declared'} "
                f"({self.nthreads} threads"
                + (f", memory limit {format_memory(self.memory_limit // _BYTES_PER_MB)})"
                   if self.memory_limit else ")"))


def _amount(name: str, value: float) -> str:
    if name == MEMORY:
        return format_memory(int(value) // _BYTES_PER_MB)
    return f"{value:g}"


def _wanted(resources: Resources) -> dict[str, float]:
    wanted: dict[str, float] = {CORES: resources.cores}
    if resources.memory_mb:
        wanted[MEMORY] = float(resources.memory_mb * _BYTES_PER_MB)
    if resources.gpus:
        wanted[GPU] = resources.gpus
    return wanted


def dask_resources(resources: Resources, workers: list[WorkerCapacity]) -> dict[str, float]:
    """What to ask Dask for (empty: Dask places the job on any thread).

    Dask runs a task that asks for resources only on a worker that declares
    every one of them, so each worker declares its own set and a request is
    built to fit some worker: GPUs always (no worker without them may run the
    job), then ``cores`` and ``memory`` each where some worker declares it,
    together with what is already asked, in that amount. A one-core job asks
    for ``cores`` only when every worker declares them: else the workers that
    declare nothing would never get one. With no worker yet (an adaptive
    cluster), only GPUs are asked for.
    """
    wanted = _wanted(resources)
    sent = {GPU: wanted[GPU]} if GPU in wanted else {}
    if not workers:
        return sent
    everywhere = set.intersection(*(set(worker.resources) for worker in workers))
    for name in (CORES, MEMORY):
        if name not in wanted or (name == CORES and wanted[name] == 1
                                  and CORES not in everywhere):
            continue
        trying = {**sent, name: wanted[name]}
        # Only where a worker declaring it all could run the whole job: a worker
        # declaring too few cores must not be the one chosen for its memory.
        if any(_declares(worker, trying) and _could_run(worker, wanted) for worker in workers):
            sent = trying
    return sent


def _declares(worker: WorkerCapacity, asked: dict[str, float]) -> bool:
    return all(worker.resources.get(name, 0) >= amount for name, amount in asked.items())


def _could_run(worker: WorkerCapacity, wanted: dict[str, float]) -> bool:
    """What a worker declares it must have enough of; what it does not declare is
    not enforced there, except GPUs."""
    return all(worker.resources[name] >= amount if name in worker.resources else name != GPU
               for name, amount in wanted.items())


def refusal(resources: Resources, workers: list[WorkerCapacity]) -> ResourceError | None:
    """Why no worker of *workers* can ever run a job asking *resources*, or None."""
    if not workers:
        return None
    wanted = _wanted(resources)
    declared = {name for worker in workers for name in worker.resources}
    if GPU in wanted and GPU not in declared:
        return ResourceError(
            f"asks for {_count(resources.gpus, 'GPU')} but no Dask worker declares a GPU "
            f"resource (start one with --resources \"GPU=1\"): {_listing(workers)}")
    if not any(_could_run(worker, wanted) for worker in workers):
        what = ", ".join(_ask(name, amount) for name, amount in wanted.items()
                         if not (name == CORES and amount == 1 and len(wanted) > 1))
        return ResourceError(f"asks for {what} but no Dask worker has that much: "
                             f"{_listing(workers)}")
    if MEMORY not in declared and resources.memory_mb:
        return _memory_limit_refusal(resources.memory_mb, workers)
    return None


def _memory_limit_refusal(memory_mb: int, workers: list[WorkerCapacity]) -> ResourceError | None:
    """Without a declared memory resource, a job larger than every worker's
    memory limit would be killed by Dask's memory guard: refuse it now."""
    limits = [worker.memory_limit for worker in workers]
    if any(limit == 0 for limit in limits) or max(limits) >= memory_mb * _BYTES_PER_MB:
        return None
    return ResourceError(f"asks for {format_memory(memory_mb)} of memory but the largest "
                         f"Dask worker's memory limit is "
                         f"{format_memory(max(limits) // _BYTES_PER_MB)}")


def _ask(name: str, amount: float) -> str:
    if name == MEMORY:
        return f"{format_memory(int(amount) // _BYTES_PER_MB)} of memory"
    return _count(int(amount), "core" if name == CORES else "GPU")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _listing(workers: list[WorkerCapacity]) -> str:
    shown = "; ".join(worker.describe() for worker in workers[:_LISTED])
    more = len(workers) - _LISTED
    return shown + (f"; and {more} more" if more > 0 else "")
