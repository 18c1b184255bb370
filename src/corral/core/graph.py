"""Turn a batch of new jobs into a dependency graph the control loop can trust.

Dependencies come from two places: a Job passed among another job's arguments
(its result is passed in its place) and ``after=[...]`` (jobs or job names).
:func:`plan_batch` finds them all, pulls in dependencies that were never
dispatched, refuses cycles (naming the jobs in one) and returns the batch in
an order where every job comes after its dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from corral.errors import DependencyError
from corral.core.job import Job
from corral.runtime.payload import Upstream

__all__ = ["replace_jobs", "plan_batch"]


def replace_jobs(value: Any, found: list[Job]) -> Any:
    """Return *value* with every Job inside (lists, tuples, dicts, sets) replaced
    by an :class:`Upstream` placeholder; the jobs are appended to *found*."""
    if isinstance(value, Job):
        for index, job in enumerate(found):
            if job is value:
                return Upstream(index)
        found.append(value)
        return Upstream(len(found) - 1)
    kind = type(value)
    if kind is tuple or kind is list:
        if not value:
            return value
        return kind(replace_jobs(item, found) for item in value)
    if kind is dict:
        if not value:
            return value
        return {key: replace_jobs(item, found) for key, item in value.items()}
    if kind is set or kind is frozenset:
        return kind(replace_jobs(item, found) for item in value)
    return value


def plan_batch(jobs: Iterable[Job], jobs_named: Callable[[str], list[Job]],
               value_deps: Callable[[Job], list[Job]]) -> list[Job]:
    """Resolve dependencies of *jobs* and return them, and any undispatched
    dependency, in dependency order.

    Args:
        jobs_named: the already-dispatched jobs with a given name.
        value_deps: the jobs found among a job's arguments (computed once each).

    Raises:
        DependencyError: ``after=`` names no known job, or the batch has a cycle.
    """
    batch: list[Job] = []
    members: set[int] = set()
    pending = list(jobs)
    while pending:  # pull in undispatched dependencies passed as Jobs
        job = pending.pop()
        if id(job) in members:
            continue
        members.add(id(job))
        batch.append(job)
        job._value_deps = value_deps(job)
        for dep in job._value_deps + [item for item in job.spec.after if isinstance(item, Job)]:
            if dep._engine is None and id(dep) not in members:
                pending.append(dep)
    batch.reverse()

    named_here: dict[str, list[Job]] = {}
    for job in batch:
        named_here.setdefault(job.name, []).append(job)
    for job in batch:
        deps: list[Job] = []
        seen: set[int] = set()
        for dep in _after_jobs(job, named_here, jobs_named) + job._value_deps:
            if id(dep) not in seen:
                seen.add(id(dep))
                deps.append(dep)
        job._deps = deps
    return _dependency_order(batch, members)


def _after_jobs(job: Job, named_here: dict[str, list[Job]],
                jobs_named: Callable[[str], list[Job]]) -> list[Job]:
    found: list[Job] = []
    for item in job.spec.after:
        if isinstance(item, Job):
            found.append(item)
            continue
        matches = [other for other in named_here.get(item, []) if other is not job]
        matches += jobs_named(item)
        if not matches:
            raise DependencyError(
                f"job {job.name!r} waits for after={item!r}, but no job has that name; "
                "dispatch that job first or in the same batch"
            )
        found.extend(matches)
    return found


def _dependency_order(batch: list[Job], members: set[int]) -> list[Job]:
    """Kahn's algorithm over the batch; what is left over contains a cycle."""
    inside = {id(job): job for job in batch}
    unmet = {id(job): 0 for job in batch}
    dependents: dict[int, list[Job]] = {}
    for job in batch:
        for dep in job._deps:
            if id(dep) in members:
                unmet[id(job)] += 1
                dependents.setdefault(id(dep), []).append(job)
    ordered = [job for job in batch if unmet[id(job)] == 0]
    for job in ordered:  # the list grows while we walk it
        for dependent in dependents.get(id(job), ()):
            unmet[id(dependent)] -= 1
            if unmet[id(dependent)] == 0:
                ordered.append(dependent)
    if len(ordered) < len(batch):
        stuck = [job for job in batch if unmet[id(job)] > 0]
        raise DependencyError(f"dependency cycle: {_describe_cycle(stuck, inside)}")
    return ordered


def _describe_cycle(stuck: list[Job], inside: dict[int, Job]) -> str:
    stuck_ids = {id(job) for job in stuck}
    path: list[Job] = []
    position: dict[int, int] = {}
    job = stuck[0]
    while id(job) not in position:
        position[id(job)] = len(path)
        path.append(job)
        job = next(dep for dep in job._deps if id(dep) in stuck_ids)
    cycle = path[position[id(job)]:] + [job]
    return " -> ".join(repr(member.name) for member in cycle)
