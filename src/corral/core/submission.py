"""What the engine hands a backend for a job: its :class:`Submission`.

Apart from the control loop, as :mod:`corral.core.outcome` is what comes back:
a job's pickled call with the values of the parents it takes (or their ids,
while they still run on the same backend), or its command line, with its
directory, environment, resources and place in the line behind a running job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.backends.base import Submission
from corral.runtime.payload import Upstream, dumps_value
from corral.spec import Call, FunctionRef, Script, Shell

if TYPE_CHECKING:
    from corral.core.record import JobRecord

__all__ = ["submission_for"]


def submission_for(job: JobRecord, run_dir_text: str, outcomes: str | None,
                   leader: JobRecord | None = None) -> Submission:
    """What the backend is handed for *job*, whose directory is named in
    *run_dir_text* (the run directory and a separator); *outcomes* is where
    its worker logs a call's outcome (None: no journal). To run after *leader*
    on its worker, if given."""
    task = job.spec.task
    job.jobdir = f"{run_dir_text}{job.id}"
    after = tuple(dep.id for dep in job.deps if not dep.final) if job.unmet else ()
    call: bytes | None = None
    upstream: tuple[bytes | int | str, ...] = ()
    argv: tuple[str, ...] = ()
    if isinstance(task, (Call, FunctionRef)):
        call = job.payload
        upstream = tuple(dep.dispatched_id if not dep.final else _value_blob(dep)
                         for dep in job.value_deps)
    elif isinstance(task, Shell) and isinstance(task.command, str):
        argv = ("/bin/sh", "-c", task.command)
    else:
        argv = tuple(_argument_text(word, job) for word in job.argv_template)
        if isinstance(task, Script):
            argv = (task.python, task.path, *argv)
    return Submission(job_id=job.dispatched_id, name=job.name, jobdir=job.jobdir,
                      resources=job.spec.resources, call=call, upstream=upstream, argv=argv,
                      cwd=job.spec.cwd, env=job.spec.env, outcomes=outcomes,
                      placement=job.spec.placement, after=after,
                      priority=job.spec.priority,
                      follows=None if leader is None else leader.dispatched_id)


def _argument_text(word: Any, job: JobRecord) -> str:
    """A word of a command line: a parent's value where the job was given the parent."""
    if isinstance(word, Upstream):
        word = job.value_deps[word.index].data
    return str(word)


def _value_blob(dep: JobRecord) -> bytes:
    """A finished parent's value, pickled once for all the jobs that take it."""
    if dep.value_bytes is None:
        dep.value_bytes = dumps_value(dep.data)
    return dep.value_bytes
