"""The jobs a command names: by id, by a range of ids (``3-7``) or by name, as
``status``, ``logs``, ``wait`` and ``cancel`` take them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.cli.exits import CommandError

if TYPE_CHECKING:
    from corral.journal.run import Run
    from corral.journal.stored import StoredJob

__all__ = ["ID_RANGE", "with_ranges", "select_jobs", "jobs_with_ids"]


#: ``3-7``: the jobs numbered 3 to 7 (CustomXepr's remove_items(3, 7)).
ID_RANGE = re.compile(r"(\d{1,18})-(\d{1,18})")


def with_ranges(run: Run, ids: tuple[str, ...],
                wanted: Callable[[StoredJob], bool] | None = None,
                left: list[str] | None = None) -> tuple[str, ...]:
    """*ids* with each range ``A-B`` replaced by the ids of the run's jobs
    numbered A to B, in order; with *wanted*, only those it takes (a cancel of
    a range takes the unfinished ones: the rest are no error), the others
    going to *left* when given, for the caller to say.

    Raises:
        CommandError: a range runs backwards, or no job is numbered in it.
    """
    if not any(ID_RANGE.fullmatch(given) for given in ids):
        return ids
    found: list[str] = []
    for given in ids:
        inside = _in_range(run, given)
        if inside is None:
            found.append(given)
            continue
        for job in inside:
            if wanted is None or wanted(job):
                found.append(str(job.id))
            elif left is not None:
                left.append(str(job.id))
    return tuple(dict.fromkeys(found))


def _in_range(run: Run, given: str) -> list[StoredJob] | None:
    """The jobs of the range *given* (``3-7``), read by their numbers (a big run
    costs no more); None if it is no range, or numbers no job but names one.

    Raises:
        CommandError: the range runs backwards, or no job is numbered in it.
    """
    bounds = ID_RANGE.fullmatch(given)
    if bounds is None:
        return None
    low, high = int(bounds[1]), int(bounds[2])
    inside = [job for job in run.jobs_numbered(low, high) if isinstance(job.id, int)]
    # A range wins over a name that looks like one, as an id does (job_refs):
    # a job named "1-3" took the range from every command (review).
    if not inside and run.jobs_named(given):
        return None
    if low > high:
        raise CommandError(f"the range {given} runs backwards; write {high}-{low}")
    if not inside:
        count = sum(run.overview(0, 0).counts.values())
        raise CommandError(f"no job numbered {low} to {high} in the run at {run.path} "
                           f"({count} job{'s' * (count != 1)}; corral status --all lists them)")
    return inside


def select_jobs(run: Run, ids: tuple[str, ...], ranges: bool = True) -> list[StoredJob]:
    """The jobs named by *ids*, each an id (read by its key: a big run costs no
    more), a range of ids (``3-7``) or else the name of one job, as ``cancel``
    and ``--after`` take it; or every job."""
    from corral.errors import CorralError

    if not ids:
        return run.jobs(results=False)
    found, unknown = [], []
    for job_id in ids:
        inside = _in_range(run, job_id)
        if inside is not None:
            found += inside
            continue
        try:
            found.append(run.job(job_id))
            continue
        except KeyError:
            pass
        from corral.control.verbs import AmbiguousName, id_or_name  # (only for a name)

        try:  # (the jobs of that name only: a big run costs no more)
            found.append(run.job(id_or_name(job_id, run.jobs_named(job_id), run.reruns())))
        except AmbiguousName as error:
            raise CommandError(str(error)) from None
        except CorralError:
            unknown.append(job_id)
    if unknown:
        from corral.control.verbs import range_hint

        count = sum(run.overview(0, 0).counts.values())  # (counted, not read: a big run)
        # Quoted where it is blank at an end or holds a control character, which
        # would break the one line of the error or act on the terminal (attack review).
        shown = ", ".join(ref if ref and ref.strip() == ref and ref.isprintable() else repr(ref)
                          for ref in unknown)
        raise CommandError(f"no job {shown} in the run at {run.path} "
                           f"({count} job{'s' * (count != 1)}, by id or name; corral status "
                           f"--all lists them){range_hint(unknown) if ranges else ''}")
    # Each once, as wait and cancel take them (status 1 1 n1 listed job 1 three times).
    return list({str(job.id): job for job in found}.values())


def jobs_with_ids(run: Run, ids: tuple[str, ...]) -> list[StoredJob]:
    """The jobs whose ids are *ids* (ids as :func:`select_jobs` resolved them,
    not names: a name another job took since names both), in dispatch order;
    numbered ones read a block of consecutive numbers at a time, so the
    20,000 ids of a range cost a query, not 20,000."""
    from corral.core.registry import is_number_text

    wanted = set(ids)
    numbers = sorted({int(job_id) for job_id in ids if is_number_text(job_id)})
    found: list[StoredJob] = []
    start = 0
    for at in range(1, len(numbers) + 1):
        if at == len(numbers) or numbers[at] != numbers[at - 1] + 1:  # a block ends
            found += [job for job in run.jobs_numbered(numbers[start], numbers[at - 1])
                      if str(job.id) in wanted]
            start = at
    # Each of the others by its text: "07", a number too big to be one, and "43"
    # where job 43 is a string id (attack review: left out of wait's failures).
    seen = {str(job.id) for job in found}
    for job_id in ids:
        if job_id not in seen:
            try:
                found.append(run.job(job_id))
            except KeyError:  # (gone since it was resolved: a run cleaned meanwhile)
                continue
    return found
