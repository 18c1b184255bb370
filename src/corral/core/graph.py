"""Turn a batch of new jobs into a dependency graph the control loop can trust.

Dependencies come from two places: a Job passed among another job's arguments
(its result is passed in its place) and ``after=[...]`` (jobs, job names, or
the ids of jobs no job is named after).
:func:`plan_batch` finds them all, pulls in dependencies that were never
dispatched, refuses cycles (naming the jobs in one) and returns the batch in
an order where every job comes after its dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from corral.core.job import Job
from corral.errors import DependencyError
from corral.runtime.chunks import PlainCalls
from corral.runtime.payload import Upstream

if TYPE_CHECKING:
    from corral.core.record import JobRecord

__all__ = ["replace_jobs", "plan_batch"]


def replace_jobs(value: Any, found: list[Job]) -> Any:
    """Return *value* with every Job inside (lists, tuples, dicts, sets) replaced
    by an :class:`Upstream` placeholder; the jobs are appended to *found*. A
    chunk's :class:`PlainCalls` holds none."""
    places = {id(job): index for index, job in enumerate(found)}
    return _replaced(value, found, places)


def _replaced(value: Any, found: list[Job], places: dict[int, int]) -> Any:
    """:func:`replace_jobs`, each Job's place in *found* looked up in *places*
    (attack review: a search of *found* for each made a fan-in of 20,000 jobs
    take 23 s to submit)."""
    if type(value) is PlainCalls:
        return value
    if isinstance(value, Job):
        place = places.get(id(value))
        if place is None:
            place = places[id(value)] = len(found)
            found.append(value)
        return Upstream(place)
    kind = type(value)
    if kind is tuple or kind is list:
        if not value:
            return value
        return kind(_replaced(item, found, places) for item in value)
    if kind is dict:
        if not value:
            return value
        return {key: _replaced(item, found, places) for key, item in value.items()}
    if kind is set or kind is frozenset:
        return kind(_replaced(item, found, places) for item in value)
    return value


def plan_batch(jobs: Iterable[Job], records_named: Callable[[str], list[Any]],
               value_deps: Callable[[JobRecord], list[Job]],
               record_with_id: Callable[[int | str], Any] = lambda job_id: None) -> list[Job]:
    """Resolve dependencies of *jobs* and return them, and any undispatched
    dependency, in dependency order.

    The dependencies are written into the jobs' records (``deps``,
    ``value_deps``), as records: the control loop never follows a Job.

    Args:
        records_named: the records of the already-dispatched jobs with a
            given name (a finished one may be a stand-in, see
            :class:`corral.core.registry.FinishedJob`).
        value_deps: the Jobs found among a job's arguments (computed once each).
        record_with_id: the record of the dispatched job with this id, or None.

    Raises:
        DependencyError: ``after=`` names or numbers no known job, or the batch
            has a cycle.
    """
    pending = list(jobs)
    found_before: dict[int, list[Job]] = {}  # id() of a record -> its value_deps()
    if not any(job.spec.after for job in pending):  # submit()'s and map()'s usual case
        for job in pending:
            record = job._record
            found_before[id(record)] = value_deps(record)
        if not any(found_before.values()) and len(found_before) == len(pending):
            # no job depends on another, and none is there twice: as they came
            for job in pending:
                record = job._record
                record.value_deps, record.deps = [], []
            return pending
    batch: list[Job] = []
    members: set[int] = set()  # id() of the batch's records
    while pending:  # pull in undispatched dependencies passed as Jobs
        job = pending.pop()
        record = job._record
        if id(record) in members:
            continue
        members.add(id(record))
        batch.append(job)
        found = found_before.pop(id(record)) if id(record) in found_before else value_deps(record)
        record.value_deps = [dep._record for dep in found]
        for dep in found + [item for item in job.spec.after if isinstance(item, Job)]:
            if dep._record.owner is None and id(dep._record) not in members:
                pending.append(dep)
    batch.reverse()

    named_here: dict[str, list[JobRecord]] = {}
    with_id_here: dict[str, JobRecord] = {}  # the ids given with id= (others come later)
    for job in batch:
        named_here.setdefault(job.name, []).append(job._record)
        if job._record.id is not None:
            with_id_here[str(job._record.id)] = job._record
    for job in batch:
        record = job._record
        deps: list[Any] = []
        seen: set[tuple] = set()
        after = _after_records(record, named_here, records_named,
                               lambda job_id: with_id_here.get(str(job_id))
                               or record_with_id(job_id))
        for dep in after + record.value_deps:
            if _which_job(dep) not in seen:
                seen.add(_which_job(dep))
                deps.append(dep)
        record.deps = deps
    job_of = {id(job._record): job for job in batch}
    ordered = _dependency_order([job._record for job in batch], members)
    return [job_of[id(record)] for record in ordered]


def _which_job(dep: Any) -> tuple:
    """What tells one dependency from another: its id once dispatched (a
    finished job's stand-in is made anew at every lookup, and may meet the
    job's own record), else the record itself. A job named twice in
    ``after=`` is one dependency, as its key must not depend on timing."""
    return ("object", id(dep)) if dep.id is None else ("id", str(dep.id))


def _after_records(record: JobRecord, named_here: dict[str, list[JobRecord]],
                   records_named: Callable[[str], list[Any]],
                   record_with_id: Callable[[int | str], Any]) -> list[Any]:
    """What *record*'s ``after=`` names: Jobs; every job of a name; else the
    job of that id (e3 and hypertunity users key their jobs by id; ``corral
    submit --after`` takes both). A number is an id."""
    found: list[Any] = []
    for item in record.spec.after:
        if isinstance(item, Job):
            found.append(item._record)
            continue
        matches: list[Any] = [] if isinstance(item, int) else [
            other for other in named_here.get(item, []) if other is not record]
        if not isinstance(item, int):
            matches += records_named(item)
        if not matches:
            numbered = record_with_id(item)
            if numbered is not None and numbered is not record:
                matches.append(numbered)
        if not matches and item == record.name:
            raise DependencyError(
                f"job {record.name!r} waits for after={item!r}, its own name: a job cannot "
                "wait for itself (after= a name waits for the other jobs of that name)")
        if not matches and record.id is not None and str(item) == str(record.id):
            raise DependencyError(f"job {record.name!r} waits for after={item!r}, its own id: "
                                  "a job cannot wait for itself")
        if not matches:
            raise DependencyError(
                f"job {record.name!r} waits for after={item!r}, but no job has that "
                f"{'id' if isinstance(item, int) else 'name or id'}; dispatch that job first "
                "or in the same batch")
        found.extend(matches)
    return found


def _dependency_order(batch: list[JobRecord], members: set[int]) -> list[JobRecord]:
    """Kahn's algorithm over the batch; what is left over contains a cycle."""
    unmet = {id(job): 0 for job in batch}
    dependents: dict[int, list[JobRecord]] = {}
    for job in batch:
        for dep in job.deps:
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
        raise DependencyError(f"dependency cycle: {_describe_cycle(stuck, batch)}")
    return ordered


def _describe_cycle(stuck: list[JobRecord], batch: list[JobRecord]) -> str:
    stuck_ids = {id(job) for job in stuck}
    path: list[JobRecord] = []
    position: dict[int, int] = {}
    job = stuck[0]
    while id(job) not in position:
        position[id(job)] = len(path)
        path.append(job)
        job = next(dep for dep in job.deps if id(dep) in stuck_ids)
    cycle = [*path[position[id(job)]:], job]
    names = [member.name for member in cycle[:-1]]
    if len(set(names)) == len(names):
        return " -> ".join(repr(member.name) for member in cycle)
    # Names alone would not tell them apart ('f' -> 'f' -> 'f': attack review).
    place = {id(job): number for number, job in enumerate(batch, 1)}
    return " -> ".join(f"{member.name!r} (#{place[id(member)]})" for member in cycle) + (
        f"; #n is a job's place among the {len(batch)} dispatched together: those given, "
        "then the unsubmitted jobs they hold")
