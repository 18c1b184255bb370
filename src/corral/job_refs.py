"""How a person names a job: by its id, else by its name.

The command line, the control server and :meth:`corral.Run.clean` all take
either, and must read them alike: an id wins over a name that looks like one
(a job named "3" is job 3's only when no job 3 exists), and a name that
several jobs share names none of them. Each caller raises its own error for
a name that names nothing; an ambiguous one is said in one way everywhere.

This module imports nothing of corral's but the vocabulary: it is vocabulary.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any, TypeVar

from corral.safe_repr import first_few

__all__ = ["jobs_called", "ambiguous_name", "read_back_job_problem"]

_J = TypeVar("_J")


def jobs_called(given: Any, jobs: Iterable[_J], superseded: Container[str] = ()) -> list[_J]:
    """The job of *jobs* (anything with ``id`` and ``name``) whose id is
    *given*, as a list of one; else every job whose name it is; [] for none.
    Where several have the name and one alone is not *superseded* (ids of
    jobs ``corral rerun`` ran again), that one: a name names the latest run
    of its job (cold review: after one rerun, every command refused the name
    as ambiguous)."""
    named = []
    for job in jobs:
        if str(job.id) == str(given):  # type: ignore[attr-defined]
            return [job]
        if job.name == given:  # type: ignore[attr-defined]
            named.append(job)
    if len(named) > 1 and superseded:
        current = [job for job in named
                   if str(job.id) not in superseded]  # type: ignore[attr-defined]
        if len(current) == 1:
            return current
    return named


def ambiguous_name(given: Any, named: Iterable[Any]) -> str:
    """What to say of a name several jobs have: a few of their ids, and what to give."""
    ids = first_few(sorted({str(job.id) for job in named}, key=lambda text: (len(text), text)))
    return f"the name {given!r} is ambiguous: jobs {ids} have it; give an id instead"


def read_back_job_problem(given: Any) -> str | None:
    """Why a job read back from a journal (``Run.job(1)``, a
    :class:`corral.journal.stored.StoredJob`) cannot be waited for in
    ``after=``; None for anything else. (Among a call's arguments it is a
    record like any value, passed as itself: a function may summarise an
    earlier run's records.)"""
    if not getattr(given, "_is_read_back_corral_job", False):
        return None
    where = f" of {given.journal}" if getattr(given, "journal", None) else ""
    return (f"job {given.id} {given.name!r}{where} was read back from a journal: it is a "
            "record, not a job of this Scheduler to wait for; give after= the Job that "
            "submit() returned, or its id or name")
